"""Requests to inline consumers at their edges: what the requester gets, and what is counted,
when the deadline, a cancellation or ``close()`` ends the handler, or the handler catches that
and returns anyway. (Found while modelling inline requests in ``test_model.py``; the model
predicts the same.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from reactivex import operators as ops

from tinybus import (
    BusClosedError,
    EventBus,
    HandlerTimeoutError,
    Message,
    MessageRejectedError,
    Registration,
)
from tinybus.testing import run_virtual


async def _replies_early_then_hangs(bus: EventBus) -> tuple[Registration, asyncio.Event]:
    """An inline consumer at "c" that replies at once, then keeps working until cancelled;
    returns its registration and the event set once it has replied."""
    replied = asyncio.Event()

    async def early(message: Message[int]) -> str:
        message.reply("early")
        replied.set()
        await asyncio.Event().wait()  # until cancelled
        return "never"

    return bus.consumer("c", early, inline=True), replied


@pytest.mark.parametrize("ended_by", ["deadline", "cancellation", "close"])
def test_an_early_reply_the_requester_never_got_is_not_counted(ended_by: str) -> None:
    """``Counters.replied`` counts "replies that reached their requester" (a reply that
    reached a requester's future but not the requester, cancelled in that iteration, is taken
    back). An inline consumer's requester gets its answer only when the handler returns; when
    the deadline, its cancellation or close() ends the handler first, the reply never reaches
    it. The bus counted it anyway (totals and the consumer's ``replied`` were 1)."""

    async def scenario() -> tuple[Any, int, int]:
        bus = EventBus(close_timeout=0.1)
        registration, replied = await _replies_early_then_hangs(bus)
        requester = asyncio.create_task(bus.request("c", 1, timeout=2.5))
        async with asyncio.timeout(1):
            await replied.wait()
        if ended_by == "cancellation":
            requester.cancel()
        elif ended_by == "close":
            await bus.close()
        await asyncio.wait([requester])
        outcome = "cancelled" if requester.cancelled() else type(requester.exception())
        replies = bus.stats().totals.replied, registration.replied
        if not bus.is_closed:
            await bus.close()
        return outcome, *replies

    outcome, replied, consumer_replied = run_virtual(scenario())
    expected = {
        "deadline": HandlerTimeoutError,
        "cancellation": "cancelled",
        "close": BusClosedError,
    }
    assert outcome == expected[ended_by]  # (holds: the requester never got the reply)
    assert (replied, consumer_replied) == (0, 0)  # (was 1, 1)


async def _outlives_its_cancellation(bus: EventBus) -> asyncio.Event:
    """An inline consumer at "c" that, cancelled, returns a value instead of stopping;
    returns the event set when it has started."""
    started = asyncio.Event()

    @bus.consumer("c", inline=True)
    async def stubborn(message: Message[int]) -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "cancelled, and returned anyway"
        return "slept"

    return started


def test_a_deadline_an_inline_consumer_returns_from_is_still_a_timeout() -> None:
    """The deadline cancels the inline handler in the requester's task; a handler that
    catches the cancellation and returns has answered after the deadline: a late answer, and
    the requester times out (as ``_late`` makes any answer at or after the deadline).
    ``Requests._turn`` found no outcome (the late reply was dropped) and took it for a
    close(): ``BusClosedError``, though the bus was open."""

    async def scenario() -> BaseException | None:
        async with EventBus() as bus:
            await _outlives_its_cancellation(bus)
            try:
                await bus.request("c", 1, timeout=2.5)
            except Exception as exc:
                return exc
            return None

    error = run_virtual(scenario())
    assert isinstance(error, HandlerTimeoutError), repr(error)  # (was BusClosedError)


@pytest.mark.parametrize("ended_by", ["deadline", "close"])
def test_the_bus_takes_back_its_cancellation_of_a_requester_whose_handler_returned(
    ended_by: str,
) -> None:
    """The bus cancels the requester's task to end an inline handler at the deadline or at
    close(), and takes that cancellation back (``task.uncancel()``) when it turns it into the
    requester's ``HandlerTimeoutError`` or ``BusClosedError``. When the handler returned
    instead of raising ``CancelledError``, it did not: the requester's task was left with
    ``cancelling() == 1``, so a later ``asyncio.timeout`` or ``TaskGroup`` in it misbehaved
    (a timeout expiring raises ``CancelledError``, not ``TimeoutError``)."""

    async def scenario() -> tuple[type[BaseException] | None, int]:
        bus = EventBus(close_timeout=0.1)
        started = await _outlives_its_cancellation(bus)

        async def requester() -> tuple[type[BaseException] | None, int]:
            error: type[BaseException] | None = None
            try:
                await bus.request("c", 1, timeout=2.5)
            except Exception as exc:
                error = type(exc)
            task = asyncio.current_task()
            assert task is not None
            return error, task.cancelling()

        task = asyncio.create_task(requester())
        async with asyncio.timeout(1):
            await started.wait()
        if ended_by == "close":
            await bus.close()
        result = await task
        if not bus.is_closed:
            await bus.close()
        return result

    error, cancelling = run_virtual(scenario())
    assert error is not None  # (HandlerTimeoutError or BusClosedError: see the test above)
    assert cancelling == 0  # (was 1)


def test_a_request_its_consumers_pipe_rejects_is_that_consumers_failure() -> None:
    """``MessageRejectedError`` counts as ``failed`` in ``bus.stats().totals`` (as a pipe
    raising on a request does), and in the consumer's ``failed`` (as before the core
    redesign; for a while after it, it did not, and the consumers' counters did not add up to
    the totals). (Not about inline consumers: found by the model test while modelling them.)"""

    async def scenario() -> tuple[int, int]:
        async with EventBus() as bus:
            registration = bus.consumer("c", lambda m: 1, pipe=[ops.filter(lambda m: False)])
            with pytest.raises(MessageRejectedError):
                await bus.request("c", 1)
            return bus.stats().totals.failed, registration.failed

    totals_failed, consumer_failed = run_virtual(scenario())
    assert totals_failed == 1  # (holds)
    assert consumer_failed == 1  # (was 0)
