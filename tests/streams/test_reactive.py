"""The reactive shape: every address is a reactivex Subject, and observe() exposes it."""

from __future__ import annotations

import asyncio
from typing import Any

import reactivex
from reactivex import operators as ops
from reactivex.scheduler.eventloop import AsyncIOScheduler

from tests.conftest import Gate
from tinybus import EventBus, Message
from tinybus.testing import FailureLog


async def test_observe_yields_messages_and_composes_operators(bus: EventBus) -> None:
    hot: list[float] = []
    bus.observe("sensor.temp").pipe(
        ops.map(lambda message: message.body),
        ops.filter(lambda celsius: celsius > 30),
    ).subscribe(hot.append, scheduler=bus.scheduler)
    for celsius in (20.0, 31.5, 29.0, 35.0):
        await bus.publish("sensor.temp", celsius)
    assert hot == [31.5, 35.0]


async def test_observe_sees_envelopes(bus: EventBus) -> None:
    seen: list[Message[Any]] = []
    bus.observe("evt").subscribe(seen.append)
    await bus.publish("evt", "body", headers={"k": "v"})
    [message] = seen
    assert (message.address, message.body, dict(message.headers)) == ("evt", "body", {"k": "v"})


async def test_observers_and_listeners_share_one_delivery_path(bus: EventBus) -> None:
    """Listeners are subscribers of the same Subject as observe(): one order for all."""
    order: list[str] = []
    bus.on("evt", lambda body: order.append("listener 1"))
    subscription = bus.observe("evt").subscribe(lambda message: order.append("observer"))
    bus.on("evt", lambda body: order.append("listener 2"))
    await bus.publish("evt", None)
    assert order == ["listener 1", "observer", "listener 2"]
    subscription.dispose()
    await bus.publish("evt", None)
    assert order[3:] == ["listener 1", "listener 2"]


async def test_a_raising_observer_does_not_stop_the_others(
    bus: EventBus, failures: FailureLog
) -> None:
    heard: list[Any] = []

    def raising(message: Message[Any]) -> None:
        raise ValueError("observer broke")

    bus.observe("evt").subscribe(raising)
    bus.on("evt", heard.append)
    await bus.publish("evt", 1)
    assert heard == [1]
    [failure] = failures
    assert failure.address == "evt"
    assert isinstance(failure.exception, ValueError)


async def test_scheduler_is_an_asyncio_scheduler_on_the_bus_loop(bus: EventBus) -> None:
    assert isinstance(bus.scheduler, AsyncIOScheduler)
    loop = asyncio.get_running_loop()
    ran_on: list[asyncio.AbstractEventLoop] = []
    ran = Gate()
    record = ran.recorder(ran_on)
    bus.scheduler.schedule_relative(
        0.001, lambda scheduler, state: record(asyncio.get_running_loop())
    )
    await ran.wait()
    assert ran_on == [loop]


async def test_buffer_with_time_on_the_bus_scheduler_groups_a_burst(bus: EventBus) -> None:
    batches: list[list[int]] = []
    flushed = Gate()
    bus.observe("keys").pipe(
        ops.map(lambda message: message.body),
        ops.buffer_with_time(0.2),
        ops.filter(bool),
    ).subscribe(flushed.recorder(batches), scheduler=bus.scheduler)
    for key in range(5):
        await bus.publish("keys", key)
    await flushed.wait()
    assert batches[0] == [0, 1, 2, 3, 4]


async def test_observe_before_any_registration_and_after_unsubscribe(bus: EventBus) -> None:
    seen: list[Any] = []
    observable = bus.observe("late")
    assert "0 addresses" in repr(bus)
    subscription = observable.subscribe(lambda message: seen.append(message.body))
    assert "1 addresses" in repr(bus)
    await bus.publish("late", 1)
    subscription.dispose()
    assert "0 addresses" in repr(bus)
    await bus.publish("late", 2)
    observable.subscribe(lambda message: seen.append(message.body))
    await bus.publish("late", 3)
    assert seen == [1, 3]


async def test_observe_merges_with_other_observables(bus: EventBus) -> None:
    merged: list[str] = []
    reactivex.merge(bus.observe("a"), bus.observe("b")).pipe(
        ops.map(lambda message: f"{message.address}:{message.body}")
    ).subscribe(merged.append)
    await bus.publish("a", 1)
    await bus.publish("b", 2)
    assert merged == ["a:1", "b:2"]
