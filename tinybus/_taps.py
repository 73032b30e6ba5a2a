"""What sees messages on their way: interceptors, and ``observe_all()`` subscribers.

Interceptors run on every published, sent and requested message before it is pushed into its
address's Subject; ``observe_all()`` subscribers see those messages (after the interceptors)
and every reply and failure coming back, through a relay attached to the reply Subject while
they are subscribed. Both cost one truth test per message while there are none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from reactivex import abc

from ._exchange import Reply
from ._subject import LoopSubject
from .errors import handler_name
from .message import Envelope, Kind, Message, freeze_headers, make_message

logger = logging.getLogger("tinybus")

type Interceptor = Callable[[Envelope], Message[Any] | None]


def replacement(interceptor: object, message: Message[Any], replaced: object) -> Message[Any]:
    """What an interceptor returned instead of ``message``, checked: a message to the same
    address (an interceptor may change headers or the body, never where a message goes)."""
    if not isinstance(replaced, Message):
        raise TypeError(
            f"interceptor {handler_name(interceptor)} returned "
            f"{type(replaced).__name__}; it must return a Message or None"
        )
    changed: Message[Any] = replaced  # pyright: ignore[reportUnknownVariableType]
    if changed.address != message.address or changed.reply_address != message.reply_address:
        raise ValueError(
            f"interceptor {handler_name(interceptor)} changed the address of a message; "
            "it may change headers (message.with_headers) but not where it goes"
        )
    return changed


class _Relay(abc.ObserverBase[Reply]):
    """Shows each reply to the taps, after the reply Subject has settled its request."""

    __slots__ = ("_tap",)

    def __init__(self, tap: LoopSubject[Envelope]) -> None:
        self._tap = tap

    def on_next(self, value: Reply) -> None:
        failed = value.error is not None
        message = make_message(
            value.error if failed else value.body,
            value.reply_address,
            freeze_headers(value.headers),
            "reply",
        )
        if failed:
            message.kind = "failure"
        self._tap.on_next(Envelope(message.kind, message))

    def on_error(self, error: Exception) -> None:
        """The reply Subject never errors."""

    def on_completed(self) -> None:
        """The bus closed."""


class Taps:
    """The bus's interceptors and its ``observe_all()`` stream."""

    def __init__(self, replies: LoopSubject[Reply]) -> None:
        self.interceptors: list[Interceptor] = []
        self._replies = replies
        self.subject: LoopSubject[Envelope] = LoopSubject(
            self._on_subscriber_error, on_first=self._relay_replies, on_empty=self._end_relay
        )
        self._relay: _Relay | None = None
        self.active = False  # whether any message must go through ``outbound``

    def _update(self) -> None:
        self.active = bool(self.interceptors) or bool(len(self.subject))

    def outbound(self, kind: Kind, message: Message[Any]) -> Message[Any]:
        """``message`` after the interceptors, shown to ``observe_all()`` subscribers."""
        message = self.intercept(kind, message)
        if len(self.subject):
            self.subject.on_next(Envelope(kind, message))
        return message

    def intercept(self, kind: Kind, message: Message[Any]) -> Message[Any]:
        """``message`` after the interceptors (a message on its way in, or an answer on its
        way back: ``"reply"``, ``"failure"``)."""
        for interceptor in self.interceptors:
            replaced = cast(object, interceptor(Envelope(kind, message)))
            if replaced is not None:
                message = replacement(interceptor, message, replaced)
        return message

    def add(self, interceptor: Interceptor) -> None:
        if not callable(interceptor):
            raise TypeError(f"an interceptor must be callable, got {interceptor!r}")
        self.interceptors.append(interceptor)
        self._update()

    def remove(self, interceptor: Interceptor) -> None:
        if interceptor in self.interceptors:
            self.interceptors.remove(interceptor)
            self._update()

    def _relay_replies(self) -> None:
        self.active = True
        if self._relay is None:
            self._relay = _Relay(self.subject)
            self._replies.attach(self._relay, first=True)

    def _end_relay(self) -> None:
        self._update()
        relay, self._relay = self._relay, None
        if relay is not None:
            self._replies.detach(relay)

    def complete(self) -> None:
        self.subject.on_completed()  # (which does not call on_empty: the relay ends here)
        self._end_relay()

    def _on_subscriber_error(self, exc: Exception, observer: object, value: object) -> None:
        logger.error("a subscriber of observe_all() raised; it stays subscribed", exc_info=exc)
