"""``Exchange``: one request and its one answer; ``Reply``: an answer on its way back.

An ``Exchange`` is made for every message that awaits an answer: a request, or a reply that
awaits an answer in a conversation (``reply_and_request``). It has two sides:

- the answering side (``Message.responder``): ``reply``, ``fail``, ``reply_and_request``, or
  the handler's outcome (``settle``, ``settle_failure``) give the answer once; the first one
  is pushed, as a ``Reply``, into the reply Subject (``sink``); later ones are ignored;
- the waiting side, which the ``ReplySubject`` resolves when that ``Reply`` comes out of the
  reply Subject: ``outcome`` while the request is still being sent (no future is made for an
  answer given at once), else ``future``; ``deadline`` and its place in ``Deadlines``.

Locally one object serves both sides. Across processes each side has its own (a transport
gives the answering side a ``sink`` that crosses the wire).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._validation import failure_summary
from .errors import (
    EventBusError,
    HandlerExecutionError,
    HandlerNotFoundError,
    ReplyFailedError,
)
from .message import EMPTY_HEADERS, Message

if TYPE_CHECKING:
    from ._answers import Answers
    from ._endpoint import Endpoint
    from .options import DeliveryOptions

logger = logging.getLogger("tinybus")

FATAL = (KeyboardInterrupt, SystemExit)


def nobody_awaits(reply_address: str) -> HandlerNotFoundError:
    """The error of an answer sent where nobody waits any more, which no answer can follow."""
    return HandlerNotFoundError(
        reply_address,
        "nobody awaits this answer any more (the other side stopped waiting), so no answer "
        "to it can come",
    )


class Reply:
    """An answer on its way back to whoever waits at ``reply_address``: a body, or the error
    the requester gets. ``next_address`` is where an answer to it goes, when it awaits one."""

    __slots__ = (
        "answer_sink",
        "body",
        "counted",
        "error",
        "headers",
        "next_address",
        "reply_address",
        "source",
    )

    def __init__(
        self,
        reply_address: str,
        body: Any,
        error: BaseException | None,
        source: Endpoint | None,
        headers: Mapping[str, str] = EMPTY_HEADERS,
        next_address: str | None = None,
        counted: bool = False,
    ) -> None:
        self.reply_address = reply_address
        self.body = body
        self.error = error
        self.source = source  # the consumer that answered, or None for a requester's answer
        self.headers = headers
        self.next_address = next_address
        self.counted = counted  # a failure counted already (reported on bus.errors too)
        # Where an answer to it goes (at next_address): None for the reply Subject; a
        # transport's wire when it came from another process.
        self.answer_sink: Callable[[Reply], None] | None = None


class Conversations(Protocol):
    """What answering needs of the bus's requests: the way out for answers (``Answers``),
    and conversations (``reply_and_request``)."""

    answers: Answers

    def converse(
        self,
        answering: Exchange,
        body: object,
        headers: Mapping[str, str] | None,
        options: DeliveryOptions | None,
        timeout: float | None,
    ) -> Awaitable[Message[Any]]: ...


class Exchange:
    """One message that awaits an answer, and that answer: given once, waited for once."""

    __slots__ = (
        "abandoned",
        "address",
        "answered",
        "conversations",
        "deadline",
        "ended_by",
        "future",
        "leg",
        "outcome",
        "reply_address",
        "scheduled",
        "sink",
        "source",
        "takes_turns",
        "task",
        "timeout",
        "turn",
    )

    def __init__(
        self,
        reply_address: str,
        address: str,
        sink: Callable[[Reply], None],
        conversations: Conversations,
        source: Endpoint | None = None,
        leg: bool = False,
    ) -> None:
        self.reply_address = reply_address
        self.address = address  # where the message went (named in errors)
        # A reply awaiting an answer in a conversation: its answers are not checked against
        # a consumer's return type, and its failures name its reply address.
        self.leg = leg
        self.sink = sink  # where answers go: the reply Subject (or a transport's wire)
        self.conversations = conversations
        self.source = source  # the consumer answering, once delivered (None: a requester)
        self.answered = False
        self.turn: Endpoint | None = None  # an inline consumer, called in the requester's task
        self.takes_turns = True  # False: the requester is in another process
        # The waiting side.
        self.future: asyncio.Future[Reply] | None = None
        self.outcome: Reply | None = None
        self.abandoned = False  # its requester stopped waiting (timeout, cancelled, close)
        self.deadline = 0.0
        self.timeout = 0.0
        self.scheduled = False  # in Deadlines
        self.task: asyncio.Task[Any] | None = None  # an inline turn's, cancelled at the deadline
        # Why the bus cancelled an inline turn: its deadline came, or the bus closed.
        self.ended_by: BaseException | None = None

    @classmethod
    def of_leg(
        cls,
        reply_address: str,
        address: str,
        sink: Callable[[Reply], None],
        conversations: Conversations,
        source: Endpoint | None,
    ) -> Exchange:
        """A conversation's leg: a reply that awaits an answer at ``reply_address``."""
        return cls(reply_address, address, sink, conversations, source, leg=True)

    # -- the answering side ----------------------------------------------------------------

    def is_awaited(self) -> bool:
        return not self.answered and self.waited()

    def waited(self) -> bool:
        """Whether the waiting side still waits (its future, if made, is not settled)."""
        future = self.future
        return not (self.abandoned or (future is not None and future.done()))

    def reply(
        self, body: object, headers: Mapping[str, str] | None, options: DeliveryOptions | None
    ) -> None:
        if self.answered:
            logger.debug("ignored a reply for %r: already answered", self.address)
            return
        reply = self._checked(body)
        if headers:
            reply.headers = headers
        self.send(reply, options)  # (what shaping raises is the caller's; still unanswered)

    def send(self, reply: Reply, options: DeliveryOptions | None) -> None:
        """Push ``reply``, shaped on its way out (``Answers``), as the answer."""
        answers = self.conversations.answers
        if options is not None or answers.active:
            reply = answers.shape(reply, options)
        self.answered = True
        self.sink(reply)

    def fail(self, code: int, text: str) -> None:
        if self.answered:
            logger.debug("ignored a failure for %r: already answered", self.address)
            return
        named = self.reply_address if self.leg else self.address
        error = ReplyFailedError(named, code, text)
        self.send(Reply(self.reply_address, None, error, self.source), None)

    async def reply_and_request(
        self,
        body: object,
        headers: Mapping[str, str] | None,
        options: DeliveryOptions | None,
        timeout: float | None,
    ) -> Message[Any]:
        if self.answered:
            what = (
                f"the reply at {self.reply_address!r}"
                if self.leg
                else (f"the request to {self.address!r}")
            )
            raise EventBusError(f"{what} was answered already")
        self.answered = True
        return await self.conversations.converse(self, body, headers, options, timeout)

    def settle(self, value: object) -> None:
        if self.answered:
            logger.debug("ignored the return value for %r: already answered", self.address)
            return
        self.answered = True
        source = self.source
        returns = None if source is None or self.leg else source.returns
        if returns is None or type(value) is returns.exact:  # (_checked's first test)
            reply = Reply(self.reply_address, value, None, source)
        else:
            reply = self._checked(value)
        if self.conversations.answers.active:
            reply = self._shaped(reply, self._failed_by)  # (what shaping raised fails it)
        self.sink(reply)

    def settle_failure(self, error: BaseException, wrap: bool, counted: bool = False) -> bool:
        """The answer is the failure ``error``; False when answered already (the caller
        reports it: a failure after the answer is nobody's but the bus's)."""
        if self.answered:
            return False
        if wrap:
            error = HandlerExecutionError(self.address, error)
        reply = Reply(self.reply_address, None, error, self.source, counted=counted)
        if self.conversations.answers.active:
            reply = self._shaped(reply, lambda exc: self._kept(reply, exc))
        self.answered = True
        self.sink(reply)
        return True

    def _shaped(self, reply: Reply, failed: Callable[[BaseException], Reply]) -> Reply:
        """``reply`` shaped on its way out (``Answers``), or, when a codec or an interceptor
        raised, what ``failed`` makes of that: the handler's outcome must go on."""
        try:
            return self.conversations.answers.shape(reply, None)
        except FATAL:
            raise
        except BaseException as exc:
            return failed(exc)

    def _failed_by(self, exc: BaseException) -> Reply:
        """A return value shaping refused: the request fails with what it raised."""
        return Reply(
            self.reply_address, None, HandlerExecutionError(self.address, exc), self.source
        )

    def _kept(self, reply: Reply, exc: BaseException) -> Reply:
        """A failure an interceptor raised on goes on as it was; the raise is logged."""
        logger.error("an interceptor raised on a failure for %r", self.address, exc_info=exc)
        return reply

    def _checked(self, value: object) -> Reply:
        """The reply for ``value``, converted to the consumer's declared return type, or the
        failure saying the handler returned an invalid type."""
        source = self.source
        returns = None if source is None or self.leg else source.returns
        if returns is not None and type(value) is not returns.exact:
            try:
                value = returns(value)
            except FATAL:
                raise
            except BaseException as exc:  # ValidationError, or whatever a validator raised
                error = HandlerExecutionError(
                    self.address,
                    exc,
                    f"the handler for {self.address!r} returned an invalid type: expected "
                    f"{returns.expected}, got {type(value).__name__}: {failure_summary(exc)}",
                )
                return Reply(self.reply_address, None, error, source)
        return Reply(self.reply_address, value, None, source)
