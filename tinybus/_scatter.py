"""Scatter-gather: one request to every consumer of an address, every outcome collected.

The request is made once (``Dispatch.make``: headers, codec, interceptors), then each consumer
of the address gets a copy of it, pushed into the address's Subject for that consumer
(``AddressSubject.on_next_to``, which leaves the ring's turn where it is), with an ``Exchange``
of its own: one answer per consumer, as for ``request``. Every copy carries the same reply
address, where a ``Gathering`` waits in the reply Subject (``ReplySubject.gatherings``): each
answer that comes out of the reply Subject is added to it until the deadline. With a
transport, the request also goes to the other processes' consumers
(``Transport.request_all``), whose answers come back into the same reply Subject.

The wait ends when every consumer reached has answered (when their number is known), at the
deadline, or when the bus closes (``BusClosedError``). Answers after it are late: dropped, or
reported when they are failures, as for ``request``; copies still waiting in a buffer then
are not delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from ._answers import Answers
from ._dispatch import Dispatch
from ._exchange import Conversations, Exchange, Reply
from ._loop import LoopBinding
from ._replies import ReplySubject
from ._routes import AddressSubject, Routes
from ._transport import Transport
from ._validation import validator_for
from .errors import BusClosedError, EventBusError, HandlerExecutionError, handler_name
from .gather import Failed, Gathered, Outcome, Replied
from .headers import HeadersInput
from .message import Message, freeze_headers, make_message
from .options import DeliveryOptions


class Gathering:
    """The waiting side of a scatter-gather request: the outcomes that arrived in time."""

    __slots__ = ("address", "closed", "deadline", "expected", "outcomes", "reply_address", "whole")

    def __init__(self, reply_address: str, address: str, deadline: float) -> None:
        self.reply_address = reply_address
        self.address = address
        self.deadline = deadline  # on the loop's clock
        self.outcomes: list[Reply] = []
        self.expected: int | None = None  # how many answers end the wait (None: the deadline)
        self.whole: asyncio.Future[None] | None = None  # set once every expected answer came
        self.closed: BusClosedError | None = None  # the bus closed while it waited

    def take(self, reply: Reply) -> None:
        """An answer came out of the reply Subject in time."""
        self.outcomes.append(reply)
        self._check()

    def expect(self, count: int | None) -> None:
        self.expected = count
        self._check()

    def close(self) -> None:
        """The bus closed while it waited: the requester gets ``BusClosedError``."""
        self.closed = BusClosedError(
            f"the event bus closed before every consumer of {self.address!r} replied",
            self.address,
        )
        self._finish()

    def _check(self) -> None:
        if self.expected is not None and len(self.outcomes) >= self.expected:
            self._finish()

    def _finish(self) -> None:
        whole = self.whole
        if whole is not None and not whole.done():
            whole.set_result(None)


class NoConversation:
    """What a consumer's ``message.reply_and_request`` meets in a scatter-gather request: a
    gather takes answers, it does not answer them. The requester gets the failure as that
    consumer's outcome, and the consumer gets it raised, at once rather than at its timeout.
    Other answers take the bus's way out (``answers``)."""

    def __init__(self, conversations: Conversations) -> None:
        self.answers: Answers = conversations.answers

    async def converse(
        self,
        answering: Exchange,
        body: object,
        headers: Mapping[str, str] | None,
        options: DeliveryOptions | None,
        timeout: float | None,
    ) -> Message[Any]:
        error = EventBusError(
            f"a scatter-gather request to {answering.address!r} cannot be answered with "
            "reply_and_request (request_all takes answers, it does not answer them): reply "
            "with a value"
        )
        answering.sink(Reply(answering.reply_address, None, error, answering.source))
        raise error


class Scatter:
    """The bus's scatter-gather requests, and the other processes' ones it answers."""

    def __init__(
        self,
        binding: LoopBinding,
        routes: Routes,
        dispatch: Dispatch,
        replies: ReplySubject,
        conversations: Conversations,
        transport: Transport | None,
    ) -> None:
        self.binding = binding
        self.routes = routes
        self.dispatch = dispatch
        self.replies = replies
        self.transport = transport
        self.no_conversation = NoConversation(conversations)

    async def request_all(
        self,
        address: str,
        body: Any,
        headers: HeadersInput | None,
        timeout: float,
        options: DeliveryOptions | None,
        response_type: Any,
    ) -> Gathered[Any]:
        if self.binding.closed:
            raise BusClosedError(address=address)
        subject = self.routes.consumers_of(address)  # (refuses a pattern)
        message = self.dispatch.make("request", address, body, headers, options)
        replies = self.replies
        reply_address: str = message.reply_address  # type: ignore[assignment]
        gathering = Gathering(reply_address, address, replies.clock() + timeout)
        replies.gatherings[reply_address] = gathering
        answering: list[Exchange] = []
        try:
            if subject is not None:
                answering = self.to_each(subject, message, replies.push, False)
            asked: int | None = len(answering)
            if self.transport is not None:
                remote = self.transport.request_all(message, timeout)
                asked = None if remote is None else asked + remote
            if gathering.closed is None and (asked is None or len(gathering.outcomes) < asked):
                gathering.whole = asyncio.get_running_loop().create_future()
                gathering.expect(asked)
                try:
                    async with asyncio.timeout_at(gathering.deadline):
                        await gathering.whole
                except TimeoutError:
                    pass  # (the deadline: what came is the result)
        except BaseException as error:
            self.dispatch.done(message, error)
            raise
        finally:
            del replies.gatherings[reply_address]
            for exchange in answering:
                exchange.abandoned = True  # nobody waits any more: late from now on
        self.dispatch.done(message, gathering.closed)
        if gathering.closed is not None:
            raise gathering.closed
        outcomes = [_outcome(reply, address, response_type) for reply in gathering.outcomes]
        return Gathered(outcomes, asked)

    def to_each(
        self,
        subject: AddressSubject,
        message: Message[Any],
        sink: Callable[[Reply], None],
        remote: bool,
    ) -> list[Exchange]:
        """Push a copy of ``message`` to each consumer of ``subject`` (for a ``remote``
        requester, each not made ``local=True``), in ring order from the one whose turn it is,
        each answered through an ``Exchange`` of its own into ``sink``; the exchanges of those
        it reached."""
        address = message.address
        reply_address = message.reply_address
        reached: list[Exchange] = []
        for consumer in subject.consumers_in_turn():
            if remote and consumer.local:
                continue
            copy = make_message(message.body, address, message.headers, "request", reply_address)
            copy.copies = message.copies
            exchange = Exchange(reply_address or "", address, sink, self.no_conversation)
            exchange.takes_turns = False  # an inline consumer runs in a task: all at once
            copy.responder = exchange
            if self.dispatch.request(subject, copy, consumer):
                reached.append(exchange)
        return reached


def _outcome(reply: Reply, address: str, response_type: Any) -> Outcome[Any]:
    source = reply.source
    handler = None if source is None else handler_name(source.handler)
    error = reply.error
    if error is None:
        body = reply.body
        if response_type is not None:
            try:
                body = validator_for(response_type).check(body, address, "the reply from")
            except EventBusError as exc:
                return Failed(exc, handler)
        return Replied(body, freeze_headers(reply.headers), handler)
    if not isinstance(error, EventBusError):
        error = HandlerExecutionError(address, error)
    return Failed(error, handler)
