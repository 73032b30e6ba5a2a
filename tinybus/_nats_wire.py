"""What crosses NATS for a message or an answer: the body as bytes (JSON, or a codec's), and
TinyBus's own NATS headers, never the user's headers as NATS headers.

NATS headers are a plain dict in nats-py (a repeated name keeps its last value, names are
restricted, values trimmed) and a ``Status`` header is read as the server's own status. So a
message's ``Headers`` travel as one JSON list of ``[name, value]`` pairs in ``Tb-Headers``
(ASCII, no line breaks), and come back exactly: every name's case, every repeated value, in
order. The other ``Tb-`` headers say what the message is.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from typing import Any, cast

from pydantic_core import to_json

from . import errors
from .codecs import CodecRegistry
from .errors import (
    EventBusError,
    HandlerExecutionError,
    MessageEncodingError,
    RemoteError,
)
from .headers import Headers
from .message import EMPTY_HEADERS

KIND = "Tb-Kind"  # publish, send, request; an answer: reply, or failure
HEADERS = "Tb-Headers"  # the message's Headers, a JSON list of [name, value]
CODEC = "Tb-Codec"  # the codec that encoded the body; absent: JSON
TIMEOUT = "Tb-Timeout"  # a request: how long its requester still waits, in seconds
NEXT = "Tb-Next"  # an answer that awaits an answer (a conversation): where that goes
STATUS = "Status"  # the server's: "503" on an answer means no responders

# The TinyBus errors an answer may carry, by class name: each crosses as its message and
# the attributes that describe it, and is rebuilt as the same class on the other side.
_ATTRIBUTES = ("code", "text", "expected", "errors", "reason", "timeout")


class WireError(ValueError):
    """Bytes from the wire that no TinyBus sender would make."""


def encode_headers(headers: Mapping[str, str]) -> str:
    pairs = headers.pairs() if isinstance(headers, Headers) else Headers(headers).pairs()
    return json.dumps(pairs, ensure_ascii=True, separators=(",", ":"))


def decode_headers(text: str | None) -> Headers:
    if not text:
        return EMPTY_HEADERS
    try:
        pairs = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"its {HEADERS} header is not JSON we read ({_why(exc)})") from None
    if not isinstance(pairs, list) or not all(
        isinstance(p, list)
        and len(cast("list[Any]", p)) == 2
        and all(isinstance(v, str) for v in cast("list[Any]", p))
        for p in cast("list[Any]", pairs)
    ):
        raise WireError(f"its {HEADERS} header is not a list of [name, value] strings")
    return Headers([(p[0], p[1]) for p in cast("list[list[str]]", pairs)])


def encode_body(body: Any, codecs: CodecRegistry, address: str) -> tuple[bytes, str | None]:
    """The body's bytes and the name of the codec that made them (None: JSON). A body that
    has a codec (its type's default, along its MRO, or the selector's) goes through it; any
    other through pydantic's JSON encoder."""
    if codecs.active:
        codec = codecs.chosen(body)
        if codec is not None:
            try:
                return codec.encode(body), codec.name
            except Exception as exc:
                raise MessageEncodingError(
                    address, f"its codec {codec.name!r} raised {type(exc).__name__}: {exc}"
                ) from exc
    try:
        return to_json(body), None
    except Exception as exc:  # PydanticSerializationError, or what a serializer raised
        raise MessageEncodingError(
            address,
            f"its body of type {type(body).__name__} cannot be encoded as JSON ({exc}); send "
            "a pydantic model, a dataclass or JSON-like data, or register a codec for it "
            "with bus.register_codec(codec, default_for=...)",
        ) from exc


def decode_body(data: bytes, codec_name: str | None, codecs: CodecRegistry) -> Any:
    if codec_name is not None:
        try:
            codec = codecs.get(codec_name)
        except ValueError as exc:
            raise WireError(str(exc)) from None
        try:
            return codec.decode(data)
        except Exception as exc:
            raise WireError(
                f"its codec {codec_name!r} could not decode it: {type(exc).__name__}: {exc}"
            ) from exc
    try:
        return json.loads(data) if data else None
    except (ValueError, RecursionError) as exc:
        raise WireError(f"its body is not JSON we read ({_why(exc)})") from None


def encode_error(error: BaseException) -> bytes:
    """An answer's failure: its class (a TinyBus error), message and describing attributes;
    a handler's exception as its type name, message and traceback text."""
    fields: dict[str, Any] = {"class": type(error).__name__, "message": str(error)}
    if isinstance(error, HandlerExecutionError):
        original = error.original_error
        if isinstance(original, RemoteError):  # (relayed: it stays the first process's)
            fields["type"], fields["detail"] = original.type_name, original.message
            fields["traceback"] = original.traceback
        else:
            fields["type"] = type(original).__name__
            fields["detail"] = _printed(original)
            fields["traceback"] = "".join(traceback.format_exception(original))
    elif not isinstance(error, EventBusError):
        fields["class"] = "EventBusError"
    for name in _ATTRIBUTES:
        value = getattr(error, name, None)
        if value is not None:
            fields[name] = value
    try:
        return to_json(fields, fallback=str)
    except Exception:  # (errors' details that do not encode: their text still does)
        return to_json({k: v for k, v in fields.items() if k != "errors"}, fallback=str)


def decode_error(data: bytes, address: str) -> EventBusError:
    """The failure an answer carries, rebuilt as the same TinyBus error."""
    try:
        fields = json.loads(data)
        name = fields["class"]
        message = fields["message"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise WireError("its failure is not a JSON object with a class and a message") from None
    cls = getattr(errors, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, EventBusError)):
        cls = EventBusError
    error = cls.__new__(cls)
    Exception.__init__(error, str(message))
    error.address = address
    for attribute in _ATTRIBUTES:
        if attribute in fields:
            setattr(error, attribute, fields[attribute])
    if isinstance(error, HandlerExecutionError):
        remote = RemoteError(
            str(fields.get("type", "Exception")),
            str(fields.get("detail", "")),
            str(fields.get("traceback", "")),
        )
        error.original_error = remote
        error.__cause__ = remote
    return error


def _why(error: ValueError | RecursionError) -> str:
    """Why JSON from the wire was refused. Nesting deeper than the interpreter's recursion
    limit is refused (``json`` raises ``RecursionError``), never let out of the subscription's
    callback, where it would leave a request unanswered."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return str(error)


def _printed(error: BaseException) -> str:
    try:
        return str(error)
    except Exception as exc:
        return f"(its message could not be printed: {type(exc).__name__})"
