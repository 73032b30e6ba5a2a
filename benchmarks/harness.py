"""How a contender is measured, and the two baselines, with nothing but the standard library.

``run.py`` measures TinyBus and its peers with this; ``legacy_worker.py`` measures tinybus
0.2.1 with it, in a process (and an environment) of its own. Both processes so measure the
direct ``await handler(x)`` and the hand-written bus with the same code, in the same way, which
is what lets a ratio bridge them (``legacy.py``).

A request contender is a ``Call``: ``call(n)`` returns the awaitable of one request with body
``n`` (n >= 1: bubus's ``event_result`` treats a falsy reply as no reply). A publish
contender is a ``Publisher``: ``publish(n)`` publishes one event (awaited when the library's
publish is a coroutine), ``settle()`` waits, the library's own way, until every listener has
handled every event, and every listener counts what it handled on a ``Tally``, so that a
measurement can be checked to have ended after the last listener's work.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal

from common import settle_tasks
from handrolled import QueueBus

DIRECT = "direct await"
HANDROLLED = "hand-written bus"

type Kind = Literal["sequential", "in_flight", "publish"]
type Call = Callable[[int], Awaitable[object]]
type Run = Callable[[int], Awaitable[None]]
type Reply = Literal["returns", "awaits"]
type Step = Callable[[str], None]


class Tally:
    """Counts what listeners handled; ``reached()`` waits until the armed target is met."""

    __slots__ = ("_waiter", "count", "target")

    def __init__(self) -> None:
        self.count = 0
        self.target = -1
        self._waiter: asyncio.Future[None] | None = None

    def hit(self) -> None:
        self.count += 1
        if self.count == self.target and self._waiter is not None:
            self._waiter.set_result(None)

    def arm(self, target: int) -> None:
        self.count, self.target, self._waiter = 0, target, None

    async def reached(self) -> None:
        if self.count < self.target:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


@dataclass
class Publisher:
    publish: Callable[[int], Any]
    is_async: bool
    tally: Tally
    settle: Callable[[], Awaitable[object]] | None = None


# -- runs: ``count`` operations of a contender -------------------------------------------------


def request_run(call: Call, kind: Kind, in_flight: int) -> Run:
    """``count`` requests one after another, or ``count`` batches of ``in_flight`` at once."""
    if kind == "in_flight":

        async def run_in_flight(count: int) -> None:
            for _ in range(count):
                await asyncio.gather(*[call(n) for n in range(1, in_flight + 1)])

        return run_in_flight

    async def run_sequential(count: int) -> None:
        for n in range(1, count + 1):
            await call(n)

    return run_sequential


def publish_run(publisher: Publisher, listeners: int, filtered: bool) -> Run:
    """``count`` publishes, then until every listener has handled every event (checked)."""
    publish, settle, tally = publisher.publish, publisher.settle, publisher.tally

    async def run(count: int) -> None:
        tally.arm((count + 1) // 2 if filtered else count * listeners)
        if publisher.is_async:
            for n in range(count):
                await publish(n)
        else:
            for n in range(count):
                publish(n)
        if settle is not None:
            await settle()
        if tally.count != tally.target:
            raise AssertionError(f"handled {tally.count} of {tally.target}")

    return run


# -- measuring ---------------------------------------------------------------------------------


async def timed(run: Run, count: int, collect: bool = True) -> float:
    if collect:
        gc.collect()
    started = time.perf_counter()
    await run(count)
    return time.perf_counter() - started


async def calibrate(run: Run, seconds: float, collect: bool) -> int:
    """Warm ``run`` up and return the count that makes one measurement last ``seconds``."""
    count = 1
    while True:
        elapsed = await timed(run, count, collect)
        if elapsed >= seconds / 4 or count >= 1 << 22:
            return max(1, round(count * seconds / max(elapsed, 1e-9)))
        count *= 2 if elapsed >= seconds / 40 else 8


async def measure_rounds(
    runs: Mapping[str, Run],
    rounds: int,
    seconds: float,
    collect: bool,
    per_op: int,
    step: Step,
    title: str,
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Each run calibrated, then measured once per round, in alternating order (forward, then
    backward): its rates per round (operations/s), and the counts calibrated."""
    counts: dict[str, int] = {}
    for name, run in runs.items():
        step(f"{title}: warm-up {name}")
        counts[name] = await calibrate(run, seconds, collect)
    rates: dict[str, list[float]] = {}
    names = list(runs)
    for round_number in range(rounds):
        for name in names if round_number % 2 == 0 else reversed(names):
            step(f"{title}: {name}")
            elapsed = await timed(runs[name], counts[name], collect)
            rates.setdefault(name, []).append(counts[name] * per_op / elapsed)
    return rates, counts


async def latencies(call: Call, kind: Kind, count: int, in_flight: int) -> list[float]:
    """Each request's time from its call to its reply, over ``count`` requests (in flight:
    ``count`` batches of ``in_flight`` at once)."""
    clock = time.perf_counter
    samples: list[float] = []
    if kind == "sequential":
        for n in range(1, count + 1):
            started = clock()
            await call(n)
            samples.append(clock() - started)
        return samples

    async def one(n: int) -> None:
        started = clock()
        await call(n)
        samples.append(clock() - started)

    for _ in range(count):
        await asyncio.gather(*[one(n) for n in range(1, in_flight + 1)])
    return samples


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- memory --------------------------------------------------------------------------------------


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def tracked_objects() -> int:
    """Objects the cyclic collector tracks now, after a collection (those frozen by
    ``gc.freeze()`` are not counted: a difference of two readings is what matters)."""
    gc.collect()
    return len(gc.get_objects())


async def per_registration(
    register: Callable[[list[str]], None], name: str, count: int
) -> tuple[float, float]:
    """Traced bytes and collector-tracked objects per registration, over ``count``
    registrations of one listener on addresses of their own (tasks that a registration starts
    included), after one registration to warm up. Call with tracemalloc tracing."""
    register([f"warmup_{name.replace(' ', '_')}"])
    addresses = [f"event_{index}" for index in range(count)]
    await settle_tasks(20)
    objects = tracked_objects()
    before = traced()
    register(addresses)
    await settle_tasks()
    after = traced()
    return (after - before) / count, (tracked_objects() - objects) / count


async def per_pending_request(call: Call, gate: asyncio.Event, count: int) -> float:
    """Traced bytes per request waiting for its reply, ``count`` at once, the requester's task
    included: the handler waits on ``gate``, opened after the count. Call with tracemalloc
    tracing."""
    gate.set()
    await call(1)  # warm-up: whatever is built on first use is not counted
    gate.clear()
    await settle_tasks(20)  # what the previous contender left finishes outside the count
    before = traced()
    tasks = [asyncio.ensure_future(call(n)) for n in range(1, count + 1)]
    await settle_tasks()
    result = (traced() - before) / count
    gate.set()
    await asyncio.gather(*tasks)
    del tasks  # freed here rather than during the next contender's count
    return result


# -- the baselines -------------------------------------------------------------------------------


async def direct_returns(n: int) -> int:
    return n


async def direct_awaits(n: int) -> int:
    await asyncio.sleep(0)
    return n


def baseline_requests(stack: AsyncExitStack, reply: Reply) -> dict[str, Call]:
    """The direct call of the handler, and a request to it through the hand-written bus."""
    direct = direct_returns if reply == "returns" else direct_awaits
    handrolled = QueueBus()
    stack.push_async_callback(handrolled.close)
    handrolled.consumer("bench.request", direct)
    # Every call site is a lambda, the direct baseline's too, so that every contender pays the
    # same layer of indirection.
    return {
        DIRECT: lambda n: direct(n),
        HANDROLLED: lambda n: handrolled.request("bench.request", n),
    }


def even(n: int) -> bool:
    return n % 2 == 0


def async_listeners(tally: Tally, count: int) -> list[Callable[[int], Awaitable[None]]]:
    """``count`` distinct listener functions (some libraries deduplicate by identity, bubus
    warns about equal names)."""

    def make(index: int) -> Callable[[int], Awaitable[None]]:
        async def listener(body: int) -> None:
            tally.hit()

        listener.__name__ = listener.__qualname__ = f"listener_{index}"
        return listener

    return [make(index) for index in range(count)]


async def direct_publisher(
    stack: AsyncExitStack, tally: Tally, listeners: int, filtered: bool, patterns: int
) -> Publisher:
    handlers = async_listeners(tally, listeners)
    if filtered:
        (listener,) = handlers

        async def publish_filtered(n: int) -> None:
            if even(n):
                await listener(n)

        return Publisher(lambda n: publish_filtered(n), True, tally)
    if listeners == 1:
        (listener,) = handlers
        return Publisher(lambda n: listener(n), True, tally)

    async def publish_all(n: int) -> None:
        for handler in handlers:
            await handler(n)

    return Publisher(lambda n: publish_all(n), True, tally)


async def handrolled_publisher(
    stack: AsyncExitStack, tally: Tally, listeners: int, filtered: bool, patterns: int
) -> Publisher:
    # It has no patterns: with ``patterns`` it stands for the same publish without them.
    bus = QueueBus()
    stack.push_async_callback(bus.close)
    handlers = async_listeners(tally, listeners)
    if filtered:
        (listener,) = handlers

        async def filtering(body: int) -> None:  # the filter one writes by hand
            if even(body):
                await listener(body)

        handlers = [filtering]
    for handler in handlers:
        bus.on("event", handler)
    return Publisher(lambda n: bus.publish("event", n), False, tally, bus.drain)
