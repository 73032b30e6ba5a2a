"""publish() and send(): fan-out to listeners, point-to-point to one consumer."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from tests.conftest import Gate
from tinybus import (
    BusClosedError,
    DeliveryOptions,
    EventBus,
    HandlerNotFoundError,
    Message,
)
from tinybus.testing import FailureLog


async def test_publish_reaches_every_listener_in_registration_order(bus: EventBus) -> None:
    calls: list[tuple[str, int]] = []

    @bus.on("tick")
    async def first(n: int) -> None:
        calls.append(("first", n))

    @bus.on("tick")
    def second(n: int) -> None:
        calls.append(("second", n))

    bus.on("tick", lambda n: calls.append(("third", n)))
    await bus.publish("tick", 1)
    assert calls == [("first", 1), ("second", 1), ("third", 1)]


async def test_publish_returns_after_listeners_that_suspend_have_finished(bus: EventBus) -> None:
    saved: list[str] = []

    @bus.on("user.created")
    async def save(name: str) -> None:
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        saved.append(name)

    await bus.publish("user.created", "ada")
    assert saved == ["ada"]


async def test_async_listeners_run_concurrently(bus: EventBus) -> None:
    both_started = asyncio.Event()
    started: list[str] = []

    async def waits_for_the_other(name: str) -> None:
        started.append(name)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 5)

    bus.on("evt", waits_for_the_other)
    bus.on("evt", lambda name: waits_for_the_other(name + "-2"))
    await bus.publish("evt", "x")
    assert started == ["x", "x-2"]


async def test_publish_with_no_listener_is_not_an_error(bus: EventBus) -> None:
    await bus.publish("nobody.listens", {"any": "thing"})


async def test_listener_failure_never_reaches_the_publisher_nor_stops_the_others(
    bus: EventBus, failures: FailureLog
) -> None:
    received: list[int] = []

    def broken(n: int) -> None:
        raise ValueError(f"cannot handle {n}")

    async def broken_async(n: int) -> None:
        await asyncio.sleep(0)
        raise LookupError("async failure")

    bus.on("numbers", broken)
    bus.on("numbers", broken_async)
    bus.on("numbers", received.append)
    await bus.publish("numbers", 7)
    assert received == [7]
    assert [(f.address, f.handler, type(f.exception)) for f in failures] == [
        ("numbers", broken, ValueError),
        ("numbers", broken_async, LookupError),
    ]
    assert str(failures[0].exception) == "cannot handle 7"
    assert failures[0].message is not None
    assert failures[0].message.body == 7


async def test_messages_reach_a_listener_in_publish_order(bus: EventBus) -> None:
    seen: list[int] = []

    @bus.on("seq")
    async def record(n: int) -> None:
        if n % 3 == 0:
            await asyncio.sleep(0)
        seen.append(n)

    for n in range(500):
        await bus.publish("seq", n)
    assert seen == list(range(500))


async def test_consumers_also_receive_published_messages(bus: EventBus) -> None:
    consumed: list[Message[Any]] = []
    heard: list[Any] = []

    @bus.consumer("greet")
    def consume(message: Message[str]) -> str:
        consumed.append(message)
        return "a reply nobody reads"

    bus.on("greet", heard.append)
    await bus.publish("greet", "hello")
    assert [m.body for m in consumed] == ["hello"]
    assert consumed[0].reply_address is None
    assert heard == ["hello"]


async def test_listeners_do_not_receive_requests_or_sends(bus: EventBus) -> None:
    heard: list[Any] = []
    bus.on("mixed", heard.append)
    bus.consumer("mixed", lambda message: "ok")
    assert await bus.request("mixed", 1) == "ok"
    await bus.send("mixed", 2)
    assert heard == []


async def test_cancelling_the_publisher_does_not_cancel_listeners(bus: EventBus) -> None:
    release = asyncio.Event()
    outcome: list[str] = []
    started, finished = Gate(), Gate()

    @bus.on("evt")
    async def slow(value: str) -> None:
        started.arrive()
        await release.wait()
        outcome.append(value)
        finished.arrive()

    publisher = asyncio.create_task(bus.publish("evt", "kept"))
    await started.wait()
    publisher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publisher
    release.set()
    await finished.wait()
    assert outcome == ["kept"]


async def test_a_listener_may_publish_to_its_own_address(bus: EventBus) -> None:
    seen: list[int] = []

    @bus.on("countdown")
    async def countdown(n: int) -> None:
        seen.append(n)
        if n > 0:
            await bus.publish("countdown", n - 1)

    await bus.publish("countdown", 3)
    assert seen == [3, 2, 1, 0]


async def test_headers_reach_listeners_through_observe_and_consumers(bus: EventBus) -> None:
    consumed: list[Message[Any]] = []
    bus.consumer("evt", consumed.append)
    await bus.publish(
        "evt", 1, headers={"a": "call"}, options=DeliveryOptions(headers={"a": "opt", "b": "opt"})
    )
    assert dict(consumed[0].headers) == {"a": "call", "b": "opt"}


async def test_publish_after_close_raises(bus: EventBus) -> None:
    await bus.close()
    with pytest.raises(BusClosedError):
        await bus.publish("evt", 1)


# -- send ------------------------------------------------------------------------------------


async def test_send_goes_to_one_consumer_round_robin(bus: EventBus) -> None:
    counts: Counter[str] = Counter()
    for name in ("a", "b"):
        bus.consumer("jobs", lambda message, name=name: counts.update([name]))
    for _ in range(10):
        await bus.send("jobs", None)
    assert counts == {"a": 5, "b": 5}


async def test_send_returns_after_the_consumer_finished(bus: EventBus) -> None:
    done: list[int] = []

    @bus.consumer("jobs")
    async def job(message: Message[int]) -> str:
        await asyncio.sleep(0.01)
        done.append(message.body)
        return "ignored"

    assert await bus.send("jobs", 5) is None
    assert done == [5]


async def test_send_message_has_no_reply_address(bus: EventBus) -> None:
    seen: list[Message[Any]] = []
    bus.consumer("jobs", seen.append)
    await bus.send("jobs", "x", headers={"k": "v"})
    assert seen[0].reply_address is None
    assert dict(seen[0].headers) == {"k": "v"}


async def test_send_without_consumer_raises_handler_not_found(bus: EventBus) -> None:
    bus.on("jobs", lambda body: None)  # listeners are not consumers
    with pytest.raises(HandlerNotFoundError, match="'jobs'"):
        await bus.send("jobs", 1)


async def test_send_failure_goes_to_bus_errors(bus: EventBus, failures: FailureLog) -> None:
    def broken(message: Message[int]) -> None:
        raise RuntimeError("send failed")

    bus.consumer("jobs", broken)
    await bus.send("jobs", 1)
    assert [(f.address, f.handler, str(f.exception)) for f in failures] == [
        ("jobs", broken, "send failed")
    ]


async def test_send_after_close_raises(bus: EventBus) -> None:
    bus.consumer("jobs", lambda message: None)
    await bus.close()
    with pytest.raises(BusClosedError):
        await bus.send("jobs", 1)
