"""``Endpoint``: one registration's side of the bus, from its address's Subject to its handler.

A message pushed into an address's Subject reaches each registration's endpoint (a published
one), or one consumer's (a sent or requested one). It goes through the registration's pipeline
and mailbox, if any, to ``Endpoint.call``, the one place where a handler is called, whatever
the role, the mode or the kind of message; an inline registration's caller calls it at its
turn (``Endpoint.turn``); the bus's inbound interceptors (``Inbound``) see it first. The
outcome goes to ``settle``/``settle_failure`` (``Outcomes``): to the requester (through the
request's ``Exchange``) for a request, else, for a failure, to ``bus.errors``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from reactivex import abc

from ._failures import Failures, call_ended
from ._inbound import Inbound
from ._outcomes import Outcomes
from ._tasks import Tasks, called_later
from ._validation import HandlerTypes
from .errors import (
    EventBusError,
    HandlerExecutionError,
    MessageDroppedError,
    MessageValidationError,
    handler_name,
)
from .message import Message, copy_with_body, own_copy
from .stats import Counters

if TYPE_CHECKING:
    from ._flow import Mailbox, Overflow
    from ._pipeline import Pipeline
    from ._routes import AddressSubject
    from .instrumentation import Instrumentation
    from .registration import Registration

logger = logging.getLogger("tinybus")

type Role = str  # "consumer" or "listener"

# What a body that does not fit a handler's type is called in the error.
SENT_TO = "the body sent to"
PIPE_EMITTED = "what the pipe emitted at"
# Not caught for the handler: they stop the program, wherever they are raised.
FATAL = (KeyboardInterrupt, SystemExit)


COROUTINE: type = CoroutineType  # (a type check that type checkers do not narrow on)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    """A coroutine for an awaitable that is not one (a Future, an object with ``__await__``)."""
    return await awaitable


class Endpoint(Outcomes, abc.ObserverBase[Message[Any]]):
    """One registration: an observer of its address's Subject, and the way to its handler."""

    __slots__ = (
        "accepts",
        "address",
        "counts",
        "delivered",
        "direct",
        "ends",
        "failed",
        "failures",
        "handler",
        "inbound",
        "inline",
        "instrumentation",
        "items_are_messages",
        "local",
        "mailbox",
        "max_buffered",
        "max_concurrency",
        "overflow",
        "pipe_messages",
        "pipeline",
        "registered",
        "registration",
        "replied",
        "returns",
        "ring_next",
        "ring_previous",
        "role",
        "subject",
        "tasks",
        "wants_message",
    )

    def __init__(
        self,
        address: str,
        handler: Callable[..., Any],
        role: Role,
        types: HandlerTypes,
        tasks: Tasks,
        failures: Failures,
        *,
        inline: bool = False,
        local: bool = False,
        max_concurrency: int | None = None,
        max_buffered: int = 1000,
        overflow: Overflow = "block",
        inbound: Inbound | None = None,
    ) -> None:
        self.address = address
        self.handler = handler
        self.role = role
        self.accepts = types.accepts  # (the handler's types, read once at registration)
        self.returns = types.returns
        self.wants_message = types.wants_message
        self.tasks = tasks
        self.failures = failures
        self.counts: Counters = failures.counts
        self.inline = inline  # its coroutine is awaited by the caller, at its turn
        self.local = local  # not offered to other processes by a transport
        self.max_concurrency = max_concurrency
        self.max_buffered = max_buffered
        self.overflow: Overflow = overflow
        # What its pipeline carries: the message for consumers and handlers that take it.
        self.pipe_messages = role == "consumer" or types.wants_message
        self.items_are_messages = True  # False once a pipeline of bodies feeds the handler
        self.pipeline: Pipeline | None = None
        self.mailbox: Mailbox | None = None
        self.registered = True
        self.direct = not inline  # from the Subject straight to a task (``update``)
        self.delivered = self.replied = self.failed = 0
        self.registration: Registration | None = None  # its public handle
        self.instrumentation: Instrumentation | None = None  # what traces its handler's runs
        self.inbound = Inbound() if inbound is None else inbound  # the bus's, shared
        self.subject: AddressSubject | None = None  # set while attached to its address
        # Consumers of one address form a ring, the order requests and sends take turns in.
        self.ring_next: Endpoint = self
        self.ring_previous: Endpoint = self
        # Called once it ends (on_unregistered, wait_unregistered), by keys of their own.
        self.ends: dict[object, Callable[[Registration], object]] | None = None

    # -- from the Subject to the handler -------------------------------------------------

    def update(self) -> None:
        """Its pipeline, mailbox or registration changed: where messages go now."""
        self.direct = (
            self.registered and not self.inline and self.pipeline is None and self.mailbox is None
        )

    def on_next(self, value: Message[Any]) -> None:
        """A message pushed into the address's Subject reaches this registration."""
        if self.direct:
            self.call(value, False)
        elif not self.registered:
            return  # unregistered by a handler called before it, for this very message
        elif self.inline and self.pipeline is None and self.mailbox is None:
            self._wait_for_turn(value)
        else:
            self.enter(value)

    def enter(self, message: Message[Any]) -> None:
        """Into the pipeline, the mailbox, or straight to the handler, in a task."""
        if self.pipeline is not None:
            self._enter_pipeline(message)
        elif self.mailbox is not None:
            self.mailbox.offer(message)
        else:
            self.call(message, False)

    def on_error(self, error: Exception) -> None:
        """Address subjects never error."""

    def on_completed(self) -> None:
        """The bus closed; the registration ends with it (``Endpoint.ended``)."""

    def _enter_pipeline(self, message: Message[Any]) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        if not self.pipe_messages and self.inbound.interceptors:
            # Its pipe turns messages into bodies: the last place the message is one.
            admitted = self.inbound.admit(self, message)
            if admitted is None:
                return
            message = admitted
        if not self.pipe_messages:
            pipeline.push(own_copy(message.body) if message.copies else message.body)
        elif message.kind != "request":
            pipeline.push(message)  # (a copy, if asked for, is made at the handler)
        elif (error := pipeline.push_request(message)) is not None:
            # The requester's failure, and this consumer's; an operator's failure was reported
            # (and counted) on bus.errors already, and is given to the requester too.
            responder = message.responder
            assert responder is not None
            responder.source = self
            if isinstance(error, EventBusError):
                responder.settle_failure(error, False)
            else:
                responder.settle_failure(HandlerExecutionError(message.address, error), False, True)

    def admit(self, item: Any) -> None:
        """What the pipeline lets out: into the mailbox, or to the handler in a task."""
        if self.mailbox is not None:
            self.mailbox.offer(item)
        else:
            self.dispatch(item)

    def dispatch(self, item: Any) -> asyncio.Task[Any] | None:
        """What a pipeline let out, or a mailbox started, to the handler if it still may:
        ``call``, unless ``_deliverable`` says otherwise."""
        if self.items_are_messages and not self._deliverable(item):
            return None
        return self.call(item, False)

    def _wait_for_turn(self, message: Message[Any]) -> None:
        """An inline handler is called at its turn by the caller that awaits the message:
        the requester, or a publish or send that can wait; else it runs in a task."""
        responder = message.responder
        if responder is not None and message.kind == "request":
            if responder.takes_turns:
                responder.turn = self
            else:
                self.call(message, False)
            return
        collecting = self.tasks.collecting
        if collecting is not None and collecting.can_wait and not self.tasks.later:
            collecting.take_turn(self)
        else:
            self.call(message, False)

    # -- calling the handler ---------------------------------------------------------------

    def turn(self, message: Message[Any]) -> Awaitable[Any] | None:
        """An inline handler's turn, in the caller's task: call it; what to await, if it
        returned an awaitable (its outcome: ``raised``, or ``settle``)."""
        if not self.registered:
            return None  # unregistered by a handler called before it
        if self.tasks.closing:
            # close() ended its grace period while the turns before this one ran: like what
            # waits in a buffer then, the message is dropped and reported.
            self.drop(message, MessageDroppedError(self, "closed"))
            return None
        return self.call(message, True)

    def call(self, item: Any, inline: bool) -> Any:
        """The one place a handler is called: count the delivery, give the handler its
        argument (validated), call it, catch what it raises, and hand the outcome on. What it
        returns when that is awaitable is run in a task of the bus's (``run``), which the
        caller under way collects, and the task is returned while it runs; or, for an inline
        turn, returned for the caller to ``run``. For a ``*_nowait`` caller, and behind what
        one set off, that task calls the handler at the loop's next turn (``called_later``).
        The inbound interceptors see a message first, and may drop it (``Inbound.admit``)."""
        if self.tasks.later and not inline:  # never in a *_nowait caller's stack
            return self.tasks.start_later(called_later(self, item, self.mailbox is not None))
        if self.inbound.interceptors and self.items_are_messages:
            item = self.inbound.admit(self, item)
            if item is None:
                return None
        self.delivered += 1
        self.counts.delivered += 1
        message: Message[Any] | None = None
        accepts = self.accepts
        try:
            if not self.items_are_messages:  # a body its pipeline let out
                argument = self._checked_body(item)
            else:
                message = item
                if item.kind == "request":
                    item.responder.source = self
                if item.copies or (accepts is not None and type(item.body) is not accepts.exact):
                    argument = self._argument(item)
                elif self.wants_message:
                    argument = item
                else:
                    argument = item.body
        except MessageValidationError as exc:
            self.settle_failure(message, exc, False)
            return None
        instrumentation = self.instrumentation
        try:
            if instrumentation is None:
                result = self.handler(argument)
            else:  # the same call, through the bus's instrumentation (which traces it)
                result = instrumentation.handle(self.address, self.handler, message, argument)
        except FATAL:
            raise
        except BaseException as exc:  # the handler's, even a CancelledError: it runs here
            self.settle_failure(message, exc)
            return None
        awaitable: Coroutine[Any, Any, Any]
        if type(result) is COROUTINE:
            awaitable = result
        elif result is not None and hasattr(result, "__await__"):
            awaitable = _awaited(result)
        else:
            if message is not None and message.kind == "request":
                message.responder.settle(result)  # pyright: ignore[reportOptionalMemberAccess]
            return None
        if inline:
            return awaitable
        # A mailbox watches its tasks end, to start the next: they leave ``running`` then.
        return self.tasks.start(self.run(message, awaitable, self.mailbox is not None))

    def _deliverable(self, item: Any) -> bool:
        """Whether ``item`` may reach a handler that takes messages: a message (a pipe may
        emit anything), and, for a request that waited, one its requester still awaits."""
        if type(item) is not Message:
            error = MessageValidationError(
                self.address,
                "Message",
                [],
                f"its pipe emitted {type(item).__name__}: {item!r}",
                what=f"what {handler_name(self.handler)} is given at",
            )
            self.report(None, error)
            return False
        message: Message[Any] = item  # pyright: ignore[reportUnknownVariableType]
        responder = message.responder
        if responder is not None and message.kind == "request" and not responder.is_awaited():
            # It waited (in a buffer, or held by an operator) and its requester has its
            # outcome already: a drop of flow control's when it waited in the buffer.
            if self.mailbox is not None:
                self.mailbox.dropped += 1
                self.counts.dropped += 1
            return False
        return True

    def _checked_body(self, body: Any) -> Any:
        accepts = self.accepts
        if accepts is None or type(body) is accepts.exact:
            return body
        return accepts.check(body, self.address, PIPE_EMITTED)

    def _argument(self, message: Message[Any]) -> Any:
        """What the handler is given: the body or the message, validated against its declared
        type (a copy of its own, under ``copy=True``). ``MessageValidationError`` otherwise."""
        accepts = self.accepts
        body = own_copy(message.body) if message.copies else message.body
        if accepts is not None and type(body) is not accepts.exact:
            body = accepts.check(body, message.address, SENT_TO)
        if not self.wants_message:
            return body
        return message if body is message.body else copy_with_body(message, body)

    async def run(
        self, message: Message[Any] | None, awaitable: Awaitable[Any], watched: bool
    ) -> None:
        """The body of every task the bus starts for a handler: await what the handler
        returned and hand its outcome on (``watched``: by a mailbox, which sees the task leave
        ``running``). An inline turn does the same in its caller's task (``Dispatch.finish``,
        ``Requests._turn``)."""
        try:
            value = await awaitable
        except BaseException as exc:
            if self.raised(message, exc, True):
                raise
        else:
            if message is not None and message.kind == "request":
                message.responder.settle(value)  # pyright: ignore[reportOptionalMemberAccess]
        finally:
            if not watched and self.tasks.running:
                self.tasks.leave()

    # -- ending ----------------------------------------------------------------------------

    def ended(self) -> None:
        """The registration ended: tell those who asked."""
        self.registered = False
        self.direct = False
        ends, self.ends = self.ends, None
        registration = self.registration
        if ends and registration is not None:
            for callback in ends.values():
                call_ended(callback, registration)
