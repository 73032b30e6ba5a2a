"""``Carrier``: what the bus keeps on a message beyond what its handlers read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from .message import Message
    from .options import DeliveryOptions

type Kind = Literal["publish", "send", "request", "reply", "failure"]


class Responder(Protocol):
    """What answers a message that awaits an answer (``Exchange``): once, the first answer.

    ``reply``, ``fail`` and ``reply_and_request`` are what ``Message`` offers its handler;
    the rest is how the consumer's endpoint hands over the handler's outcome."""

    turn: Endpoint | None  # an inline consumer whose turn the requester runs
    takes_turns: bool  # whether the requester can run an inline consumer's turn
    source: Endpoint | None  # the consumer that answers, once the request reached it

    def reply(
        self, body: object, headers: Mapping[str, str] | None, options: DeliveryOptions | None
    ) -> None: ...

    def fail(self, code: int, text: str) -> None: ...

    async def reply_and_request(
        self,
        body: object,
        headers: Mapping[str, str] | None,
        options: DeliveryOptions | None,
        timeout: float | None,
    ) -> Message[Any]: ...

    def settle(self, value: object) -> None:
        """The handler returned ``value``: the answer, unless one was given already."""
        ...

    def settle_failure(self, error: BaseException, wrap: bool, counted: bool = False) -> bool:
        """The handler raised ``error`` (``wrap``: in ``HandlerExecutionError``), or the
        request could not reach it: the answer, unless one was given already (then False).
        ``counted``: reported (and counted) on ``bus.errors`` already."""
        ...

    def is_awaited(self) -> bool:
        """Whether the requester still waits for the answer."""
        ...


class Carrier:
    """The bus's own fields of a ``Message``, which subclasses this. ``kind`` is public on
    ``Message``; the others are the bus's, set when it makes the message."""

    __slots__ = ("copies", "kind", "responder", "serial")

    kind: Kind
    """``"publish"``: to every handler of the address; ``"send"``: to one consumer;
    ``"request"``: to one consumer, which answers; ``"reply"``: an answer."""
    responder: Responder | None  # what answers it, for a message that awaits an answer
    copies: bool  # DeliveryOptions(copy=True): each handler gets its own copy of the body
    serial: int | str  # the id, formatted only when read (most messages never have it read)
