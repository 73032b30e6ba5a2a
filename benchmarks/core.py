"""Throughput of the core bus, as ratios against a baseline measured in the same run.

The baseline is a direct ``await handler(x)``; for validation, pipelines, flow control and
patterns, it is the same publish or request without that feature; for ``stream()``, the same
publishes to a listener.

Run with ``uv run python benchmarks/core.py`` (``--quick`` for a short run). Each scenario and
its baseline are measured in alternating order, several rounds; the median is quoted, because
absolute numbers on a shared machine drift while ratios hold.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel
from reactivex import operators as ops

from tinybus import EventBus, Message

type Run = Callable[[int], Awaitable[None]]


class Order(BaseModel):
    id: int
    item: str
    quantity: int


async def handler_returns(message: Message[int]) -> int:
    return message.body


async def handler_awaits(message: Message[int]) -> int:
    await asyncio.sleep(0)
    return message.body


async def direct_returns(n: int) -> int:
    return n


async def direct_awaits(n: int) -> int:
    await asyncio.sleep(0)
    return n


def repeated(call: Callable[[int], Awaitable[object]]) -> Run:
    """A run that awaits ``call(n)`` for n in range(count)."""

    async def run(count: int) -> None:
        for n in range(count):
            await call(n)

    return run


def streamed(bus: EventBus, address: str) -> Run:
    """A run that publishes ``count`` messages to ``address`` while a task consumes them with
    ``async for`` over ``bus.stream(address)``, and ends when the last one was taken."""

    async def run(count: int) -> None:
        async with bus.stream(address) as messages:

            async def consume() -> None:
                taken = 0
                async for _ in messages:
                    taken += 1
                    if taken == count:
                        return

            consumer = asyncio.create_task(consume())
            for n in range(count):
                await bus.publish(address, n)
            await consumer

    return run


def scenarios(bus: EventBus, patterned: EventBus) -> dict[str, tuple[Run, Run]]:
    """name -> (baseline, tinybus), each running ``count`` operations. ``patterned`` is a bus
    with 1,000 pattern listeners none of which match the address published to."""

    async def listener(body: int) -> None:
        pass

    def unvalidated(message: Message) -> int:
        return 1

    def validated(message: Message[Order]) -> int:
        return message.body.quantity

    bus.consumer("returns", handler_returns)
    bus.consumer("awaits", handler_awaits)
    bus.on("event", listener)
    bus.on("event.piped", listener, pipe=[ops.filter(lambda n: n >= 0)])
    bus.on("event.actor", listener, max_concurrency=1)
    patterned.on("event", listener)
    for index in range(1000):
        patterned.on(f"other.{index}.*", listener)
    bus.consumer("orders.unvalidated", unvalidated)
    bus.consumer("orders.validated", validated)
    order = Order(id=1, item="tea", quantity=2)
    order_dict = order.model_dump()
    request_unvalidated = repeated(lambda n: bus.request("orders.unvalidated", order))

    return {
        "request, handler returns at once": (
            repeated(direct_returns),
            repeated(lambda n: bus.request("returns", n)),
        ),
        "request, handler awaits once": (
            repeated(direct_awaits),
            repeated(lambda n: bus.request("awaits", n)),
        ),
        "publish to one async listener": (
            repeated(listener),
            repeated(lambda n: bus.publish("event", n)),
        ),
        "publish through a filter pipeline (vs no pipeline)": (
            repeated(lambda n: bus.publish("event", n)),
            repeated(lambda n: bus.publish("event.piped", n)),
        ),
        "publish to a max_concurrency=1 listener (vs no limit)": (
            repeated(lambda n: bus.publish("event", n)),
            repeated(lambda n: bus.publish("event.actor", n)),
        ),
        "stream(): publish, consumed with async for (vs an async listener)": (
            repeated(lambda n: bus.publish("event", n)),
            streamed(bus, "event.streamed"),
        ),
        "stream(): publish, consumed with async for (vs a max_concurrency=1 listener)": (
            repeated(lambda n: bus.publish("event.actor", n)),
            streamed(bus, "event.streamed"),
        ),
        "publish with 1,000 unrelated patterns registered (vs none)": (
            repeated(lambda n: bus.publish("event", n)),
            repeated(lambda n: patterned.publish("event", n)),
        ),
        "request, Message[Order] given an Order (vs unannotated)": (
            request_unvalidated,
            repeated(lambda n: bus.request("orders.validated", order)),
        ),
        "request, Message[Order] given a dict (vs unannotated)": (
            request_unvalidated,
            repeated(lambda n: bus.request("orders.validated", order_dict)),
        ),
    }


async def measure(run: Run, count: int) -> float:
    started = time.perf_counter()
    await run(count)
    return count / (time.perf_counter() - started)


async def main(rounds: int, count: int) -> None:
    async with EventBus() as bus, EventBus() as patterned:
        python = f"Python {platform.python_version()} on {platform.machine()}"
        print(f"{python}, {rounds} rounds of {count}")
        print("| scenario | baseline (ops/s) | TinyBus (ops/s) | TinyBus / baseline |")
        print("|---|---:|---:|---:|")
        for name, (baseline, subject) in scenarios(bus, patterned).items():
            await measure(subject, count // 10)  # warm-up
            base_rates: list[float] = []
            bus_rates: list[float] = []
            for round_number in range(rounds):
                pair = [(baseline, base_rates), (subject, bus_rates)]
                for run, rates in pair if round_number % 2 == 0 else reversed(pair):
                    rates.append(await measure(run, count))
            base, ours = statistics.median(base_rates), statistics.median(bus_rates)
            print(f"| {name} | {base:,.0f} | {ours:,.0f} | {ours / base:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    arguments = parser.parse_args()
    rounds, count = (3, 20_000) if arguments.quick else (7, 100_000)
    asyncio.run(main(rounds, count))
    sys.exit(0)
