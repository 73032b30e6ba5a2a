"""``bus.stats()``: what the bus has done, as data: counters for the bus and per address."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class Counters:
    """How many messages the bus took in, and what became of them.

    ``published`` counts publishes; ``sent`` and ``requested`` the sends and requests that
    found a consumer (each attempt of a retried request); ``delivered`` messages handed to a
    handler (one whose body then fails validation included); ``replied`` replies that reached
    their requester; ``failed`` failures: a handler's, given to its requester or reported on
    ``bus.errors``, and those of pipelines and ``observe`` subscribers; ``dropped`` messages
    dropped or refused by flow control, or discarded when their registration or the bus ended
    (reported on ``bus.errors``), and buffered requests skipped because their requester had
    stopped waiting (not reported: the requester has its outcome). Every request is delivered
    or dropped, or refused by the consumer's pipe (``failed``).
    """

    published: int = 0
    sent: int = 0
    requested: int = 0
    delivered: int = 0
    replied: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class HandlerStats:
    """One registration: its handler's name, role, and counters."""

    handler: str
    role: str
    piped: bool
    paused: bool
    delivered: int
    replied: int
    failed: int
    dropped: int
    queued: int


@dataclass(frozen=True, slots=True)
class AddressStats:
    """One address (or pattern) with registrations: what was sent to it and its handlers."""

    address: str
    pattern: bool
    published: int  # publishes that reached this address (or matched this pattern)
    sent: int
    requested: int  # attempts, for retried requests
    handlers: tuple[HandlerStats, ...]

    @property
    def consumers(self) -> int:
        return sum(1 for handler in self.handlers if handler.role == "consumer")

    @property
    def listeners(self) -> int:
        return sum(1 for handler in self.handlers if handler.role == "listener")


@dataclass(frozen=True, slots=True)
class BusStats:
    """A snapshot of the whole bus: ``totals`` since it was built, the addresses it has now."""

    totals: Counters
    pending_requests: int  # requests whose requester still waits for an answer
    running_handlers: int  # handler tasks the bus started that have not finished
    # Loop timers the bus set and that have not fired: those of Rx operators (debounce, delay,
    # buffers...), and the one of the requests' deadlines while requests wait.
    scheduled_timers: int
    subscriptions: int  # observers on address streams: registrations and ``observe`` subscribers
    queued: int  # messages held in registrations' buffers (flow control, pause)
    addresses: Mapping[str, AddressStats] = field(default_factory=dict[str, AddressStats])

    def _repr_html_(self) -> str:
        from ._display import stats_html  # notebooks only: not on the import path

        return stats_html(self)
