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
  (``TransportHost.answer``), so they take the same way as local ones.

The transport delivers what reaches this process through ``TransportHost.receive``: into the
Subject of its address, as a local message would be, but never handed back to the transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._exchange import Reply
    from .message import Message


class TransportHost(Protocol):
    """What a bus offers the transport that serves it."""

    def receive(self, message: Message[Any], answer: Callable[[Reply], None] | None) -> None:
        """Deliver a message from another process to the local handlers; ``answer`` is where
        the answer to a request goes."""
        ...

    def answer(self, reply: Reply) -> None:
        """An answer for a local requester (or for a local conversation's leg)."""
        ...


class Transport(Protocol):
    """Carries messages between this bus and the buses of other processes."""

    async def start(self, host: TransportHost) -> None:
        """Connect; from now on, ``host`` receives what other processes send here."""
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
