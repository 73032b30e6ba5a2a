"""What arrives from NATS: published messages (for one route), sent and requested messages
(for this bus's consumers), and answers at this bus's inbox. Bytes no TinyBus sender would
make are refused: a request with a failure its requester can read, anything else reported
on ``bus.errors``; no handler is called for them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from . import _nats_wire as wire
from ._exchange import Reply
from ._nats_exports import covers
from ._nats_pending import Pending
from ._nats_subjects import ALL_CONSUMERS, CONSUMERS, EVENTS, address_of
from .errors import EventBusError, HandlerNotFoundError, MessageEncodingError
from .message import REPLY_PREFIX, Message, new_message_id

if TYPE_CHECKING:
    from ._transport import TransportHost

type Post = Callable[[tuple[str, str, bytes, dict[str, str] | None]], None]


class Incoming:
    """Turns NATS messages into bus messages and answers, and answers into NATS messages."""

    def __init__(
        self, host: TransportHost, prefix: str, inbox: str, pending: Pending, post: Post
    ) -> None:
        self.host = host
        self.prefix = prefix
        self.inbox = inbox  # this bus's inbox: answers arrive at <inbox>.<token>
        self.pending = pending
        self.post = post
        self.closed = False
        self.imports: tuple[str, ...] | None = None  # the addresses accepted (None: all)

    def _imported(self, address: str) -> None:
        imports = self.imports
        if imports is not None and not any(covers(pattern, address) for pattern in imports):
            raise HandlerNotFoundError(
                address,
                f"a message to {address!r} from another process was refused: none of this "
                f"bus's imports {list(imports)} covers it",
            )

    def _address(self, msg: Msg, space: str) -> str:
        try:
            return address_of(msg.subject, len(self.prefix) + len(space) + 2)
        except ValueError as exc:
            raise wire.WireError(str(exc)) from None

    def _message(self, msg: Msg, address: str) -> Message[Any]:
        headers = msg.headers or {}
        body = wire.decode_body(msg.data, headers.get(wire.CODEC), self.host.codecs)
        return Message(
            body, address=address, headers=wire.decode_headers(headers.get(wire.HEADERS))
        )

    def event(self, msg: Msg, route: str) -> None:
        """A message published to a route (address or pattern) this bus exported."""
        if self.closed:
            return
        try:
            address = self._address(msg, EVENTS)
            self._imported(address)
            message = self._message(msg, address)
            headers = msg.headers
            kind = "publish" if headers is None else headers.get(wire.KIND)  # (plain: publish)
            if kind != "publish":
                raise wire.WireError(f"its {wire.KIND} is {kind!r}, not 'publish'")
        except HandlerNotFoundError as exc:  # (outside the imports)
            self.host.report(route, exc, None)
            return
        except wire.WireError as exc:
            self.host.report(route, _refused(msg.subject, exc), None)
            return
        self.host.receive(message, None, route=route)

    def consumed(self, msg: Msg, every: bool) -> None:
        """A message sent or requested to one of this bus's consumer addresses (``every``:
        a scatter-gather request, for each of them)."""
        if self.closed:
            return
        headers = msg.headers or {}
        kind = headers.get(wire.KIND)
        # (a send carries a reply subject too, for the server's "no responders" only)
        answer = self.answerer(msg.reply) if kind != "send" and msg.reply else None
        address = msg.subject
        try:
            address = self._address(msg, ALL_CONSUMERS if every else CONSUMERS)
            if kind not in ("send", "request") or (kind == "request" and answer is None):
                raise wire.WireError(f"its {wire.KIND} is {kind!r}, not 'send' or 'request'")
            if every and answer is None:
                raise wire.WireError(f"its {wire.KIND} is {kind!r}, not 'request'")
            timeout = _timeout(headers.get(wire.TIMEOUT)) if answer is not None else None
            self._imported(address)
            message = self._message(msg, address)
        except HandlerNotFoundError as exc:  # (outside the imports)
            if answer is not None:
                answer(Reply("", None, exc, None))
            self.host.report(address, exc, None)
            return
        except wire.WireError as exc:
            refused = _refused(msg.subject, exc)
            if answer is not None:
                answer(Reply("", None, refused, None))
            self.host.report(address, refused, None)
            return
        message.kind = kind
        if answer is not None:
            if timeout is not None and timeout <= 0:
                return  # its requester has given up already
            message.reply_address = REPLY_PREFIX + new_message_id()
            if every:
                self.host.receive_all(message, answer)
                return
        self.host.receive(message, answer, timeout=timeout)

    def answerer(self, reply_subject: str) -> Callable[[Reply], None]:
        """Where the answers to a request (or to a conversation's leg) go: the inbox subject
        of whoever awaits them."""

        def answer(reply: Reply) -> None:
            headers = {wire.KIND: "reply"}
            if reply.error is None:
                try:
                    payload, codec = wire.encode_body(
                        reply.body, self.host.codecs, reply.reply_address
                    )
                    if codec is not None:
                        headers[wire.CODEC] = codec
                except MessageEncodingError as exc:
                    headers[wire.KIND], payload = "failure", wire.encode_error(exc)
            else:
                headers[wire.KIND], payload = "failure", wire.encode_error(reply.error)
            if reply.headers:
                headers[wire.HEADERS] = wire.encode_headers(reply.headers)
            if reply.next_address is not None:  # a conversation: its answer comes here
                headers[wire.NEXT] = f"{self.inbox}.{reply.next_address.removeprefix(REPLY_PREFIX)}"
            # A plain reply (JSON, nothing else) goes without NATS headers, as a publish does.
            self.post(
                (
                    reply_subject,
                    "",
                    payload,
                    None if len(headers) == 1 and headers[wire.KIND] == "reply" else headers,
                )
            )

        return answer

    def answer(self, msg: Msg) -> None:
        """An answer at this bus's inbox: a reply, a failure, or the server's no-responders."""
        if self.closed:
            return
        token = msg.subject[len(self.inbox) + 1 :]
        headers = msg.headers
        if headers is None:  # a plain reply: JSON, no headers of its own
            headers = {}
            kind = "reply"
        else:
            kind = headers.get(wire.KIND)
        host = self.host
        if kind is None and headers.get(wire.STATUS) == "503":
            failed = self.pending.no_responders(token)
            if failed is not None:
                outgoing, error = failed
                if token.startswith("s"):  # a send: nobody awaits it
                    host.report(outgoing.address, error, None)
                else:
                    host.answer(Reply(REPLY_PREFIX + token, None, error, None))
            return
        outgoing = self.pending.answered(token)
        address = outgoing.address if outgoing is not None else REPLY_PREFIX + token
        reply_address = REPLY_PREFIX + token
        try:
            if kind == "failure":
                body, error = None, wire.decode_error(msg.data, address)
            elif kind == "reply":
                body = wire.decode_body(msg.data, headers.get(wire.CODEC), host.codecs)
                error = None
            else:
                raise wire.WireError(f"its {wire.KIND} is {kind!r}, not 'reply' or 'failure'")
            reply = Reply(
                reply_address, body, error, None, wire.decode_headers(headers.get(wire.HEADERS))
            )
        except wire.WireError as exc:
            failure = EventBusError(f"the answer from {address!r} was malformed: {exc}")
            host.answer(Reply(reply_address, None, failure, None))
            return
        following = headers.get(wire.NEXT)
        if following is not None and error is None:  # it awaits an answer: send it there
            reply.next_address = REPLY_PREFIX + new_message_id()
            reply.answer_sink = self.answerer(following)
        host.answer(reply)


def _refused(subject: str, error: wire.WireError) -> wire.WireError:
    return wire.WireError(f"a malformed message from NATS on {subject!r} was refused: {error}")


def _timeout(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise wire.WireError(f"its {wire.TIMEOUT} {text!r} is not a number of seconds") from None
    if value != value:  # NaN
        raise wire.WireError(f"its {wire.TIMEOUT} is not a number")
    return value
