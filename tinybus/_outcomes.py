"""``Outcomes``: what becomes of a handler's outcome, and of a message dropped before it.

A request's answer or failure goes to its requester (through the request's ``Exchange``); any
other failure, and a drop nobody awaits, goes to ``bus.errors`` (``Failures``). ``Endpoint``
inherits these, the one place they are written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ._failures import Failures
from ._tasks import Tasks
from .errors import HandlerFailure, MessageDroppedError
from .message import Message
from .stats import Counters

# Re-raised after being handed on: a handler's task ends with them (cancelled, or closed);
# in the caller's task (an inline turn), a handler's own cancellation is its failure only.
ENDS_TASK = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt, SystemExit)
ENDS_CALLER = (GeneratorExit, KeyboardInterrupt, SystemExit)


class Outcomes:
    """A registration's outcomes (part of ``Endpoint``, whose attributes these are)."""

    __slots__ = ()

    address: str
    handler: Callable[..., Any]
    failures: Failures
    failed: int
    tasks: Tasks
    counts: Counters

    def settle(self, message: Message[Any], value: Any) -> None:
        """A request's handler returned ``value``: its answer (unless one was given)."""
        if message.kind == "request":
            message.responder.settle(value)  # pyright: ignore[reportOptionalMemberAccess]

    def raised(self, message: Message[Any] | None, exc: BaseException, own_task: bool) -> bool:
        """What the handler's coroutine raised, handed on; whether it must be raised on: in
        the handler's own task, a cancellation (the task ends cancelled), an interrupt, the
        coroutine being closed; in the caller's task (an inline turn), the caller's own
        cancellation, which is not the handler's failure, an interrupt, a closing."""
        if isinstance(exc, asyncio.CancelledError):
            if own_task and self.tasks.closing:
                return True  # close()'s own: its requesters have their BusClosedError already
            if not own_task:
                caller = asyncio.current_task()
                if caller is not None and caller.cancelling():
                    return True  # the caller's cancellation: the handler's only through it
        self.settle_failure(message, exc)
        return isinstance(exc, ENDS_TASK if own_task else ENDS_CALLER)

    def settle_failure(
        self, message: Message[Any] | None, exc: BaseException, wrap: bool = True
    ) -> None:
        """The handler raised ``exc`` (or its argument was invalid: ``wrap=False``): the
        requester's answer for a request, else a failure on ``bus.errors``."""
        if message is None or message.kind != "request":
            self.report(message, exc)
        elif not message.responder.settle_failure(exc, wrap):  # type: ignore[union-attr]
            self.report(message, exc)  # its requester has its answer already

    def report(self, message: Message[Any] | None, exc: BaseException) -> None:
        """A failure nobody awaits (drops are counted where they happen)."""
        if not isinstance(exc, MessageDroppedError):
            self.failed += 1
        self.failures.report(HandlerFailure(self.address, self.handler, exc, message))

    def drop(self, message: Message[Any], error: MessageDroppedError) -> None:
        """``message`` is dropped here, before the handler got it: counted, and ``discard``."""
        self.counts.dropped += 1
        self.discard(message, error)

    def discard(self, item: Any, error: MessageDroppedError) -> None:
        """``item`` was dropped before the handler got it: its requester fails at once, or
        the drop is reported."""
        if type(item) is Message:
            message: Message[Any] = item  # pyright: ignore[reportUnknownVariableType]
            responder = message.responder
            if responder is not None and message.kind == "request":
                if responder.is_awaited():
                    responder.settle_failure(error, False)
                return  # (else its requester has its outcome already: timeout, close)
            self.report(message, error)
        else:
            self.report(None, error)
