"""Inbound interceptors (Vert.x ``addInboundInterceptor``): each message, just before a
handler gets it, after routing, once per registration; they may stamp it or drop it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tinybus import (
    DROP,
    Drop,
    Envelope,
    EventBus,
    Message,
    MessageDroppedError,
)
from tinybus.testing.failures import FailureLog


async def test_a_stamped_header_is_what_the_handler_sees(bus: EventBus) -> None:
    @bus.add_inbound_interceptor
    def stamp(envelope: Envelope) -> Message[Any] | None:
        return envelope.message.with_headers({"checked": envelope.kind})

    bus.consumer("svc", lambda message: dict(message.headers))
    assert await bus.request("svc", 1, headers={"from": "caller"}) == {
        "from": "caller",
        "checked": "request",
    }


async def test_the_outbound_interceptors_run_at_the_sender_before_the_inbound_ones(
    bus: EventBus,
) -> None:
    order: list[str] = []

    @bus.add_interceptor
    def outbound(envelope: Envelope) -> None:
        order.append(f"outbound {envelope.kind}")

    @bus.add_inbound_interceptor
    def inbound(envelope: Envelope) -> None:
        order.append(f"inbound {envelope.kind}")

    bus.on("news", lambda body: order.append(f"handler {body}"))
    await bus.publish("news", 1)
    await bus.drain()
    assert order == ["outbound publish", "inbound publish", "handler 1"]


async def test_a_dropped_event_reaches_no_handler_and_is_counted_and_reported(
    bus: EventBus, bus_failures: FailureLog
) -> None:
    heard: list[int] = []

    @bus.add_inbound_interceptor
    def odd_only(envelope: Envelope) -> Drop | None:
        return DROP if envelope.body % 2 == 0 else None

    bus.on("numbers", heard.append)
    for n in range(4):
        await bus.publish("numbers", n)
    await bus.drain()
    assert heard == [1, 3]
    assert bus.stats().totals.dropped == 2
    assert bus.stats().totals.delivered == 2
    reported = list(bus_failures)
    errors = [failure.exception for failure in reported]
    assert [type(e) for e in errors] == [MessageDroppedError, MessageDroppedError]
    assert all(isinstance(e, MessageDroppedError) and e.reason == "intercepted" for e in errors)
    assert "odd_only" in str(errors[0])
    assert [failure.message.body for failure in reported if failure.message] == [0, 2]


async def test_a_dropped_request_fails_its_requester_at_once_with_a_clear_error() -> None:
    async with EventBus(default_timeout=60.0) as bus:
        bus.consumer("svc", lambda body: body)
        bus.add_inbound_interceptor(lambda envelope: DROP)
        with pytest.raises(MessageDroppedError) as dropped:
            await asyncio.wait_for(bus.request("svc", 1), 5.0)  # long before its timeout
        error = dropped.value
        assert error.reason == "intercepted"
        assert error.__cause__ is None
        assert "<lambda>" in str(error)
        assert "returned DROP" in str(error)
        assert "bus.remove_inbound_interceptor" in str(error)
        assert bus.stats().totals.dropped == 1
        assert bus.stats().pending_requests == 0


async def test_each_registration_is_intercepted_once_per_message(bus: EventBus) -> None:
    seen: list[str] = []
    heard: list[str] = []

    @bus.add_inbound_interceptor
    def count(envelope: Envelope) -> None:
        seen.append(envelope.address)

    bus.on("orders.new", lambda body: heard.append("first"))
    bus.on("orders.new", lambda body: heard.append("second"))
    bus.on("orders.new", lambda body: heard.append("third"))
    bus.on("orders.*", lambda body: heard.append("pattern"))
    assert await bus.publish("orders.new", 1) == 4
    await bus.drain()
    assert sorted(heard) == ["first", "pattern", "second", "third"]
    assert seen == ["orders.new"] * 4


async def test_an_interceptor_that_raises_drops_the_message_and_the_error_is_reported(
    bus: EventBus, bus_failures: FailureLog
) -> None:
    heard: list[int] = []

    @bus.add_inbound_interceptor
    def buggy(envelope: Envelope) -> None:
        raise KeyError("the interceptor's bug")

    bus.on("news", heard.append)
    bus.consumer("svc", lambda body: body)
    await bus.publish("news", 1)
    await bus.drain()
    assert heard == []
    [failure] = list(bus_failures)
    assert isinstance(failure.exception, MessageDroppedError)
    assert isinstance(failure.exception.__cause__, KeyError)
    with pytest.raises(MessageDroppedError, match="buggy") as dropped:
        await bus.request("svc", 1)
    assert isinstance(dropped.value.__cause__, KeyError)
    assert bus.stats().totals.dropped == 2


async def test_a_replacement_to_another_address_is_a_drop_with_the_reason(bus: EventBus) -> None:
    bus.consumer("svc", lambda body: body)

    @bus.add_inbound_interceptor
    def redirect(envelope: Envelope) -> Message[Any]:
        return Message(envelope.body, address="elsewhere")

    with pytest.raises(MessageDroppedError) as dropped:
        await bus.request("svc", 1)
    assert isinstance(dropped.value.__cause__, ValueError)
    assert "changed the address" in str(dropped.value.__cause__)


async def test_a_listener_whose_pipe_carries_bodies_is_intercepted_before_its_pipe(
    bus: EventBus, bus_failures: FailureLog
) -> None:
    from reactivex import operators as ops

    heard: list[int] = []
    bus.add_inbound_interceptor(lambda envelope: DROP if envelope.body == 2 else None)
    bus.on("numbers", heard.append, pipe=[ops.map(lambda n: n * 10)])
    for n in range(1, 4):
        await bus.publish("numbers", n)
    await bus.drain()
    assert heard == [10, 30]
    assert bus.stats().totals.dropped == 1
    assert [f.message.body for f in bus_failures if f.message] == [2]


async def test_removing_an_inbound_interceptor_stops_it(
    bus: EventBus, bus_failures: FailureLog
) -> None:
    heard: list[int] = []

    def drop_all(envelope: Envelope) -> Drop | None:
        return DROP

    bus.add_inbound_interceptor(drop_all)
    bus.on("news", heard.append)
    await bus.publish("news", 1)
    bus.remove_inbound_interceptor(drop_all)
    bus.remove_inbound_interceptor(drop_all)  # (nothing when not there)
    await bus.publish("news", 2)
    await bus.drain()
    assert heard == [2]
    assert [f.message.body for f in bus_failures if f.message] == [1]


async def test_an_inbound_interceptor_must_be_callable(bus: EventBus) -> None:
    with pytest.raises(TypeError, match="must be callable"):
        bus.add_inbound_interceptor("not a function")  # type: ignore[arg-type]


async def test_without_inbound_interceptors_the_handler_is_called_directly(
    bus: EventBus,
) -> None:
    """No cost while there are none: ``Inbound.admit`` is never entered."""
    from tinybus._inbound import Inbound

    entered: list[object] = []
    original = Inbound.admit

    def spy(self: Inbound, endpoint: Any, message: Message[Any]) -> Message[Any] | None:
        entered.append(message)
        return original(self, endpoint, message)

    Inbound.admit = spy
    try:
        bus.on("news", lambda body: None)
        await bus.publish("news", 1)
        await bus.drain()
        assert entered == []
        bus.add_inbound_interceptor(lambda envelope: None)
        await bus.publish("news", 2)
        await bus.drain()
        assert len(entered) == 1
    finally:
        Inbound.admit = original
