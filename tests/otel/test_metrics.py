"""Metrics through tinybus.otel: the counters bus.stats() keeps, per address, read when the
meter collects; pending requests; handler and request durations."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the otel group: uv run --group otel pytest")

from tests.otel.telemetry import Telemetry
from tinybus import EventBus, HandlerExecutionError


async def test_published_delivered_and_failed_are_counted_per_address(
    traced: EventBus, telemetry: Telemetry
) -> None:
    def flaky(body: int) -> None:
        if body % 2:
            raise ValueError(body)

    traced.on("orders", flaky)
    traced.on("orders", lambda body: None)
    traced.on("audit", lambda body: None)
    for n in range(4):
        await traced.publish("orders", n)
    await traced.publish("audit", 0)
    orders = {"messaging__destination__name": "orders"}
    assert telemetry.value("tinybus.messages.published", **orders).value == 4
    assert telemetry.value("tinybus.messages.delivered", **orders).value == 8
    assert telemetry.value("tinybus.messages.failed", **orders).value == 2
    assert telemetry.value("tinybus.messages.dropped", **orders).value == 0
    audit = {"messaging__destination__name": "audit"}
    assert telemetry.value("tinybus.messages.published", **audit).value == 1
    # The very numbers bus.stats() keeps: counted once, read twice.
    stats = traced.stats().addresses["orders"]
    assert stats.published == 4
    assert sum(handler.failed for handler in stats.handlers) == 2


async def test_a_dropped_message_is_counted(traced: EventBus, telemetry: Telemetry) -> None:
    release = asyncio.Event()

    async def slow(body: int) -> None:
        await release.wait()

    traced.on("jobs", slow, max_concurrency=1, max_buffered=1, overflow="drop_newest")
    for n in range(3):  # one runs, one waits, one is dropped
        traced.publish_nowait("jobs", n)
    point = telemetry.value("tinybus.messages.dropped", messaging__destination__name="jobs")
    assert point.value == 1
    assert telemetry.value("tinybus.messages.queued").value == 1
    assert telemetry.value("tinybus.handlers.running").value == 1
    release.set()
    await traced.drain(timeout=5)
    assert telemetry.value("tinybus.messages.queued").value == 0


async def test_pending_requests_are_measured(traced: EventBus, telemetry: Telemetry) -> None:
    release = asyncio.Event()

    async def waits(body: int) -> int:
        await release.wait()
        return body

    traced.consumer("slow", waits)
    requests = [asyncio.create_task(traced.request("slow", n)) for n in range(3)]
    await asyncio.sleep(0)  # (the requests' tasks make their requests)
    assert telemetry.value("tinybus.requests.pending").value == 3
    release.set()
    assert await asyncio.gather(*requests) == [0, 1, 2]
    assert telemetry.value("tinybus.requests.pending").value == 0


async def test_handler_and_request_durations_are_recorded(
    traced: EventBus, telemetry: Telemetry
) -> None:
    def broken(body: int) -> int:
        raise ValueError(body)

    traced.consumer("double", lambda message: message.body * 2)
    traced.consumer("broken", broken)
    for n in range(3):
        await traced.request("double", n)
    with pytest.raises(HandlerExecutionError):
        await traced.request("broken", 1)
    handled = telemetry.value("tinybus.handler.duration", messaging__destination__name="double")
    assert handled.count == 3
    assert handled.sum >= 0
    answered = telemetry.value("tinybus.request.duration", messaging__destination__name="double")
    assert answered.count == 3
    failed = telemetry.value(
        "tinybus.request.duration",
        messaging__destination__name="broken",
        error__type="HandlerExecutionError",
    )
    assert failed.count == 1
    assert (
        telemetry.value(
            "tinybus.handler.duration",
            messaging__destination__name="broken",
            error__type="ValueError",
        ).count
        == 1
    )


async def test_two_buses_on_one_meter_are_told_apart_by_name(telemetry: Telemetry) -> None:
    async with (
        EventBus(instrumentation=telemetry.instrumentation(bus_name="a")) as first,
        EventBus(instrumentation=telemetry.instrumentation(bus_name="b")) as second,
    ):
        first.on("x", lambda body: None)
        second.on("x", lambda body: None)
        await first.publish("x", 1)
        for _ in range(2):
            await second.publish("x", 1)
        assert telemetry.value("tinybus.messages.published", tinybus__bus="a").value == 1
        assert telemetry.value("tinybus.messages.published", tinybus__bus="b").value == 2


async def test_a_bus_that_is_gone_is_no_longer_measured(telemetry: Telemetry) -> None:
    async with EventBus(instrumentation=telemetry.instrumentation()) as bus:
        bus.on("x", lambda body: None)
        await bus.publish("x", 1)
    del bus
    import gc

    gc.collect()
    assert "tinybus.messages.published" not in telemetry.metrics()
