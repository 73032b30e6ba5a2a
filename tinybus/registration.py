"""``Registration``: the handle returned for every consumer and listener."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._failures import call_ended

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._flow import Overflow


class Registrations(Protocol):
    """What a registration asks of the bus that made it."""

    def unregister(self, endpoint: Endpoint) -> None: ...

    def pause(self, endpoint: Endpoint) -> None: ...

    async def wait_exported(self, endpoint: Endpoint) -> None: ...


class Registration:
    """One handler registered at one address (or pattern), as a consumer or as a listener.

    ``unregister()`` removes it; calling it again does nothing. Messages already being handled
    finish; messages waiting in its buffer are dropped (their requesters fail at once with
    ``MessageDroppedError``), and none reach it afterwards.

    ``pause()`` stops handling: messages wait in the buffer, under the registration's overflow
    policy, until ``resume()``. ``queued`` is how many wait now and ``dropped`` how many were
    dropped or refused so far; ``delivered``, ``replied`` and ``failed`` count its handler's
    calls, successful replies and failures.
    """

    __slots__ = ("_bus", "_endpoint")

    def __init__(self, endpoint: Endpoint, bus: Registrations) -> None:
        self._endpoint = endpoint
        self._bus = bus

    @property
    def address(self) -> str:
        return self._endpoint.address

    @property
    def handler(self) -> Callable[..., Any]:
        return self._endpoint.handler

    @property
    def role(self) -> str:
        """``"consumer"`` or ``"listener"``."""
        return self._endpoint.role

    @property
    def max_concurrency(self) -> int | None:
        return self._endpoint.max_concurrency

    @property
    def max_buffered(self) -> int:
        """How many messages may wait for the handler. Assigning it on a live registration
        applies at once: what waits beyond a smaller limit meets the overflow policy as a new
        message would (``"block"``: it waits outside the buffer, never lost; the drops drop
        the oldest or the newest, reported), and under ``"error"`` a smaller limit than what
        waits now is refused with ``ValueError`` (its messages were accepted already)."""
        return self._endpoint.max_buffered

    @max_buffered.setter
    def max_buffered(self, max_buffered: int) -> None:
        if type(max_buffered) is not int or max_buffered < 0:
            raise ValueError(f"max_buffered must be an int >= 0, got {max_buffered!r}")
        endpoint = self._endpoint
        if endpoint.mailbox is not None:
            endpoint.mailbox.resize(max_buffered)
        endpoint.max_buffered = max_buffered

    @property
    def overflow(self) -> Overflow:
        return self._endpoint.overflow

    @property
    def delivered(self) -> int:
        return self._endpoint.delivered

    @property
    def replied(self) -> int:
        return self._endpoint.replied

    @property
    def failed(self) -> int:
        return self._endpoint.failed

    @property
    def is_registered(self) -> bool:
        return self._endpoint.registered

    @property
    def is_paused(self) -> bool:
        mailbox = self._endpoint.mailbox
        return mailbox is not None and mailbox.paused

    @property
    def queued(self) -> int:
        mailbox = self._endpoint.mailbox
        return 0 if mailbox is None else mailbox.queued

    @property
    def dropped(self) -> int:
        mailbox = self._endpoint.mailbox
        return 0 if mailbox is None else mailbox.dropped

    def pause(self) -> None:
        """Stop handling messages; they wait in the buffer until ``resume()``. Does nothing
        once unregistered."""
        if self._endpoint.registered:
            self._bus.pause(self._endpoint)

    def resume(self) -> None:
        """Handle the waiting messages (in order, within ``max_concurrency``) and the next.
        They start at the loop's next turn, never inside this call."""
        mailbox = self._endpoint.mailbox
        if mailbox is not None:
            mailbox.resume()

    def fetch(self, count: int) -> None:
        """While paused, let up to ``count`` more waiting messages (or the next to come) be
        handled, in order, as Vert.x's ``pause()``/``fetch(n)``; the registration stays
        paused. Fetches add up; ``resume()`` ends the pause, ``pause()`` forgets what was
        fetched and not yet handled. Does nothing when not paused. Handlers start at the
        loop's next turn, never inside this call."""
        if type(count) is not int or count < 1:
            raise ValueError(f"fetch() takes a count of messages, an int >= 1, got {count!r}")
        mailbox = self._endpoint.mailbox
        if mailbox is not None and self._endpoint.registered:
            mailbox.fetch(count)

    def unregister(self) -> None:
        if self._endpoint.registered:
            self._bus.unregister(self._endpoint)

    def on_unregistered(self, callback: Callable[[Registration], object]) -> None:
        """Call ``callback(registration)`` once, when this registration ends: unregistered,
        its pipeline completed or failed for good, or the bus closed. Called at once if it
        has ended already."""
        endpoint = self._endpoint
        if endpoint.registered:
            if endpoint.ends is None:
                endpoint.ends = {}
            endpoint.ends[object()] = callback
        else:
            call_ended(callback, self)

    async def wait_unregistered(self) -> None:
        """Return once this registration has ended (see ``on_unregistered``). A wait given up
        (cancelled, timed out) leaves nothing behind."""
        endpoint = self._endpoint
        if not endpoint.registered:
            return
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def end(_: Registration) -> None:
            if not ended.done() and not ended.get_loop().is_closed():
                ended.set_result(None)

        ends = endpoint.ends
        if ends is None:
            ends = endpoint.ends = {}
        ends[ended] = end
        try:
            await ended
        finally:
            ends.pop(ended, None)  # (a wait given up leaves nothing behind)

    async def wait_exported(self) -> None:
        """Return once other processes can reach this registration through the bus's
        transport (at once without one, or for a ``local=True`` registration). On NATS: once
        the server has its subscriptions; a cluster's other servers learn of them a moment
        later, which a requester's no-responders grace covers. Wrap it in
        ``asyncio.timeout`` to bound the wait (the transport may be reconnecting)."""
        if self._endpoint.registered:
            await self._bus.wait_exported(self._endpoint)

    def __repr__(self) -> str:
        state = "registered" if self.is_registered else "unregistered"
        if self.is_paused:
            state += ", paused"
        name = getattr(self.handler, "__qualname__", repr(self.handler))
        return f"<Registration {self.role} {name} at {self.address!r} ({state})>"
