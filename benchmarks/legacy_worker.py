"""tinybus 0.2.1, measured in its own environment: ``legacy.py`` runs this script with that
environment's interpreter (0.2.1 is the same package name as this tinybus, so the two cannot be
imported in one process).

It measures the direct ``await handler(x)``, the hand-written bus and 0.2.1 with the very code
``run.py`` measures them with (``harness.py``): calibrated, then once per round in alternating
order. It reads its settings as JSON (the first argument), prints one JSON object on stdout,
and ``STEP <label>`` lines on stderr as it goes. It imports nothing of the project but
``harness``, ``common`` and ``handrolled`` (the standard library only) and tinybus 0.2.1.

0.2.1's API: ``bus.consumer(address, handler)``, the handler taking a pydantic ``Message``
(``message.body``); ``await bus.request(address, body)`` returns the handler's return value
(it awaits ``asyncio.wait_for(handler(message), timeout)``); ``bus.on(event, listener)``;
``await bus.publish(event, body)`` awaits every listener with ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tracemalloc
from contextlib import AsyncExitStack
from importlib import metadata
from typing import Any

from harness import (
    DIRECT,
    HANDROLLED,
    Call,
    Publisher,
    Tally,
    async_listeners,
    baseline_requests,
    direct_publisher,
    handrolled_publisher,
    measure_rounds,
    per_pending_request,
    per_registration,
    publish_run,
    request_run,
)

LEGACY = "tinybus 0.2.1"


def step(label: str) -> None:
    print(f"STEP {label}", file=sys.stderr, flush=True)


async def legacy_returns(message: Any) -> int:
    return message.body


async def legacy_awaits(message: Any) -> int:
    await asyncio.sleep(0)
    return message.body


async def request_contenders(stack: AsyncExitStack, reply: str) -> dict[str, Call]:
    from tinybus import EventBus  # 0.2.1, in this environment

    made = baseline_requests(stack, "returns" if reply == "returns" else "awaits")
    bus = EventBus()
    bus.consumer("bench.request", legacy_returns if reply == "returns" else legacy_awaits)
    made[LEGACY] = lambda n: bus.request("bench.request", n)
    return made


async def publish_contenders(stack: AsyncExitStack, listeners: int) -> dict[str, Publisher]:
    from tinybus import EventBus

    made = {
        DIRECT: await direct_publisher(stack, Tally(), listeners, False, 0),
        HANDROLLED: await handrolled_publisher(stack, Tally(), listeners, False, 0),
    }
    tally = Tally()
    bus = EventBus()
    for listener in async_listeners(tally, listeners):
        bus.on("event", listener)
    # publish awaits every listener (asyncio.gather): nothing left to settle.
    made[LEGACY] = Publisher(lambda n: bus.publish("event", n), True, tally)
    return made


async def measure(scenario: dict[str, Any], settings: dict[str, Any]) -> dict[str, list[float]]:
    title = scenario["title"]
    async with AsyncExitStack() as stack:
        if scenario["kind"] == "publish":
            listeners = scenario["listeners"]
            publishers = await publish_contenders(stack, listeners)
            runs = {name: publish_run(p, listeners, False) for name, p in publishers.items()}
        else:
            calls = await request_contenders(stack, scenario["reply"])
            runs = {name: request_run(call, "sequential", 1) for name, call in calls.items()}
        gc.collect()
        gc.freeze()
        stack.callback(gc.unfreeze)
        rates, _ = await measure_rounds(
            runs,
            settings["rounds"],
            settings["seconds"],
            settings["collect"],
            1,
            step,
            title,
        )
    return rates


async def memory(registrations: int, pending: int) -> dict[str, dict[str, float]]:
    """0.2.1's bytes and objects per registration, and bytes per pending request, with the
    direct await's for reference, as ``memory.py`` measures the others."""
    from tinybus import EventBus

    async def listener(body: int) -> None:
        pass

    table: dict[str, list[Any]] = {}
    bus = EventBus()

    def direct_register(addresses: list[str]) -> None:
        for address in addresses:
            table.setdefault(address, []).append(listener)

    def legacy_register(addresses: list[str]) -> None:
        for address in addresses:
            bus.on(address, listener)

    gate = asyncio.Event()

    async def direct_gated(n: int) -> int:
        await gate.wait()
        return n

    async def legacy_gated(message: Any) -> int:
        await gate.wait()
        return message.body

    bus.consumer("pending", legacy_gated)
    gc.collect()
    gc.freeze()
    tracemalloc.start()
    try:
        result: dict[str, dict[str, float]] = {"registration": {}, "objects": {}, "pending": {}}
        for name, register in ((DIRECT, direct_register), (LEGACY, legacy_register)):
            step(f"(8) memory: {name}")
            bytes_, objects = await per_registration(register, name, registrations)
            result["registration"][name], result["objects"][name] = bytes_, objects
        calls: dict[str, Call] = {
            DIRECT: lambda n: direct_gated(n),
            LEGACY: lambda n: bus.request("pending", n),
        }
        for name, call in calls.items():
            step(f"(8) memory: pending {name}")
            result["pending"][name] = await per_pending_request(call, gate, pending)
        return result
    finally:
        tracemalloc.stop()
        gc.unfreeze()


async def main(settings: dict[str, Any]) -> dict[str, Any]:
    import tinybus

    rates = {
        scenario["key"]: await measure(scenario, settings) for scenario in settings["scenarios"]
    }
    measured = await memory(settings["registrations"], settings["pending"])
    return {
        "version": metadata.version("tinybus"),
        "file": tinybus.__file__,
        "python": sys.version.split()[0],
        "rates": rates,
        "memory": measured,
    }


if __name__ == "__main__":
    outcome = asyncio.run(main(json.loads(sys.argv[1])))
    print(json.dumps(outcome))
