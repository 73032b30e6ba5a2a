"""Scatter-gather: ``bus.request_all`` asks every consumer of an address once and returns
every outcome that arrived by the timeout, failures included, without raising for them.
Timing is read on the virtual clock of ``tinybus.testing``. (Across a transport:
``tests/architecture/test_transport_seam.py``.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from tinybus import (
    Address,
    BusClosedError,
    EventBus,
    EventBusError,
    Failed,
    Gathered,
    HandlerExecutionError,
    HandlerFailure,
    Message,
    MessageDroppedError,
    MessageValidationError,
    Replied,
    ReplyFailedError,
)
from tinybus.testing import FailureLog, run_virtual


def timed(scenario: Any) -> tuple[Any, float]:
    """Run ``scenario(bus)`` on a virtual clock; what it returned and the seconds it took."""

    async def run() -> tuple[Any, float]:
        async with EventBus(close_timeout=0.1) as bus:
            loop = asyncio.get_running_loop()
            start = loop.time()
            result = await scenario(bus)
            return result, loop.time() - start

    return run_virtual(run())


async def test_every_consumer_is_asked_once_and_every_outcome_returned(bus: EventBus) -> None:
    @bus.consumer("census")
    def a(message: Message[int]) -> str:
        return "a"

    @bus.consumer("census")
    async def b(message: Message[int]) -> str:
        await asyncio.sleep(0)
        return "b"

    @bus.consumer("census")
    def broken(message: Message[int]) -> str:
        raise ValueError("c is broken")

    @bus.consumer("census")
    def refuses(message: Message[int]) -> None:
        message.fail(409, "not now")

    gathered = await bus.request_all("census", 1, timeout=5)
    assert gathered.asked == 4
    assert len(gathered) == 4
    assert gathered.missing == 0
    assert sorted(gathered.replies) == ["a", "b"]
    errors = {type(failed.error): failed.handler for failed in gathered.failures}
    assert errors == {
        HandlerExecutionError: broken.__qualname__,
        ReplyFailedError: refuses.__qualname__,
    }
    replied = [outcome for outcome in gathered if isinstance(outcome, Replied)]
    assert {outcome.handler for outcome in replied} == {a.__qualname__, b.__qualname__}
    assert bus.stats().addresses["census"].handlers[0].delivered == 1


def test_it_returns_once_every_answer_is_in_without_waiting_for_the_timeout() -> None:
    async def scenario(bus: EventBus) -> Gathered[Any]:
        @bus.consumer("slowish")
        async def slowish(message: Message[None]) -> int:
            await asyncio.sleep(2)
            return 2

        bus.consumer("slowish", lambda message: 1)
        return await bus.request_all("slowish", None, timeout=60)

    gathered, took = timed(scenario)
    assert gathered.replies == [1, 2]
    assert took == pytest.approx(2)


def test_at_the_timeout_it_returns_what_came_and_counts_the_missing() -> None:
    late_failures: list[HandlerFailure] = []

    async def scenario(bus: EventBus) -> Gathered[Any]:
        bus.errors.subscribe(late_failures.append)

        @bus.consumer("poll")
        async def slow(message: Message[None]) -> int:
            await asyncio.sleep(10)
            raise ValueError("too late to matter")

        bus.consumer("poll", lambda message: "quick")
        gathered = await bus.request_all("poll", None, timeout=3)
        await bus.drain()
        return gathered

    gathered, took = timed(scenario)
    assert took == pytest.approx(10)  # 3 for the request, then drain() waited for the slow one
    assert gathered.replies == ["quick"]
    assert (gathered.asked, gathered.missing) == (2, 1)
    # The slow consumer's failure came after the gather: nobody awaited it, so it is reported.
    assert [str(failure.exception) for failure in late_failures] == ["too late to matter"]


async def test_no_consumer_is_an_empty_result_at_once(bus: EventBus) -> None:
    bus.on("census", lambda body: None)  # a listener does not answer requests
    async with asyncio.timeout(1):
        gathered = await bus.request_all("census", 1, timeout=30)
    assert list(gathered) == []
    assert (gathered.asked, gathered.missing) == (0, 0)
    assert repr(gathered) == "<Gathered 0 replies, 0 failures from 0 asked>"


async def test_a_pattern_is_refused(bus: EventBus) -> None:
    with pytest.raises(ValueError, match="not to the pattern"):
        await bus.request_all("census.*", 1)


async def test_the_round_robin_of_request_is_left_where_it_was(bus: EventBus) -> None:
    for name in ("a", "b", "c"):
        bus.consumer("who", lambda message, name=name: name)
    assert await bus.request("who", None) == "a"
    gathered = await bus.request_all("who", None)
    assert gathered.replies == ["b", "c", "a"]  # from the one whose turn it is
    assert [await bus.request("who", None) for _ in range(3)] == ["b", "c", "a"]


async def test_interceptors_run_once_for_the_whole_gather(bus: EventBus) -> None:
    seen: list[str] = []
    bus.add_interceptor(lambda envelope: seen.append(envelope.kind))
    bus.consumer("census", lambda message: message.headers.get("x"))
    bus.consumer("census", lambda message: message.headers.get("x"))
    gathered = await bus.request_all("census", None, headers={"x": "1"})
    assert gathered.replies == ["1", "1"]
    assert seen == ["request", "reply", "reply"]  # the request once, and each answer


async def test_response_type_turns_a_reply_that_does_not_fit_into_a_failure(bus: EventBus) -> None:
    bus.consumer("numbers", lambda message: "7")
    bus.consumer("numbers", lambda message: "seven")
    gathered = await bus.request_all("numbers", None, response_type=int)
    assert gathered.replies == [7]
    [failed] = gathered.failures
    assert isinstance(failed.error, MessageValidationError)


class Quote(BaseModel):
    shop: str
    price: int


QUOTES = Address[str, Quote]("quotes")


async def test_a_typed_address_gathers_typed_replies(bus: EventBus) -> None:
    bus.consumer(QUOTES, lambda message: Quote(shop="a", price=3))

    @bus.consumer(QUOTES)
    def from_a_dict(message: Message[str]) -> Quote:
        return {"shop": "b", "price": 2}  # type: ignore[return-value]  # (converted)

    gathered: Gathered[Quote] = await bus.request_all(QUOTES, "tea")
    cheapest = min(gathered.replies, key=lambda quote: quote.price)
    assert cheapest == Quote(shop="b", price=2)


def test_inline_consumers_are_asked_at_once_not_one_after_another() -> None:
    async def scenario(bus: EventBus) -> Gathered[Any]:
        for seconds in (1, 2):

            async def answer(message: Message[Any], seconds: int = seconds) -> int:
                await asyncio.sleep(seconds)
                return seconds

            bus.consumer("inline", answer, inline=True)
        return await bus.request_all("inline", None, timeout=10)

    gathered, took = timed(scenario)
    assert gathered.replies == [1, 2]
    assert took == pytest.approx(2)


async def test_a_copy_still_buffered_after_the_gather_is_not_delivered(
    bus: EventBus, failures: FailureLog
) -> None:
    release = asyncio.Event()
    handled: list[int] = []

    @bus.consumer("jobs", max_concurrency=1)
    async def worker(message: Message[int]) -> int:
        await release.wait()
        handled.append(message.body)
        return message.body

    busy = asyncio.create_task(bus.request("jobs", 1))  # holds the worker
    await asyncio.sleep(0)
    gathered = await bus.request_all("jobs", 2, timeout=0.05)  # its copy waits in the buffer
    assert (gathered.asked, gathered.missing) == (1, 1)
    release.set()
    assert await busy == 1
    await bus.drain()
    assert handled == [1]  # the gather's copy was given up
    registration = bus.stats().addresses["jobs"].handlers[0]
    assert registration.dropped == 1
    assert failures == []


def consumer_waiting(bus: EventBus, release: asyncio.Event) -> None:
    """A consumer of "census" that answers 1 once ``release`` is set."""

    async def waits(message: Message[None]) -> int:
        await release.wait()
        return 1

    bus.consumer("census", waits)


async def test_a_closed_bus_refuses_and_a_closing_bus_ends_the_gather() -> None:
    bus = EventBus(close_timeout=0.1)
    async with bus:
        consumer_waiting(bus, asyncio.Event())
        gathering = asyncio.create_task(bus.request_all("census", None, timeout=30))
        await asyncio.sleep(0)
    with pytest.raises(BusClosedError, match="before every consumer of 'census' replied"):
        await gathering
    with pytest.raises(BusClosedError):
        await bus.request_all("census", None)


async def test_a_cancelled_gather_leaves_nothing_waiting(bus: EventBus) -> None:
    release = asyncio.Event()
    consumer_waiting(bus, release)
    gathering = asyncio.create_task(bus.request_all("census", None, timeout=30))
    await asyncio.sleep(0)
    assert bus.stats().pending_requests == 1
    gathering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gathering
    assert bus.stats().pending_requests == 0
    release.set()
    await bus.drain()
    assert bus.stats().totals.replied == 0  # its late reply was dropped


async def test_outcomes_are_a_typed_union(bus: EventBus) -> None:
    bus.consumer("census", lambda message: 1)
    bus.consumer("census", lambda message: message.fail(1, "no"))
    descriptions: list[str] = []
    for outcome in await bus.request_all("census", None):
        match outcome:
            case Replied(body=body):
                descriptions.append(f"replied {body}")
            case Failed(error=error):
                descriptions.append(f"failed: {type(error).__name__}")
    assert descriptions == ["replied 1", "failed: ReplyFailedError"]
    assert not isinstance(MessageDroppedError, Replied)


async def test_a_consumer_that_asks_back_fails_at_once_not_at_its_timeout(
    bus: EventBus, failures: FailureLog
) -> None:
    @bus.consumer("census")
    async def asks_back(message: Message[None]) -> None:
        await message.reply_and_request("who is asking?")

    bus.consumer("census", lambda message: "plain")
    async with asyncio.timeout(1):  # (the bus's default timeout is 5 s)
        gathered = await bus.request_all("census", None)
    assert gathered.replies == ["plain"]
    [failed] = gathered.failures
    assert "cannot be answered with reply_and_request" in str(failed.error)
    assert failed.handler == asks_back.__qualname__
    failures.expect(EventBusError, "cannot be answered")  # (raised in the consumer too)
