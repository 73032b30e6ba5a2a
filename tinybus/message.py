"""``Message[T]``: what a consumer receives, and what crosses the bus for every delivery."""

from __future__ import annotations

import itertools
import secrets
import sys
from copy import deepcopy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from ._address import to_address
from ._carrier import Carrier, Kind, Responder
from .errors import EventBusError
from .headers import Headers, HeadersInput

if TYPE_CHECKING:
    from .options import DeliveryOptions

EMPTY_HEADERS = Headers()

# Ids are unique in the process: a random prefix per process and a counter, which costs far
# less per message than a uuid4 and stays unique when several buses run side by side.
_ID_PREFIX = secrets.token_hex(4)
_id_counter = itertools.count(1)


# Where a request's reply goes: this prefix and the request's id.
REPLY_PREFIX = "__tinybus.reply."


def new_message_id() -> str:
    return f"{_ID_PREFIX}-{next(_id_counter)}"


def freeze_headers(headers: object) -> Headers:
    """``headers`` as ``Headers``: a copy, independent of the caller's dict, read-only, and with
    names and values checked to be ``str``."""
    if headers is None:
        return EMPTY_HEADERS
    if isinstance(headers, Headers):
        return headers  # already a read-only copy
    frozen = Headers(headers)
    return frozen if frozen else EMPTY_HEADERS


class Message[T](Carrier):
    """One message on the bus: a body and its envelope.

    ``id`` is unique for every message; ``reply_address`` is set only for a request (it is
    where the reply goes) and is ``None`` for published and sent messages; ``kind`` says how
    it travels: ``"publish"`` (to every handler of its address), ``"send"`` (to one consumer)
    or ``"request"`` (to one consumer, which answers). ``headers`` are ``Headers``: read-only,
    case-insensitive, multi-valued (``headers.getall(name)``). Treat a message as immutable:
    the same object is handed to every listener of a publish.
    """

    __slots__ = ("address", "body", "headers", "reply_address")

    body: T
    address: str
    headers: Headers
    reply_address: str | None

    def __init__(
        self,
        body: T,
        *,
        id: str | None = None,
        address: Any = None,
        headers: HeadersInput | None = None,
        reply_address: str | None = None,
    ) -> None:
        self.body = body
        self.serial = next(_id_counter) if id is None else id
        self.address = "" if address is None else to_address(address)
        self.headers = freeze_headers(headers)
        self.reply_address = reply_address
        self.responder: Responder | None = None
        self.copies = False
        self.kind: Kind = "request" if reply_address is not None else "publish"

    @property
    def id(self) -> str:
        serial = self.serial
        return serial if type(serial) is str else f"{_ID_PREFIX}-{serial}"

    @classmethod
    def create[B](
        cls,
        body: B,
        *,
        address: Any = None,
        headers: HeadersInput | None = None,
    ) -> Message[B]:
        """Build a message by hand, e.g. to call a consumer directly in a test."""
        return Message(body, address=address, headers=headers)

    def reply(
        self,
        body: object,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        """Answer the request now, e.g. before the handler finishes the rest of its work.

        ``headers`` go with the reply (over ``options.headers``); ``options`` may also name a
        codec or ask for ``copy=True``, as for a request (a reply waits for nothing: its
        timeout and retries do not apply). The reply goes through the codec rules a request
        does. The requester gets the first outcome only: a later ``reply``, ``fail`` or the
        handler's return value is ignored (logged at debug level). On a published or sent
        message, which nobody awaits, it does nothing, as in Vert.x.
        """
        if self.responder is not None:
            self.responder.reply(
                body, None if headers is None else freeze_headers(headers), options
            )

    def fail(self, code: int, text: str) -> None:
        """Fail the request: the requester gets ``ReplyFailedError`` with ``code`` and ``text``
        (kind ``RECIPIENT_FAILURE``). First outcome only, and nothing on a published or sent
        message, as for ``reply``."""
        if type(code) is not int:
            raise TypeError(f"a failure code is an int, got {code!r}")
        if self.responder is not None:
            self.responder.fail(code, str(text))

    async def reply_and_request(
        self,
        body: object,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
    ) -> Message[Any]:
        """Answer the request and wait for the requester's answer to that answer, which is
        returned as a ``Message`` that can be answered in turn: a conversation. The requester
        sees the reply with ``request(..., full=True)`` and answers it with ``reply``, ``fail``
        or ``reply_and_request``. ``timeout`` (default: ``options.timeout``, else the bus's)
        applies to this leg; ``HandlerTimeoutError`` when no answer comes, ``ReplyFailedError``
        when it fails. ``headers`` and ``options`` are as for ``reply``. Only a message that
        awaits an answer can be answered this way."""
        if self.responder is None:
            raise EventBusError(
                f"the message to {self.address!r} awaits no answer: it was published or sent"
            )
        return await self.responder.reply_and_request(
            body, None if headers is None else freeze_headers(headers), options, timeout
        )

    def with_headers(self, headers: HeadersInput) -> Message[T]:
        """A copy of this message (same id, body and addresses) with ``headers`` added over its
        own; what an interceptor returns to stamp a header."""
        copy = copy_with_body(self, self.body)
        copy.headers = self.headers.merged(freeze_headers(headers))
        copy.copies = self.copies  # the same body: its handlers still get copies if asked
        return copy

    def _repr_html_(self) -> str:
        from ._display import message_html  # notebooks only: not on the import path

        return message_html(
            self.address, self.id, self.reply_address, list(self.headers.items()), self.body
        )

    def __repr__(self) -> str:
        reply = f", reply_address={self.reply_address!r}" if self.reply_address else ""
        headers = f", headers={dict(self.headers)!r}" if self.headers else ""
        return (
            f"Message(address={self.address!r}, id={self.id!r}{headers}{reply}, body={self.body!r})"
        )


def copy_with_body[B](message: Message[Any], body: B) -> Message[B]:
    """The same message (id included) carrying ``body``, e.g. a body converted by validation."""
    copy = cast("Message[B]", object.__new__(Message))
    copy.body = body
    copy.serial = message.serial
    copy.address = message.address
    copy.headers = message.headers
    copy.reply_address = message.reply_address
    copy.responder = message.responder
    copy.copies = False  # its body is the copy already
    copy.kind = message.kind
    return copy


def make_message[B](
    body: B, address: str, headers: Headers, kind: Kind, reply_address: str | None = None
) -> Message[B]:
    """The bus's own constructor: its arguments are already checked, so it skips ``__init__``.
    A request's reply address is made from its id unless given."""
    message: Message[B] = object.__new__(Message)  # pyright: ignore[reportUnknownVariableType]
    message.body = body
    message.address = address
    message.headers = headers
    message.serial = number = next(_id_counter)
    if kind == "request" and reply_address is None:
        reply_address = f"{REPLY_PREFIX}{_ID_PREFIX}-{number}"
    message.reply_address = reply_address
    message.responder = None
    message.copies = False
    message.kind = kind
    return message


def own_copy[B](body: B) -> B:
    """A body of one's own, for ``DeliveryOptions(copy=True)``: a deep copy, except of frozen
    pydantic models, which nobody can change."""
    pydantic = sys.modules.get("pydantic")  # (not imported: the body is no pydantic model)
    if pydantic is not None and isinstance(body, pydantic.BaseModel):
        model: Any = body
        if model.model_config.get("frozen"):
            return body
    return deepcopy(body)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message seen crossing the bus, and how: what ``observe_all()`` emits and what
    interceptors are given.

    ``kind`` is ``"publish"``, ``"send"`` or ``"request"`` for a message on its way to its
    handlers, ``"reply"`` for a reply on its way back to its requester (``message.address`` is
    then the reply address) and ``"failure"`` for a failed one (``message.body`` is the error
    the requester gets).
    """

    kind: Kind
    message: Message[Any]

    @property
    def address(self) -> str:
        return self.message.address

    @property
    def headers(self) -> Headers:
        return self.message.headers

    @property
    def body(self) -> Any:
        return self.message.body


class Drop:
    """The type of ``tinybus.DROP``, what an inbound interceptor returns to drop a message."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = Drop()
"""What an inbound interceptor returns to drop a message for the registration it is about to
reach (``bus.add_inbound_interceptor``)."""
