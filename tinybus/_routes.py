"""Addresses and their Subjects: which observers a message pushed to an address reaches.

Every address that has registrations (or ``observe()`` subscribers) has an ``AddressSubject``;
so has every pattern listened to (``user.*``: one segment, ``user.>``: one or more), found
through a ``PatternIndex`` that caches the patterns each concrete address matches. A Subject
disappears with its last observer, so addresses that come and go leave nothing behind.
"""

from __future__ import annotations

from typing import Any

from ._endpoint import Endpoint
from ._patterns import PatternIndex, ensure_concrete, is_pattern
from ._subject import LoopSubject, ObserverErrorHandler
from .errors import HandlerAlreadyRegisteredError
from .message import Message

# From this many consumers at an address, a consumer registered twice is found through an
# index rather than by a scan (most addresses have one or two, and an index costs memory).
INDEX_FROM = 8


class AddressSubject(LoopSubject[Message[Any]]):
    """The Subject of one address (or pattern): every message to it is pushed into it.

    A published message reaches every observer, in subscription order: the endpoints of the
    address's listeners and consumers, and ``observe()`` subscribers. A sent or requested
    message reaches one observer: the consumer whose turn it is. The consumers form a ring
    (``Endpoint.ring_next``) in registration order, so taking turns, adding and removing one
    cost O(1) however many there are.
    """

    def __init__(
        self, routes: Routes, address: str, pattern: bool, on_error: ObserverErrorHandler
    ) -> None:
        super().__init__(on_error)
        self.routes = routes
        self.address = address
        self.pattern = pattern
        self.turn: Endpoint | None = None  # the consumer the next send or request goes to
        self.oldest: Endpoint | None = None  # where the ring starts: the first consumer
        self.consumers = 0
        self.listeners = 0
        self.local = 0  # how many of its registrations were made local=True
        self.published = self.sent = self.requested = 0  # for bus.stats()
        # handler -> its consumer's endpoint, once INDEX_FROM consumers are here.
        self.index: dict[object, Endpoint] | None = None

    def on_next(self, value: Message[Any]) -> None:
        if value.kind == "publish":
            observers = self._snapshot
            if observers is None:
                observers = self.subscribers
            for observer in observers:  # (LoopSubject.on_next's loop)
                try:
                    observer.on_next(value)
                except Exception as exc:
                    self._on_observer_error(exc, observer, value)
            return
        consumer = self.turn
        if consumer is None:
            return  # (the sender checked there was one; a handler removed it meanwhile)
        self._to(consumer, value)

    def _to(self, consumer: Endpoint, value: Message[Any]) -> None:
        self.turn = consumer.ring_next
        try:
            consumer.on_next(value)
        except Exception as exc:
            self._on_observer_error(exc, consumer, value)

    def on_next_from_afar(self, value: Message[Any]) -> bool:
        """Push a message from another process: as ``on_next`` does, but never to a
        registration made ``local=True`` (published: every other observer; sent or requested:
        the next consumer in turn not made local); False when it reached no consumer."""
        if not self.local:
            if value.kind != "publish" and self.turn is None:
                return False
            self.on_next(value)
            return True
        if value.kind == "publish":
            for observer in self.subscribers:
                if not (isinstance(observer, Endpoint) and observer.local):
                    try:
                        observer.on_next(value)
                    except Exception as exc:
                        self._on_observer_error(exc, observer, value)
            return True
        for consumer in self.consumers_in_turn():
            if not consumer.local:
                self._to(consumer, value)
                return True
        return False

    def on_next_to(self, consumer: Endpoint, value: Message[Any]) -> bool:
        """Push a scatter-gather request to ``consumer``, one of its consumers, leaving the
        turn where it is; False when it is no longer one (unregistered meanwhile)."""
        if consumer.subject is not self:
            return False
        try:
            consumer.on_next(value)
        except Exception as exc:
            self._on_observer_error(exc, consumer, value)
        return True

    def consumers_in_turn(self) -> list[Endpoint]:
        """Its consumers, round the ring once from the one whose turn it is."""
        members: list[Endpoint] = []
        first = consumer = self.turn
        while consumer is not None:
            members.append(consumer)
            consumer = consumer.ring_next
            if consumer is first:
                break
        return members

    def became_unobserved(self) -> None:
        self.routes.drop(self)

    def endpoints(self) -> list[Endpoint]:
        """Its registrations' endpoints, in registration order."""
        return [observer for observer in self.subscribers if isinstance(observer, Endpoint)]

    # -- membership ---------------------------------------------------------------------

    def add(self, endpoint: Endpoint) -> None:
        """Attach ``endpoint``; ``HandlerAlreadyRegisteredError`` when it is a consumer whose
        handler is a consumer here already (as in tinybus 0.2.x). A listener may be registered
        several times (as with pyee, Node's EventEmitter, Vert.x and tinybus 0.2.x): each
        registration is called once per message, and unregistered on its own."""
        if endpoint.role == "consumer":
            handler = endpoint.handler
            if self._is_consumer(handler):
                raise HandlerAlreadyRegisteredError(self.address, handler)
            self.consumers += 1
            oldest = self.oldest
            if oldest is None:
                self.oldest = self.turn = endpoint.ring_next = endpoint.ring_previous = endpoint
            else:  # last in the ring: just before the oldest
                newest = oldest.ring_previous
                newest.ring_next = endpoint.ring_previous = endpoint
                endpoint.ring_previous, endpoint.ring_next = newest, oldest
                oldest.ring_previous = endpoint
            index = self.index
            if index is not None:
                _index_into(index, endpoint)
            elif self.consumers >= INDEX_FROM:
                index = self.index = dict[object, Endpoint]()
                for member in [*self.consumers_in_turn(), endpoint]:
                    _index_into(index, member)
        else:
            self.listeners += 1
        endpoint.subject = self
        self.local += endpoint.local
        self.attach(endpoint)

    def _is_consumer(self, handler: object) -> bool:
        index = self.index
        if index is not None and _hashable(handler):
            return handler in index  # (every hashable consumer's handler is in the index)
        return any(member.handler == handler for member in self.consumers_in_turn())

    def remove(self, endpoint: Endpoint) -> None:
        if endpoint.subject is not self:
            return
        endpoint.subject = None
        self.local -= endpoint.local
        if endpoint.role == "consumer":
            self.consumers -= 1
            if endpoint.ring_next is endpoint:
                self.oldest = self.turn = None
            else:
                following = endpoint.ring_next
                endpoint.ring_previous.ring_next = following
                following.ring_previous = endpoint.ring_previous
                if self.oldest is endpoint:
                    self.oldest = following
                if self.turn is endpoint:
                    self.turn = following
            endpoint.ring_next = endpoint.ring_previous = endpoint
        else:
            self.listeners -= 1
        index = self.index
        handler = endpoint.handler
        if index is not None and _hashable(handler) and index.get(handler) is endpoint:
            del index[handler]
        self.detach(endpoint)


def _hashable(handler: object) -> bool:
    try:
        hash(handler)
    except Exception:  # unhashable (a bound method of an unhashable object, say)
        return False
    return True


def _index_into(index: dict[object, Endpoint], endpoint: Endpoint) -> None:
    if _hashable(endpoint.handler):
        index[endpoint.handler] = endpoint


class Routes:
    """Address -> ``AddressSubject``, for concrete addresses and for patterns."""

    def __init__(self, on_observer_error: ObserverErrorHandler) -> None:
        self.routes: dict[str, AddressSubject] = {}
        self.patterns: dict[str, AddressSubject] = {}
        self._index: PatternIndex[AddressSubject] = PatternIndex()
        self._on_observer_error = on_observer_error

    def find(self, address: str) -> AddressSubject | None:
        """The Subject of an exact address or of a pattern, if it exists."""
        return self.routes.get(address) or self.patterns.get(address)

    def ensure(self, address: str) -> AddressSubject:
        pattern = is_pattern(address)
        table = self.patterns if pattern else self.routes
        subject = table.get(address)
        if subject is None:
            subject = table[address] = AddressSubject(
                self, address, pattern, self._on_observer_error
            )
            if pattern:
                self._index.add(address, subject)
        return subject

    def drop(self, subject: AddressSubject) -> None:
        """``subject`` has no observer left: forget it (a later use makes a new one)."""
        table = self.patterns if subject.pattern else self.routes
        if table.get(subject.address) is subject:
            del table[subject.address]
            if subject.pattern:
                self._index.remove(subject.address)

    def matching(self, address: str) -> tuple[AddressSubject, ...]:
        """The pattern Subjects that ``address`` matches (none without patterns)."""
        return self._index.match(address) if self.patterns else ()

    def consumers_of(self, address: str) -> AddressSubject | None:
        """The Subject of ``address`` when it has a consumer; refuses a pattern."""
        subject = self.routes.get(address)
        if subject is None or subject.turn is None:
            ensure_concrete(address)  # (a pattern never has consumers: checked only here)
            return None
        return subject

    def all(self) -> list[AddressSubject]:
        return [*self.routes.values(), *self.patterns.values()]

    def complete(self) -> None:
        """End every address's stream: observers see ``on_completed``."""
        for subject in self.all():
            subject.on_completed()
        self.routes.clear()
        self.patterns.clear()
        self._index = PatternIndex()
