"""Scenario (8), memory: bytes per registration and per pending request (tracemalloc),
objects the cyclic collector tracks per address with one listener, and TinyBus's resident
memory before and after a soak of messages and timed-out requests."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiopubsub
import blinker
import bubus
import pyee.asyncio
import reactivex.subject
from common import FLAT_OBJECTS, FLAT_RESIDENT, resident_bytes, settle_tasks
from contenders import (
    AIOPUBSUB,
    BLINKER,
    BUBUS,
    DIRECT,
    HANDROLLED,
    PYEE,
    RX,
    TINYBUS,
    BubusRequest,
)
from handrolled import QueueBus
from harness import per_pending_request, per_registration

from tinybus import EventBus, Message

type Register = Callable[[list[str]], None]
type Call = Callable[[int], Awaitable[object]]

# bubus refuses a dispatch when 100 events are pending or its queue holds 50.
BUBUS_PENDING = 40

# TinyBus with a consumer that handles one request at a time, as the hand-written bus's does:
# the others wait in its buffer. Reported in a row of its own.
TINYBUS_ONE_AT_A_TIME = "TinyBus, max_concurrency=1"


async def listener(body: int) -> None:
    pass


def sync_listener(body: int) -> None:
    pass


async def blinker_receiver(sender: object, body: int) -> None:
    pass


async def bubus_handler(event: bubus.BaseEvent[None]) -> None:
    pass


async def aiopubsub_callback(key: aiopubsub.Key, message: int) -> None:
    pass


async def registrars(stack: AsyncExitStack) -> dict[str, Register]:
    """How each contender registers one async listener per address (Rx: a Subject per address,
    with a plain function as observer). The bus itself is built before the measurement."""
    table: dict[str, list[Callable[[int], Awaitable[None]]]] = {}
    handrolled = QueueBus()
    stack.push_async_callback(handrolled.close)
    bus = await stack.enter_async_context(EventBus())
    emitter = pyee.asyncio.AsyncIOEventEmitter()
    namespace = blinker.Namespace()
    bubus_bus = bubus.EventBus()
    stack.push_async_callback(bubus_bus.stop, clear=True)
    hub = aiopubsub.Hub()
    subscriber = aiopubsub.Subscriber(hub, "registrations")
    stack.push_async_callback(subscriber.remove_all_listeners)
    subjects: dict[str, reactivex.subject.Subject[int]] = {}

    def direct(addresses: list[str]) -> None:
        for address in addresses:
            table.setdefault(address, []).append(listener)

    def handrolled_on(addresses: list[str]) -> None:
        for address in addresses:
            handrolled.on(address, listener)

    def tinybus_on(addresses: list[str]) -> None:
        for address in addresses:
            bus.on(address, listener)

    def pyee_on(addresses: list[str]) -> None:
        for address in addresses:
            emitter.on(address, listener)

    def blinker_connect(addresses: list[str]) -> None:
        for address in addresses:
            namespace.signal(address).connect(blinker_receiver)

    def bubus_on(addresses: list[str]) -> None:
        for address in addresses:
            bubus_bus.on(address, bubus_handler)

    def aiopubsub_listen(addresses: list[str]) -> None:
        for address in addresses:
            subscriber.add_async_listener(aiopubsub.Key("bench", address), aiopubsub_callback)

    def rx_subscribe(addresses: list[str]) -> None:
        for address in addresses:
            subject = subjects[address] = reactivex.subject.Subject()
            subject.subscribe(on_next=sync_listener)

    return {
        DIRECT: direct,
        HANDROLLED: handrolled_on,
        TINYBUS: tinybus_on,
        PYEE: pyee_on,
        BLINKER: blinker_connect,
        BUBUS: bubus_on,
        AIOPUBSUB: aiopubsub_listen,
        RX: rx_subscribe,
    }


async def per_registration_all(
    count: int, step: Callable[[str], None]
) -> tuple[dict[str, float], dict[str, float]]:
    """Traced bytes and collector-tracked objects per registration, over ``count``
    registrations on distinct addresses (tasks that a registration starts included)."""
    registrations: dict[str, float] = {}
    objects: dict[str, float] = {}
    async with AsyncExitStack() as stack:
        registers = await registrars(stack)
        for name, register in registers.items():
            step(f"(8) bytes and objects per registration: {name}")
            registrations[name], objects[name] = await per_registration(register, name, count)
    return registrations, objects


async def requesters(stack: AsyncExitStack, gate: asyncio.Event) -> dict[str, Call]:
    """Request contenders whose handler waits until ``gate`` opens."""

    async def direct_gated(n: int) -> int:
        await gate.wait()
        return n

    async def tinybus_gated(message: Message[int]) -> int:
        await gate.wait()
        return message.body

    async def blinker_gated(sender: object, body: int) -> int:
        await gate.wait()
        return body

    async def bubus_gated(event: BubusRequest) -> int:
        await gate.wait()
        return event.body

    handrolled = QueueBus()
    stack.push_async_callback(handrolled.close)
    handrolled.consumer("pending", direct_gated)
    bus = await stack.enter_async_context(EventBus())
    bus.consumer("pending", tinybus_gated)
    # (max_buffered: room for every request, so that none is a sender held for room.)
    bus.consumer("pending.one", tinybus_gated, max_concurrency=1, max_buffered=1_000_000)
    signal = blinker.Namespace().signal("pending")
    signal.connect(blinker_gated, weak=False)
    bubus_bus = bubus.EventBus()
    stack.push_async_callback(bubus_bus.stop, clear=True)
    bubus_bus.on(BubusRequest, bubus_gated)
    return {
        DIRECT: lambda n: direct_gated(n),
        HANDROLLED: lambda n: handrolled.request("pending", n),
        TINYBUS: lambda n: bus.request("pending", n),
        TINYBUS_ONE_AT_A_TIME: lambda n: bus.request("pending.one", n),
        BLINKER: lambda n: signal.send_async(body=n),
        BUBUS: lambda n: bubus_bus.dispatch(BubusRequest(body=n)).event_result(),
    }


async def bytes_per_pending_request(count: int, step: Callable[[str], None]) -> dict[str, float]:
    """Traced bytes per request waiting for its reply, ``count`` at once (bubus: 40, its limit),
    the requester's task included: the handler waits on a gate, opened after the count."""
    results: dict[str, float] = {}
    gate = asyncio.Event()
    async with AsyncExitStack() as stack:
        for name, call in (await requesters(stack, gate)).items():
            step(f"(8) bytes per pending request: {name}")
            pending = min(count, BUBUS_PENDING) if name == BUBUS else count
            results[name] = await per_pending_request(call, gate, pending)
    return results


@dataclass
class Memory:
    registrations: dict[str, float]  # contender -> traced bytes per registration
    objects: dict[str, float]  # contender -> collector-tracked objects per registration
    pending: dict[str, float]  # contender -> traced bytes per pending request


async def memory(registrations: int, pending: int, step: Callable[[str], None]) -> Memory:
    # Frozen out of the collector's sight, what exists now makes the collections before each
    # reading cheap (they are slow under tracemalloc).
    gc.collect()
    gc.freeze()
    tracemalloc.start()
    try:
        bytes_, objects = await per_registration_all(registrations, step)
        return Memory(bytes_, objects, await bytes_per_pending_request(pending, step))
    finally:
        tracemalloc.stop()
        gc.unfreeze()


# -- soak --------------------------------------------------------------------------------------


@dataclass
class Soak:
    messages: int
    timeouts: int
    batch: int
    resident: dict[str, int]  # stage -> bytes
    objects: dict[str, int]  # stage -> live objects tracked by gc

    @property
    def growth(self) -> int:
        return self.resident["after"] - self.resident["before"]

    @property
    def object_growth(self) -> int:
        return self.objects["after"] - self.objects["before"]

    @property
    def flat(self) -> bool:
        """Flat: live objects back to their count at the start (give or take 100), and
        resident memory within 4 MiB of it (the allocator keeps some of a peak's arenas; a
        leak of one small object per message would show as tens of MiB after 1,000,000)."""
        return self.growth <= FLAT_RESIDENT and self.object_growth <= FLAT_OBJECTS


SLOW = 0.005  # the slow consumer replies after its requesters gave up (timeout 1 ms)
TIMEOUT = 0.001
BATCH = 1000


async def echo(message: Message[int]) -> int:
    return message.body


async def slow(message: Message[int]) -> int:
    await asyncio.sleep(SLOW)
    return message.body


async def soak(messages: int, timeouts: int, step: Callable[[str], None], steps: int) -> Soak:
    """``messages`` messages (half requests, half publishes to an async listener, in turn) and
    ``timeouts`` requests that time out (1 ms) while their consumer takes 5 ms, ``BATCH`` (or
    all, if fewer) at a time, through one TinyBus. Resident memory and live objects are
    sampled before (after a warm-up of the same work: a tenth of it, two batches of timeouts
    at least), after the messages and after the timeouts."""
    resident: dict[str, int] = {}
    objects: dict[str, int] = {}
    batch = min(BATCH, timeouts)

    def sample(stage: str) -> None:
        gc.collect()
        resident[stage] = resident_bytes()
        objects[stage] = len(gc.get_objects())

    async with EventBus() as bus:
        bus.consumer("soak.echo", echo)
        bus.consumer("soak.slow", slow)
        bus.on("soak.event", listener)

        async def exchange(count: int) -> None:
            for n in range(count // 2):
                await bus.request("soak.echo", n)
                await bus.publish("soak.event", n)

        async def time_out(n: int) -> None:
            try:
                await bus.request("soak.slow", n, timeout=TIMEOUT)
            except TimeoutError:
                return
            raise AssertionError("the request should have timed out")

        async def time_out_batches(count: int) -> None:
            for start in range(0, count, batch):
                await asyncio.gather(
                    *(time_out(n) for n in range(start, min(count, start + batch)))
                )

        step("(8) soak: warm-up")
        await exchange(max(2, messages // 10))
        await time_out_batches(max(2 * batch, timeouts // 10))
        await bus.drain()
        await settle_tasks()
        sample("before")
        chunk = max(2, messages // steps)
        for done in range(0, messages, chunk):
            await exchange(min(chunk, messages - done))
            step(f"(8) soak: {min(messages, done + chunk):,} messages")
        sample("messages")
        await time_out_batches(timeouts)
        await bus.drain()
        # Let the loop run what is due: a timer cancelled because its request was answered
        # (or timed out) right at its deadline stays in the loop's heap until then.
        await settle_tasks()
        step(f"(8) soak: {timeouts:,} timed-out requests")
        sample("after")
    return Soak(messages, timeouts, batch, resident, objects)
