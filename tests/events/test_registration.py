"""Registering consumers and listeners, their handles, and the registry helpers."""

from __future__ import annotations

from typing import Any

import pytest

from tinybus import (
    EventBus,
    HandlerAlreadyRegisteredError,
    HandlerNotFoundError,
    Message,
    Registration,
)


def test_registration_needs_no_running_loop() -> None:
    bus = EventBus()

    @bus.consumer("a")
    def handler(message: Message[int]) -> int:
        return message.body

    registration = bus.on("b", print)
    assert bus.get_consumers() == ["a"]
    assert bus.get_listeners("b") == [print]
    registration.unregister()


async def test_decorators_return_the_function_unchanged(bus: EventBus) -> None:
    async def handler(message: Message[int]) -> int:
        return message.body

    def listener(body: int) -> None:
        pass

    assert bus.consumer("a")(handler) is handler
    assert bus.on("b")(listener) is listener


async def test_handle_exposes_address_and_unregister_is_idempotent(bus: EventBus) -> None:
    registration = bus.consumer("echo", lambda message: message.body)
    assert isinstance(registration, Registration)
    assert registration.address == "echo"
    assert registration.is_registered
    assert await bus.request("echo", 1) == 1
    registration.unregister()
    registration.unregister()
    assert not registration.is_registered
    with pytest.raises(HandlerNotFoundError):
        await bus.request("echo", 1)
    assert bus.get_consumers() == []


async def test_unregistered_listener_stops_receiving(bus: EventBus) -> None:
    heard: list[int] = []
    registration = bus.on("evt", heard.append)
    await bus.publish("evt", 1)
    registration.unregister()
    await bus.publish("evt", 2)
    assert heard == [1]
    assert bus.get_listeners("evt") == []


def test_same_consumer_twice_on_one_address_is_refused() -> None:
    bus = EventBus()

    def handler(message: Message[Any]) -> None:
        pass

    bus.consumer("a", handler)
    with pytest.raises(HandlerAlreadyRegisteredError, match=r"handler.*'a'") as caught:
        bus.consumer("a", handler)
    assert caught.value.address == "a"
    bus.consumer("b", handler)  # another address is fine
    assert bus.get_consumers() == ["a", "b"]


async def test_same_listener_twice_on_one_address_is_two_registrations() -> None:
    """As in tinybus 0.2.x, pyee and Node: each registration is called once per event and
    unregistered on its own; equal bound methods (``received.append`` twice) too."""
    async with EventBus() as bus:
        received: list[int] = []
        first = bus.on("a", received.append)
        second = bus.on("a", received.append)
        assert bus.get_listeners("a") == [received.append, received.append]
        assert await bus.publish("a", 1) == 2
        assert received == [1, 1]
        first.unregister()
        assert not first.is_registered
        assert second.is_registered
        await bus.publish("a", 2)
        assert received == [1, 1, 2]
        bus.on("a", received.append)
        bus.remove_listener("a", received.append)  # the earliest registration: second
        assert not second.is_registered
        await bus.publish("a", 3)
        assert received == [1, 1, 2, 3]


def test_a_function_may_be_both_consumer_and_listener_of_an_address() -> None:
    bus = EventBus()
    bus.consumer("a", print)
    bus.on("a", print)
    assert bus.get_consumers() == ["a"]
    assert bus.get_listeners("a") == [print]


@pytest.mark.parametrize("not_callable", [42, "handler", object()])
def test_non_callable_handlers_are_refused(not_callable: Any) -> None:
    bus = EventBus()
    with pytest.raises(TypeError, match="consumer must be callable"):
        bus.consumer("a", not_callable)
    with pytest.raises(TypeError, match="listener must be callable"):
        bus.on("a", not_callable)
    assert bus.get_consumers() == []


def test_registry_helpers() -> None:
    bus = EventBus()

    def one(message: Message[Any]) -> None:
        pass

    def two(message: Message[Any]) -> None:
        pass

    def listener(body: Any) -> None:
        pass

    bus.consumer("x", one)
    bus.consumer("x", two)
    bus.consumer("y", one)
    bus.on("x", listener)
    assert bus.get_consumers() == ["x", "y"]
    assert bus.get_listeners("x") == [listener]
    assert bus.get_listeners("unknown") == []

    bus.remove_consumer("x")
    assert bus.get_consumers() == ["y"]
    assert bus.get_listeners("x") == [listener]
    bus.remove_listener("x", listener)
    assert bus.get_listeners("x") == []

    # Removing what is not there is not an error.
    bus.remove_consumer("x")
    bus.remove_consumer("never")
    bus.remove_listener("x", listener)
    bus.remove_listener("never", listener)


async def test_remove_listener_matches_bound_methods_by_equality(bus: EventBus) -> None:
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def bump(self, body: Any) -> None:
            self.count += 1

    counter = Counter()
    bus.on("evt", counter.bump)
    await bus.publish("evt", None)
    bus.remove_listener("evt", counter.bump)
    await bus.publish("evt", None)
    assert counter.count == 1


async def test_unregistering_every_registration_forgets_the_address(bus: EventBus) -> None:
    registrations = [bus.on(f"addr.{n}", print) for n in range(100)]
    registrations += [bus.consumer(f"addr.{n}", print) for n in range(100)]
    assert "100 addresses" in repr(bus)
    for registration in registrations:
        registration.unregister()
    assert "0 addresses" in repr(bus)


async def test_a_listener_unregistered_during_a_publish_gets_nothing_more(bus: EventBus) -> None:
    heard: list[str] = []
    registrations: list[Registration] = []

    def first(body: str) -> None:
        heard.append("first")
        for registration in registrations:
            registration.unregister()

    bus.on("evt", first)
    registrations.append(bus.on("evt", lambda body: heard.append("second")))
    await bus.publish("evt", "x")
    await bus.publish("evt", "y")
    # Unregistered by an earlier listener of the same publish: it misses that message too.
    assert heard == ["first", "first"]
