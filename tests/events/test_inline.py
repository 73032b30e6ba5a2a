"""Inline handlers (``inline=True``): awaited inside the publish, send or request that reached
them, in the caller's task."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from tinybus import (
    BusClosedError,
    EventBus,
    HandlerExecutionError,
    HandlerTimeoutError,
    Message,
)
from tinybus.testing import FailureLog, run_virtual

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def slow_inline_consumer(bus: EventBus) -> tuple[asyncio.Event, list[str]]:
    """An inline consumer at "slow" that sleeps a minute: set once it has started, and the
    list it appends "cancelled" to when it is cancelled."""
    entered = asyncio.Event()
    seen: list[str] = []

    @bus.consumer("slow", inline=True)
    async def slow(message: Message[int]) -> int:
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return 1

    return entered, seen


async def test_an_inline_listener_runs_in_the_publishers_task_and_context(bus: EventBus) -> None:
    seen: list[tuple[asyncio.Task[object] | None, str]] = []

    @bus.on("event", inline=True)
    async def listener(body: int) -> None:
        seen.append((asyncio.current_task(), request_id.get()))

    @bus.on("event")
    async def in_a_task(body: int) -> None:
        seen.append((asyncio.current_task(), request_id.get()))

    request_id.set("r-1")
    await bus.publish("event", 1)

    publisher = asyncio.current_task()
    assert seen[1] == (publisher, "r-1")  # the inline one runs after the publish reached all
    assert seen[0][0] is not publisher  # the other one has a task of its own
    assert seen[0][1] == "r-1"  # (which copies the context)


async def test_inline_listeners_run_one_after_another_and_publish_waits_for_them(
    bus: EventBus,
) -> None:
    order: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()

    @bus.on("event", inline=True)
    async def first(body: int) -> None:
        order.append("first starts")
        started.set()
        await release.wait()
        order.append("first ends")

    @bus.on("event", inline=True)
    async def second(body: int) -> None:
        order.append("second")

    publishing = asyncio.create_task(bus.publish("event", 1))
    await asyncio.wait_for(started.wait(), 1)
    assert order == ["first starts"]  # second waits for first: one after another
    assert not publishing.done()
    release.set()
    await asyncio.wait_for(publishing, 1)
    assert order == ["first starts", "first ends", "second"]


async def test_an_inline_listeners_failure_is_reported_and_the_next_one_still_runs(
    bus: EventBus, failures: FailureLog
) -> None:
    ran: list[int] = []

    @bus.on("event", inline=True)
    async def broken(body: int) -> None:
        raise ValueError("bad body")

    @bus.on("event", inline=True)
    async def own_cancel(body: int) -> None:
        raise asyncio.CancelledError  # its own, nobody cancels the publisher

    @bus.on("event", inline=True)
    async def fine(body: int) -> None:
        ran.append(body)

    await bus.publish("event", 7)  # raises nothing

    assert ran == [7]
    assert [type(failure.exception) for failure in failures] == [
        ValueError,
        asyncio.CancelledError,
    ]
    assert [failure.handler for failure in failures] == [broken, own_cancel]
    assert bus.stats().totals.failed == 2


async def test_cancelling_the_publisher_cancels_the_running_inline_listener_only(
    bus: EventBus, failures: FailureLog
) -> None:
    started = asyncio.Event()
    outcome: list[str] = []
    later_ran = asyncio.Event()

    @bus.on("event", inline=True)
    async def slow(body: int) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("slow cancelled")
            raise

    @bus.on("event", inline=True)
    async def later(body: int) -> None:
        later_ran.set()

    publishing = asyncio.create_task(bus.publish("event", 1))
    await asyncio.wait_for(started.wait(), 1)
    publishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publishing

    assert outcome == ["slow cancelled"]
    # The listener not started yet still gets its message, in a task of the bus's own.
    await asyncio.wait_for(later_ran.wait(), 1)
    await asyncio.wait_for(bus.drain(), 1)
    assert failures == []  # a cancelled publisher is not a handler failure


async def test_without_an_awaiting_caller_an_inline_listener_runs_in_a_task(
    bus: EventBus,
) -> None:
    tasks: list[asyncio.Task[object] | None] = []

    @bus.on("event", inline=True)
    async def listener(body: int) -> None:
        await asyncio.sleep(0)
        tasks.append(asyncio.current_task())

    bus.publish_nowait("event", 1)
    assert bus.stats().running_handlers == 1
    await asyncio.wait_for(bus.drain(), 1)
    assert len(tasks) == 1
    assert tasks[0] is not asyncio.current_task()


async def test_send_runs_an_inline_consumer_in_the_senders_task(bus: EventBus) -> None:
    tasks: list[asyncio.Task[object] | None] = []

    @bus.consumer("work", inline=True)
    async def worker(message: object) -> None:
        tasks.append(asyncio.current_task())

    await bus.send("work", 1)
    assert tasks == [asyncio.current_task()]


async def test_an_inline_consumer_answers_in_the_requesters_task(bus: EventBus) -> None:
    @bus.consumer("echo", inline=True)
    async def echo(message: Message[int]) -> tuple[int, bool]:
        await asyncio.sleep(0)
        return message.body, asyncio.current_task() is requester

    requester = asyncio.current_task()
    assert await bus.request("echo", 1) == (1, True)
    assert bus.stats().running_handlers == 0  # no task of its own was started


async def test_an_inline_consumers_failure_reaches_its_requester(bus: EventBus) -> None:
    @bus.consumer("broken", inline=True)
    async def broken(message: Message[int]) -> int:
        await asyncio.sleep(0)
        raise ValueError("bad")

    with pytest.raises(HandlerExecutionError, match="raised ValueError: bad") as caught:
        await bus.request("broken", 1)
    assert isinstance(caught.value.original_error, ValueError)


async def test_an_inline_consumer_that_replies_early_is_still_awaited_to_its_end(
    bus: EventBus,
) -> None:
    """Like a function call: the requester resumes when the handler returns, with the first
    answer it gave."""
    steps: list[str] = []

    @bus.consumer("early", inline=True)
    async def early(message: Message[int]) -> str:
        message.reply("first")
        await asyncio.sleep(0)
        steps.append("after the reply")
        return "second"

    assert await bus.request("early", 1) == "first"
    assert steps == ["after the reply"]


def test_the_requests_timeout_cancels_an_inline_consumer() -> None:
    """Its handler runs in the requester's task, so the deadline cancels it there, as
    ``asyncio.timeout`` would, and the requester gets ``HandlerTimeoutError``."""

    async def scenario() -> tuple[float, list[str]]:
        async with EventBus() as bus:
            _, seen = slow_inline_consumer(bus)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(HandlerTimeoutError):
                await bus.request("slow", 1, timeout=2.5)
            assert bus.stats().pending_requests == bus.stats().scheduled_timers == 0
            return loop.time() - started, seen

    elapsed, seen = run_virtual(scenario())
    assert elapsed == 2.5
    assert seen == ["cancelled"]


async def test_cancelling_the_requester_cancels_an_inline_consumer(bus: EventBus) -> None:
    entered, seen = slow_inline_consumer(bus)
    requester = asyncio.create_task(bus.request("slow", 1))
    async with asyncio.timeout(5):
        await entered.wait()
    requester.cancel()
    done, _ = await asyncio.wait({requester}, timeout=5)
    assert done
    assert requester.cancelled()
    assert seen == ["cancelled"]
    assert bus.stats().pending_requests == 0


async def test_an_inline_consumer_reached_by_a_send_runs_in_the_senders_task(
    bus: EventBus,
) -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    @bus.consumer("work", inline=True)
    async def work(message: Message[int]) -> None:
        await asyncio.sleep(0)
        tasks.append(asyncio.current_task())

    await bus.send("work", 1)
    assert tasks == [asyncio.current_task()]


def test_keyboard_interrupt_in_an_inline_listener_reaches_the_publisher() -> None:
    bus = EventBus()
    ran: list[str] = []

    @bus.on("event", inline=True)
    async def interrupted(body: int) -> None:
        raise KeyboardInterrupt

    @bus.on("event", inline=True)
    async def never(body: int) -> None:
        ran.append("never")

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(bus.publish("event", 1))
        # The listener after it is closed, not left un-awaited (filterwarnings=error).
        assert ran == []
        loop.run_until_complete(bus.close())
    finally:
        loop.close()


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_inline_must_be_a_bool(bus: EventBus, value: object) -> None:
    async def listener(body: int) -> None: ...

    with pytest.raises(TypeError, match="inline must be True or False"):
        bus.on("event", listener, inline=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["short", "general"])
async def test_each_inline_handler_is_called_at_its_turn(
    bus: EventBus, failures: FailureLog, path: str
) -> None:
    """Called one after another: one unregistered by the handler before it is not called, and
    a body that does not fit is reported at its turn. Headers take the general path (through
    the address's subject); the short path must behave the same."""
    order: list[str] = []

    @bus.on("event", inline=True)
    async def first(body: object) -> None:
        order.append("first")
        second_registration.unregister()

    async def second(body: object) -> None:
        order.append("second")

    @bus.on("event", inline=True)
    async def third(body: int) -> None:
        order.append("third")

    @bus.on("event", inline=True)
    async def fourth(body: object) -> None:
        order.append(f"fourth, {len(failures)} failure before")

    second_registration = bus.on("event", second, inline=True)
    assert bus.get_listeners("event") == [first, third, fourth, second]
    headers = {"trace": "1"} if path == "general" else None
    await bus.publish("event", "not an int", headers=headers)

    assert order == ["first", "fourth, 1 failure before"]
    assert [failure.handler for failure in failures] == [third]
    assert failures[0].message is not None
    assert failures[0].message.body == "not an int"


async def test_close_ends_an_inline_consumers_request_at_once(bus: EventBus) -> None:
    """Pending requests fail with ``BusClosedError`` when the bus closes: one whose inline
    handler runs in its task too, which cancels that handler there."""
    entered, seen = slow_inline_consumer(bus)
    requester = asyncio.create_task(bus.request("slow", 1))
    async with asyncio.timeout(5):
        await entered.wait()
        await bus.close()
        with pytest.raises(BusClosedError):
            await requester
    assert seen == ["cancelled"]
