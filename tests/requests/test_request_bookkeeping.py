"""What a request leaves behind, and when its timeout fires.

Requests with the same timeout share one timer (``tinybus/_deadlines.py``): these tests pin
what that must not change. Every timeout still fires at its own request's deadline, including
requests made out of order (inside a handler's first step) and requests with different
timeouts; answered requests are not retained behind one that still waits; and a request's
objects are freed by reference counting, without the cycle collector. Timing is on a virtual
clock, so the instants compared are exact.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Iterator

import pytest

from tinybus import EventBus, HandlerTimeoutError, Message
from tinybus.testing import VirtualClockLoop, run_virtual


def virtual_loop() -> VirtualClockLoop:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClockLoop)
    return loop


async def time_out_at(bus: EventBus, address: str, body: object, timeout: float) -> float:
    """Make a request that must time out; the loop's time when it did."""
    with pytest.raises(HandlerTimeoutError):
        await bus.request(address, body, timeout=timeout)
    return virtual_loop().time()


def test_a_request_made_inside_a_handler_times_out_at_its_own_deadline_not_the_outer_one() -> None:
    """The outer request (deadline 5) starts a handler that blocks the loop for 2 seconds and
    then, in its first step, requests with the same timeout (deadline 7): the inner request
    reaches the timeouts' lane first, the outer one after it. Each times out at its deadline."""

    async def scenario() -> tuple[float, float]:
        loop = virtual_loop()
        inner_timed_out: asyncio.Future[float] = loop.create_future()
        async with EventBus(close_timeout=0.1) as bus:

            async def never_answers(message: Message[str]) -> None:
                await asyncio.Event().wait()

            async def outer(message: Message[str]) -> None:
                loop.advance(2.0)  # as if it blocked the loop for two seconds
                inner_timed_out.set_result(await time_out_at(bus, "inner", "x", 5.0))

            bus.consumer("inner", never_answers)
            bus.consumer("outer", outer)
            outer_timed_out = await time_out_at(bus, "outer", "x", 5.0)
            return outer_timed_out, await asyncio.wait_for(inner_timed_out, 60)

    assert run_virtual(scenario()) == (5.0, 7.0)


def test_requests_with_different_timeouts_each_time_out_at_their_own_deadline() -> None:
    """Interleaved timeouts, several requests per timeout, made at different instants: every
    request fails at exactly the instant it was made plus its own timeout."""
    timeouts = [3.0, 1.0, 2.0, 1.0, 3.0, 0.5, 2.0]

    async def scenario() -> list[tuple[float, float]]:
        loop = virtual_loop()
        async with EventBus(close_timeout=0.1) as bus:

            async def never_answers(message: Message[int]) -> None:
                await asyncio.Event().wait()

            bus.consumer("silent", never_answers)
            requests: list[tuple[float, asyncio.Task[float]]] = []
            for number, timeout in enumerate(timeouts):
                made = loop.time()
                task = asyncio.ensure_future(time_out_at(bus, "silent", number, timeout))
                requests.append((made + timeout, task))
                await asyncio.sleep(0.25)
            return [(deadline, await task) for deadline, task in requests]

    for deadline, timed_out in run_virtual(scenario()):
        assert timed_out == deadline


def test_answered_requests_are_not_kept_behind_one_that_still_waits() -> None:
    """One request waits (for an hour) at the head of its timeout's lane while 10,000 requests
    with the same timeout are made and answered behind it. The memory they leave behind stays
    small (tens of kilobytes: sets and free lists that grew), where keeping them behind the
    head would hold about 3 MB; the one that waits still times out at its deadline."""
    answered_count = 10_000

    async def scenario() -> tuple[int, float, float]:
        loop = virtual_loop()
        async with EventBus(close_timeout=0.1) as bus:
            gate = asyncio.Event()

            async def waits_for_the_gate(message: Message[int]) -> int:
                if message.body < 0:
                    await asyncio.Event().wait()  # never answers
                await gate.wait()
                return message.body

            bus.consumer("gated", waits_for_the_gate)
            made = loop.time()
            stuck = asyncio.ensure_future(time_out_at(bus, "gated", -1, 3600.0))
            await asyncio.sleep(0)

            async def one_batch(first: int) -> None:
                gate.clear()
                batch = [
                    asyncio.ensure_future(bus.request("gated", n, timeout=3600.0))
                    for n in range(first, first + 1_000)
                ]
                await asyncio.sleep(0)  # every request waits: its place in the lane is taken
                gate.set()
                assert await asyncio.gather(*batch) == list(range(first, first + 1_000))

            await one_batch(0)  # warm-up: what is built on first use is not counted
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for first in range(1_000, answered_count, 1_000):
                await one_batch(first)
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
            return retained, made, await stuck

    tracemalloc.start()
    try:
        retained, made, timed_out = run_virtual(scenario())
    finally:
        tracemalloc.stop()
    assert retained < 1024 * 1024, f"{retained:,} bytes retained by answered requests"
    assert timed_out == made + 3600.0


@pytest.fixture
def garbage() -> Iterator[list[object]]:
    """What the cycle collector finds from now on (kept for inspection, not freed)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_a_request_leaves_nothing_for_the_cycle_collector(garbage: list[object]) -> None:
    """Requests answered at once and after a suspension, by a handler given the message: what
    each one built is freed as soon as it is done, by reference counting alone (the test's own
    machinery may leave cycles; none of them holds the bus's objects)."""
    async with EventBus() as bus:

        async def answers(message: Message[int]) -> int:
            if message.body % 2:
                await asyncio.sleep(0)
            return message.body

        bus.consumer("answers", answers)
        for body in range(1_000):
            assert await bus.request("answers", body) == body
        gc.collect()
        of_the_bus = [item for item in garbage if type(item).__module__.startswith("tinybus")]
        assert of_the_bus == []


class _Clock:
    """A virtual clock for a loop object (not its class), as ``aiotools.VirtualClock`` or
    ``mock.patch.object(loop, "time")`` patch one: the loop's selector moves it to the next
    timer instead of sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def loop_with_a_patched_clock() -> asyncio.AbstractEventLoop:
    from tinybus.testing.clock import VirtualSelector

    selector = VirtualSelector()
    loop = asyncio.SelectorEventLoop(selector)
    clock = _Clock()
    setattr(loop, "time", clock.time)  # noqa: B010  (on the object: its class keeps asyncio's)
    selector.clock = clock
    return loop


def test_timeouts_follow_a_clock_patched_on_the_loop_object() -> None:
    """The deadlines of requests and of a conversation's legs are on the loop's clock, also
    when the loop object's ``time`` is patched (its class still has asyncio's): a request times
    out at exactly its deadline, a reply one second before it is in time, and so is an answer
    to ``reply_and_request`` one second before that leg's deadline."""

    async def scenario() -> tuple[float, object, tuple[object, float], int]:
        loop = asyncio.get_running_loop()
        async with EventBus(close_timeout=0.1) as bus:
            conversed: asyncio.Future[tuple[object, float]] = loop.create_future()

            async def never_answers(message: Message[int]) -> None:
                await asyncio.Event().wait()

            async def answers_after(message: Message[float]) -> str:
                await asyncio.sleep(message.body)
                return "in time"

            async def converses(message: Message[str]) -> None:
                answer = await message.reply_and_request("and you?", timeout=5.0)
                conversed.set_result((answer.body, loop.time()))

            bus.consumer("silent", never_answers)
            bus.consumer("slow", answers_after)
            bus.consumer("talk", converses)
            with pytest.raises(HandlerTimeoutError):
                await bus.request("silent", 0, timeout=5.0)
            timed_out_at = loop.time()
            in_time = await bus.request("slow", 4.0, timeout=5.0)
            reply = await bus.request("talk", "hello", full=True, timeout=5.0)
            asked_at = loop.time()
            await asyncio.sleep(4.0)
            reply.reply("fine")
            body, answered_at = await asyncio.wait_for(conversed, 60.0)
            return timed_out_at, in_time, (body, answered_at - asked_at), bus.stats().totals.failed

    with asyncio.Runner(loop_factory=loop_with_a_patched_clock) as runner:
        timed_out_at, in_time, conversation, failed = runner.run(scenario())
    assert timed_out_at == 5.0
    assert in_time == "in time"
    assert conversation == ("fine", 4.0)
    assert failed == 0
