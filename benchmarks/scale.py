"""Scale: TinyBus's cost per operation against the size of what the bus holds.

Each curve measures operations at a few sizes of one thing, everything else small:

- addresses, each with one listener: publish to one of them (in turn, to up to 1,000 of them,
  spread over the range), and register then unregister a listener on one more address;
- registrations at one address: a request to it (N consumers), and registering then
  unregistering one more consumer (N consumers) or listener (N listeners);
- unrelated patterns registered (``other.{i}.*``, one listener each): publish to an address
  with one listener that none matches;
- requests pending (waiting for a consumer that waits on a gate): one more request, to another
  consumer that answers at once;
- handlers running (N listeners of one address, each behind one ``asyncio.Semaphore(10)``, set
  off by one publish): ``drain()`` until they are done, or ``close()``, per running handler;
  and awaiting the publish itself, for reference: drain's and close's verdicts are of their
  cost divided by the publish's, size by size (what asyncio's own tasks cost as they pile up
  is in both).

A column is **flat** when its cost per operation at the largest size is at most twice that at
the smallest (O(1) per operation, give or take caches); else **linear** when the sizes in
between lie near the straight line through the first and last points (cost = a + b x size:
O(n) per operation), and "grows, less than linearly" when they lie well above it.

Method. Every size of a curve is built first (one bus each; the cyclic collector off while
building, as a million registrations would otherwise spend most of the time in full
collections; then what was built is collected once and frozen out of its sight with
``gc.freeze()``, the collector on while measuring). Each operation is calibrated so that a pass
lasts about ``seconds``; then the sizes take turns, in alternating order, for ``rounds`` rounds,
and the best pass of each is kept (the machine's other load only ever adds time). One-shot
operations (drain, close) are run ``repeats`` times on fresh buses, sizes in turn, the best
kept (as many times at every size: the best of more tries would favour a size).

Run alone with ``uv run python benchmarks/scale.py`` (``--quick``, ``--smoke``); ``run.py``
runs it too and writes its tables into ``results.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from common import table

from tinybus import EventBus, Message

type Op = Callable[[int], Awaitable[object]]
type Step = Callable[[str], None]

FLAT = 2.0  # the largest growth of the cost per operation still called flat
TARGETS = 1000  # addresses published to, in turn, in the addresses curve
WAYS = ("drain()", "close()", "awaiting the publish (reference)")


@dataclass(frozen=True)
class Sizes:
    addresses: tuple[int, ...]
    per_address: tuple[int, ...]
    patterns: tuple[int, ...]
    pending: tuple[int, ...]
    running: tuple[int, ...]
    seconds: float  # how long one timed pass lasts
    rounds: int  # timed passes per point (the best is kept)
    repeats: int  # one-shot runs per point (the best is kept)

    def steps(self) -> int:
        """How many progress steps ``scale()`` reports."""
        built = len(self.addresses) + len(self.per_address) + len(self.patterns) + len(self.pending)
        return built + 4 * self.rounds + self.repeats * len(self.running) * len(WAYS)


SIZES = {
    "smoke": Sizes((10, 100), (1, 10), (0, 10), (0, 10), (10, 100), 0.0, 1, 1),
    "quick": Sizes(
        (1_000, 10_000, 30_000),
        (1, 100, 1_000),
        (0, 1_000, 10_000),
        (0, 1_000, 10_000),
        (1_000, 2_000, 5_000),
        0.02,
        4,
        2,
    ),
    "full": Sizes(
        (1_000, 10_000, 100_000, 1_000_000),
        (1, 100, 10_000),
        (0, 1_000, 10_000),
        (0, 1_000, 100_000),
        (1_000, 10_000, 50_000),
        0.04,
        5,
        2,
    ),
}


@dataclass
class Curve:
    title: str
    size: str  # what the sizes count
    sizes: tuple[int, ...]
    columns: dict[str, list[float]] = field(default_factory=dict)  # operation -> s per op
    unit: str = "µs per operation"
    # A column the others are judged against: their verdicts (and the growth shown) are of
    # their cost divided by its, size by size. Its own verdict is of its cost.
    reference: str | None = None

    def judged(self, name: str) -> list[float]:
        """What the verdict of column ``name`` is about."""
        costs = self.columns[name]
        if self.reference is None or name == self.reference:
            return costs
        return [cost / ref for cost, ref in zip(costs, self.columns[self.reference], strict=True)]

    def verdicts(self) -> dict[str, str]:
        return {name: verdict(self.sizes, self.judged(name)) for name in self.columns}


def verdict(sizes: tuple[int, ...], costs: list[float]) -> str:
    """``flat`` when the last cost is at most ``FLAT`` times the first; else ``linear`` when
    the points in between lie near the straight line from the first to the last (within a
    factor of two of it: cost = a + b x size), and ``grows, less than linearly`` when they lie
    well above it (as a logarithm would)."""
    first, last = costs[0], costs[-1]
    if last <= FLAT * first:
        return "flat"
    slope = (last - first) / (sizes[-1] - sizes[0])
    for size, cost in zip(sizes[1:-1], costs[1:-1], strict=True):
        if cost > 2 * (first + slope * (size - sizes[0])):
            return "grows, less than linearly"
    return "linear"


def marginal(sizes: tuple[int, ...], costs: list[float]) -> float:
    """Seconds each unit of size adds to the cost, from the first point to the last."""
    return (costs[-1] - costs[0]) / (sizes[-1] - sizes[0])


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Point:
    """One size of a curve, built: its operations, and how to take it down."""

    ops: dict[str, Op]
    bus: EventBus
    after: Callable[[], Awaitable[object]] | None = None  # before the bus closes


type Build = Callable[[int], Awaitable[Point]]


async def passes(op: Op, count: int) -> float:
    started = time.perf_counter()
    for n in range(count):
        await op(n)
    return time.perf_counter() - started


async def calibrate(op: Op, seconds: float) -> int:
    """Warm ``op`` up; the count that makes a pass last about ``seconds``."""
    count = 1
    while True:
        elapsed = await passes(op, count)
        if elapsed >= seconds / 4 or count >= 1 << 20:
            return max(1, round(count * seconds / max(elapsed, 1e-9)))
        count *= 4


async def measure(curve: Curve, build: Build, sizes: Sizes, step: Step) -> Curve:
    """Build every size, then time each operation at each: the best of ``rounds`` passes."""
    points: list[Point] = []
    gc.disable()
    try:
        for size in curve.sizes:
            step(f"scale: {curve.title}: {size:,} {curve.size}")
            points.append(await build(size))
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()
    try:
        counts = [
            {name: await calibrate(op, sizes.seconds) for name, op in p.ops.items()} for p in points
        ]
        best = [dict.fromkeys(p.ops, float("inf")) for p in points]
        order = list(range(len(points)))
        for round_number in range(sizes.rounds):
            step(f"scale: {curve.title}: round {round_number + 1} of {sizes.rounds}")
            for index in order if round_number % 2 == 0 else reversed(order):
                for name, op in points[index].ops.items():
                    elapsed = await passes(op, counts[index][name])
                    best[index][name] = min(best[index][name], elapsed / counts[index][name])
        for name in points[0].ops:
            curve.columns[name] = [best[index][name] for index in order]
    finally:
        # What the points built stays frozen (freed by reference counting, but for cycles)
        # until ``scale()`` ends: unfreezing would put everything back in the collector's
        # sight, and make each later collection scan the whole process.
        for point in points:
            if point.after is not None:
                await point.after()
            await point.bus.close()
        del points
    return curve


async def listener(body: int) -> None:
    pass


async def another_listener(body: int) -> None:
    pass


async def echo(message: Message[int]) -> int:
    return message.body


async def another_consumer(message: Message[int]) -> int:
    return message.body


def consumers(count: int) -> Iterator[Callable[[Message[int]], Awaitable[int]]]:
    """``count`` distinct consumers (one handler may be registered once per address)."""
    for _ in range(count):

        async def consumer(message: Message[int]) -> int:
            return message.body

        yield consumer


def listeners(count: int) -> Iterator[Callable[[int], Awaitable[None]]]:
    for _ in range(count):

        async def each(body: int) -> None:
            pass

        yield each


# -- the curves ----------------------------------------------------------------------------------


async def addresses_point(size: int) -> Point:
    bus = EventBus()
    names = [f"scale.{index}" for index in range(size)]
    for name in names:
        bus.on(name, listener)
    targets = names[:: max(1, size // TARGETS)]
    count = len(targets)

    async def churn(n: int) -> None:
        bus.on("scale.new", listener).unregister()

    return Point(
        {
            "publish to one of them": lambda n: bus.publish(targets[n % count], n),
            "register + unregister a listener on one more address": churn,
        },
        bus,
    )


async def per_address_point(size: int) -> Point:
    bus = EventBus()
    for consumer in consumers(size):
        bus.consumer("scale.consumers", consumer)
    for each in listeners(size):
        bus.on("scale.listeners", each)

    async def churn_consumer(n: int) -> None:
        bus.consumer("scale.consumers", another_consumer).unregister()

    async def churn_listener(n: int) -> None:
        bus.on("scale.listeners", another_listener).unregister()

    return Point(
        {
            "request (N consumers)": lambda n: bus.request("scale.consumers", n),
            "register + unregister a consumer (N consumers)": churn_consumer,
            "register + unregister a listener (N listeners)": churn_listener,
        },
        bus,
    )


async def patterns_point(size: int) -> Point:
    bus = EventBus()
    bus.on("scale.event", listener)
    for index in range(size):
        bus.on(f"other.{index}.*", listener)
    return Point(
        {"publish to an address with one listener": lambda n: bus.publish("scale.event", n)}, bus
    )


async def pending_point(size: int) -> Point:
    bus = EventBus()
    gate = asyncio.Event()

    async def held(message: Message[int]) -> int:
        await gate.wait()
        return message.body

    bus.consumer("scale.held", held)
    bus.consumer("scale.echo", echo)
    waiting = [asyncio.ensure_future(bus.request("scale.held", n)) for n in range(size)]
    for _ in range(5):
        await asyncio.sleep(0)
    if bus.stats().pending_requests != size:
        raise AssertionError(f"{bus.stats().pending_requests} pending, not {size}")

    async def release() -> None:
        gate.set()
        await asyncio.gather(*waiting)
        waiting.clear()

    return Point(
        {"one more request, answered at once": lambda n: bus.request("scale.echo", n)},
        bus,
        release,
    )


async def running(sizes: Sizes, step: Step) -> Curve:
    curve = Curve(
        "Handlers running (listeners behind an asyncio.Semaphore(10))",
        "running handlers",
        sizes.running,
        unit="µs per running handler",
        reference=WAYS[-1],
    )
    best = {way: [float("inf")] * len(sizes.running) for way in WAYS}
    order = list(range(len(sizes.running)))
    for repeat in range(sizes.repeats):  # as many at every size: the best of as many
        for index in order if repeat % 2 == 0 else reversed(order):
            size = sizes.running[index]
            for way in WAYS:
                step(f"scale: {size:,} running handlers, {way}")
                elapsed = await run_down(size, way)
                best[way][index] = min(best[way][index], elapsed / size)
    curve.columns.update(best)
    return curve


async def run_down(size: int, way: str) -> float:
    """Seconds until ``size`` running listeners are done, waited for ``way``."""
    bus = EventBus(close_timeout=600.0)
    semaphore = asyncio.Semaphore(10)
    done = [0]

    def make() -> Callable[[int], Awaitable[None]]:
        async def behind_the_semaphore(body: int) -> None:
            async with semaphore:
                await asyncio.sleep(0)
            done[0] += 1

        return behind_the_semaphore

    gc.disable()
    try:
        for _ in range(size):
            bus.on("scale.running", make())
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()
    try:
        publish = asyncio.ensure_future(bus.publish("scale.running", 1))
        for _ in range(3):
            await asyncio.sleep(0)
        started = time.perf_counter()
        if way == "drain()":
            await bus.drain()
        elif way == "close()":
            await bus.close()
        else:
            await publish
        elapsed = time.perf_counter() - started
        await publish
        if done[0] != size:
            raise AssertionError(f"{done[0]} of {size} handlers done after {way}")
    finally:
        await bus.close()
    return elapsed


async def warm_up() -> None:
    """What a first registration, publish or request builds once (type adapters, caches) is
    built before the first point."""
    async with EventBus() as bus:
        bus.on("warm.event", listener)
        bus.consumer("warm.echo", echo)
        for consumer in consumers(2):
            bus.consumer("warm.consumers", consumer)
        for n in range(100):
            await bus.publish("warm.event", n)
            await bus.request("warm.echo", n)
            await bus.request("warm.consumers", n)
            bus.on("warm.event", another_listener).unregister()
            bus.consumer("warm.consumers", another_consumer).unregister()


async def scale(sizes: Sizes, step: Step) -> list[Curve]:
    # What exists now is frozen out of the collector's sight until the end, and so is what each
    # point builds: the collections made while measuring scan only what is new.
    gc.collect()
    gc.freeze()
    try:
        return await all_curves(sizes, step)
    finally:
        gc.unfreeze()
        gc.collect()


async def all_curves(sizes: Sizes, step: Step) -> list[Curve]:
    await warm_up()
    timed = [
        (Curve("Addresses, each with one listener", "addresses", sizes.addresses), addresses_point),
        (
            Curve("Registrations at one address", "registrations", sizes.per_address),
            per_address_point,
        ),
        (Curve("Unrelated patterns registered", "patterns", sizes.patterns), patterns_point),
        (Curve("Requests pending", "pending requests", sizes.pending), pending_point),
    ]
    measured = [await measure(curve, build, sizes, step) for curve, build in timed]
    return [*measured, await running(sizes, step)]


# -- the tables ----------------------------------------------------------------------------------


def markdown(curves: list[Curve]) -> list[str]:
    lines: list[str] = []
    for curve in curves:
        verdicts = curve.verdicts()
        names = list(curve.columns)
        rows: list[list[str]] = []
        for index, size in enumerate(curve.sizes):
            row = [f"{size:,}"]
            for name in names:
                costs, judged = curve.columns[name], curve.judged(name)
                growth = judged[index] / max(judged[0], 1e-12)
                row.append(f"{costs[index] * 1e6:,.2f} (x{growth:.2f})")
            rows.append(row)
        rows.append(["**verdict**", *(f"**{verdicts[name]}**" for name in names)])
        judged = (
            [
                f"Judged against {curve.reference}: the other columns' verdicts, and the growth "
                "in their parentheses, are of their cost divided by its at the same size.",
                "",
            ]
            if curve.reference is not None
            else []
        )
        lines += [
            f"### {curve.title}",
            "",
            *judged,
            *table([curve.size, *(f"{name}: {curve.unit}" for name in names)], rows),
            "",
        ]
    return lines


def summary(curves: list[Curve]) -> list[str]:
    """One line per column: its verdict, and its growth from the first size to the last."""
    lines: list[str] = []
    for curve in curves:
        for name, costs in curve.columns.items():
            judged = curve.judged(name)
            growth = judged[-1] / max(judged[0], 1e-12)
            found = verdict(curve.sizes, judged)
            added = marginal(curve.sizes, costs)
            extra = f", about {added * 1e9:,.1f} ns more per one more" if found != "flat" else ""
            versus = (
                f", against {curve.reference}"
                if curve.reference is not None and name != curve.reference
                else ""
            )
            lines.append(
                f"- {curve.title}, {name}: **{found}** (x{growth:.2f}{versus} from "
                f"{curve.sizes[0]:,} to {curve.sizes[-1]:,} {curve.size}{extra})"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="smaller sizes")
    group.add_argument("--smoke", action="store_true", help="tiny sizes")
    arguments = parser.parse_args()
    mode = "smoke" if arguments.smoke else "quick" if arguments.quick else "full"
    curves = asyncio.run(scale(SIZES[mode], lambda label: None))
    print("\n".join([*markdown(curves), *summary(curves)]))


if __name__ == "__main__":
    main()
