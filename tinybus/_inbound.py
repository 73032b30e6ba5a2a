"""``Inbound``: the bus's inbound interceptors, run on a message just before a handler gets it.

They run after routing, once per registration the message reaches (a publish to three
listeners passes them three times), in ``Endpoint.call`` (or, for a registration whose pipe
turns messages into bodies, as the message enters that pipe, the last place it is a message),
before the bus's instrumentation traces the handler. Each is given ``Envelope(kind, message)``
and returns ``None`` (let it through), a replacement message to the same address (stamped
headers, another body), or ``DROP``. A drop, or an interceptor raising, discards the message
for this registration: a requester fails at once with ``MessageDroppedError`` (reason
``"intercepted"``), another drop is reported on ``bus.errors``; either is counted as dropped.
One truth test per message while there are none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ._taps import replacement
from .errors import MessageDroppedError
from .message import DROP, Drop, Envelope, Message

if TYPE_CHECKING:
    from ._endpoint import Endpoint


type InboundInterceptor = Callable[[Envelope], Message[Any] | Drop | None]


class Inbound:
    """The bus's inbound interceptors, shared by all its endpoints."""

    __slots__ = ("interceptors",)

    def __init__(self) -> None:
        self.interceptors: list[InboundInterceptor] = []

    def add(self, interceptor: InboundInterceptor) -> None:
        if not callable(interceptor):
            raise TypeError(f"an inbound interceptor must be callable, got {interceptor!r}")
        self.interceptors.append(interceptor)

    def remove(self, interceptor: InboundInterceptor) -> None:
        if interceptor in self.interceptors:
            self.interceptors.remove(interceptor)

    def admit(self, endpoint: Endpoint, message: Message[Any]) -> Message[Any] | None:
        """``message`` after the interceptors, for ``endpoint``; ``None`` when one dropped
        it (the drop is handled: its requester failed, or it was reported)."""
        for interceptor in list(self.interceptors):
            try:
                seen = cast(object, interceptor(Envelope(message.kind, message)))
                if seen is None:
                    continue
                if seen is not DROP:
                    message = replacement(interceptor, message, seen)
                    continue
                cause = None
            except Exception as exc:  # a bug in the interceptor: a drop, with what it raised
                cause = exc
            error = MessageDroppedError(endpoint, "intercepted", interceptor)
            error.__cause__ = cause
            if message.kind == "request":
                message.responder.source = endpoint  # pyright: ignore[reportOptionalMemberAccess]
            endpoint.drop(message, error)
            return None
        return message
