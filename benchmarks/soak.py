"""Soak: one TinyBus, 100 registrations, 1,000,000 publishes and 200,000 requests, every
outcome counted on both sides of the bus, memory measured before and after.

Run with ``uv run python benchmarks/soak.py`` (about 100 s on two cores; ``--quick``: a tenth
of it; ``--scale 0.5``: half). It prints a progress line while running, then a Markdown
summary, which a full run (scale 1) also writes to ``benchmarks/results/soak.md``, and any other
to ``benchmarks/.scratch/results/soak.md`` (git-ignored), unless ``--out`` says where; it exits
with status 1 if a counter does not reconcile, something is left behind in the bus, or memory
grew past its bound. It needs only the default environment (tinybus, reactivex, pydantic; see
``common.py``), so ``tests/test_soak.py`` runs the same ``soak()`` at a small scale there.

Workload (``REGISTRATIONS``, built by ``Workload.register``), on one bus:

- 91 listeners on 44 event addresses and 2 patterns (``KINDS``, in turn): async and sync,
  through ``ops.filter``/``ops.map``/``ops.delay`` pipelines or none, with ``max_concurrency``
  (1, 2, 4) or none, some with small ``drop_oldest``/``drop_newest`` buffers that overflow,
  some annotated ``Message[int]``, and one that raises for every hundredth body;
- 9 consumers: 5 answering ``soak.rpc.fast`` (sync, async, async with ``max_concurrency``;
  they raise for 5% of the requests), 2 on ``soak.rpc.slow`` that sleep longer than their
  requests' timeout (one with ``max_concurrency=2``), 2 on ``soak.rpc.held`` that wait until
  their requester has been cancelled.

Publishes and requests run in windows (``REQUESTS_PER_WINDOW`` requests and five times as
many publishes each): in a window, ``LANES`` publishers publish one after another while every
request of the window is in flight at once, and the window ends when all have their outcome.
Of the requests, 10% time out, 10% are cancelled by their caller once their handler has
started, 5% fail in their handler, and 75% get their reply. A warm-up of a twentieth of the
workload (one window at least) comes first; then memory is sampled (after ``gc.collect()``:
resident set size, ``tracemalloc``'s current size, objects tracked by the collector), the
workload runs, the bus is drained, and memory is sampled again. ``tracemalloc`` traces from
before the bus is built to the end, which makes the run about four times slower.

Reconciliation: what the script counts (each requester's outcome, each handler's calls and
failures, each record on ``bus.errors``, what every listener should receive, computed from the
bodies published, and how many requests each consumer should be routed, computed from the
request numbers) must equal what ``bus.stats()`` says, in its totals, per address and per
handler; and nothing may be left in the bus: no pending request, running handler, Rx timer or
queued message, and exactly the 100 registrations subscribed.

Requests are routed round-robin per address, in the order they are made (the order of their
numbers), so the script knows which consumer each goes to, and each consumer checks that it
only gets its own. A request that waits in a consumer's buffer (``max_concurrency``) until
after its requester stopped waiting is skipped when its turn comes, and counted as ``dropped``
(not reported on ``bus.errors``): here, the timed-out requests waiting for
``consumer_6_slow_limited``. So per consumer, requests routed = delivered + dropped, where its
dropped are the requests routed to it that its handler never saw (none, for every consumer
but that one, whose requesters never give up while it waits); and the bus's ``dropped`` is the
drops reported on ``bus.errors`` (listeners' flow control) plus those skipped requests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from common import (
    FLAT_OBJECTS,
    Progress,
    git_state,
    machine,
    resident_bytes,
    results_dir,
    settle_tasks,
    table,
    version,
    write,
)
from reactivex import operators as ops

from tinybus import (
    BusStats,
    Counters,
    EventBus,
    HandlerExecutionError,
    HandlerFailure,
    HandlerStats,
    HandlerTimeoutError,
    Message,
    MessageDroppedError,
)
from tinybus.errors import handler_name

MIB = 1024 * 1024

PUBLISHES = 1_000_000
REQUESTS = 200_000
WARMUP = 0.05  # the warm-up's share of the workload
REQUESTS_PER_WINDOW = 1000
LANES = 50  # publishers at once in a window
REGISTRATIONS = 100

# Outcomes of requests, by ``r % 20``: two in twenty time out, two are cancelled, one fails.
CYCLE = 20
TIMED_OUT = (0, 1)
CANCELLED = (2, 3)
FAILED = 4
TIMEOUT = 0.005  # the timed-out requests' timeout (s)
SLOW = 0.02  # how long their handler takes: always past the deadline

# Bounds on growth from the sample after the warm-up to the one after the run, at full scale.
# Measured: tracemalloc +15-27 KB (buffers and deque blocks a little larger than the warm-up's
# peak left them), RSS +2-2.5 MiB (allocator arenas a peak left partly used); objects +1-2.
# 1 MiB of tracemalloc is under one byte per message: a leak of one object for every 32
# messages exceeds it. 8 MiB of RSS, four times the measured growth, is 7 B per message.
TRACED_BOUND = 1 * MIB
RESIDENT_BOUND = 8 * MIB

EVENTS = tuple(f"soak.event.{index}" for index in range(44))
FAST = "soak.rpc.fast"
SLOW_ADDRESS = "soak.rpc.slow"
HELD = "soak.rpc.held"

type Overflow = Literal["block", "drop_oldest", "drop_newest", "error"]
type Predicate = Literal["all", "not_third", "even", "tenth", "hundredth"]

PREDICATES: dict[Predicate, Callable[[int], bool]] = {
    "all": lambda n: True,
    "not_third": lambda n: n % 3 != 0,
    "even": lambda n: n % 2 == 0,
    "tenth": lambda n: n % 10 == 0,
    "hundredth": lambda n: n % 100 == 0,
}


class SoakFailure(Exception):
    """What the failing handlers raise."""


def request_address(r: int) -> str:
    """The address request ``r`` is made to: its outcome depends on it."""
    kind = r % CYCLE
    return SLOW_ADDRESS if kind in TIMED_OUT else HELD if kind in CANCELLED else FAST


# Each ``r % CYCLE`` -> the place of request ``r`` among the requests of one cycle to its address.
PLACE_IN_CYCLE = {
    kind: [k for k in range(CYCLE) if request_address(k) == request_address(kind)].index(kind)
    for kind in range(CYCLE)
}
PER_CYCLE = Counter(request_address(kind) for kind in range(CYCLE))


def request_place(r: int) -> int:
    """How many requests to its address were made before request ``r``: requests are made in
    the order of their numbers, so the consumer it is routed to (round-robin, in registration
    order) is this modulo the address's consumers."""
    cycle, kind = divmod(r, CYCLE)
    return cycle * PER_CYCLE[request_address(kind)] + PLACE_IN_CYCLE[kind]


# -- registrations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One sort of listener: how it is written and registered, and which bodies it gets."""

    name: str
    style: Literal["sync", "async", "async_suspends", "sync_message"]
    passes: Predicate = "all"  # the bodies its pipe lets through
    pipe: Literal["", "filter", "map", "filter_map", "delay"] = ""
    max_concurrency: int | None = None
    max_buffered: int = 1000
    overflow: Overflow = "block"


KINDS = (
    Kind("async", "async"),
    Kind("sync", "sync"),
    Kind("sync_filter", "sync", "not_third", "filter"),
    Kind("async_map", "async", pipe="map"),
    Kind("actor", "async", max_concurrency=1),
    Kind("sync_filter_map", "sync", "even", "filter_map"),
    Kind(
        "drop_oldest", "async_suspends", max_concurrency=2, max_buffered=32, overflow="drop_oldest"
    ),
    Kind("message", "sync_message"),
    Kind("limited", "async", max_concurrency=4),
    Kind(
        "drop_newest",
        "async_suspends",
        "not_third",
        "filter",
        max_concurrency=1,
        max_buffered=16,
        overflow="drop_newest",
    ),
)


def double(n: int) -> int:
    return n * 2


def halve(n: int) -> int:
    return n // 2


def pipe(kind: Kind) -> list[Any]:
    """The operators of a listener of this kind: its filter lets ``kind.passes`` through."""
    passes = PREDICATES[kind.passes]
    return {
        "": [],
        "filter": [ops.filter(passes)],
        "map": [ops.map(double)],
        "filter_map": [ops.filter(passes), ops.map(halve)],
        "delay": [ops.delay(0.001)],
    }[kind.pipe]


@dataclass(frozen=True)
class Listener:
    name: str  # its handler's qualified name: unique, so bus.stats() and bus.errors name it
    address: str  # an address or a pattern
    kind: Kind
    raises: Predicate | None = None  # the bodies it raises for


@dataclass(frozen=True)
class Consumer:
    name: str
    address: str
    style: Literal["sync", "async", "async_suspends", "slow", "held"]
    max_concurrency: int | None = None
    # Whether requests may wait in its buffer until after their requester stopped waiting,
    # to be skipped (dropped) when their turn comes: buffered, and its requesters time out.
    skips: bool = False


def plan() -> tuple[list[Listener], list[Consumer]]:
    """The 100 registrations: 87 listeners cycling through ``KINDS`` over ``EVENTS``, one
    delayed, one failing, two on patterns; 9 consumers."""
    listeners = [
        Listener(f"listener_{index}_{kind.name}", EVENTS[index % len(EVENTS)], kind)
        for index in range(87)
        for kind in (KINDS[index % len(KINDS)],)
    ]
    listeners += [
        Listener("listener_87_delayed", EVENTS[1], Kind("delayed", "sync", pipe="delay")),
        Listener("listener_88_failing", EVENTS[0], Kind("failing", "sync"), "hundredth"),
        Listener("listener_89_pattern_star", "soak.event.*", Kind("pattern", "sync")),
        Listener(
            "listener_90_pattern_tail",
            "soak.>",
            Kind("pattern_filtered", "async", "tenth", "filter"),
        ),
    ]
    consumers = [
        Consumer("consumer_0_sync", FAST, "sync"),
        Consumer("consumer_1_sync", FAST, "sync"),
        Consumer("consumer_2_async", FAST, "async"),
        Consumer("consumer_3_async_suspends", FAST, "async_suspends"),
        Consumer("consumer_4_limited", FAST, "async_suspends", max_concurrency=4),
        Consumer("consumer_5_slow", SLOW_ADDRESS, "slow"),
        Consumer("consumer_6_slow_limited", SLOW_ADDRESS, "slow", max_concurrency=2, skips=True),
        Consumer("consumer_7_held", HELD, "held"),
        Consumer("consumer_8_held", HELD, "held"),
    ]
    assert len(listeners) + len(consumers) == REGISTRATIONS
    return listeners, consumers


def turn(consumers: Sequence[Consumer], consumer: Consumer) -> tuple[int, int]:
    """``consumer``'s place among the consumers of its address (registration order), and their
    number: the ``n``th request to the address goes to the one whose place is ``n % number``."""
    peers = [peer for peer in consumers if peer.address == consumer.address]
    return peers.index(consumer), len(peers)


def routed_requests(consumers: Sequence[Consumer], requested: int) -> dict[str, int]:
    """How many of requests 0 .. requested - 1 round-robin routes to each consumer: computed
    from the request numbers, not from what the bus did."""
    routed = dict.fromkeys((consumer.name for consumer in consumers), 0)
    by_address: dict[str, list[str]] = {}
    for consumer in consumers:
        by_address.setdefault(consumer.address, []).append(consumer.name)
    for r in range(requested):
        names = by_address[request_address(r)]
        routed[names[request_place(r) % len(names)]] += 1
    return routed


@dataclass
class Hold:
    """The body of a request its caller cancels: the handler says it started, then waits."""

    n: int
    started: asyncio.Future[None]
    release: asyncio.Future[None]


def named[F: Callable[..., Any]](function: F, name: str) -> F:
    function.__name__ = function.__qualname__ = name
    return function


def make_listener(listener: Listener, calls: Counter[str]) -> Callable[..., Any]:
    name = listener.name
    raises = PREDICATES[listener.raises] if listener.raises else None
    style = listener.kind.style
    if style == "sync_message":

        def on_message(message: Message[int]) -> None:
            calls[name] += 1

        return named(on_message, name)
    if style == "sync":

        def on_body(body: int) -> None:
            calls[name] += 1
            if raises is not None and raises(body):
                raise SoakFailure(body)

        return named(on_body, name)
    if style == "async":

        async def on_body_async(body: int) -> None:
            calls[name] += 1

        return named(on_body_async, name)

    async def on_body_suspending(body: int) -> None:
        calls[name] += 1
        await asyncio.sleep(0)

    return named(on_body_suspending, name)


def make_consumer(
    consumer: Consumer,
    turn: tuple[int, int],
    calls: Counter[str],
    raised: Counter[str],
    misrouted: Counter[str],
) -> Any:
    """Its handler; ``turn``: its place among its address's consumers, and their number. It
    counts the requests it gets that round-robin would have routed to another."""
    name = consumer.name
    index, count = turn
    if consumer.style == "sync":

        def answer(message: Message[int]) -> int:
            calls[name] += 1
            if request_place(message.body) % count != index:
                misrouted[name] += 1
            if message.body % CYCLE == FAILED:
                raised[name] += 1
                raise SoakFailure(message.body)
            return message.body + 1

        return named(answer, name)
    if consumer.style in ("async", "async_suspends"):
        suspends = consumer.style == "async_suspends"

        async def answer_async(message: Message[int]) -> int:
            calls[name] += 1
            if request_place(message.body) % count != index:
                misrouted[name] += 1
            if suspends:
                await asyncio.sleep(0)
            if message.body % CYCLE == FAILED:
                raised[name] += 1
                raise SoakFailure(message.body)
            return message.body + 1

        return named(answer_async, name)
    if consumer.style == "slow":

        async def answer_late(message: Message[int]) -> int:
            calls[name] += 1
            if request_place(message.body) % count != index:
                misrouted[name] += 1
            await asyncio.sleep(SLOW)
            return message.body + 1

        return named(answer_late, name)

    async def answer_when_released(message: Message[Any]) -> Any:
        calls[name] += 1
        hold: Hold = message.body
        if request_place(hold.n) % count != index:
            misrouted[name] += 1
        hold.started.set_result(None)
        await hold.release
        return hold.n + 1

    return named(answer_when_released, name)


# -- the workload ------------------------------------------------------------------------------


@dataclass
class Outcomes:
    """What the requesters got."""

    replies: int = 0
    timeouts: int = 0
    cancelled: int = 0
    failures: int = 0  # HandlerExecutionError caused by SoakFailure
    unexpected: list[str] = field(default_factory=list[str])

    def total(self) -> int:
        return self.replies + self.timeouts + self.cancelled + self.failures


@dataclass
class Workload:
    bus: EventBus
    listeners: list[Listener]
    consumers: list[Consumer]
    calls: Counter[str] = field(default_factory=Counter[str])  # handler name -> calls
    raised: Counter[str] = field(default_factory=Counter[str])  # consumer name -> raised
    # consumer name -> requests it got that round-robin routes to another consumer
    misrouted: Counter[str] = field(default_factory=Counter[str])
    dropped: Counter[str] = field(default_factory=Counter[str])  # from bus.errors
    failed: Counter[str] = field(default_factory=Counter[str])  # from bus.errors
    strays: list[str] = field(default_factory=list[str])  # bus.errors records not expected
    outcomes: Outcomes = field(default_factory=Outcomes)
    published: int = 0  # bodies 0 .. published - 1 were published
    requested: int = 0  # request numbers 0 .. requested - 1 were made

    def register(self) -> None:
        bus = self.bus
        for listener in self.listeners:
            kind = listener.kind
            bus.on(
                listener.address,
                make_listener(listener, self.calls),
                pipe=pipe(kind),
                max_concurrency=kind.max_concurrency,
                max_buffered=kind.max_buffered,
                overflow=kind.overflow,
            )
        for consumer in self.consumers:
            bus.consumer(
                consumer.address,
                make_consumer(
                    consumer,
                    turn(self.consumers, consumer),
                    self.calls,
                    self.raised,
                    self.misrouted,
                ),
                max_concurrency=consumer.max_concurrency,
            )
        bus.errors.subscribe(self.on_failure)

    def on_failure(self, failure: HandlerFailure) -> None:
        name = handler_name(failure.handler)
        if isinstance(failure.exception, MessageDroppedError):
            self.dropped[name] += 1
        elif isinstance(failure.exception, SoakFailure):
            self.failed[name] += 1
        else:
            self.strays.append(f"{name} at {failure.address}: {failure.exception!r}")

    async def publish_lane(self, start: int, stop: int) -> None:
        publish = self.bus.publish
        for n in range(start, stop, LANES):
            await publish(EVENTS[n % len(EVENTS)], n)

    async def ask(self, r: int) -> None:
        bus, outcomes = self.bus, self.outcomes
        kind = r % CYCLE
        try:
            if kind in TIMED_OUT:
                reply = await bus.request(SLOW_ADDRESS, r, timeout=TIMEOUT)
            elif kind in CANCELLED:
                await self.cancel(r)
                return
            else:
                reply = await bus.request(FAST, r)
        except HandlerTimeoutError as error:
            if kind in TIMED_OUT:
                outcomes.timeouts += 1
            else:
                outcomes.unexpected.append(f"request {r}: {error!r}")
            return
        except HandlerExecutionError as error:
            if kind == FAILED and isinstance(error.original_error, SoakFailure):
                outcomes.failures += 1
            else:
                outcomes.unexpected.append(f"request {r}: {error!r}")
            return
        except Exception as error:
            outcomes.unexpected.append(f"request {r}: {error!r}")
            return
        if kind in TIMED_OUT or kind == FAILED or reply != r + 1:
            outcomes.unexpected.append(f"request {r}: replied {reply!r}")
        else:
            outcomes.replies += 1

    async def cancel(self, r: int) -> None:
        """A request cancelled by its caller once its handler has started; the handler is
        let go afterwards, and its reply comes late."""
        loop = asyncio.get_running_loop()
        hold = Hold(r, loop.create_future(), loop.create_future())
        request = asyncio.ensure_future(self.bus.request(HELD, hold))
        request.add_done_callback(lambda _: hold.started.done() or hold.started.set_result(None))
        await hold.started  # the handler started (or the request ended before it could)
        request.cancel()
        try:
            await request
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this caller is cancelled itself
        finally:
            hold.release.set_result(None)
        if request.cancelled():
            self.outcomes.cancelled += 1
        else:
            self.outcomes.unexpected.append(f"cancelled request {r}: {request!r}")

    async def run(
        self, publishes: int, requests: int, report_every: int, step: Callable[[str], None]
    ) -> None:
        """Publish ``publishes`` bodies and make ``requests`` requests, in windows; then wait
        until the bus is quiet."""
        windows = max(1, round(requests / REQUESTS_PER_WINDOW))
        first_body, first_request = self.published, self.requested
        started = last = time.perf_counter()
        reported = 0
        for window in range(windows):
            pub_start = first_body + publishes * window // windows
            pub_stop = first_body + publishes * (window + 1) // windows
            req_start = first_request + requests * window // windows
            req_stop = first_request + requests * (window + 1) // windows
            await asyncio.gather(
                *(
                    self.publish_lane(pub_start + lane, pub_stop)
                    for lane in range(min(LANES, pub_stop - pub_start))
                ),
                *(self.ask(r) for r in range(req_start, req_stop)),
            )
            self.published, self.requested = pub_stop, req_stop
            if (window + 1) % report_every == 0 or window + 1 == windows:
                done = pub_stop - first_body + req_stop - first_request
                now = time.perf_counter()
                recent = (done - reported) / (now - last)
                reported, last = done, now
                step(
                    f"soak {(window + 1) / windows:4.0%}, {done:,} messages, "
                    f"{done / (now - started):,.0f}/s ({recent:,.0f}/s lately), "
                    f"RSS {resident_bytes() / MIB:.0f} MiB"
                )
        await self.bus.drain()
        await settle_tasks()


# -- the outcome -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    resident: int
    traced: int
    objects: int


def sample() -> Sample:
    gc.collect()
    return Sample(resident_bytes(), tracemalloc.get_traced_memory()[0], len(gc.get_objects()))


@dataclass
class SoakResult:
    publishes: int
    requests: int
    warmup_publishes: int
    warmup_requests: int
    warmup_seconds: float
    run_seconds: float
    samples: dict[str, Sample]  # "before", "after"
    warmed: Counters  # bus.stats().totals after the warm-up
    stats: BusStats  # after the run, drained, before closing
    expected: dict[str, int]  # listener -> bodies its pipe lets through
    routed: dict[str, int]  # consumer -> requests round-robin routes to it
    workload: Workload
    problems: dict[str, list[str]]  # part -> what does not reconcile, or is left behind

    @property
    def messages(self) -> int:
        return self.publishes + self.requests

    @property
    def rate(self) -> float:
        """Publishes and requests per second, in the run."""
        return self.messages / self.run_seconds

    @property
    def delivery_rate(self) -> float:
        """Messages handed to handlers per second, in the run."""
        return (self.stats.totals.delivered - self.warmed.delivered) / self.run_seconds

    @property
    def traced_growth(self) -> int:
        return self.samples["after"].traced - self.samples["before"].traced

    @property
    def resident_growth(self) -> int:
        return self.samples["after"].resident - self.samples["before"].resident

    @property
    def object_growth(self) -> int:
        return self.samples["after"].objects - self.samples["before"].objects

    def memory_problems(
        self, traced_bound: int, resident_bound: int, objects_bound: int = FLAT_OBJECTS
    ) -> list[str]:
        found: list[str] = []
        if self.traced_growth > traced_bound:
            found.append(f"tracemalloc grew {self.traced_growth:,} B > {traced_bound:,} B")
        if self.resident_growth > resident_bound:
            found.append(f"RSS grew {self.resident_growth:,} B > {resident_bound:,} B")
        if self.object_growth > objects_bound:
            found.append(f"{self.object_growth:,} more objects > {objects_bound:,}")
        return found


def expected_deliveries(listeners: Sequence[Listener], published: int) -> dict[str, int]:
    """What each listener should receive (delivered or dropped) from bodies 0 .. published - 1,
    the body ``n`` going to ``EVENTS[n % len(EVENTS)]``: computed from the bodies, not from
    what the bus did."""
    count = len(EVENTS)
    cache: dict[tuple[str, Predicate], int] = {}

    def through(address: str, predicate: Predicate) -> int:
        key = (address, predicate)
        if key not in cache:
            test = PREDICATES[predicate]
            if address.startswith("soak.event.") and "*" not in address:
                bodies = range(EVENTS.index(address), published, count)
            else:  # soak.event.* and soak.> match every event address
                bodies = range(published)
            cache[key] = sum(1 for n in bodies if test(n))
        return cache[key]

    return {
        listener.name: through(listener.address, listener.kind.passes) for listener in listeners
    }


def skipped_requests(workload: Workload, routed: dict[str, int]) -> int:
    """The requests routed to a consumer that its handler never saw: skipped in its buffer
    because their requester had stopped waiting."""
    return sum(routed[c.name] - workload.calls[c.name] for c in workload.consumers)


def reconcile(
    workload: Workload, stats: BusStats, expected: dict[str, int], routed: dict[str, int]
) -> dict[str, list[str]]:
    """Everything the script counted against ``bus.stats()``; and what is left in the bus.
    ``expected``: what each listener should be reached by; ``routed``: the requests each
    consumer should be routed."""
    problems: dict[str, list[str]] = {
        "requests": [],
        "accounted": [],
        "listeners": [],
        "totals": [],
        "left_behind": [],
    }

    def check(part: str, what: str, script: int, bus: int) -> None:
        if script != bus:
            problems[part].append(f"{what}: script {script:,}, bus.stats() {bus:,}")

    handlers: dict[str, HandlerStats] = {}
    for address in stats.addresses.values():
        for handler in address.handlers:
            if handler.handler in handlers:
                problems["left_behind"].append(f"two registrations named {handler.handler}")
            handlers[handler.handler] = handler
    names = {item.name for item in (*workload.listeners, *workload.consumers)}
    if set(handlers) != names:
        problems["left_behind"].append(
            f"registrations: missing {sorted(names - set(handlers))}, "
            f"unknown {sorted(set(handlers) - names)}"
        )
        return problems

    # Requests: each requester's outcome, each consumer's own counts, the bus's counters.
    outcomes = workload.outcomes
    made = workload.requested
    want = {
        "replies": sum(1 for r in range(made) if r % CYCLE not in (*TIMED_OUT, *CANCELLED, FAILED)),
        "timeouts": sum(1 for r in range(made) if r % CYCLE in TIMED_OUT),
        "cancelled": sum(1 for r in range(made) if r % CYCLE in CANCELLED),
        "failures": sum(1 for r in range(made) if r % CYCLE == FAILED),
    }
    for what, count in want.items():
        if getattr(outcomes, what) != count:
            problems["requests"].append(
                f"requester {what}: {getattr(outcomes, what):,}, made to get {count:,}"
            )
    problems["requests"] += outcomes.unexpected[:10]
    totals = stats.totals
    check("requests", "requests", made, totals.requested)
    by_address = {
        FAST: want["replies"] + want["failures"],
        SLOW_ADDRESS: want["timeouts"],
        HELD: want["cancelled"],
    }
    for address, count in by_address.items():
        check("requests", f"requests to {address}", count, stats.addresses[address].requested)
    for consumer in workload.consumers:
        name, handler = consumer.name, handlers[consumer.name]
        calls, raised = workload.calls[name], workload.raised[name]
        late = consumer.address != FAST  # its replies come after the requester gave up
        check("requests", f"{name} delivered", calls, handler.delivered)
        check("requests", f"{name} failed", raised, handler.failed)
        check("requests", f"{name} replied", 0 if late else calls - raised, handler.replied)
        if workload.misrouted[name]:
            problems["requests"].append(
                f"{name} got {workload.misrouted[name]:,} requests that round-robin routes to "
                "another consumer"
            )
        # Requests routed to it that its handler never saw: skipped in its buffer because their
        # requester had stopped waiting. Counted as dropped, and not reported on bus.errors.
        skipped = routed[name] - calls
        if skipped and not consumer.skips:
            problems["requests"].append(
                f"{name}: {routed[name]:,} requests routed to it, its handler saw {calls:,} "
                "(its requesters never give up while a request waits for it)"
            )
        check("requests", f"{name} dropped (routed - delivered: skipped)", skipped, handler.dropped)
        check(
            "requests", f"{name} drops (on bus.errors, not one expected)", 0, workload.dropped[name]
        )
    fast = [handlers[consumer.name] for consumer in workload.consumers if consumer.address == FAST]
    check("requests", "replies", outcomes.replies, sum(handler.replied for handler in fast))
    check("requests", "handler failures", outcomes.failures, sum(h.failed for h in fast))

    # Every request that found a consumer was handed to it or dropped: per consumer, requests
    # routed to it = delivered + dropped (no consumer has a pipe, which could refuse some).
    for consumer in workload.consumers:
        handler = handlers[consumer.name]
        check(
            "accounted",
            f"requests routed to {consumer.name} delivered or dropped",
            routed[consumer.name],
            handler.delivered + handler.dropped,
        )
    for address, count in by_address.items():
        handled = sum(h.delivered + h.dropped for h in stats.addresses[address].handlers)
        check("accounted", f"requests to {address} delivered or dropped", count, handled)
    consumers = [handlers[consumer.name] for consumer in workload.consumers]
    handled = sum(handler.delivered + handler.dropped for handler in consumers)
    check("accounted", "requests delivered or dropped", made, handled)

    # Listeners: bodies published x listeners reached = delivered + dropped (on bus.errors).
    check("listeners", "publishes", workload.published, totals.published)
    for index, address in enumerate(EVENTS):
        count = len(range(index, workload.published, len(EVENTS)))
        check("listeners", f"publishes to {address}", count, stats.addresses[address].published)
    for pattern in ("soak.event.*", "soak.>"):
        matching = stats.addresses[pattern].published
        check("listeners", f"publishes matching {pattern}", workload.published, matching)
    for listener in workload.listeners:
        name, handler = listener.name, handlers[listener.name]
        check("listeners", f"{name} reached", expected[name], handler.delivered + handler.dropped)
        check("listeners", f"{name} delivered", workload.calls[name], handler.delivered)
        check("listeners", f"{name} dropped", workload.dropped[name], handler.dropped)
        raises = listener.raises
        failing = 0
        if raises is not None:
            test = PREDICATES[raises]
            failing = sum(
                1
                for n in range(EVENTS.index(listener.address), workload.published, len(EVENTS))
                if test(n)
            )
        check("listeners", f"{name} failed, expected", failing, handler.failed)
        check("listeners", f"{name} failed, on bus.errors", workload.failed[name], handler.failed)
    problems["listeners"] += workload.strays[:10]

    # Totals: the bus's counters are the sums of what the script counted.
    check("totals", "published", workload.published, totals.published)
    check("totals", "sent", 0, totals.sent)
    check("totals", "requested", made, totals.requested)
    check("totals", "delivered", sum(workload.calls.values()), totals.delivered)
    per_handler = sum(handler.delivered for handler in handlers.values())
    check("totals", "delivered (per handler)", per_handler, totals.delivered)
    check("totals", "replied", outcomes.replies, totals.replied)
    check("totals", "failed", outcomes.failures + workload.failed.total(), totals.failed)
    # dropped: the drops reported on bus.errors, and the requests skipped in a buffer.
    dropped = workload.dropped.total() + skipped_requests(workload, routed)
    check("totals", "dropped (on bus.errors + requests skipped)", dropped, totals.dropped)
    dropped = sum(handler.dropped for handler in handlers.values())
    check("totals", "dropped (per handler)", dropped, totals.dropped)
    reached = sum(handlers[name].delivered + handlers[name].dropped for name in expected)
    check("totals", "listeners reached = delivered + dropped", sum(expected.values()), reached)

    # Nothing left behind.
    check("left_behind", "pending requests", 0, stats.pending_requests)
    check("left_behind", "running handlers", 0, stats.running_handlers)
    check("left_behind", "scheduled timers", 0, stats.scheduled_timers)
    check("left_behind", "queued", 0, stats.queued)
    check("left_behind", "queued (per handler)", 0, sum(h.queued for h in handlers.values()))
    check("left_behind", "subscriptions", REGISTRATIONS, stats.subscriptions)
    return problems


async def soak(
    publishes: int = PUBLISHES,
    requests: int = REQUESTS,
    step: Callable[[str], None] | None = None,
    progress_lines: int = 20,
) -> SoakResult:
    """The soak: a warm-up of a twentieth of the workload, a memory sample, ``publishes``
    publishes and ``requests`` requests, drained, a memory sample; then reconciliation.
    ``step`` gets a progress line ``progress_lines`` times, and a few more."""
    report_to = step or (lambda _: None)
    windows = max(1, round(requests / REQUESTS_PER_WINDOW))
    warmup_windows = max(1, round(windows * WARMUP))  # one window at least
    warmup_publishes = publishes * warmup_windows // windows
    warmup_requests = requests * warmup_windows // windows
    tinybus_logger = logging.getLogger("tinybus")
    level = tinybus_logger.level
    # Drops and listener failures are expected by the thousand: they are counted on
    # bus.errors, not logged (each would log a traceback).
    tinybus_logger.setLevel(logging.CRITICAL)
    gc.collect()
    gc.freeze()  # what exists now stays out of the collector's sight: cheaper collections
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        listeners, consumers = plan()
        async with EventBus() as bus:
            workload = Workload(bus, listeners, consumers)
            workload.register()
            report_to("soak warm-up")
            started = time.perf_counter()
            await workload.run(warmup_publishes, warmup_requests, 10**9, report_to)
            warmup_seconds = time.perf_counter() - started
            before = sample()
            warmed = bus.stats().totals
            report_to(f"soak warmed up, RSS {before.resident / MIB:.0f} MiB")
            started = time.perf_counter()
            await workload.run(publishes, requests, max(1, windows // progress_lines), report_to)
            run_seconds = time.perf_counter() - started
            after = sample()
            stats = bus.stats()
        expected = expected_deliveries(listeners, workload.published)
        routed = routed_requests(consumers, workload.requested)
        problems = reconcile(workload, stats, expected, routed)
    finally:
        if not tracing:
            tracemalloc.stop()
        gc.unfreeze()
        tinybus_logger.setLevel(level)
    return SoakResult(
        publishes,
        requests,
        warmup_publishes,
        warmup_requests,
        warmup_seconds,
        run_seconds,
        {"before": before, "after": after},
        warmed,
        stats,
        expected,
        routed,
        workload,
        problems,
    )


# -- the summary -------------------------------------------------------------------------------


def markdown(result: SoakResult, traced_bound: int, resident_bound: int) -> str:
    workload, stats, totals = result.workload, result.stats, result.stats.totals
    outcomes = workload.outcomes
    before, after = result.samples["before"], result.samples["after"]
    packages = ("tinybus", "reactivex", "pydantic")
    versions = ", ".join(f"{package} {version(package)}" for package in packages)
    listened = sum(result.expected.values())
    registered = [handler for address in stats.addresses.values() for handler in address.handlers]
    listeners = [handler for handler in registered if handler.role == "listener"]
    consumers = [handler for handler in registered if handler.role == "consumer"]
    delivered = sum(handler.delivered for handler in listeners)
    listener_drops = sum(handler.dropped for handler in listeners)
    consumer_deliveries = sum(handler.delivered for handler in consumers)
    consumer_drops = sum(handler.dropped for handler in consumers)
    skipped = skipped_requests(workload, result.routed)
    memory = [
        [
            "resident set size",
            f"{before.resident / MIB:.1f} MiB",
            f"{after.resident / MIB:.1f} MiB",
            f"{result.resident_growth / MIB:+.2f} MiB",
            f"{resident_bound / MIB:g} MiB",
        ],
        [
            "tracemalloc, current",
            f"{before.traced / MIB:.2f} MiB",
            f"{after.traced / MIB:.2f} MiB",
            f"{result.traced_growth:+,} B",
            f"{traced_bound / MIB:g} MiB",
        ],
        [
            "objects tracked by gc",
            f"{before.objects:,}",
            f"{after.objects:,}",
            f"{result.object_growth:+,}",
            f"{FLAT_OBJECTS}",
        ],
    ]
    counters = [
        ["published", f"{workload.published:,}", f"{totals.published:,}"],
        ["requested", f"{workload.requested:,}", f"{totals.requested:,}"],
        ["delivered (handler calls)", f"{sum(workload.calls.values()):,}", f"{totals.delivered:,}"],
        ["replied (replies requesters got)", f"{outcomes.replies:,}", f"{totals.replied:,}"],
        [
            "failed (requesters' handler failures + listeners' on `bus.errors`)",
            f"{outcomes.failures:,} + {workload.failed.total():,}",
            f"{totals.failed:,}",
        ],
        [
            "dropped (listeners' on `bus.errors` + requests skipped in a consumer's buffer)",
            f"{workload.dropped.total():,} + {skipped:,}",
            f"{totals.dropped:,}",
        ],
        ["requests timed out", f"{outcomes.timeouts:,}", "(no reply)"],
        ["requests cancelled by their caller", f"{outcomes.cancelled:,}", "(no reply)"],
        [
            "publishes x listeners reached (from the bodies) = listener deliveries + drops",
            f"{listened:,}",
            f"{delivered:,} + {listener_drops:,}",
        ],
        [
            "requests routed to consumers (round-robin, from the numbers) = consumers' "
            "deliveries + drops",
            f"{sum(result.routed.values()):,}",
            f"{consumer_deliveries:,} + {consumer_drops:,}",
        ],
        [
            "requests neither delivered nor dropped (`requested` - consumers' delivered + dropped)",
            "0",
            f"{totals.requested - consumer_deliveries - consumer_drops:,}",
        ],
    ]
    left = [
        ["pending_requests", f"{stats.pending_requests}"],
        ["running_handlers", f"{stats.running_handlers}"],
        ["scheduled_timers", f"{stats.scheduled_timers}"],
        ["queued", f"{stats.queued}"],
        ["subscriptions", f"{stats.subscriptions} ({REGISTRATIONS} registrations)"],
    ]
    found = [f"{part}: {line}" for part, lines in result.problems.items() for line in lines]
    found += result.memory_problems(traced_bound, resident_bound)
    lines = [
        "# TinyBus soak",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {versions}; {git_state()}",
        f"- Workload: {result.publishes:,} publishes and {result.requests:,} requests (10% time "
        "out, 10% cancelled by their caller, 5% fail in their handler) through one bus with "
        f"{REGISTRATIONS} registrations, after a warm-up of {result.warmup_publishes:,} "
        f"publishes and {result.warmup_requests:,} requests; `tracemalloc` on throughout "
        "(it slows the run about fourfold)",
        f"- Duration: {result.run_seconds:.1f} s (warm-up: {result.warmup_seconds:.1f} s): "
        f"{result.rate:,.0f} messages/s (publishes and requests), "
        f"{result.delivery_rate:,.0f} handler deliveries/s",
        "",
        "## Memory",
        "",
        "After `gc.collect()`: after the warm-up, and after the run once the bus was drained.",
        "",
        *table(["", "after warm-up", "after the run", "growth", "bound"], memory),
        "",
        "## Counters (warm-up included)",
        "",
        *table(["", "counted by the script", "`bus.stats().totals`"], counters),
        "",
        "Per address and per handler, `bus.stats()` was checked too: each consumer's delivered, "
        "replied and failed against its own calls and raises, and its dropped against the "
        "requests routed to it (round-robin) that its handler never saw (skipped in its "
        "buffer, their requester gone: not reported on `bus.errors`), each consumer checking "
        "that it got only requests routed to it; each listener's delivered and dropped against "
        "its calls, the drops on `bus.errors` and the bodies its pipe lets through.",
        "",
        *table(["left in the bus", ""], left),
        "",
        "## Verdict",
        "",
    ]
    if found:
        lines += [f"- {line}" for line in found]
    else:
        lines.append(
            "Every counter reconciles, in total, per address and per handler; nothing is left in "
            "the bus; memory stayed within its bounds."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> SoakResult:
    parser = argparse.ArgumentParser(description="A soak of one TinyBus: see the docstring.")
    parser.add_argument("--scale", type=float, default=None, help="fraction of the workload")
    parser.add_argument("--quick", action="store_true", help="a tenth of the workload")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the summary goes (default: benchmarks/results/soak.md for a full run, "
        "benchmarks/.scratch/results/soak.md otherwise)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress, no summary")
    arguments = parser.parse_args(argv)
    scale = arguments.scale if arguments.scale is not None else 0.1 if arguments.quick else 1.0
    if scale <= 0:
        parser.error("--scale must be positive")
    progress_lines = 20
    progress = Progress(progress_lines + 3, enabled=not arguments.quiet)
    try:
        result = asyncio.run(
            soak(round(PUBLISHES * scale), round(REQUESTS * scale), progress.step, progress_lines)
        )
    finally:
        progress.close()
    text = markdown(result, TRACED_BOUND, RESIDENT_BOUND)
    out = arguments.out or results_dir(None, full=scale == 1.0) / "soak.md"
    write(out, text.encode())
    if not arguments.quiet:
        print(text)
    if any(result.problems.values()) or result.memory_problems(TRACED_BOUND, RESIDENT_BOUND):
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
