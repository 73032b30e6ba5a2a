"""Routing: which registrations a message reaches. Running handlers is ``_delivery``'s job.

Every address that has registrations (or ``observe`` subscribers) has a ``Route``: its
``LoopSubject``, which carries published messages to every consumer and listener subscribed to
it, and its consumers in registration order, from which ``request`` and ``send`` pick one
round-robin. A route disappears with its last subscriber, so addresses that come and go
leave nothing behind.

Listeners may register at a pattern (``user.*``, ``user.>``): such a route lives in
``patterns`` and is found through a ``PatternIndex``, which caches the routes matching each
concrete address.
"""

from __future__ import annotations

from typing import Any

from reactivex import abc

from ._patterns import PatternIndex, ensure_concrete, is_pattern
from ._subject import LoopSubject, ObserverErrorHandler
from .errors import HandlerAlreadyRegisteredError, HandlerNotFoundError
from .message import Message
from .registration import Registration

INDEX_FROM = 8


def _hashable(handler: object) -> bool:
    try:
        hash(handler)
    except Exception:  # unhashable (a bound method of an unhashable object, say)
        return False
    return True


def _index(members: list[Registration]) -> dict[object, Registration]:
    return {member.handler: member for member in members if _hashable(member.handler)}


# A plain route's registrations: those started first, then the inline ones (``Route.plain``).
type Plain = tuple[tuple[Registration, ...], tuple[Registration, ...]]


class Route:
    __slots__ = (
        "address",
        "consumer_index",
        "consumers",
        "listener_index",
        "listeners",
        "next_consumer",
        "plain_of",
        "plain_registrations",
        "published",
        "requested",
        "sent",
        "subject",
    )

    def __init__(self, address: str, subject: LoopSubject[Message[Any]]) -> None:
        self.address = address
        self.subject = subject
        self.published = self.sent = self.requested = 0  # for bus.stats()
        self.consumers: list[Registration] = []
        self.listeners: list[Registration] = []
        # Each hashable handler of the lists above -> its registration, for an O(1) duplicate
        # check at registration, made once a list has INDEX_FROM members (shorter ones are
        # scanned: most addresses have one handler, and a dict would cost them memory). A list
        # holds more members than its index only when some of their handlers are unhashable:
        # then a registration scans the list.
        self.consumer_index: dict[object, Registration] | None = None
        self.listener_index: dict[object, Registration] | None = None
        self.next_consumer = 0
        # plain()'s answer, and the subject's observers it was worked out for.
        self.plain_registrations: Plain | None = None
        self.plain_of: tuple[abc.ObserverBase[Message[Any]], ...] | None = None

    def plain(self) -> Plain | None:
        """The registrations behind the subject's observers, in order, when every one is a
        registration whose handler takes the body with no pipe and no buffer: a publish may
        then call them without going through the subject. Those that are not inline come
        first, then the inline ones. None otherwise."""
        observers = self.subject.subscribers
        if observers is not self.plain_of:  # (a new tuple on every (un)subscribe)
            self.plain_of = observers
            registrations: list[Registration | None] = [
                getattr(observer, "registration", None) for observer in observers
            ]
            plain = [
                registration
                for registration in registrations
                if registration is not None
                and registration._pipeline is None  # pyright: ignore[reportPrivateUsage]
                and registration._mailbox is None  # pyright: ignore[reportPrivateUsage]
                and not registration._takes_messages  # pyright: ignore[reportPrivateUsage]
            ]
            self.plain_registrations = (
                (
                    tuple(r for r in plain if not r._inline),  # pyright: ignore[reportPrivateUsage]
                    tuple(r for r in plain if r._inline),  # pyright: ignore[reportPrivateUsage]
                )
                if len(plain) == len(observers)
                else None
            )
        return self.plain_registrations


class Router:
    def __init__(self, on_observer_error: ObserverErrorHandler) -> None:
        self.routes: dict[str, Route] = {}
        self.patterns: dict[str, Route] = {}
        self._index: PatternIndex[Route] = PatternIndex()
        self._on_observer_error = on_observer_error

    def find(self, address: str) -> Route | None:
        """The route of an exact address or of a pattern, if it exists."""
        return self.routes.get(address) or self.patterns.get(address)

    def ensure(self, address: str) -> Route:
        pattern = is_pattern(address)
        table = self.patterns if pattern else self.routes
        route = table.get(address)
        if route is None:
            subject: LoopSubject[Message[Any]] = LoopSubject(
                self._on_observer_error, on_empty=lambda: self._drop_if_unused(address, pattern)
            )
            route = table[address] = Route(address, subject)
            if pattern:
                self._index.add(address, route)
        return route

    def _drop_if_unused(self, address: str, pattern: bool) -> None:
        table = self.patterns if pattern else self.routes
        route = table.get(address)
        if route is not None and not route.subject.subscribers:
            del table[address]
            if pattern:
                self._index.remove(address)

    def matching(self, address: str) -> tuple[Route, ...]:
        """The pattern routes that ``address`` matches."""
        return self._index.match(address)

    def add(
        self,
        registration: Registration,
        observer: abc.ObserverBase[Message[Any]],
    ) -> None:
        route = self.ensure(registration.address)
        consumer = registration.role == "consumer"
        members = route.consumers if consumer else route.listeners
        index = route.consumer_index if consumer else route.listener_index
        if index is None and len(members) >= INDEX_FROM:
            index = _index(members)
            if consumer:
                route.consumer_index = index
            else:
                route.listener_index = index
        handler = registration.handler
        hashable = _hashable(handler)
        if index is not None and hashable and len(index) == len(members):  # all indexed
            duplicate = handler in index
        else:
            duplicate = any(member.handler == handler for member in members)
        if duplicate:
            raise HandlerAlreadyRegisteredError(registration.address, handler)
        members.append(registration)
        if index is not None and hashable:
            index[handler] = registration
        registration._subscription = route.subject.attach(observer)  # pyright: ignore[reportPrivateUsage]

    def remove(self, registration: Registration) -> None:
        route = self.find(registration.address)
        if route is not None:
            consumer = registration.role == "consumer"
            members = route.consumers if consumer else route.listeners
            if registration in members:
                index = members.index(registration)
                del members[index]
                if consumer and index < route.next_consumer:
                    route.next_consumer -= 1
                handlers = route.consumer_index if consumer else route.listener_index
                handler = registration.handler
                if (
                    handlers is not None
                    and _hashable(handler)
                    and handlers.get(handler) is registration
                ):
                    del handlers[handler]
        subscription = registration._subscription  # pyright: ignore[reportPrivateUsage]
        if subscription is not None:
            registration._subscription = None  # pyright: ignore[reportPrivateUsage]
            subscription.dispose()

    def pick_consumer(self, address: str, request: bool) -> Registration:
        """The next consumer of ``address`` in round-robin order, for a request or a send."""
        route = self.routes.get(address)
        if route is None or not route.consumers:
            ensure_concrete(address)  # (a pattern never has consumers: checked only here)
            raise HandlerNotFoundError(address)
        if request:
            route.requested += 1
        else:
            route.sent += 1
        consumers = route.consumers
        index = route.next_consumer
        if index >= len(consumers):
            index = 0
        route.next_consumer = index + 1
        return consumers[index]

    def complete(self) -> None:
        """End every address's stream: observers see ``on_completed``."""
        for route in [*self.routes.values(), *self.patterns.values()]:
            route.subject.on_completed()
        self.routes.clear()
        self.patterns.clear()
        self._index = PatternIndex()
