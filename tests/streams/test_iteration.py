"""Async iteration: ``bus.stream(...)`` and ``bus.next(...)``.

A stream is a listener registration whose handler hands each message to the ``async for``
loop; its mailbox takes one message at a time and stays paused while the loop body runs, so
a slow body fills its buffer under its overflow policy exactly as a slow listener does.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel
from reactivex import operators as ops

from tinybus import (
    BufferFullError,
    BusClosedError,
    Event,
    EventBus,
    EventBusError,
    HandlerFailure,
    Message,
    MessageDroppedError,
    MessageValidationError,
)
from tinybus.testing import FailureLog, run_virtual


async def test_the_loop_gets_every_message_in_order_and_nothing_stays_subscribed(
    bus: EventBus,
) -> None:
    got: list[int] = []
    async with bus.stream("orders") as messages:
        for n in range(3):
            await bus.publish("orders", n)
        async for message in messages:
            assert message.address == "orders"
            got.append(message.body)
            if len(got) == 3:
                break
        assert messages.registration.delivered == 3
    assert got == [0, 1, 2]
    assert not messages.registration.is_registered
    assert "orders" not in bus.stats().addresses


async def test_a_stream_of_a_pattern_gets_every_matching_address(bus: EventBus) -> None:
    async with bus.stream("orders.*") as messages:
        await bus.publish("orders.created", 1)
        await bus.publish("users.created", 2)
        await bus.publish("orders.paid", 3)
        first = await messages.next(timeout=1)
        second = await messages.next(timeout=1)
    assert [(first.address, first.body), (second.address, second.body)] == [
        ("orders.created", 1),
        ("orders.paid", 3),
    ]


async def test_a_slow_loop_body_holds_publishers_back_under_block(bus: EventBus) -> None:
    async with bus.stream("ticks", max_buffered=1, overflow="block") as messages:
        await bus.publish("ticks", 1)  # handed to the loop
        await bus.publish("ticks", 2)  # waits in the buffer
        third = asyncio.create_task(bus.publish("ticks", 3))
        await asyncio.sleep(0)  # (lets the publisher run until it waits for room)
        assert not third.done()
        assert messages.registration.queued == 2  # one buffered, one waiting for room
        assert (await messages.next(timeout=1)).body == 1
        assert not third.done()  # the loop body for 1 has not finished yet
        assert (await messages.next(timeout=1)).body == 2  # asking for 2 made room for 3
        async with asyncio.timeout(1):
            await third
        assert (await messages.next(timeout=1)).body == 3
        assert messages.registration.dropped == 0


async def test_drops_are_counted_and_reported_as_for_a_listener(
    bus: EventBus, failures: FailureLog
) -> None:
    async with bus.stream("ticks", max_buffered=2, overflow="drop_oldest") as messages:
        for n in range(5):
            await bus.publish("ticks", n)  # 0 handed over; 1, 2 buffered; 3, 4 push them out
        assert messages.registration.dropped == 2
        assert [(await messages.next(timeout=1)).body for _ in range(3)] == [0, 3, 4]
    assert [failure.message.body for failure in failures if failure.message] == [1, 2]
    assert all(isinstance(failure.exception, MessageDroppedError) for failure in failures)
    assert "bus.stream" in str(failures[0].exception)


async def test_overflow_error_refuses_the_publisher(bus: EventBus) -> None:
    async with bus.stream("ticks", max_buffered=0, overflow="error") as messages:
        await bus.publish("ticks", 1)
        with pytest.raises(BufferFullError):
            await bus.publish("ticks", 2)
        assert (await messages.next(timeout=1)).body == 1
        assert messages.registration.dropped == 1


async def test_pipe_operators_run_before_the_buffer(bus: EventBus) -> None:
    async with bus.stream(
        "numbers", pipe=[ops.filter(lambda message: message.body % 2 == 0)]
    ) as messages:
        for n in range(5):
            await bus.publish("numbers", n)
        bodies = [(await messages.next(timeout=1)).body for _ in range(3)]
        assert bodies == [0, 2, 4]
        assert messages.registration.queued == 0


async def test_unregistering_ends_the_loop(bus: EventBus) -> None:
    got: list[int] = []
    async with bus.stream("jobs") as messages:
        await bus.publish("jobs", 1)
        async for message in messages:
            got.append(message.body)
            messages.registration.unregister()
        with pytest.raises(EventBusError, match="ended before a message came"):
            await messages.next(timeout=1)
    assert got == [1]


async def test_the_bus_closing_ends_a_loop_that_waits() -> None:
    bus = EventBus(close_timeout=0.1)
    got: list[int] = []

    async def consume() -> None:
        async with bus.stream("jobs") as messages:
            async for message in messages:
                got.append(message.body)

    async with bus:
        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)  # (the consumer enters its block and waits)
        await bus.publish("jobs", 1)
    async with asyncio.timeout(1):
        await consumer
    assert got == [1]


async def test_a_message_handed_over_before_the_bus_closed_is_still_yielded(
    failures: FailureLog,
) -> None:
    bus = EventBus(close_timeout=0.1)
    seen: list[HandlerFailure] = []
    bus.errors.subscribe(seen.append)
    async with bus, bus.stream("jobs") as messages:
        await bus.publish("jobs", 1)  # handed over
        await bus.publish("jobs", 2)  # buffered
        await bus.close()
        assert [message.body async for message in messages] == [1]
        with pytest.raises(BusClosedError):
            await messages.next(timeout=1)
    assert [failure.message.body for failure in seen if failure.message] == [2]
    assert isinstance(seen[0].exception, MessageDroppedError)
    assert failures == []  # (the other bus's)


async def test_messages_left_in_the_buffer_at_exit_are_reported(
    bus: EventBus, failures: FailureLog
) -> None:
    async with bus.stream("jobs") as messages:
        await bus.publish("jobs", 1)
        await bus.publish("jobs", 2)
        assert (await messages.next(timeout=1)).body == 1
    assert [failure.message.body for failure in failures if failure.message] == [2]
    assert "unregistered" in str(failures[0].exception)


async def test_a_cancelled_wait_loses_no_message(bus: EventBus) -> None:
    async with bus.stream("jobs") as messages:
        waiting = asyncio.create_task(messages.next())
        await asyncio.sleep(0)
        waiting.cancel()
        await bus.publish("jobs", 1)  # arrives as the wait is being cancelled
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (await messages.next(timeout=1)).body == 1


async def test_a_stream_is_used_inside_its_block_only(bus: EventBus) -> None:
    messages = bus.stream("jobs")
    with pytest.raises(RuntimeError, match=r"async with bus\.stream"):
        await messages.next(timeout=1)
    with pytest.raises(RuntimeError, match=r"async with bus\.stream"):
        _ = messages.registration
    async with messages:
        with pytest.raises(RuntimeError, match="entered once"):
            await messages.__aenter__()


async def test_bad_options_fail_at_the_call(bus: EventBus) -> None:
    with pytest.raises(ValueError, match="overflow must be one of"):
        bus.stream("jobs", overflow="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_buffered must be an int >= 0"):
        bus.stream("jobs", max_buffered=-1)
    with pytest.raises(TypeError, match="an address must be"):
        bus.stream(42)  # type: ignore[call-overload]


async def test_a_closed_bus_refuses_a_stream() -> None:
    bus = EventBus()
    await bus.close()
    with pytest.raises(BusClosedError):
        async with bus.stream("jobs"):
            pass


async def test_a_typed_event_streams_its_messages(bus: EventBus) -> None:
    created = Event[int]("created")
    async with bus.stream(created) as messages:
        await bus.publish(created, 5)
        message: Message[int] = await messages.next(timeout=1)
    assert message.body == 5


# -- bus.next ----------------------------------------------------------------------------


async def test_next_returns_the_next_message_and_leaves_nothing_behind(
    bus: EventBus, failures: FailureLog
) -> None:
    async def publish_soon() -> None:
        await asyncio.sleep(0)
        await bus.publish("ready", "first")
        await bus.publish("ready", "second")

    publisher = asyncio.create_task(publish_soon())
    message = await bus.next("ready", timeout=1)
    await publisher
    assert message.body == "first"
    assert bus.get_listeners("ready") == []
    assert failures == []  # the second found nobody: not a drop


async def test_next_with_a_pipe_waits_for_a_match(bus: EventBus) -> None:
    async def publish_soon() -> None:
        await asyncio.sleep(0)
        for n in range(5):
            await bus.publish("numbers", n)

    publisher = asyncio.create_task(publish_soon())
    message = await bus.next("numbers", timeout=1, pipe=[ops.filter(lambda m: m.body > 2)])
    await publisher
    assert message.body == 3


def test_next_times_out_on_the_loops_clock() -> None:
    async def scenario() -> float:
        async with EventBus() as bus:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(TimeoutError):
                await bus.next("never", timeout=30)
            assert bus.get_listeners("never") == []
            return loop.time() - start

    assert run_virtual(scenario()) == pytest.approx(30)


async def test_next_fails_when_the_bus_closes_first() -> None:
    bus = EventBus(close_timeout=0.1)
    async with bus:
        waiting = asyncio.create_task(bus.next("never", timeout=5))
        await asyncio.sleep(0)
    with pytest.raises(BusClosedError):
        await waiting


async def test_next_checks_its_timeout(bus: EventBus) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        await bus.next("x", timeout=0)


class Order(BaseModel):
    id: int
    item: str


async def test_body_type_validates_and_converts_and_a_misfit_never_reaches_the_loop(
    bus: EventBus, failures: FailureLog
) -> None:
    async with bus.stream("orders", body_type=Order) as orders:
        await bus.publish("orders", {"id": 1, "item": "tea"})
        await bus.publish("orders", {"id": "not a number"})
        await bus.publish("orders", Order(id=2, item="cake"))
        first = await orders.next(timeout=1)
        second = await orders.next(timeout=1)
    assert (first.body, second.body) == (Order(id=1, item="tea"), Order(id=2, item="cake"))
    failure = failures.expect(MessageValidationError)
    assert failure.message is not None
    assert failure.message.body == {"id": "not a number"}


async def test_body_type_holds_on_a_bus_that_does_not_validate() -> None:
    async with EventBus(validate=False) as unvalidated:
        seen: list[HandlerFailure] = []
        unvalidated.errors.subscribe(seen.append)

        async def publish_soon() -> None:
            await asyncio.sleep(0)
            await unvalidated.publish("numbers", "seven")
            await unvalidated.publish("numbers", "7")

        publisher = asyncio.create_task(publish_soon())
        message = await unvalidated.next("numbers", timeout=1, body_type=int)
        await publisher
    assert message.body == 7
    assert [type(failure.exception) for failure in seen] == [MessageValidationError]
