"""Messages from other processes, as a transport hands them over (``TransportHost``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ._dispatch import Dispatch
from ._exchange import Conversations, Exchange, Reply
from ._failures import Failures
from ._loop import LoopBinding
from ._replies import ReplySubject
from ._routes import Routes
from ._scatter import Scatter
from .codecs import CodecRegistry
from .errors import BusClosedError, HandlerFailure, HandlerNotFoundError
from .message import Message

logger = logging.getLogger("tinybus")


class RemoteExchange(Exchange):
    """A request from another process: its requester waits there until ``deadline`` (this
    loop's clock), so a handler whose turn comes after it skips it as one already answered."""

    __slots__ = ("clock",)

    def __init__(
        self,
        reply_address: str,
        address: str,
        sink: Callable[[Reply], None],
        conversations: Conversations,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(reply_address, address, sink, conversations)
        self.clock = clock
        self.takes_turns = False  # nobody here awaits an inline turn

    def waited(self) -> bool:
        return not self.abandoned and self.clock() < self.deadline


class Remote:
    """The bus's side of its transport: what arrives is pushed into the local Subjects as a
    local message would be (but never handed back to the transport); a request's answer goes
    back through the ``answer`` sink the transport gave with it; answers for local requesters
    enter the reply Subject, as local ones do."""

    def __init__(
        self,
        binding: LoopBinding,
        routes: Routes,
        dispatch: Dispatch,
        replies: ReplySubject,
        conversations: Conversations,
        scatter: Scatter,
        failures: Failures,
    ) -> None:
        self.binding = binding
        self.routes = routes
        self.dispatch = dispatch
        self.replies = replies
        self.conversations = conversations
        self.scatter = scatter
        self.failures = failures
        self.codecs: CodecRegistry = dispatch.codecs

    def receive(
        self,
        message: Message[Any],
        answer: Callable[[Reply], None] | None,
        timeout: float | None = None,
        route: str | None = None,
    ) -> None:
        address = message.address
        if message.kind == "request":
            assert answer is not None
            assert message.reply_address is not None
            clock = self.replies.clock
            exchange = RemoteExchange(
                message.reply_address, address, answer, self.conversations, clock
            )
            exchange.deadline = clock() + (float("inf") if timeout is None else timeout)
            message.responder = exchange
            if self.binding.closed:
                exchange.settle_failure(BusClosedError(address=address), False)
                return
            subject = self.routes.consumers_of(address)
            if subject is None or not self.dispatch.from_afar(subject, message):
                exchange.settle_failure(HandlerNotFoundError(address), False)
            return
        if self.binding.closed:
            logger.debug("dropped a %s to %r from another process: closed", message.kind, address)
            return
        if message.kind == "publish":
            if route is None:
                self.dispatch.deliver(message)
                return
            subject = self.routes.find(route)
            if subject is not None:
                self.dispatch.from_afar(subject, message)
            return
        subject = self.routes.consumers_of(address)
        if subject is None or not self.dispatch.from_afar(subject, message):
            self.report(address, HandlerNotFoundError(address), message)

    def receive_all(self, message: Message[Any], answer: Callable[[Reply], None]) -> int:
        if self.binding.closed:
            return 0
        subject = self.routes.consumers_of(message.address)
        if subject is None:
            return 0
        return len(self.scatter.to_each(subject, message, answer, True))

    def answer(self, reply: Reply) -> None:
        self.replies.push(reply)

    def report(self, address: str, error: BaseException, message: Message[Any] | None) -> None:
        self.failures.report(HandlerFailure(address, "(from another process)", error, message))
