"""Delivery: running a handler for a message and getting its outcome where it belongs.

A handler is called directly. A plain function's result (or exception) is handled at once;
an awaitable result runs in a task started eagerly (``asyncio.eager_task_factory``), so a
coroutine that finishes without suspending costs no trip through the event loop. Outcomes go:

- for a request, into the reply stream (``Reply``), value or ``HandlerExecutionError``;
- for a published or sent message, nowhere on success; a failure is reported as a
  ``HandlerFailure`` (log and ``bus.errors``).

Every task started here is tracked until it finishes, so ``close()`` can wait for it and then
cancel it. ``collect`` records the tasks that one publish or send started, which is what that
call awaits.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from functools import partial
from types import CoroutineType
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError
from reactivex import abc

from ._replies import Reply, ReplyTable
from ._validation import validation_summary
from .errors import (
    BufferFullError,
    EventBusError,
    HandlerExecutionError,
    HandlerFailure,
    MessageDroppedError,
    MessageValidationError,
    ReplyFailedError,
    handler_name,
)
from .message import EMPTY_HEADERS, Message, copy_with_body, make_message, own_copy
from .registration import Registration
from .stats import Counters

if TYPE_CHECKING:
    from ._flow import Mailbox

logger = logging.getLogger("tinybus")

# Eager starts nest: a handler that requests another address starts that handler inside its
# own first step. Past this depth tasks start the ordinary way, so a chain of handlers that
# request each other (or themselves) never grows the stack without bound.
MAX_EAGER_DEPTH = 16


# What a body that does not fit a handler's type is called in the error.
_SENT_TO = "the body sent to"
# For a type check that type checkers do not narrow on (the value stays what it was).
_COROUTINE: type = CoroutineType


def is_awaitable(value: object) -> bool:
    return type(value) is CoroutineType or (value is not None and hasattr(value, "__await__"))


def checked_argument(
    registration: Registration, address: str, value: Any, what: str = _SENT_TO
) -> Any:
    """``value`` validated against the type the handler declares (if any). Raises
    ``MessageValidationError`` for a value that is not valid."""
    accepts = registration._types.accepts  # pyright: ignore[reportPrivateUsage]
    if accepts is None or type(value) is accepts.exact:  # (check's first test, without a call)
        return value
    return accepts.check(value, address, what)


def handler_argument(registration: Registration, message: Message[Any]) -> Any:
    """What the handler is called with: the body or the message, validated if it declares a
    type. Raises ``MessageValidationError`` for a body that is not valid."""
    types = registration._types  # pyright: ignore[reportPrivateUsage]
    accepts = types.accepts
    body = message.body
    if message._copies:  # pyright: ignore[reportPrivateUsage]
        body = own_copy(body)
    elif accepts is None:
        return message if types.wants_message else body
    if accepts is not None and type(body) is not accepts.exact:  # (else check() returns it)
        body = accepts.check(body, message.address, _SENT_TO)
    if not types.wants_message:
        return body
    return message if body is message.body else copy_with_body(message, body)


def checked_reply(
    registration: Registration, reply_address: str, address: str, result: Any
) -> Reply:
    """The reply for ``result``, converted to the declared return type, or the failure saying
    the handler returned an invalid type."""
    returns = registration._types.returns  # pyright: ignore[reportPrivateUsage]
    if returns is not None and type(result) is not returns.exact:
        try:
            result = returns(result)
        except Exception as exc:  # ValidationError, or whatever a model's validator raised
            summary = (
                validation_summary(exc)
                if isinstance(exc, ValidationError)
                else f"{type(exc).__name__}: {exc}"
            )
            error = HandlerExecutionError(
                address,
                exc,
                f"the handler for {address!r} returned an invalid type: expected "
                f"{returns.expected}, got {type(result).__name__}: {summary}",
            )
            return Reply(reply_address, None, error, registration)
    return Reply(reply_address, result, None, registration)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    """A coroutine for an awaitable that is not one (a Future, an object with ``__await__``)."""
    return await awaitable


class EventObserver(abc.ObserverBase[Message[Any]]):
    """Subscribes a registration to its address's subject: each message becomes a delivery."""

    __slots__ = ("_delivery", "registration")

    def __init__(self, delivery: Delivery, registration: Registration) -> None:
        self._delivery = delivery
        self.registration = registration

    def on_next(self, value: Message[Any]) -> None:
        registration = self.registration
        if registration._pipeline is None and registration._mailbox is None:  # pyright: ignore[reportPrivateUsage]
            # Unregistered by a handler called before it for this very message: nothing more.
            if registration._registered:  # pyright: ignore[reportPrivateUsage]
                self._delivery.deliver_event(registration, value, True)
        elif registration._registered:  # pyright: ignore[reportPrivateUsage]
            self._delivery.enter_event(registration, value)

    def on_error(self, error: Exception) -> None:
        """Address subjects never error; nothing to do."""

    def on_completed(self) -> None:
        """The bus closed; the registration ends with it."""


class Exchange:
    """One request's answer, given once: by ``message.reply``/``fail`` or by the handler's
    outcome, whichever comes first. Later ones are ignored (a failure raised after an answer is
    still the handler's failure, reported on ``bus.errors``)."""

    # Not the message itself: the message refers to its exchange (``message.reply``), and a
    # cycle would leave every request's pair to the garbage collector.
    __slots__ = ("_address", "_delivery", "_registration", "_reply_address", "answered")

    def __init__(
        self, delivery: Delivery, registration: Registration, message: Message[Any]
    ) -> None:
        self._delivery = delivery
        self._registration = registration
        self._address = message.address
        self._reply_address: str = message.reply_address  # type: ignore[assignment]
        self.answered = False

    async def answer(self, result: Awaitable[Any], message: Message[Any], leaves: bool) -> None:
        """Run the handler of ``message`` (what it returned) and settle its outcome here;
        ``leaves``: the task leaves the running handlers itself as it ends."""
        try:
            value = await result
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            if cancelled and self._delivery.closing:
                raise  # cancelled by close(), whose requesters have their BusClosedError already
            self.settle_error(exc, message)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and SystemExit go on, and so does a cancellation
            # (Cancelled by its own code or another task's, the handler failed: its requester
            # has that answer, and the task ends cancelled.)
        else:
            self.settle_value(value)
        finally:
            if leaves:  # (see Delivery._start)
                delivery = self._delivery
                if delivery.tasks:
                    # (Given the loop: no error when a task the loop left pending is destroyed.)
                    delivery.tasks.discard(asyncio.current_task(delivery.loop))

    def _first(self, what: str) -> bool:
        if self.answered:
            logger.debug("ignored %s for %r: already answered", what, self._address)
            return False
        self.answered = True
        return True

    def reply(self, body: object, headers: Mapping[str, str] | None) -> None:
        if self._first("a reply"):
            self._push_value(body, headers)

    def fail(self, code: int, text: str) -> None:
        if self._first("a failure"):
            self._push_error(ReplyFailedError(self._address, code, text))

    async def reply_and_request(
        self, body: object, headers: Mapping[str, str] | None, timeout: float | None
    ) -> Message[Any]:
        if not self._first("a reply"):
            raise EventBusError(f"the request to {self._address!r} was answered already")
        return await self._delivery.converse(
            self._reply_address, body, headers, timeout, self._registration
        )

    def settle_value(self, value: Any) -> None:
        """The handler returned ``value``."""
        if not self.answered:  # (``_first`` and ``_push_value``, without their calls: every
            self.answered = True  # request comes here)
            registration = self._registration
            returns = registration._types.returns  # pyright: ignore[reportPrivateUsage]
            if returns is None or type(value) is returns.exact:  # (checked_reply's first test)
                reply = Reply(self._reply_address, value, None, registration)
            else:
                reply = checked_reply(registration, self._reply_address, self._address, value)
            self._delivery.replies.push(reply)
        else:
            logger.debug("ignored the return value for %r: already answered", self._address)

    def settle_error(self, exc: BaseException, message: Message[Any], wrap: bool = True) -> None:
        """The handler of ``message`` raised ``exc`` (or its body was invalid: ``wrap=False``)."""
        if not self.answered:
            self.answered = True
            self._push_error(HandlerExecutionError(self._address, exc) if wrap else exc)
        else:  # its requester has an answer; the failure is nobody's but the bus's to report
            self._delivery.report_failure(self._registration, message, exc)

    def _push_value(self, value: object, headers: Mapping[str, str] | None) -> None:
        reply = checked_reply(self._registration, self._reply_address, self._address, value)
        if headers:
            reply.headers = headers
        self._delivery.replies.push(reply)

    def _push_error(self, error: BaseException) -> None:
        self._delivery.replies.push(Reply(self._reply_address, None, error, self._registration))


type Converse = Callable[
    [str, Any, Mapping[str, str] | None, float | None, Registration | None],
    Awaitable[Message[Any]],
]


class Leg:
    """How one side of a conversation answers a reply that awaits an answer: once. ``source``
    is the consumer when that side is the consumer's (its late failures are its own)."""

    __slots__ = ("_converse", "_push_reply", "_reply_address", "_source", "answered")

    def __init__(
        self,
        converse: Converse,
        push_reply: Callable[[Reply], None],
        reply_address: str,
        source: Registration | None,
    ) -> None:
        self._converse = converse
        self._push_reply = push_reply
        self._reply_address = reply_address
        self._source = source
        self.answered = False

    def _first(self) -> bool:
        if self.answered:
            logger.debug("ignored a second answer to %s", self._reply_address)
            return False
        self.answered = True
        return True

    def reply(self, body: object, headers: Mapping[str, str] | None) -> None:
        if self._first():
            reply = Reply(self._reply_address, body, None, self._source, headers or EMPTY_HEADERS)
            self._push_reply(reply)

    def fail(self, code: int, text: str) -> None:
        if self._first():
            error = ReplyFailedError(self._reply_address, code, text)
            self._push_reply(Reply(self._reply_address, None, error, self._source))

    async def reply_and_request(
        self, body: object, headers: Mapping[str, str] | None, timeout: float | None
    ) -> Message[Any]:
        if not self._first():
            raise EventBusError(f"the reply at {self._reply_address!r} was answered already")
        return await self._converse(self._reply_address, body, headers, timeout, self._source)


# What ``Delivery.start_plain`` leaves to ``Delivery.finish``: started handlers to wait for,
# a refusal to raise, and the message if it was made.
type Unfinished = tuple[Sequence[asyncio.Future[None]], BaseException | None, Message[Any] | None]


class Collected:
    """What one publish or send of ``message`` set off that its caller awaits: handlers that
    were started at once, inline handlers to run, and room in buffers under
    ``overflow="block"``; and the first refusal to raise."""

    __slots__ = ("can_wait", "inline", "message", "refusal", "waits")

    def __init__(self, can_wait: bool, message: Message[Any]) -> None:
        self.can_wait = can_wait
        self.message = message
        self.waits: list[asyncio.Future[None]] = []
        self.inline: list[Registration] = []  # called and awaited after the others started
        self.refusal: BaseException | None = None


class Delivery:
    def __init__(
        self,
        get_loop: Callable[[], asyncio.AbstractEventLoop],
        report: Callable[[HandlerFailure], None],
        replies: ReplyTable,
        counts: Counters,
    ) -> None:
        self._get_loop = get_loop
        self.loop: asyncio.AbstractEventLoop | None = None  # the bus's, set when it binds
        self._report = report
        self.replies = replies  # where replies go (``replies.push``)
        self._requester_waiting = replies.is_waiting
        self.tasks: set[asyncio.Task[None]] = set()
        self.counts = counts
        self.converse: Converse  # set by the bus: answering with reply_and_request
        self.mailboxes: set[Mailbox] = set()
        self._collecting: Collected | None = None
        self._depth = 0
        # Set once close() cancels the running handlers: their cancellation is no failure.
        self.closing = False
        self._forget_task = self.tasks.discard
        self._bare_context = contextvars.Context()

    def observer(self, registration: Registration) -> EventObserver:
        return EventObserver(self, registration)

    # -- starting handlers -------------------------------------------------------------

    def _start(
        self,
        awaitable: Awaitable[Any],
        collect: bool,
        registration: Registration,
        message: Message[Any] | None,
        answers: bool = False,
        leaves: bool = False,
    ) -> asyncio.Task[Any] | None:
        """Run what a handler returned in a task; the task if it is still running (None when it
        finished at once). Its outcome goes where it belongs (``_settle``) when it ends: the
        task runs the handler's own coroutine, with no wrapper coroutine around it, or
        ``Exchange.answer`` (``answers=True``), which hands the outcome over itself.

        A task stays in ``tasks`` (what ``drain`` and ``close`` wait for) until it is done and
        its done callbacks have run, through one of its own. ``leaves`` (only with
        ``answers``): nobody adds a done callback to it (no mailbox), so ``Exchange.answer``
        takes it out in its last step, which spares a loop callback per request that waits."""
        coro: Coroutine[Any, Any, Any] = (
            awaitable  # type: ignore[assignment]  # (a coroutine; not cast(): a call)
            if type(awaitable) is _COROUTINE
            else _awaited(awaitable)
        )
        # The bus's loop, running or not (resume() may be called between runs of the loop).
        loop = self.loop or self._get_loop()
        if self._depth < MAX_EAGER_DEPTH:
            self._depth += 1
            # The handler's first step runs inside this call; what it sends is its own, not
            # part of what the caller that reached it collects (and may withdraw).
            collecting, self._collecting = self._collecting, None
            try:
                task = asyncio.Task(coro, loop=loop, eager_start=True)
            except BaseException as exc:  # KeyboardInterrupt or SystemExit, out of the first step
                self._settle_failure(registration, message, exc)
                raise
            finally:
                self._depth -= 1
                self._collecting = collecting
            if task.done():
                if not answers:  # (an answer has been handed over already)
                    self._settle(registration, message, task)
                return None
            self.tasks.add(task)
        else:
            # Deliberately not loop.create_task: an eager task factory installed on the loop
            # would start it eagerly again, and the depth would have no bound.
            task = asyncio.Task(coro, loop=loop)
            self.tasks.add(task)
            leaves = False  # cancelled before it starts, it never runs Exchange.answer
        if not answers:
            task.add_done_callback(partial(self._finished, registration, message))
        elif not leaves:
            # Only to be forgotten: no partial and no context copy per request.
            task.add_done_callback(self._forget_task, context=self._bare_context)
        if collect and self._collecting is not None:
            self._collecting.waits.append(task)
        return task

    def _finished(
        self, registration: Registration, message: Message[Any] | None, task: asyncio.Task[Any]
    ) -> None:
        self.tasks.discard(task)
        self._settle(registration, message, task)

    def _settle(
        self, registration: Registration, message: Message[Any] | None, task: asyncio.Task[Any]
    ) -> None:
        """Send a finished handler's outcome on: a request's reply (or failure) to its
        requester, a failure of anything else to ``bus.errors``."""
        if task.cancelled():
            if self.closing:
                # Cancelled by close(), whose requesters have their BusClosedError already:
                # not a failure of the handler.
                return
            try:
                task.result()
            except asyncio.CancelledError as cancelled:  # by itself, or by other code
                self._settle_failure(registration, message, cancelled)
            return
        exc = task.exception()
        if exc is not None:
            self._settle_failure(registration, message, exc)
        elif message is not None and message.reply_address is not None:
            cast(Exchange, message._responder).settle_value(task.result())  # pyright: ignore[reportPrivateUsage]

    def _settle_failure(
        self, registration: Registration, message: Message[Any] | None, exc: BaseException
    ) -> None:
        if message is not None and message.reply_address is not None:
            cast(Exchange, message._responder).settle_error(exc, message)  # pyright: ignore[reportPrivateUsage]
        else:
            self.report_failure(registration, message, exc)

    def collect(
        self, push: Callable[[Message[Any]], None], message: Message[Any], can_wait: bool
    ) -> Collected | None:
        """Run ``push(message)``; what the caller must await, or None when there is nothing.
        ``can_wait=False`` for a caller that will not await (nobody is held for room)."""
        outer = self._collecting
        collected = self._collecting = Collected(can_wait, message)
        try:
            push(message)
        finally:
            self._collecting = outer
        if collected.waits or collected.inline or collected.refusal is not None:
            return collected
        return None

    def wait(self, collected: Collected) -> Coroutine[Any, Any, None]:
        """What the caller of a publish or send awaits: ``finish`` for what it collected."""
        message = collected.message
        return self.finish(
            collected.inline,
            collected.waits,
            collected.refusal,
            message,
            message.body,
            message.address,
        )

    async def finish(
        self,
        inline: Sequence[Registration],
        waits: Sequence[asyncio.Future[None]],
        refusal: BaseException | None,
        message: Message[Any] | None,
        body: Any,
        address: str,
    ) -> None:
        """Call and await the inline handlers one after another, in the caller's task (the
        same loop as in ``EventBus.publish``), then wait for the started handlers and the room
        waited for; then raise the first refusal."""
        for registration in inline:
            awaitable, message, refused = self.call_inline(registration, message, body, address)
            if refused is not None and refusal is None:
                refusal = refused
            if awaitable is not None:
                try:
                    await awaitable
                except BaseException as exc:
                    message = self.inline_failed(
                        inline, registration, exc, waits, message, body, address
                    )
        if waits:
            try:
                # asyncio.wait, not ``await task``: cancelling the publisher must not cancel
                # the handlers its message reached; they belong to the bus.
                await asyncio.wait(waits)
            except asyncio.CancelledError:
                self._withdraw(waits)
                raise
        if refusal is not None:
            raise refusal

    def call_inline(
        self, registration: Registration, message: Message[Any] | None, body: Any, address: str
    ) -> tuple[Awaitable[Any] | None, Message[Any] | None, BaseException | None]:
        """Call an inline handler, at its turn: what to await (None when there is nothing),
        the message, made if it was needed (``message`` is None until then), and a refusal
        (``BufferFullError``: paused since, its buffer full), which the caller raises last."""
        if not registration._registered:  # pyright: ignore[reportPrivateUsage]
            return None, message, None  # unregistered by a handler called before it
        if self.closing:
            # close() ended its grace period while the turns before this one ran: like what
            # waits in a buffer then, the message is dropped and reported.
            if message is None:
                message = make_message(body, address, EMPTY_HEADERS)
            self.counts.dropped += 1
            self.report_failure(registration, message, MessageDroppedError(registration, "closed"))
            return None, message, None
        if registration._mailbox is not None:  # pyright: ignore[reportPrivateUsage]
            # Paused since (maybe by the handler before it, for this very message).
            if message is None:
                message = make_message(body, address, EMPTY_HEADERS)
            entered = self.collect(partial(self.enter_event, registration), message, True)
            if entered is None:
                return None, message, None
            started = self.finish(entered.inline, entered.waits, None, message, body, address)
            return started, message, entered.refusal
        registration.delivered += 1
        self.counts.delivered += 1
        try:
            if message is None:
                accepts = registration._types.accepts  # pyright: ignore[reportPrivateUsage]
                argument = (
                    body
                    if accepts is None or type(body) is accepts.exact
                    else accepts.check(body, address, _SENT_TO)
                )
            else:
                argument = handler_argument(registration, message)
            result = registration.handler(argument)
        except (Exception, asyncio.CancelledError) as exc:  # the handler's, not the caller's
            if message is None:
                message = make_message(body, address, EMPTY_HEADERS)
            self.report_failure(registration, message, exc)
            return None, message, None
        if type(result) is _COROUTINE or is_awaitable(result):
            return result, message, None
        return None, message, None

    def inline_failed(
        self,
        inline: Sequence[Registration],
        registration: Registration,
        exc: BaseException,
        waits: Sequence[asyncio.Future[None]],
        message: Message[Any] | None,
        body: Any,
        address: str,
    ) -> Message[Any]:
        """``registration``'s inline handler raised ``exc``: report it (with ``message``, made
        now if there was none, and returned), or raise ``exc`` when it is ``KeyboardInterrupt``,
        ``SystemExit`` or the caller's cancellation. Then the inline handlers after it still
        get the message, in tasks of the bus's own."""
        if message is None:
            message = make_message(body, address, EMPTY_HEADERS)
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the caller's, and so the handler's
                for later in inline[inline.index(registration) + 1 :]:
                    if later._registered:  # pyright: ignore[reportPrivateUsage]
                        self.enter_event(later, message)  # (nobody collects: in tasks)
                self._withdraw(waits)
                raise exc
        elif not isinstance(exc, Exception):
            raise exc
        self.report_failure(registration, message, exc)
        return message

    @staticmethod
    def _withdraw(waits: Sequence[asyncio.Future[None]]) -> None:
        """A cancelled caller withdraws its items still waiting for room."""
        for waiter in waits:
            if not isinstance(waiter, asyncio.Task):
                waiter.cancel()

    def start_plain(
        self, registrations: tuple[Registration, ...], body: Any, address: str
    ) -> Unfinished | None:
        """An awaited ``publish`` to an address whose handlers all take the body, with no
        pipe, no buffer and no other subscriber (``Route.plain``), but none inline: what the
        address's subject and each ``EventObserver.on_next`` would do, without making the
        ``Message`` unless someone needs it (a failure to report, a task to start, a buffer to
        enter). What is left to ``finish``, or None."""
        message: Message[Any] | None = None
        waits: list[asyncio.Future[None]] | None = None
        refusal: BaseException | None = None
        counts = self.counts
        for registration in registrations:
            if not registration._registered:  # pyright: ignore[reportPrivateUsage]
                continue  # unregistered by a handler called before it
            if registration._mailbox is not None:  # pyright: ignore[reportPrivateUsage]
                # Paused since (maybe by a handler before it, for this very message).
                if message is None:
                    message = make_message(body, address, EMPTY_HEADERS)
                entered = self.collect(partial(self.enter_event, registration), message, True)
                if entered is not None:
                    waits = [*(waits or ()), *entered.waits]
                    refusal = refusal or entered.refusal
                continue
            registration.delivered += 1
            counts.delivered += 1
            accepts = registration._types.accepts  # pyright: ignore[reportPrivateUsage]
            try:
                result = registration.handler(
                    body
                    if accepts is None or type(body) is accepts.exact
                    else accepts.check(body, address, _SENT_TO)
                )
            except (Exception, asyncio.CancelledError) as exc:  # the handler's, not the caller's
                if message is None:
                    message = make_message(body, address, EMPTY_HEADERS)
                self.report_failure(registration, message, exc)
                continue
            if type(result) is not _COROUTINE and (result is None or not is_awaitable(result)):
                continue
            if message is None:
                message = make_message(body, address, EMPTY_HEADERS)
            task = self._start(result, False, registration, message)
            if task is not None:
                if waits is None:
                    waits = [task]
                else:
                    waits.append(task)
        if waits is None and refusal is None:
            return None
        return waits or (), refusal, message

    def bound_loop(self) -> asyncio.AbstractEventLoop:
        return self._get_loop()

    def hold_caller(self) -> asyncio.Future[None] | None:
        collecting = self._collecting
        if collecting is None or not collecting.can_wait:
            return None
        waiter: asyncio.Future[None] = self._get_loop().create_future()
        collecting.waits.append(waiter)
        return waiter

    # -- entering a registration: its pipeline, its mailbox, its handler -------------------

    def enter_event(self, registration: Registration, message: Message[Any]) -> None:
        pipeline = registration._pipeline  # pyright: ignore[reportPrivateUsage]
        if pipeline is None:
            self.admit(registration, message)
        else:
            if registration._takes_messages:  # pyright: ignore[reportPrivateUsage]
                pipeline.push(message)  # (a copy, if asked for, is made at the handler)
            elif message._copies:  # pyright: ignore[reportPrivateUsage]
                pipeline.push(own_copy(message.body))
            else:
                pipeline.push(message.body)

    def enter_request(self, registration: Registration, message: Message[Any]) -> None:
        pipeline = registration._pipeline  # pyright: ignore[reportPrivateUsage]
        if pipeline is not None:
            error = pipeline.push_request(message)
            if error is not None:
                # A rejection is the requester's failure; an operator's failure was reported
                # (and counted) on bus.errors already, and is given to the requester too.
                failed_in_pipe = not isinstance(error, EventBusError)
                if failed_in_pipe:
                    error = HandlerExecutionError(message.address, error)
                self._fail_request(registration, message, error, counted=failed_in_pipe)
            return
        mailbox = registration._mailbox  # pyright: ignore[reportPrivateUsage]
        if mailbox is not None:
            mailbox.offer(message)
            return
        self.deliver_request(registration, message, False)

    def admit(self, registration: Registration, item: Any) -> None:
        """Take what a pipeline let out: into the mailbox, or straight to the handler."""
        mailbox = registration._mailbox  # pyright: ignore[reportPrivateUsage]
        if mailbox is not None:
            mailbox.offer(item)
        else:
            self.dispatch(registration, item, True)

    def dispatch(
        self, registration: Registration, item: Any, collect: bool
    ) -> asyncio.Task[None] | None:
        """Hand ``item`` to the handler; the task if it is still running."""
        if not registration._takes_messages:  # pyright: ignore[reportPrivateUsage]
            if registration._pipeline is None:  # pyright: ignore[reportPrivateUsage]
                return self.deliver_event(registration, item, collect)
            return self._deliver_piped(registration, item, collect)
        if not isinstance(item, Message):
            error = MessageValidationError(
                registration.address,
                "Message",
                [],
                f"its pipe emitted {type(item).__name__}: {item!r}",
                what=f"what {handler_name(registration.handler)} is given at",
            )
            self.report_failure(registration, None, error)
            return None
        message = cast("Message[Any]", item)
        reply_address = message.reply_address
        if reply_address is None or registration.role != "consumer":
            return self.deliver_event(registration, message, collect)
        # A request that waited (in a buffer, or held by a consumer's operator) may have been
        # given up on by its requester, or already failed (rejected by the consumer's pipe).
        if not self._requester_waiting(reply_address):
            logger.debug("dropped a request to %r: its requester stopped waiting", message.address)
            mailbox = registration._mailbox  # pyright: ignore[reportPrivateUsage]
            if mailbox is not None:  # it waited in the buffer: a drop of flow control's
                mailbox.dropped += 1
                self.counts.dropped += 1
            return None
        return self.deliver_request(registration, message, collect)

    def _deliver_piped(
        self, registration: Registration, value: Any, collect: bool
    ) -> asyncio.Task[None] | None:
        registration.delivered += 1
        self.counts.delivered += 1
        try:
            argument = checked_argument(
                registration, registration.address, value, "what the pipe emitted at"
            )
            result = registration.handler(argument)
        except (Exception, asyncio.CancelledError) as exc:  # the handler's, not the caller's
            self.report_failure(registration, None, exc)
            return None
        if is_awaitable(result):
            return self._start(result, collect, registration, None)
        return None

    def discard(self, registration: Registration, item: Any, error: MessageDroppedError) -> None:
        if isinstance(item, Message):
            message = cast("Message[Any]", item)
            reply_address = message.reply_address
            if reply_address is not None and registration.role == "consumer":
                if self._requester_waiting(reply_address):
                    self._fail_request(registration, message, error)
                else:  # its requester has its outcome already (timeout, BusClosedError)
                    logger.debug("dropped a request to %r: %s", message.address, error)
                return
            self.report_failure(registration, message, error)
        else:
            self.report_failure(registration, None, error)

    def refuse(self, registration: Registration, item: Any, error: BufferFullError) -> None:
        collecting = self._collecting
        is_request = (
            isinstance(item, Message)
            and cast("Message[Any]", item).reply_address is not None
            and registration.role == "consumer"
        )
        if collecting is not None and not is_request:
            if collecting.refusal is None:
                collecting.refusal = error
        else:
            self.discard(registration, item, error)

    def _fail_request(
        self,
        registration: Registration,
        message: Message[Any],
        error: BaseException,
        counted: bool = False,
    ) -> None:
        reply_address: str = message.reply_address  # type: ignore[assignment]
        reply = Reply(reply_address, None, error, registration)
        reply.counted = counted
        self.replies.push(reply)

    # -- published and sent messages -----------------------------------------------------

    def deliver_event(
        self, registration: Registration, message: Message[Any], collect: bool
    ) -> asyncio.Task[None] | None:
        # An inline handler is called at its turn, by ``finish``, when the caller awaits. (What
        # a pipe lets out, and what a registration with a buffer runs, runs in a task.)
        if (
            registration._inline  # pyright: ignore[reportPrivateUsage]
            and collect
            and registration._mailbox is None  # pyright: ignore[reportPrivateUsage]
            and registration._pipeline is None  # pyright: ignore[reportPrivateUsage]
        ):
            collecting = self._collecting
            if collecting is not None and collecting.can_wait:
                collecting.inline.append(registration)
                return None
        registration.delivered += 1
        self.counts.delivered += 1
        try:
            result = registration.handler(handler_argument(registration, message))
        except (Exception, asyncio.CancelledError) as exc:  # the handler's, not the caller's
            self.report_failure(registration, message, exc)
            return None
        if is_awaitable(result):
            return self._start(result, collect, registration, message)
        return None

    def report_failure(
        self, registration: Registration, message: Message[Any] | None, exc: BaseException
    ) -> None:
        if not isinstance(exc, MessageDroppedError):  # drops are the mailbox's to count
            registration.failed += 1
        self._report(HandlerFailure(registration.address, registration.handler, exc, message))

    # -- requests --------------------------------------------------------------------------

    def deliver_request(
        self, registration: Registration, message: Message[Any], collect: bool
    ) -> asyncio.Task[None] | None:
        registration.delivered += 1
        self.counts.delivered += 1
        exchange = Exchange(self, registration, message)
        message._responder = exchange  # pyright: ignore[reportPrivateUsage]
        try:
            result = registration.handler(handler_argument(registration, message))
        except MessageValidationError as exc:
            exchange.settle_error(exc, message, wrap=False)
            return None
        except (Exception, asyncio.CancelledError) as exc:  # the handler's, not the caller's
            exchange.settle_error(exc, message)
            return None
        if type(result) is _COROUTINE or is_awaitable(result):
            # Answered from inside the task, not by its done callback (scheduled one loop
            # iteration later): a handler that suspends has its requester resumed sooner.
            # A mailbox watches its tasks end (to start the next): they stay in tasks till then.
            leaves = registration._mailbox is None  # pyright: ignore[reportPrivateUsage]
            answering = exchange.answer(result, message, leaves)
            return self._start(answering, collect, registration, None, True, leaves)
        exchange.settle_value(result)
        return None

    # -- shutdown --------------------------------------------------------------------------

    def others(self) -> set[asyncio.Task[None]]:
        """The running handlers, except the current task (a handler calling drain or close)."""
        current = asyncio.current_task()
        return {task for task in self.tasks if task is not current}

    async def cancel_running(self) -> None:
        """Cancel every running handler (but the caller) and wait until they have stopped."""
        self.closing = True
        for task in self.others():
            task.cancel()
        while running := self.others():
            await asyncio.wait(running)

    def reset(self) -> None:
        self.closing = False
        self.tasks.clear()
        for mailbox in self.mailboxes:
            mailbox.reset()
        self._collecting = None
        self._depth = 0
