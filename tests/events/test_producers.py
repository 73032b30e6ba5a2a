"""Producers bound to an address with default options, and being told a registration ended."""

from __future__ import annotations

import asyncio
import logging

import pytest
from reactivex import operators as ops

from tinybus import DeliveryOptions, EventBus, HandlerTimeoutError, Message, Registration


async def test_a_sender_sends_and_requests_with_its_defaults_and_calls_win(bus: EventBus) -> None:
    seen: list[tuple[object, dict[str, str]]] = []

    def echo(message: Message[int]) -> int:
        seen.append((message.body, dict(message.headers)))
        return message.body

    bus.consumer("svc", echo)
    sender = bus.sender("svc", headers={"tenant": "a", "trace": "0"}, timeout=5)
    assert sender.address == "svc"
    assert sender.options.timeout == 5
    await sender.send(1)
    assert await sender.request(2, headers={"trace": "1"}) == 2
    reply = await sender.request(3, options=DeliveryOptions(headers={"x": "y"}), full=True)
    assert reply.body == 3
    assert seen == [
        (1, {"tenant": "a", "trace": "0"}),
        (2, {"tenant": "a", "trace": "1"}),
        (3, {"tenant": "a", "trace": "0", "x": "y"}),
    ]


async def test_a_call_timeout_wins_over_the_senders(bus: EventBus) -> None:
    async def slow(message: Message[int]) -> None:
        await asyncio.Event().wait()

    bus.consumer("slow", slow)
    sender = bus.sender("slow", timeout=30)
    with pytest.raises(HandlerTimeoutError) as caught:
        await sender.request(1, timeout=0.01)
    assert caught.value.timeout == 0.01
    with pytest.raises(HandlerTimeoutError) as caught:
        await sender.request(1, options=DeliveryOptions(timeout=0.02))
    assert caught.value.timeout == 0.02


async def test_a_publisher_publishes_with_its_headers(bus: EventBus) -> None:
    seen: list[dict[str, str]] = []

    def record(message: Message[object]) -> None:
        seen.append(dict(message.headers))

    bus.on("evt2", record)
    publisher = bus.publisher("evt2", headers={"source": "test"})
    await publisher.publish(1)
    await publisher.publish(2, headers={"source": "override"})
    assert seen == [{"source": "test"}, {"source": "override"}]


async def test_bad_producer_options_are_refused(bus: EventBus) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        bus.sender("svc", timeout=-1)
    with pytest.raises(TypeError, match="header"):
        bus.publisher("evt", headers={"n": 1})  # type: ignore[dict-item]


async def test_a_registration_tells_when_it_ends_however_it_ends() -> None:
    ended: list[str] = []
    async with EventBus() as bus:
        unregistered = bus.on("a", lambda body: None)
        completed = bus.on("b", lambda body: None, pipe=[ops.take(1)])
        closed = bus.consumer("c", lambda message: None)
        for name, registration in (("a", unregistered), ("b", completed), ("c", closed)):
            registration.on_unregistered(lambda r, name=name: ended.append(name))
        waiter = asyncio.create_task(closed.wait_unregistered())
        unregistered.unregister()
        unregistered.unregister()  # idempotent: told once
        await bus.publish("b", 1)
        assert ended == ["a", "b"]
        assert not waiter.done()
    assert ended == ["a", "b", "c"]
    await asyncio.wait_for(waiter, 1)
    late: list[Registration] = []
    closed.on_unregistered(late.append)  # already ended: called at once
    assert late == [closed]


async def test_a_raising_on_unregistered_callback_is_logged(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tinybus")
    registration = bus.on("a", lambda body: None)

    def broken(registration: Registration) -> None:
        raise RuntimeError("callback bug")

    told: list[Registration] = []
    registration.on_unregistered(broken)
    registration.on_unregistered(told.append)
    registration.unregister()
    assert told == [registration]
    assert "on_unregistered callback" in caplog.text


async def test_every_option_a_call_sets_wins_over_the_producers(bus: EventBus) -> None:
    """Not only headers and timeout: a call's ``copy`` (and ``codec``) apply too."""
    body = [1]
    seen: list[object] = []
    bus.on("evt", seen.append)
    publisher = bus.publisher("evt", headers={"source": "test"})
    await publisher.publish(body, options=DeliveryOptions(copy=True))
    await publisher.publish(body)
    assert seen == [[1], [1]]
    assert seen[0] is not body
    assert seen[1] is body
    merged = publisher.options.overlay(DeliveryOptions(timeout=3, codec="json"))
    assert (merged.timeout, merged.codec, dict(merged.headers or {})) == (
        3,
        "json",
        {"source": "test"},
    )
