"""``NatsTransport``: the same bus across processes, on a NATS server (``pip install
tinybus[nats]``). Only this module and its private helpers (``tinybus/_nats_*.py``) import
nats-py.

``EventBus(transport=NatsTransport(["nats://127.0.0.1:4222"]))``, entered with ``async
with`` (or ``await bus.start()``), connects; every registration not made ``local=True``
becomes a subscription. ``docs/nats.md`` has the mapping and every rule.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Generator, Sequence
from typing import TYPE_CHECKING, Any, cast

from nats.aio.client import Client
from nats.errors import FlushTimeoutError
from nats.errors import TimeoutError as NatsTimeoutError

from . import _nats_wire as wire
from ._exchange import Reply
from ._nats_exports import Exports, Interest, Subscriber, check_patterns
from ._nats_incoming import Incoming
from ._nats_pending import Outgoing, Pending
from ._nats_subjects import ALL_CONSUMERS, CONSUMERS, EVENTS, check_prefix, subject_of
from .errors import BusClosedError, EventBusError, MessageEncodingError
from .message import REPLY_PREFIX, Message

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._transport import TransportHost

logger = logging.getLogger("tinybus")

# Options the transport sets itself: it must not receive its own publishes (local handlers
# got them without the server), and it learns of disconnections through its callbacks.
_OWN_OPTIONS = frozenset(
    {"servers", "no_echo", "error_cb", "disconnected_cb", "reconnected_cb", "closed_cb"}
)

# subject, reply, payload, headers (None: none, a plain NATS message)
type _Publication = tuple[str, str, bytes, dict[str, str] | None]
_LAST: _Publication = ("", "", b"", {})  # close(): the writer stops after what came before


class _Rest:
    """The rest of a publication that suspended at its first step (nats-py's buffer was
    full), awaited by the writer before anything posted after it."""

    __slots__ = ("item", "step", "suspended")

    def __init__(self, step: Coroutine[Any, Any, None], suspended: Any, item: _Publication) -> None:
        self.step = step
        self.suspended = suspended  # what it yielded: the future it waits for
        self.item = item

    def __await__(self) -> Generator[Any, Any, None]:
        step, value = self.step, self.suspended
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # (the writer cancelled: so is the step)
                try:
                    value = step.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = step.send(sent)
                except StopIteration:
                    return


class NatsTransport:
    """Carries a bus's messages to the buses of other processes through NATS.

    ``servers`` are the NATS URLs; ``prefix`` starts every subject (buses with different
    prefixes on one server do not see each other). ``no_responders_grace`` (seconds) is how
    long a request or send is sent again when the server answers that no consumer
    subscribes, within the request's own deadline: a consumer that just subscribed on
    another server of a cluster, or just after a reconnection, is not seen at once.

    ``exports`` and ``imports`` are allow-lists of address patterns (``None``: all). Only the
    registrations whose address or pattern an export covers are offered to other processes
    (the rest stay local); only messages to an address an import covers are accepted from
    them (a refused request is answered with ``HandlerNotFoundError``, a refused publish or
    send reported on ``bus.errors``).

    Any other keyword (``user``, ``password``, ``token``, ``user_credentials``, ``nkeys_seed``,
    ``tls``, ``tls_hostname``, ``name``, ``max_reconnect_attempts``, ...) goes to
    ``nats.connect`` as it is.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "tinybus",
        no_responders_grace: float = 0.025,
        exports: Sequence[str] | None = None,
        imports: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        own = _OWN_OPTIONS.intersection(options)
        if own:
            raise ValueError(f"NatsTransport sets {', '.join(sorted(own))} itself")
        if isinstance(no_responders_grace, bool) or not no_responders_grace >= 0:
            raise ValueError(
                f"no_responders_grace must be a number of seconds >= 0, got {no_responders_grace!r}"
            )
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.prefix = check_prefix(prefix)
        self.options: dict[str, Any] = {"max_reconnect_attempts": -1, **options}  # (restarts)
        self.imports = check_patterns(imports, "imports")
        self._exports = Exports(self.prefix, self._post, check_patterns(exports, "exports"))
        self._pending = Pending(float(no_responders_grace), self._resend, self._now)
        self._nc: Client | None = None
        self._incoming: Incoming | None = None
        # What goes to the server, in order: publications, and subscriptions to reconcile.
        self._outbox: deque[_Publication | Interest | _Rest] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._busy = False  # the writer is sending what it took from the outbox
        self._closed = False

    # -- connecting and closing ------------------------------------------------------------

    async def start(self, host: TransportHost) -> None:
        if self._closed:
            raise BusClosedError("this NatsTransport was closed; make a new one")
        nc = Client()
        try:
            await nc.connect(
                self.servers,
                no_echo=True,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                **self.options,
            )
        except BaseException:
            await nc.close()  # (nats-py leaves the refused connection's socket open)
            raise
        self._nc = nc
        inbox = nc.new_inbox()
        incoming = self._incoming = Incoming(host, self.prefix, inbox, self._pending, self._post)
        incoming.imports = self.imports

        async def answered(msg: Any) -> None:
            incoming.answer(msg)

        await cast(Subscriber, nc).subscribe(inbox + ".*", cb=answered)
        self._outbox.extend(self._exports.interests.values())  # registrations made before
        self._writer = asyncio.get_running_loop().create_task(
            self._write(nc), name="tinybus NATS writer"
        )
        self._wake.set()

    def closing(self) -> None:
        """Unsubscribe everything now, while the bus's handlers finish: other processes'
        consumers take the requests meanwhile; the answers of this one's still go out."""
        self._exports.withdraw()

    async def close(self) -> None:
        """Stop taking messages in, send what handlers answered while the bus closed, and
        drain the connection (nats-py's ``drain``: unsubscribe, flush, close)."""
        if self._closed:
            return
        self._closed = True
        if self._incoming is not None:
            self._incoming.closed = True
        self._pending.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            self._post(_LAST)
            await writer
        if self._exports.draining:  # what arrived before the unsubscriptions is handled
            await asyncio.wait(self._exports.draining)
        nc = self._nc
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except Exception as exc:  # the server is gone: nothing left to drain
                logger.debug("NATS drain at close failed: %r", exc)
                await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("NATS: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        self._exports.disconnected()
        if not self._closed:
            logger.warning("NATS: disconnected from the server; reconnecting")

    async def _on_reconnected(self) -> None:
        self._exports.reconnected()
        logger.warning("NATS: reconnected")

    # -- exports: registrations as subscriptions -------------------------------------------

    def export(self, endpoint: Endpoint) -> None:
        self._exports.export(endpoint)

    def unexport(self, endpoint: Endpoint) -> None:
        self._exports.unexport(endpoint)

    async def wait_exported(self, endpoint: Endpoint) -> None:
        """Once subscribed, a round trip to the server (a flush): it has the subscriptions
        then. Waits across a reconnection; bound it with ``asyncio.timeout``."""
        if not self._exports.offered(endpoint.address):
            raise EventBusError(
                f"{endpoint.address!r} is not offered to other processes: none of this "
                f"NatsTransport's exports {list(self._exports.allowed or ())} covers it"
            )
        await self._exports.subscribed(endpoint)
        nc = self._nc
        while nc is not None and not self._closed:
            try:
                await nc.flush(timeout=1)
                return
            except (NatsTimeoutError, FlushTimeoutError):
                await self._exports.subscribed(endpoint)

    # -- outgoing ------------------------------------------------------------------------

    def publish(self, message: Message[Any]) -> None:
        subject = self._subject(EVENTS, message.address)
        headers, payload = self._encoded(message, "publish")
        # A publish with a JSON body and no headers of its own is a plain NATS message: its
        # subject says what it is, and nats-py's header handling costs as much as the rest.
        self._post((subject, "", payload, None if len(headers) == 1 else headers))

    def send(self, message: Message[Any]) -> bool:
        subject = self._subject(CONSUMERS, message.address)
        headers, payload = self._encoded(message, "send")
        token = self._pending.send_token()
        self._pending.keep(token, message.address, subject, payload, headers, None)
        self._post((subject, self._reply_subject(token), payload, headers))
        return True

    def request(self, message: Message[Any], timeout: float) -> bool:
        subject = self._subject(CONSUMERS, message.address)
        headers, payload = self._encoded(message, "request")
        headers[wire.TIMEOUT] = repr(timeout)
        reply_address = message.reply_address
        assert reply_address is not None
        token = reply_address.removeprefix(REPLY_PREFIX)
        self._pending.keep(token, message.address, subject, payload, headers, timeout)
        self._post((subject, self._reply_subject(token), payload, headers))
        return True

    def request_all(self, message: Message[Any], timeout: float) -> int | None:
        """To every process with a consumer of the address; each answers once per consumer.
        NATS subscribers are anonymous, so the count is unknown (None): the requester waits
        out its timeout. "No responders" (no process has one) leaves it with the local
        answers."""
        subject = self._subject(ALL_CONSUMERS, message.address)
        headers, payload = self._encoded(message, "request")
        headers[wire.TIMEOUT] = repr(timeout)
        reply_address = message.reply_address
        assert reply_address is not None
        self._post(
            (
                subject,
                self._reply_subject(reply_address.removeprefix(REPLY_PREFIX)),
                payload,
                headers,
            )
        )
        return None

    def _resend(self, token: str, outgoing: Outgoing) -> None:
        headers = outgoing.headers
        if wire.TIMEOUT in headers:  # what is left of the requester's wait
            headers[wire.TIMEOUT] = repr(outgoing.deadline - self._now())
        self._post((outgoing.subject, self._reply_subject(token), outgoing.payload, headers))

    def _reply_subject(self, token: str) -> str:
        assert self._incoming is not None
        return f"{self._incoming.inbox}.{token}"

    def _subject(self, space: str, address: str) -> str:
        try:
            return subject_of(self.prefix, space, address)
        except ValueError as exc:
            raise MessageEncodingError(address, str(exc)) from None

    def _encoded(self, message: Message[Any], kind: str) -> tuple[dict[str, str], bytes]:
        """The NATS headers and payload of ``message``; ``MessageEncodingError`` when its
        body cannot be encoded or the whole is over the server's ``max_payload``."""
        incoming, nc = self._incoming, self._nc
        if incoming is None or nc is None:
            raise BusClosedError(
                "the bus's NATS transport is not connected: enter the bus with `async with` "
                "or call `await bus.start()` first",
                message.address,
            )
        payload, codec = wire.encode_body(message.body, incoming.host.codecs, message.address)
        headers = {wire.KIND: kind}
        if codec is not None:
            headers[wire.CODEC] = codec
        if message.headers:
            headers[wire.HEADERS] = wire.encode_headers(message.headers)
        # (as the server counts it: the header block, "NATS/1.0\r\n" ... "\r\n", and payload)
        size = len(payload) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 12
        if size > nc.max_payload:
            raise MessageEncodingError(
                message.address,
                f"it is {size} bytes with its headers, over the server's max_payload of "
                f"{nc.max_payload} bytes; send a reference to the data (a key, a URL) "
                "instead, or raise max_payload in the server's configuration",
            )
        return headers, payload

    def _post(self, item: _Publication | Interest) -> None:
        nc = self._nc
        if self._outbox or self._busy or nc is None or isinstance(item, Interest) or not item[0]:
            self._outbox.append(item)
            self._wake.set()
            return
        # Nothing waits before it: hand it to nats-py now, which buffers it for its flusher
        # without suspending, unless its buffer is full. Then the writer finishes it first.
        subject, reply, payload, headers = item
        step = nc.publish(subject, payload, reply=reply, headers=headers)
        try:
            suspended = step.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._unsent(item, exc)
            return
        self._outbox.append(_Rest(step, suspended, item))
        self._wake.set()

    async def _write(self, nc: Client) -> None:
        """The one task that talks to the server: publications in order, and subscriptions
        made and ended as registrations come and go."""
        incoming = self._incoming
        assert incoming is not None
        outbox, wake = self._outbox, self._wake
        subscriber = cast(Subscriber, nc)
        while True:
            await wake.wait()
            wake.clear()
            self._busy = True  # (while it works, nothing overtakes what it holds)
            while outbox:
                item = outbox.popleft()
                try:
                    if isinstance(item, _Rest):
                        await item
                        continue
                    if isinstance(item, Interest):
                        await self._exports.reconcile(
                            subscriber, item, incoming.event, incoming.consumed
                        )
                        continue
                    if item is _LAST:
                        return
                    subject, reply, payload, headers = item
                    await nc.publish(subject, payload, reply=reply, headers=headers)
                except Exception as exc:
                    self._unsent(item.item if isinstance(item, _Rest) else item, exc)
            self._busy = False

    def _unsent(self, item: _Publication | Interest, exc: Exception) -> None:
        """The server could not be given ``item`` (the connection is closed, or its buffer
        for an outage is full): a request fails at once; the rest is logged."""
        if isinstance(item, Interest):
            logger.error("NATS: could not (un)subscribe %s: %r", item.subject, exc)
            return
        subject, reply, _, _ = item
        logger.warning("NATS: could not send to %s: %r", subject, exc)
        token = reply.rpartition(".")[2]
        outgoing = self._pending.answered(token) if reply else None
        if outgoing is not None and self._incoming is not None and not token.startswith("s"):
            error = BusClosedError(
                f"the request to {outgoing.address!r} could not be sent to NATS: {exc!r}",
                outgoing.address,
            )
            self._incoming.host.answer(Reply(REPLY_PREFIX + token, None, error, None))

    def _now(self) -> float:
        return asyncio.get_running_loop().time()
