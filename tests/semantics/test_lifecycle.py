"""Binding to the event loop, and shutting down with close()."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops

from tests.conftest import Gate, on_uvloop
from tinybus import BusClosedError, EventBus, EventBusError, HandlerFailure, Message
from tinybus.testing import FailureLog, run_virtual


def test_bus_built_without_a_loop_binds_to_the_loop_that_uses_it() -> None:
    bus = EventBus()
    bus.consumer("echo", lambda message: message.body)

    async def main() -> Any:
        return await bus.request("echo", "from asyncio.run")

    assert asyncio.run(main()) == "from asyncio.run"
    # asyncio.run closed that loop: the bus moves on to the next one.
    assert asyncio.run(main()) == "from asyncio.run"


def test_bus_used_inside_an_already_running_loop_without_asyncio_run() -> None:
    """As in a Jupyter kernel: the loop runs already and code is scheduled onto it."""
    bus = EventBus()
    heard: list[str] = []
    bus.on("cell", heard.append)
    loop = asyncio.new_event_loop()
    try:
        results: list[Any] = []

        def cell() -> None:
            task = loop.create_task(bus.publish("cell", "top-level await"))
            task.add_done_callback(lambda t: (results.append(t.result()), loop.stop()))

        loop.call_soon(cell)
        loop.run_forever()
        assert results == [1]  # the one listener it reached
        assert heard == ["top-level await"]
        loop.run_until_complete(bus.close())
    finally:
        loop.close()


def test_bus_refuses_a_second_open_loop() -> None:
    bus = EventBus()
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(bus.publish("x", 1))

        async def elsewhere() -> None:
            await bus.publish("x", 1)

        with pytest.raises(EventBusError, match="bound to another event loop"):
            asyncio.run(elsewhere())
        first.run_until_complete(bus.close())
    finally:
        first.close()


async def test_close_fails_pending_requests_at_once_with_bus_closed_error() -> None:
    bus = EventBus(close_timeout=0.5)
    release = asyncio.Event()
    started = Gate(10)

    @bus.consumer("hang")
    async def hang(message: Message[None]) -> None:
        started.arrive()
        await release.wait()

    requesters = [asyncio.create_task(bus.request("hang", None)) for _ in range(10)]
    await started.wait()
    assert "10 pending requests" in repr(bus)
    closing = asyncio.create_task(bus.close())
    results = await asyncio.wait_for(asyncio.gather(*requesters, return_exceptions=True), 0.4)
    assert all(isinstance(result, BusClosedError) for result in results)
    assert "'hang'" in str(results[0])
    release.set()
    await closing


async def test_close_lets_running_handlers_finish_within_the_grace_period() -> None:
    bus = EventBus(close_timeout=5)
    finished: list[str] = []
    started = Gate()

    @bus.on("evt")
    async def slow(body: str) -> None:
        started.arrive()
        await asyncio.sleep(0.05)
        finished.append(body)

    publisher = asyncio.create_task(bus.publish("evt", "done in time"))
    await started.wait()
    await bus.close()
    assert finished == ["done in time"]
    await publisher


async def test_close_cancels_handlers_still_running_after_the_grace_period() -> None:
    bus = EventBus()
    outcome: list[str] = []
    started = Gate()

    @bus.on("evt")
    async def stuck(body: str) -> None:
        started.arrive()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    publisher = asyncio.create_task(bus.publish("evt", "x"))
    await started.wait()
    before = asyncio.get_running_loop().time()
    await bus.close(timeout=0.05)
    resolution = 0.001 if on_uvloop() else 0.0  # (its clock counts milliseconds)
    assert asyncio.get_running_loop().time() - before >= 0.05 - resolution
    assert outcome == ["cancelled"]
    assert "0 running handlers" in repr(bus)
    await asyncio.wait_for(publisher, 1)  # the publisher is released, not left hanging
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == []


async def test_after_close_everything_new_is_refused() -> None:
    bus = EventBus()
    bus.consumer("echo", lambda message: message.body)
    await bus.close()
    assert bus.is_closed
    with pytest.raises(BusClosedError):
        await bus.request("echo", 1)
    with pytest.raises(BusClosedError):
        await bus.publish("echo", 1)
    with pytest.raises(BusClosedError):
        await bus.send("echo", 1)
    with pytest.raises(BusClosedError):
        bus.consumer("other", print)
    with pytest.raises(BusClosedError):
        bus.on("other", print)


async def test_close_twice_and_concurrently_is_harmless() -> None:
    bus = EventBus()
    release = asyncio.Event()
    started = Gate()

    @bus.on("evt")
    async def slow(body: None) -> None:
        started.arrive()
        await release.wait()

    publisher = asyncio.create_task(bus.publish("evt", None))
    await started.wait()
    first = asyncio.create_task(bus.close())
    second = asyncio.create_task(bus.close())
    await asyncio.sleep(0.01)
    assert not first.done()
    assert not second.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second, publisher), 2)
    await bus.close()


async def test_closing_an_unused_bus_works() -> None:
    bus = EventBus()
    await bus.close()
    assert bus.is_closed


async def test_context_manager_closes_the_bus() -> None:
    async with EventBus() as bus:
        bus.consumer("echo", lambda message: message.body)
        assert await bus.request("echo", 1) == 1
    assert bus.is_closed


async def test_close_completes_observed_streams_and_the_error_stream() -> None:
    bus = EventBus()
    completed: list[str] = []
    bus.observe("evt").subscribe(on_completed=lambda: completed.append("evt"))
    bus.errors.subscribe(on_completed=lambda: completed.append("errors"))
    await bus.publish("evt", 1)
    await bus.close()
    assert completed == ["evt", "errors"]
    late: list[str] = []
    bus.observe("evt").subscribe(on_completed=lambda: late.append("completed at once"))
    assert late == ["completed at once"]


async def test_handlers_requesting_during_close_get_bus_closed_error() -> None:
    bus = EventBus(close_timeout=1)
    outcome: list[BaseException] = []
    started = asyncio.Event()

    @bus.consumer("inner")
    async def inner(message: Message[None]) -> None:
        await asyncio.Event().wait()

    @bus.on("evt")
    async def outer(body: None) -> None:
        started.set()
        try:
            await bus.request("inner", None)
        except BusClosedError as exc:
            outcome.append(exc)

    publisher = asyncio.create_task(bus.publish("evt", None))
    await started.wait()
    await bus.close()
    await publisher
    assert len(outcome) == 1


@pytest.mark.parametrize("bad", [-1, "5", None])
def test_invalid_close_timeout_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="close timeout"):
        EventBus(close_timeout=bad)


async def test_no_thread_is_started_by_the_bus() -> None:
    threads_before = set(threading.enumerate())
    async with EventBus() as bus:
        delivered_on: list[threading.Thread] = []
        delivered = Gate()
        record = delivered.recorder(delivered_on)
        bus.observe("evt").pipe(ops.debounce(0.01)).subscribe(
            lambda message: record(threading.current_thread()), scheduler=bus.scheduler
        )
        bus.consumer("echo", lambda message: message.body)
        for n in range(5):
            await bus.publish("evt", n)
            await bus.request("echo", n, timeout=1)
        await delivered.wait()
    assert delivered_on == [threading.main_thread()]
    assert set(threading.enumerate()) == threads_before


async def test_error_stream_subscriber_that_raises_does_not_take_the_bus_down(
    bus: EventBus, failures: FailureLog
) -> None:
    def bad_subscriber(failure: HandlerFailure) -> None:
        raise RuntimeError("error handler broke")

    bus.errors.subscribe(bad_subscriber)
    bus.on("evt", lambda body: 1 / 0)
    await bus.publish("evt", 1)
    await bus.publish("evt", 2)
    assert [f.message.body for f in failures if f.message] == [1, 2]


async def test_a_handler_may_close_the_bus_it_runs_on() -> None:
    bus = EventBus(close_timeout=5)

    @bus.consumer("admin.shutdown")
    async def shutdown(message: Message[None]) -> None:
        await asyncio.sleep(0)
        await bus.close()

    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(bus.send("admin.shutdown", None), 2)
    assert asyncio.get_running_loop().time() - started < 2
    assert bus.is_closed


async def test_a_cancelled_close_leaves_the_work_to_the_next_close() -> None:
    bus = EventBus(close_timeout=0.01)
    started = Gate()
    finished: list[str] = []

    @bus.on("evt")
    async def stubborn(body: None) -> None:
        started.arrive()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup that takes a while
            finished.append("cleaned up")
            raise

    publisher = asyncio.create_task(bus.publish("evt", None))
    await started.wait()
    first = asyncio.create_task(bus.close())
    await asyncio.sleep(0.02)  # past the grace period: the handler is being cancelled
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await bus.close(timeout=2)  # waits for the cleanup still under way
    assert finished == ["cleaned up"]
    assert "0 running handlers" in repr(bus)
    await publisher


def test_close_refused_on_another_loop_changes_nothing() -> None:
    bus = EventBus()
    bus.consumer("echo", lambda message: message.body)
    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(bus.request("echo", 1)) == 1
        with pytest.raises(EventBusError, match="close"):
            asyncio.run(bus.close())
        assert not bus.is_closed
        assert first.run_until_complete(bus.request("echo", 2)) == 2
        first.run_until_complete(bus.close())
    finally:
        first.close()


def test_the_scheduler_follows_the_bus_to_a_new_loop() -> None:
    bus = EventBus()

    async def tick() -> list[int]:
        ticks: list[int] = []
        fired = Gate()
        reactivex.timer(0.001, scheduler=bus.scheduler).subscribe(fired.recorder(ticks))
        await fired.wait()
        await bus.publish("x", 1)
        return ticks

    assert asyncio.run(tick()) == [0]
    assert asyncio.run(tick()) == [0]


async def test_a_listener_failing_with_its_own_cancelled_error_is_reported(
    bus: EventBus, failures: FailureLog
) -> None:
    async def listener(body: None) -> None:
        cancelled = asyncio.get_running_loop().create_future()
        cancelled.cancel()
        await cancelled

    bus.on("evt", listener)
    await bus.publish("evt", None)
    assert [(f.handler, type(f.exception)) for f in failures] == [
        (listener, asyncio.CancelledError)
    ]


async def test_handlers_cancelled_by_close_are_not_reported_as_failures() -> None:
    bus = EventBus(close_timeout=0)
    failures: list[HandlerFailure] = []
    bus.errors.subscribe(failures.append)
    started = Gate(2)

    @bus.consumer("slow")
    async def slow(message: Message[None]) -> None:
        started.arrive()
        await asyncio.Event().wait()

    @bus.on("evt")
    async def slow_listener(body: None) -> None:
        started.arrive()
        await asyncio.Event().wait()

    requester = asyncio.create_task(bus.request("slow", None))
    publisher = asyncio.create_task(bus.publish("evt", None))
    await started.wait()
    await bus.close()
    with pytest.raises(BusClosedError):
        await requester
    await publisher
    assert failures == []


def leave_jobs_running_and_buffered(bus: EventBus, handled: list[int]) -> None:
    """Jobs 0-4 published to a listener that takes one at a time, on a loop that ends
    (``asyncio.run`` returns) without closing the bus: job 0 is handled, job 1 is running and
    2 is started as asyncio.run cancels the loop's tasks (both wait for the loop's end), 3 and
    4 wait in the buffer. On a later loop, every job is handled at once."""
    first_loop = True

    async def job(n: int) -> None:
        if first_loop and n > 0:
            started.set()
            await asyncio.Event().wait()  # until the loop ends
        handled.append(n)

    bus.on("jobs", job, max_concurrency=1)

    async def first() -> None:
        for n in range(5):
            bus.publish_nowait("jobs", n)
        async with asyncio.timeout(5):
            await started.wait()

    started = asyncio.Event()
    asyncio.run(first())
    first_loop = False


def test_a_bus_left_open_as_its_loop_ends_loses_no_buffered_message() -> None:
    """Its loop ends (``asyncio.run`` returns) with jobs running and queued: the running ones
    are cancelled and reported (including one started while ``asyncio.run`` cancelled the
    loop's tasks), the queued ones wait for the next loop the bus serves, and are handled
    there; none is lost without a trace."""
    bus = EventBus(close_timeout=1.0)
    handled: list[int] = []
    reported: list[tuple[int, str]] = []
    bus.errors.subscribe(
        lambda failure: reported.append(
            (failure.message.body if failure.message else -1, type(failure.exception).__name__)
        )
    )
    leave_jobs_running_and_buffered(bus, handled)
    assert handled == [0]
    assert reported == [(1, "CancelledError"), (2, "CancelledError")]

    async def second() -> None:
        await bus.drain()
        await bus.close()

    asyncio.run(second())
    assert handled == [0, 3, 4]
    assert bus.stats().totals.dropped == 0


def test_no_message_accepted_from_another_thread_vanishes_as_the_loop_ends() -> None:
    """Sixteen threads publish while the bus's loop ends without closing it: every call
    either raised in its thread (``BusClosedError``: the loop is ending, or ``EventBusError``
    once it has closed), or reached the listener, or, when the loop's end cancelled its
    handler's task before the handler was called (handlers start at the loop's next turn),
    was reported on ``bus.errors`` as that cancellation, as a running handler's is."""
    bus = EventBus()
    heard: list[int] = []
    cancelled: list[HandlerFailure] = []
    bus.errors.subscribe(cancelled.append)
    plenty = asyncio.Event()  # (set by the listener, on the loop)

    def listener(body: int) -> None:
        heard.append(body)
        if len(heard) >= 2000:
            plenty.set()

    bus.on("t", listener)
    accepted = [0] * 16
    stop = threading.Event()

    def publisher(index: int) -> None:
        while not stop.is_set() and accepted[index] < 1000:
            try:
                bus.publish_threadsafe("t", index)
            except EventBusError:
                return
            accepted[index] += 1

    async def main() -> None:
        await bus.publish("t", -1)  # binds the bus to this loop
        heard.clear()
        for index in range(16):
            threads.append(threading.Thread(target=publisher, args=(index,)))
            threads[-1].start()
        async with asyncio.timeout(10):
            await plenty.wait()

    threads: list[threading.Thread] = []
    try:
        asyncio.run(main())  # ends without closing the bus
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert {type(failure.exception) for failure in cancelled} <= {asyncio.CancelledError}
    assert sum(accepted) == len(heard) + len(cancelled)
    assert len(heard) >= 2000


def test_drain_with_a_timeout_raises_when_the_bus_stays_busy() -> None:
    async def scenario() -> float:
        async with EventBus(close_timeout=0.1) as bus:
            bus.on("busy", lambda body: asyncio.sleep(60))
            bus.publish_nowait("busy", 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError, match=r"not quiet within 2\.5 s"):
                await bus.drain(timeout=2.5)
            assert bus.stats().running_handlers == 1  # (what runs goes on)
            return loop.time() - started

    assert run_virtual(scenario()) == 2.5


def test_close_on_a_new_loop_handles_what_the_old_one_left_buffered() -> None:
    """A bus left open with messages buffered when its loop ended, then closed on another
    loop: the buffered messages are handled within the grace period, not dropped at once."""
    bus = EventBus()
    handled: list[int] = []
    cancelled: list[int] = []
    bus.errors.subscribe(lambda failure: cancelled.append(failure.message.body))  # type: ignore[union-attr]
    leave_jobs_running_and_buffered(bus, handled)
    assert cancelled == [1, 2]  # reported as the loop ended; 3 and 4 wait in the buffer
    asyncio.run(bus.close(timeout=1))
    assert handled == [0, 3, 4]
    assert bus.stats().totals.dropped == 0
