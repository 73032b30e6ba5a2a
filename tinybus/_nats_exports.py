"""Registrations as NATS subscriptions: one per exported address or pattern for its events,
and one queue subscription per exported consumer address, however many registrations share
it (counted in ``_Interest.wanted``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ._nats_subjects import ALL_CONSUMERS, CONSUMERS, EVENTS, subject_of
from ._patterns import is_pattern
from .errors import MessageEncodingError

if TYPE_CHECKING:
    from ._endpoint import Endpoint

logger = logging.getLogger("tinybus")


class Interest:
    """One subscription this bus wants: an address's (or pattern's) events, or an address's
    consumer queue; ``wanted`` counts the exported registrations that need it."""

    __slots__ = ("address", "queue", "ready", "space", "subject", "subscription", "wanted")

    def __init__(self, address: str, space: str, subject: str) -> None:
        self.address = address  # the route its messages are delivered to
        self.space = space
        self.subject = subject
        self.queue = subject if space == CONSUMERS else ""  # a consumer queue's group
        self.wanted = 0
        self.subscription: Subscription | None = None
        self.ready = asyncio.Event()  # subscribed, and connected


class Subscriber(Protocol):
    """The part of nats-py's ``Client`` that subscribes (typed as the bus uses it)."""

    async def subscribe(
        self, subject: str, queue: str = "", cb: Callable[[Msg], Awaitable[None]] | None = None
    ) -> Subscription: ...


type OnEvent = Callable[[Msg, str], None]
type OnConsumed = Callable[[Msg, bool], None]  # (its message, whether for every consumer)


def covers(allowed: str, address: str) -> bool:
    """Whether the pattern ``allowed`` covers ``address``: every address it may stand for, if
    it is a pattern itself (``orders.>`` covers ``orders.*``, ``orders.*`` does not cover
    ``orders.>``)."""
    wanted = address.split(".")
    segments = allowed.split(".")
    for index, segment in enumerate(segments):
        if segment == ">":
            return len(wanted) > index
        if index >= len(wanted):
            return False
        if segment == "*":
            if wanted[index] == ">":
                return False
        elif segment != wanted[index]:
            return False
    return len(segments) == len(wanted)


def check_patterns(patterns: Sequence[str] | None, name: str) -> tuple[str, ...] | None:
    if patterns is None:
        return None
    if isinstance(patterns, str) or not all(isinstance(p, str) and p for p in patterns):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"{name} must be a list of address patterns, got {patterns!r}")
    for pattern in patterns:
        is_pattern(pattern)  # ('>' only last: ValueError)
    return tuple(patterns)


class Exports:
    """What this bus offers other processes, and the subscriptions that make it so. With
    ``allowed`` (the transport's ``exports``), only the registrations whose address or
    pattern one of them covers; the others stay in this process, as ``local=True`` ones do."""

    def __init__(
        self, prefix: str, post: Callable[[Interest], None], allowed: tuple[str, ...] | None
    ) -> None:
        self.prefix = prefix
        self.post = post  # hands an interest to the writer, which reconciles it in order
        self.allowed = allowed
        self.interests: dict[tuple[str, str], Interest] = {}
        self.draining: set[asyncio.Task[None]] = set()  # subscriptions ending

    def offered(self, address: str) -> bool:
        allowed = self.allowed
        return allowed is None or any(covers(pattern, address) for pattern in allowed)

    def export(self, endpoint: Endpoint) -> None:
        address = endpoint.address
        if not self.offered(address):
            return
        pattern = is_pattern(address)
        try:
            keys = [(EVENTS, subject_of(self.prefix, EVENTS, address, pattern))]
            if endpoint.role == "consumer" and not pattern:
                keys.append((CONSUMERS, subject_of(self.prefix, CONSUMERS, address)))
                keys.append((ALL_CONSUMERS, subject_of(self.prefix, ALL_CONSUMERS, address)))
        except ValueError as exc:
            raise MessageEncodingError(address, str(exc)) from None
        for space, subject in keys:
            interest = self.interests.get((space, address))
            if interest is None:
                interest = self.interests[space, address] = Interest(address, space, subject)
            interest.wanted += 1
            if interest.wanted == 1:
                self.post(interest)

    def unexport(self, endpoint: Endpoint) -> None:
        if not self.offered(endpoint.address):
            return
        for interest in self._of(endpoint):
            interest.wanted -= 1
            if interest.wanted == 0:
                self.post(interest)

    def _of(self, endpoint: Endpoint) -> list[Interest]:
        spaces = (EVENTS, CONSUMERS, ALL_CONSUMERS) if endpoint.role == "consumer" else (EVENTS,)
        found = (self.interests.get((space, endpoint.address)) for space in spaces)
        return [interest for interest in found if interest is not None]

    async def subscribed(self, endpoint: Endpoint) -> None:
        """Wait until the subscriptions of ``endpoint`` are made (and the connection up)."""
        for interest in self._of(endpoint):
            await interest.ready.wait()

    async def reconcile(
        self, nc: Subscriber, interest: Interest, on_event: OnEvent, on_consumed: OnConsumed
    ) -> None:
        """Make the server's subscription match ``interest.wanted``."""
        if interest.wanted > 0 and interest.subscription is None:
            route = interest.address
            if interest.space != EVENTS:
                every = interest.space == ALL_CONSUMERS

                async def consumed(msg: Msg) -> None:
                    on_consumed(msg, every)

                callback = consumed
            else:

                async def event(msg: Msg) -> None:
                    on_event(msg, route)

                callback = event
            interest.subscription = await nc.subscribe(
                interest.subject, queue=interest.queue, cb=callback
            )
            interest.ready.set()
        elif interest.wanted == 0 and interest.subscription is not None:
            subscription, interest.subscription = interest.subscription, None
            interest.ready.clear()
            if self.interests.get((interest.space, interest.address)) is interest:
                del self.interests[interest.space, interest.address]
            # Drained, not dropped: what the server sent before it had the unsubscription is
            # still handled (a request then is answered, not lost). In a task of its own: a
            # drain waits a round trip, which the writer must not.
            task = asyncio.get_running_loop().create_task(_drain(subscription))
            self.draining.add(task)
            task.add_done_callback(self.draining.discard)

    def withdraw(self) -> None:
        """Offer nothing any more (the bus is closing)."""
        for interest in list(self.interests.values()):
            if interest.wanted:
                interest.wanted = 0
                self.post(interest)
        self.allowed = ()

    def disconnected(self) -> None:
        for interest in self.interests.values():
            interest.ready.clear()

    def reconnected(self) -> None:
        """nats-py has subscribed again to every subscription it had."""
        for interest in self.interests.values():
            if interest.subscription is not None:
                interest.ready.set()


async def _drain(subscription: Subscription) -> None:
    try:
        await subscription.drain()
    except Exception as exc:  # the connection is closing or gone: nothing left to handle
        logger.debug("NATS: draining %s failed: %r", subscription.subject, exc)
