"""Failures nobody awaits: logged, counted, kept, and pushed into ``bus.errors``."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reactivex import abc

from ._subject import LoopSubject
from .errors import HandlerFailure, MessageDroppedError, handler_name
from .message import Message
from .stats import Counters

if TYPE_CHECKING:
    from .registration import Registration

logger = logging.getLogger("tinybus")

RECENT_FAILURES = 5


class Failures:
    """Where every failure nobody awaits goes: a handler's that raised, a pipeline's, an
    ``observe()`` subscriber's, and messages dropped before their handler got them.

    Each is logged on the ``tinybus`` logger (failures at ERROR, drops at WARNING, since flow
    control or the registration's end chose them), counted (``failed``; drops are counted
    where they happen), kept among ``recent``, and pushed into ``errors``."""

    def __init__(self, counts: Counters) -> None:
        self.counts = counts
        self.errors: LoopSubject[HandlerFailure] = LoopSubject(self._on_subscriber_error)
        self.recent: deque[HandlerFailure] = deque(maxlen=RECENT_FAILURES)

    def report(self, failure: HandlerFailure) -> None:
        exc = failure.exception
        if isinstance(exc, MessageDroppedError):
            logger.warning("dropped at %r: %s", failure.address, exc)
        else:
            logger.error(
                "%s at %r raised %s",
                handler_name(failure.handler),
                failure.address,
                type(exc).__name__,
                exc_info=exc,
            )
            self.counts.failed += 1
        self.recent.append(failure)
        self.errors.on_next(failure)

    def on_observer_error(
        self, exc: Exception, observer: abc.ObserverBase[Any], value: Any
    ) -> None:
        """An observer of an address's stream (an ``observe()`` subscriber) raised."""
        if isinstance(value, Message):
            message: Message[Any] = value  # pyright: ignore[reportUnknownVariableType]
            self.report(HandlerFailure(message.address, observer, exc, message))
        else:
            self.report(HandlerFailure("", observer, exc, None))

    def _on_subscriber_error(self, exc: Exception, observer: object, value: object) -> None:
        logger.error("a subscriber of bus.errors raised; it stays subscribed", exc_info=exc)


def call_ended(callback: Callable[[Registration], object], registration: Registration) -> None:
    """An ``on_unregistered`` callback, whose failure is logged (nobody awaits it)."""
    try:
        callback(registration)
    except Exception:
        logger.exception("an on_unregistered callback of %r raised", registration)
