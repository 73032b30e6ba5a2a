"""The seam for a transport between processes: what one must do, what the bus offers it.

A bus without a transport keeps every message in its process, at the cost of one ``is None``
test where a message could leave. With one (``EventBus(transport=...)``):

- every registration not made ``local=True`` is ``export``ed while it lasts, so the
  transport can make it reachable from other processes (and ``unexport``ed when it ends);
- a published message reaches the local handlers first, then ``Transport.publish`` hands it
  to the other processes' handlers;
- a sent or requested message goes to a local consumer when the address has one, else to
  ``Transport.send`` / ``Transport.request``, which say whether a remote consumer took it;
- answers to a remote request go back through the ``answer`` sink the transport gave with
  it; answers coming back for a local requester are pushed into the reply Subject
  (``TransportHost.answer``), so they take the same way as local ones;
- a scatter-gather request (``bus.request_all``) reaches the local consumers, then
  ``Transport.request_all`` hands it to every remote consumer; on their side the transport
  hands it over with ``TransportHost.receive_all``, which asks each local consumer once and
  sends each answer through ``answer``; every answer comes back to the requester's bus with
  the request's one reply address, through ``TransportHost.answer``.

The transport delivers what reaches this process through ``TransportHost.receive``: into the
Subject of its address, as a local message would be, but never handed back to the transport.
A published message that came in for one route (an address or a pattern this bus exported)
is delivered to that route's Subject only, so that a bus reached through several of its
routes delivers it once to each handler. What arrives and cannot be delivered (malformed,
refused) is reported on ``bus.errors`` through ``TransportHost.report``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._exchange import Reply
    from .codecs import CodecRegistry
    from .message import Message


class TransportHost(Protocol):
    """What a bus offers the transport that serves it."""

    codecs: CodecRegistry  # the bus's codecs, by name and by body type

    def receive(
        self,
        message: Message[Any],
        answer: Callable[[Reply], None] | None,
        timeout: float | None = None,
        route: str | None = None,
    ) -> None:
        """Deliver a message from another process to the local handlers; ``answer`` is where
        the answer to a request goes, ``timeout`` how long its requester still waits (a
        handler whose turn comes later skips it). A published message goes to the Subject
        of ``route`` only, when given, else to every route it matches."""
        ...

    def report(self, address: str, error: BaseException, message: Message[Any] | None) -> None:
        """Something from another process could not be delivered: on ``bus.errors``."""
        ...

    def receive_all(self, message: Message[Any], answer: Callable[[Reply], None]) -> int:
        """Deliver a scatter-gather request from another process to every local consumer of
        its address; each one's answer (a reply or a failure) goes to ``answer``, all with the
        message's reply address. Returns how many consumers it reached (0: none, or closed)."""
        ...

    def answer(self, reply: Reply) -> None:
        """An answer for a local requester (or for a local conversation's leg)."""
        ...


class Transport(Protocol):
    """Carries messages between this bus and the buses of other processes."""

    async def start(self, host: TransportHost) -> None:
        """Connect; from now on, ``host`` receives what other processes send here."""
        ...

    def closing(self) -> None:
        """The bus has begun to close: take no new messages in from other processes (so that
        they go to the consumers of other processes meanwhile); answers still go out."""
        ...

    async def close(self) -> None:
        """Disconnect, after the bus failed its pending requests and stopped its handlers."""
        ...

    def export(self, endpoint: Endpoint) -> None:
        """Make a registration reachable from other processes (its address and role)."""
        ...

    def unexport(self, endpoint: Endpoint) -> None:
        """The registration ended: other processes no longer reach it here."""
        ...

    async def wait_exported(self, endpoint: Endpoint) -> None:
        """Return once other processes can reach the exported registration ``endpoint``."""
        ...

    def publish(self, message: Message[Any]) -> None:
        """Hand a published message to the other processes' handlers."""
        ...

    def send(self, message: Message[Any]) -> bool:
        """Hand a sent message to one remote consumer; False when there is none."""
        ...

    def request(self, message: Message[Any], timeout: float) -> bool:
        """Hand a request to one remote consumer (its answer comes back through
        ``TransportHost.answer``); False when there is none."""
        ...

    def request_all(self, message: Message[Any], timeout: float) -> int | None:
        """Hand a scatter-gather request to every remote consumer of its address (on their
        side, through ``TransportHost.receive_all``). Every answer comes back through
        ``TransportHost.answer``, each a ``Reply`` to ``message.reply_address``: a reply or a
        failure per consumer, many for one reply address, until ``timeout`` seconds have
        passed (later ones are dropped by the bus). Returns how many remote consumers it
        reached, 0 when none, or ``None`` when it cannot count them (as on a broker where
        subscribers are anonymous, such as NATS): the requester then waits out the timeout
        instead of returning when every answer is in."""
        ...
