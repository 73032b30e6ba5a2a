"""Flow control: max_concurrency, the bounded buffer and its overflow policies, pause/resume.

Most tests hold a handler on an ``asyncio.Event`` (``Worker``) so that the buffer fills in a
known order, then release it and check what was handled, dropped or refused. Tests about
time (request timeouts, the close grace period) run on the virtual clock of ``tinybus.testing``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import on_uvloop
from tinybus import (
    BufferFullError,
    BusClosedError,
    EventBus,
    HandlerFailure,
    HandlerTimeoutError,
    Message,
    MessageDroppedError,
    Registration,
)
from tinybus.testing import FailureLog, run_virtual


class Worker:
    """A handler whose every handling waits until the test releases it.

    Records the items that started and finished, in order, and the most handlings that were
    running at the same time. ``listen`` takes bodies (for ``bus.on``); ``consume`` takes
    messages and replies with the body (for ``bus.consumer``).
    """

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.finished: list[Any] = []
        self.running = 0
        self.most_running = 0
        self._gates: dict[Any, asyncio.Event] = {}
        self._all_released = False
        self._progress = asyncio.Event()

    async def listen(self, item: Any) -> None:
        await self._handle(item)

    async def consume(self, message: Message[Any]) -> Any:
        await self._handle(message.body)
        return message.body

    async def _handle(self, item: Any) -> None:
        self.started.append(item)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self._progress.set()
        try:
            await self._gate(item).wait()
        finally:
            self.running -= 1
        self.finished.append(item)
        self._progress.set()

    def _gate(self, item: Any) -> asyncio.Event:
        gate = self._gates.get(item)
        if gate is None:
            gate = self._gates[item] = asyncio.Event()
            if self._all_released:
                gate.set()
        return gate

    def release(self, *items: Any) -> None:
        for item in items:
            self._gate(item).set()

    def release_all(self) -> None:
        self._all_released = True
        for gate in self._gates.values():
            gate.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds, checking it each time a handling starts or ends."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._progress.clear()
                await self._progress.wait()


def start[T](coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``coro`` as a task that has taken its first step (up to its first suspension)
    by the time this returns, so the test knows it is waiting."""
    # loop= is needed: on Python 3.12.1, eager_start without it fails in Task.__init__.
    return asyncio.Task(coro, loop=asyncio.get_running_loop(), eager_start=True)


def dropped_bodies(failures: Sequence[HandlerFailure]) -> list[Any]:
    """The bodies of the messages reported dropped on ``bus.errors``, in report order."""
    bodies: list[Any] = []
    for failure in failures:
        assert isinstance(failure.exception, MessageDroppedError)
        assert failure.message is not None
        bodies.append(failure.message.body)
    return bodies


def reasons(failures: Sequence[HandlerFailure]) -> list[str]:
    """The ``reason`` of each reported exception ("?" for one without)."""
    return [getattr(failure.exception, "reason", "?") for failure in failures]


# -- max_concurrency ---------------------------------------------------------------------------


async def test_max_concurrency_1_handles_one_message_at_a_time_in_order(bus: EventBus) -> None:
    """With max_concurrency=1 a listener that suspends never overlaps with itself, and sees
    messages in publish order; without the limit the same listener does overlap."""
    running = 0
    most_running: dict[str, int] = {"limited": 0, "unlimited": 0}
    seen: dict[str, list[int]] = {"limited": [], "unlimited": []}

    def make(name: str) -> Callable[[int], Coroutine[Any, Any, None]]:
        async def handle(n: int) -> None:
            nonlocal running
            running += 1
            most_running[name] = max(most_running[name], running)
            for _ in range(n % 3 + 1):  # varying lengths, so overlaps would reorder
                await asyncio.sleep(0)
            running -= 1
            seen[name].append(n)

        return handle

    bus.on("limited", make("limited"), max_concurrency=1)
    bus.on("unlimited", make("unlimited"))
    for name in ("limited", "unlimited"):
        for n in range(50):
            bus.publish_nowait(name, n)
        async with asyncio.timeout(5):
            await bus.drain()

    assert seen["limited"] == list(range(50))
    assert most_running["limited"] == 1
    assert sorted(seen["unlimited"]) == list(range(50))
    assert most_running["unlimited"] == 50  # the counter does see overlaps


async def test_max_concurrency_3_runs_exactly_three_at_once(bus: EventBus) -> None:
    """Three handlings start at once, the others wait; each one finishing lets exactly one
    waiting message start, in order."""
    worker = Worker()
    registration = bus.on("jobs", worker.listen, max_concurrency=3)
    for n in range(6):
        bus.publish_nowait("jobs", n)
    assert worker.started == []  # (*_nowait: handlers start at the loop's next turn)
    await worker.until(lambda: len(worker.started) == 3)
    assert worker.started == [0, 1, 2]
    assert worker.running == 3
    assert registration.queued == 3

    worker.release(1)
    await worker.until(lambda: len(worker.started) == 4)
    assert worker.started == [0, 1, 2, 3]
    assert worker.finished == [1]
    assert worker.running == 3
    assert registration.queued == 2

    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert worker.started == [0, 1, 2, 3, 4, 5]
    assert sorted(worker.finished) == [0, 1, 2, 3, 4, 5]
    assert worker.most_running == 3
    assert registration.queued == 0
    assert registration.dropped == 0


# -- overflow policies ---------------------------------------------------------------------------


async def test_drop_newest_keeps_the_first_and_reports_each_dropped_message(
    bus: EventBus, failures: FailureLog
) -> None:
    """A full drop_newest buffer drops the incoming message: reported on bus.errors with
    reason "overflow" and the message attached, counted, and the publisher is not held."""
    worker = Worker()
    registration = bus.on(
        "q", worker.listen, max_concurrency=1, max_buffered=2, overflow="drop_newest"
    )
    bus.publish_nowait("q", 0)  # starts, and holds the only slot
    async with asyncio.timeout(1):
        for n in (1, 2, 3, 4):
            await bus.publish("q", n)  # buffered or dropped: never waits for the handler

    assert registration.queued == 2
    assert registration.dropped == 2
    assert dropped_bodies(failures) == [3, 4]
    assert reasons(failures) == ["overflow", "overflow"]
    assert all(f.address == "q" and f.handler == worker.listen for f in failures)
    assert all(type(f.exception) is MessageDroppedError for f in failures)

    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert worker.finished == [0, 1, 2]
    assert len(failures) == 2


async def test_drop_oldest_keeps_the_newest(bus: EventBus, failures: FailureLog) -> None:
    """A full drop_oldest buffer drops its oldest message to make room for the new one."""
    worker = Worker()
    registration = bus.on(
        "q", worker.listen, max_concurrency=1, max_buffered=2, overflow="drop_oldest"
    )
    bus.publish_nowait("q", 0)
    async with asyncio.timeout(1):
        for n in (1, 2, 3, 4):
            await bus.publish("q", n)

    assert registration.queued == 2
    assert registration.dropped == 2
    assert dropped_bodies(failures) == [1, 2]
    assert reasons(failures) == ["overflow", "overflow"]

    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert worker.finished == [0, 3, 4]


async def test_a_request_dropped_from_the_buffer_fails_at_once(
    bus: EventBus, failures: FailureLog
) -> None:
    """Under drop_oldest, the requester of the request pushed out fails at once with
    MessageDroppedError (not after its timeout), and the drop is not also on bus.errors."""
    worker = Worker()
    registration = bus.consumer(
        "work", worker.consume, max_concurrency=1, max_buffered=1, overflow="drop_oldest"
    )
    first = start(bus.request("work", "first"))
    pushed_out = start(bus.request("work", "pushed out"))
    newest = start(bus.request("work", "newest"))

    with pytest.raises(MessageDroppedError) as caught:
        async with asyncio.timeout(1):  # the request's own timeout is 5 s
            await pushed_out
    assert caught.value.reason == "overflow"
    assert not newest.done()

    worker.release_all()
    async with asyncio.timeout(5):
        assert await first == "first"
        assert await newest == "newest"
    assert worker.started == ["first", "newest"]
    assert registration.dropped == 1
    assert failures == []


async def test_overflow_error_publish_raises_after_delivering_to_the_other_listeners(
    bus: EventBus, failures: FailureLog
) -> None:
    """Under "error", publish raises BufferFullError once the message has reached the other
    listeners of the address (even those registered after the full one)."""
    worker = Worker()
    heard: list[int] = []
    registration = bus.on("q", worker.listen, max_concurrency=1, max_buffered=1, overflow="error")
    bus.on("q", heard.append)
    bus.publish_nowait("q", 0)
    await bus.publish("q", 1)

    with pytest.raises(BufferFullError) as caught:
        await bus.publish("q", 2)
    assert isinstance(caught.value, MessageDroppedError)
    assert caught.value.reason == "overflow"
    assert caught.value.address == "q"
    assert heard == [0, 1, 2]
    with pytest.raises(BufferFullError):  # at the call: the push is synchronous
        bus.publish_nowait("q", 3)
    assert heard == [0, 1, 2]  # the others got it: handled at the loop's next turn
    assert registration.dropped == 2
    assert registration.queued == 1

    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert heard == [0, 1, 2, 3]
    assert worker.finished == [0, 1]
    assert failures == []  # the publisher was told; nothing else to report


async def test_overflow_error_send_raises_and_request_fails_at_once(bus: EventBus) -> None:
    """Under "error", send and send_nowait raise BufferFullError, and a request fails with it
    at once; the consumer never gets the refused messages."""
    worker = Worker()
    registration = bus.consumer(
        "work", worker.consume, max_concurrency=1, max_buffered=1, overflow="error"
    )
    bus.send_nowait("work", "running")
    await bus.send("work", "buffered")

    with pytest.raises(BufferFullError):
        await bus.send("work", "refused send")
    with pytest.raises(BufferFullError):
        bus.send_nowait("work", "refused send_nowait")
    with pytest.raises(BufferFullError):
        async with asyncio.timeout(1):  # the request's own timeout is 5 s
            await bus.request("work", "refused request")
    assert registration.dropped == 3

    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert worker.started == ["running", "buffered"]


async def test_block_holds_an_awaiting_publisher_until_there_is_room(bus: EventBus) -> None:
    """Under "block", a publish whose message finds the buffer full stays pending until that
    message is let into the buffer; one is let in per freed place, in order."""
    worker = Worker()
    registration = bus.on("q", worker.listen, max_concurrency=1, max_buffered=1)
    bus.publish_nowait("q", 0)
    async with asyncio.timeout(1):
        await bus.publish("q", 1)  # buffered: returns without waiting for the handler
    second = start(bus.publish("q", 2))
    third = start(bus.publish("q", 3))
    assert not second.done()
    assert not third.done()
    assert registration.queued == 3
    assert registration.dropped == 0

    worker.release(0)  # 1 starts, 2 takes its place in the buffer
    async with asyncio.timeout(5):
        await second
    assert worker.started == [0, 1]
    assert not third.done()

    worker.release(1)  # 2 starts, 3 takes its place
    async with asyncio.timeout(5):
        await third
    assert worker.started == [0, 1, 2]

    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert worker.finished == [0, 1, 2, 3]


async def test_block_holds_an_awaiting_send(bus: EventBus) -> None:
    """Under "block", send is held like publish until its message is in the buffer."""
    worker = Worker()
    bus.consumer("work", worker.consume, max_concurrency=1, max_buffered=1)
    bus.send_nowait("work", 0)
    await bus.send("work", 1)
    held = start(bus.send("work", 2))
    assert not held.done()

    worker.release(0)
    async with asyncio.timeout(5):
        await held
    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert worker.finished == [0, 1, 2]


async def test_a_cancelled_blocked_publisher_withdraws_its_message(
    bus: EventBus, failures: FailureLog
) -> None:
    """Cancelling a publish held for room takes its message back: it is never handled, and is
    neither dropped nor reported."""
    worker = Worker()
    registration = bus.on("q", worker.listen, max_concurrency=1, max_buffered=1)
    bus.publish_nowait("q", 0)
    await bus.publish("q", 1)
    held = start(bus.publish("q", "withdrawn"))
    assert not held.done()

    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held
    bus.publish_nowait("q", 2)
    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert worker.started == [0, 1, 2]
    assert registration.dropped == 0
    assert failures == []


async def test_a_withdrawn_message_no_longer_counts_as_queued(bus: EventBus) -> None:
    """``queued`` is how many messages wait; a cancelled blocked publisher's message does not."""
    worker = Worker()
    registration = bus.on("q", worker.listen, max_concurrency=1, max_buffered=1)
    bus.publish_nowait("q", 0)
    await bus.publish("q", 1)
    held = start(bus.publish("q", "withdrawn"))
    assert registration.queued == 2

    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held
    try:
        assert registration.queued == 1
    finally:
        worker.release_all()
        async with asyncio.timeout(5):
            await bus.drain()


async def test_a_request_under_block_waits_beyond_the_buffer_and_succeeds(bus: EventBus) -> None:
    """A request that finds a "block" buffer full is never lost nor refused: it waits, and is
    answered in its turn."""
    worker = Worker()
    registration = bus.consumer("work", worker.consume, max_concurrency=1, max_buffered=1)
    requests = [start(bus.request("work", n)) for n in range(4)]
    assert registration.queued == 3
    worker.release_all()
    async with asyncio.timeout(5):
        assert await asyncio.gather(*requests) == [0, 1, 2, 3]
    assert worker.started == [0, 1, 2, 3]


# -- pause and resume ----------------------------------------------------------------------------


async def test_pause_holds_messages_until_resume_handles_them_in_order(bus: EventBus) -> None:
    """While paused nothing is handled and messages queue (drain() does not wait for them);
    resume() handles them in order, within max_concurrency."""
    handled: list[int] = []
    running = 0
    most_running = 0

    async def handle(n: int) -> None:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        await asyncio.sleep(0)
        running -= 1
        handled.append(n)

    registration = bus.on("q", handle, max_concurrency=2)
    registration.pause()
    assert registration.is_paused
    for n in range(5):
        await bus.publish("q", n)
    async with asyncio.timeout(1):
        await bus.drain()  # a paused registration's messages are not waited for
    assert handled == []
    assert registration.queued == 5

    registration.resume()
    assert not registration.is_paused
    async with asyncio.timeout(5):
        await bus.drain()
    assert handled == [0, 1, 2, 3, 4]
    assert most_running == 2
    assert registration.queued == 0
    await bus.publish("q", 5)  # after resume, messages flow as before
    assert handled[-1] == 5


async def test_pause_works_on_a_registration_without_max_concurrency(bus: EventBus) -> None:
    """A listener and a consumer registered without flow control can be paused and resumed;
    a request made while paused is answered after resume()."""
    heard: list[int] = []
    listener = bus.on("evt", heard.append)
    consumer = bus.consumer("echo", lambda message: message.body)
    assert not listener.is_paused
    listener.pause()
    consumer.pause()
    assert listener.is_paused
    assert consumer.is_paused

    for n in range(3):
        await bus.publish("evt", n)
    reply = start(bus.request("echo", "later"))
    assert heard == []
    assert listener.queued == 3
    assert consumer.queued == 1
    assert not reply.done()

    listener.resume()
    consumer.resume()
    assert heard == []  # not inside resume(): at the loop's next turn
    await bus.drain(timeout=5)
    assert heard == [0, 1, 2]
    async with asyncio.timeout(5):
        assert await reply == "later"
    await bus.publish("evt", 3)
    assert heard == [0, 1, 2, 3]


async def test_overflow_policies_apply_while_paused(bus: EventBus, failures: FailureLog) -> None:
    """A paused buffer fills and overflows like a busy one: drop_oldest drops, "error"
    refuses, "block" holds the publisher until resume()."""
    newest: list[int] = []
    strict: list[int] = []
    patient: list[int] = []
    dropping = bus.on("q", newest.append, max_buffered=2, overflow="drop_oldest")
    refusing = bus.on("strict", strict.append, max_buffered=2, overflow="error")
    blocking = bus.on("patient", patient.append, max_buffered=2)
    for registration in (dropping, refusing, blocking):
        registration.pause()

    for n in range(5):
        await bus.publish("q", n)
    await bus.publish("strict", 0)
    await bus.publish("strict", 1)
    with pytest.raises(BufferFullError):
        await bus.publish("strict", 2)
    await bus.publish("patient", 0)
    await bus.publish("patient", 1)
    held = start(bus.publish("patient", 2))
    assert not held.done()
    assert (dropping.queued, refusing.queued, blocking.queued) == (2, 2, 3)
    assert (dropping.dropped, refusing.dropped, blocking.dropped) == (3, 1, 0)
    assert dropped_bodies(failures) == [0, 1, 2]

    for registration in (dropping, refusing, blocking):
        registration.resume()
    async with asyncio.timeout(5):
        await held
    assert newest == [3, 4]
    assert strict == [0, 1]
    assert patient == [0, 1, 2]


# -- unregister ----------------------------------------------------------------------------------


async def test_unregister_drops_queued_messages_and_lets_the_running_one_finish(
    bus: EventBus, failures: FailureLog
) -> None:
    """Queued published messages are reported dropped with reason "unregistered"; the message
    being handled finishes; nothing reaches the handler afterwards."""
    worker = Worker()
    registration = bus.on("q", worker.listen, max_concurrency=1)
    for n in range(4):
        bus.publish_nowait("q", n)
    assert registration.queued == 3

    registration.unregister()
    assert not registration.is_registered
    assert registration.queued == 0
    assert registration.dropped == 3
    assert dropped_bodies(failures) == [1, 2, 3]
    assert reasons(failures) == ["unregistered"] * 3

    await bus.publish("q", 4)
    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert worker.started == [0]
    assert worker.finished == [0]


async def test_unregister_fails_a_queued_request_at_once(
    bus: EventBus, failures: FailureLog
) -> None:
    """A request waiting in the buffer fails at once with MessageDroppedError when its consumer
    is unregistered; the one being handled is still answered."""
    worker = Worker()
    registration = bus.consumer("work", worker.consume, max_concurrency=1)
    running = start(bus.request("work", "running"))
    queued = start(bus.request("work", "queued"))

    registration.unregister()
    with pytest.raises(MessageDroppedError) as caught:
        async with asyncio.timeout(1):  # the request's own timeout is 5 s
            await queued
    assert caught.value.reason == "unregistered"

    worker.release_all()
    async with asyncio.timeout(5):
        assert await running == "running"
    assert worker.started == ["running"]
    assert failures == []


async def test_unregister_releases_blocked_publishers(bus: EventBus, failures: FailureLog) -> None:
    """A publisher held for room returns when the registration ends; its message is reported
    dropped like the buffered ones."""
    worker = Worker()
    registration = bus.on("q", worker.listen, max_concurrency=1, max_buffered=1)
    bus.publish_nowait("q", 0)
    await bus.publish("q", 1)
    held = start(bus.publish("q", 2))
    assert not held.done()

    registration.unregister()
    async with asyncio.timeout(1):
        await held
    assert dropped_bodies(failures) == [1, 2]
    assert reasons(failures) == ["unregistered", "unregistered"]
    worker.release_all()
    async with asyncio.timeout(5):
        await bus.drain()
    assert worker.started == [0]


# -- requests ------------------------------------------------------------------------------------


async def test_requests_queue_at_the_concurrency_limit_and_succeed_in_order(
    bus: EventBus,
) -> None:
    """Requests beyond max_concurrency wait in the buffer, then are answered in order."""
    worker = Worker()
    registration = bus.consumer("work", worker.consume, max_concurrency=2)
    requests = [start(bus.request("work", n)) for n in range(6)]
    assert worker.started == [0, 1]
    assert registration.queued == 4
    assert not any(request.done() for request in requests)

    worker.release_all()
    async with asyncio.timeout(5):
        replies = await asyncio.gather(*requests)
    assert replies == [0, 1, 2, 3, 4, 5]
    assert worker.started == [0, 1, 2, 3, 4, 5]
    assert worker.most_running == 2


def test_a_queued_request_times_out_counted_from_the_call() -> None:
    """The timeout of a request waiting behind a busy handler runs from the request call:
    it fails on time with HandlerTimeoutError, and the handler never gets it afterwards."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with EventBus(default_timeout=5.0, close_timeout=0.1) as bus:
            failures: list[HandlerFailure] = []
            bus.errors.subscribe(failures.append)
            worker = Worker()
            bus.consumer("work", worker.consume, max_concurrency=1)
            busy = start(bus.request("work", "slow"))
            called_at = loop.time()
            with pytest.raises(HandlerTimeoutError) as caught:
                await bus.request("work", "too late", timeout=0.05)
            assert loop.time() - called_at == pytest.approx(0.05, abs=1e-9)
            assert caught.value.timeout == 0.05

            worker.release_all()
            assert await busy == "slow"
            await bus.drain()
            assert worker.started == ["slow"]  # the timed-out request was skipped
            assert failures == []

    run_virtual(scenario())


async def test_a_queued_request_timed_out_in_real_time_is_skipped(bus: EventBus) -> None:
    """The same on the real clock, with a small timeout: the queued request times out while
    the handler is still blocked, and the handler is never called for it."""
    worker = Worker()
    bus.consumer("work", worker.consume, max_concurrency=1)
    busy = start(bus.request("work", "slow"))
    began = time.perf_counter()
    with pytest.raises(HandlerTimeoutError):
        await bus.request("work", "too late", timeout=0.05)
    elapsed = time.perf_counter() - began
    resolution = 0.001 if on_uvloop() else 0.0  # (uvloop's clock counts milliseconds)
    assert 0.05 - resolution <= elapsed < 1.0
    assert worker.started == ["slow"]

    worker.release_all()
    async with asyncio.timeout(5):
        assert await busy == "slow"
        await bus.drain()
    assert worker.started == ["slow"]


async def test_a_queued_request_whose_requester_was_cancelled_is_skipped(bus: EventBus) -> None:
    """A request cancelled while it waits in the buffer is not handled when its turn comes;
    the requests behind it are."""
    worker = Worker()
    bus.consumer("work", worker.consume, max_concurrency=1)
    first = start(bus.request("work", "first"))
    gone = start(bus.request("work", "gone"))
    last = start(bus.request("work", "last"))
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone

    worker.release_all()
    async with asyncio.timeout(5):
        assert await first == "first"
        assert await last == "last"
    assert worker.started == ["first", "last"]


# -- close ---------------------------------------------------------------------------------------


async def test_close_handles_queued_messages_within_the_grace_period() -> None:
    """close() lets buffered published messages be handled (in order) before it returns."""
    handled: list[int] = []
    failures: list[HandlerFailure] = []

    async def handle(n: int) -> None:
        await asyncio.sleep(0)
        handled.append(n)

    bus = EventBus(close_timeout=5.0)
    bus.errors.subscribe(failures.append)
    registration = bus.on("q", handle, max_concurrency=1)
    for n in range(20):
        bus.publish_nowait("q", n)
    assert registration.queued == 19
    async with asyncio.timeout(5):
        await bus.close()
    assert handled == list(range(20))
    assert failures == []


def test_close_fails_queued_requests_at_once_even_within_the_grace_period() -> None:
    """A request queued behind a busy handler fails with BusClosedError as soon as close()
    starts (like every pending request), so the handler never gets it, although the grace
    period lets the running handling finish."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        bus = EventBus(default_timeout=60.0, close_timeout=10.0)
        failures: list[HandlerFailure] = []
        bus.errors.subscribe(failures.append)
        worker = Worker()
        bus.consumer("work", worker.consume, max_concurrency=1)
        running = start(bus.request("work", "running"))
        queued = start(bus.request("work", "queued"))
        closing = start(bus.close())
        with pytest.raises(BusClosedError):
            await queued
        with pytest.raises(BusClosedError):
            await running
        began = loop.time()
        worker.release_all()
        await closing
        assert loop.time() == began  # nothing left to wait for once the handler finished
        assert worker.started == ["running"]
        assert worker.finished == ["running"]
        assert failures == []

    run_virtual(scenario())


def test_close_drops_what_a_paused_registration_holds() -> None:
    """close() does not wait for a paused registration: at once, its queued events are
    reported dropped (reason "closed"), its queued requests fail with BusClosedError, and
    neither handler runs."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        bus = EventBus(default_timeout=60.0, close_timeout=10.0)
        failures: list[HandlerFailure] = []
        bus.errors.subscribe(failures.append)
        heard: list[int] = []
        answered: list[Any] = []
        listener = bus.on("evt", heard.append)
        consumer = bus.consumer("echo", lambda message: answered.append(message.body))
        listener.pause()
        consumer.pause()
        for n in range(3):
            await bus.publish("evt", n)
        request = start(bus.request("echo", "never answered"))

        began = loop.time()
        await bus.close()
        assert loop.time() == began  # the grace period is not spent on paused registrations
        with pytest.raises(BusClosedError):
            await request
        assert heard == []
        assert answered == []
        assert listener.dropped == 3
        assert consumer.dropped == 1

        events = [f for f in failures if f.address == "evt"]
        assert dropped_bodies(events) == [0, 1, 2]
        assert reasons(events) == ["closed"] * 3
        # The dropped request is not reported: its requester has its BusClosedError already.
        assert [f for f in failures if f.address == "echo"] == []

    run_virtual(scenario())


def test_close_drops_queued_events_when_the_grace_period_runs_out() -> None:
    """Messages still buffered behind a handler that outlasts the grace period are reported
    dropped (reason "closed") and the handler is cancelled, exactly at the deadline."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        bus = EventBus(close_timeout=2.0)
        failures: list[HandlerFailure] = []
        bus.errors.subscribe(failures.append)
        worker = Worker()
        registration = bus.on("q", worker.listen, max_concurrency=1)
        for n in range(3):
            bus.publish_nowait("q", n)

        began = loop.time()
        await bus.close()
        assert loop.time() - began == pytest.approx(2.0)
        assert worker.started == [0]
        assert worker.finished == []  # cancelled
        assert registration.dropped == 2
        assert dropped_bodies(failures) == [1, 2]
        assert reasons(failures) == ["closed", "closed"]

    run_virtual(scenario())


# -- soak: a fast publisher and a slow listener ---------------------------------------------------

type Meter = Callable[[], int]
"""Reads how much memory is in use now (or at most so far), relative to when it was made."""


def allocated_blocks() -> Meter:
    """Live allocated blocks: cheap enough to read often on an untraced run."""
    base = sys.getallocatedblocks()
    return lambda: sys.getallocatedblocks() - base


def traced_peak() -> Meter:
    """tracemalloc's peak of traced bytes since now (tracemalloc must be tracing)."""
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    return lambda: tracemalloc.get_traced_memory()[1] - base


@dataclass
class Firehose:
    handled: int = 0
    out_of_order: int = 0
    most_queued: int = 0
    memory_first_tenth: int = 0  # the most memory read during the first tenth of the run
    memory_whole_run: int = 0  # the most memory read during the whole run
    seconds: float = 0.0


async def firehose(count: int, meter: Callable[[], Meter], read_every: int) -> Firehose:
    """Publish ``count`` messages as fast as ``publish`` lets them through to a listener with
    max_concurrency=1, max_buffered=100 and the default "block" policy, which suspends once
    per message. The listener checks the order, samples ``queued`` each time, and reads memory
    every ``read_every`` messages; the bookkeeping is O(1), so that only the bus can grow."""
    run = Firehose()
    async with EventBus(close_timeout=0.1) as bus:
        registration: Registration | None = None

        def read_memory() -> None:
            run.memory_whole_run = max(run.memory_whole_run, memory())

        async def slow(n: int) -> None:
            assert registration is not None
            run.most_queued = max(run.most_queued, registration.queued)
            if n != run.handled:
                run.out_of_order += 1
            run.handled += 1
            if n % read_every == 0:
                read_memory()
            if n == count // 10:
                run.memory_first_tenth = run.memory_whole_run
            await asyncio.sleep(0)

        registration = bus.on("firehose", slow, max_concurrency=1, max_buffered=100)
        memory = meter()
        began = time.perf_counter()
        # The first message is not awaited, so the listener is busy from then on and every
        # later publish meets a running handler: its message is buffered, or held for room.
        bus.publish_nowait("firehose", 0)
        for n in range(1, count):
            await bus.publish("firehose", n)
        async with asyncio.timeout(30):
            await bus.drain()
        run.seconds = time.perf_counter() - began
        read_memory()
        assert registration.dropped == 0
    return run


async def test_soak_100k_messages_fast_publisher_slow_listener() -> None:
    """100,000 messages: each handled exactly once and in order; never more waiting than
    max_buffered plus the one held publisher's message (and the buffer did fill); and live
    memory at the end of the run is no more than in its first tenth (no growth with count)."""
    await firehose(500, allocated_blocks, read_every=100)  # one-time costs (validators...)
    run = await firehose(100_000, allocated_blocks, read_every=100)
    print(
        f"\nsoak 100k: {run.seconds:.2f} s; allocated blocks above baseline: "
        f"first 10k {run.memory_first_tenth}, whole run {run.memory_whole_run}"
    )

    assert run.handled == 100_000
    assert run.out_of_order == 0
    assert 100 <= run.most_queued <= 100 + 1
    assert run.memory_whole_run < 3 * run.memory_first_tenth + 4096


async def test_soak_memory_peak_does_not_grow_with_the_message_count() -> None:
    """With tracemalloc tracing, the peak of traced memory over 10,000 messages stays within a
    small bound of the peak over the first 1,000: the bus keeps nothing per message."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        await firehose(500, traced_peak, read_every=100)  # one-time costs (validators...)
        run = await firehose(10_000, traced_peak, read_every=1_000)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    print(
        f"\nsoak 10k traced: {run.seconds:.2f} s; peak traced KiB: first 1k "
        f"{run.memory_first_tenth / 1024:.1f}, whole run {run.memory_whole_run / 1024:.1f}"
    )

    assert run.handled == 10_000
    assert run.out_of_order == 0
    assert run.memory_whole_run < 3 * run.memory_first_tenth + 256 * 1024


async def test_publish_nowait_under_block_never_loses_messages(bus: EventBus) -> None:
    """publish_nowait is never held: past a full "block" buffer its messages wait anyway, and
    drain() waits until every one of them is handled, in order."""
    handled: list[int] = []

    async def slow(n: int) -> None:
        await asyncio.sleep(0)
        handled.append(n)

    registration = bus.on("q", slow, max_concurrency=1, max_buffered=10)
    for n in range(1000):
        bus.publish_nowait("q", n)
    assert registration.queued == 999  # one running, ten buffered, the rest waiting for room
    assert handled == []

    async with asyncio.timeout(5):
        await bus.drain()
    assert handled == list(range(1000))
    assert registration.queued == 0
    assert registration.dropped == 0


@dataclass
class PausedListener:
    """A listener paused with one message waiting, published by ``publish_while_paused()``."""

    bus: EventBus
    registration: Registration
    handled: list[int]

    async def publish_while_paused(self) -> None:
        self.registration.pause()
        await self.bus.publish("paused", 1)
        assert self.registration.queued == 1

    def assert_handled_once(self) -> None:
        assert self.handled == [1]
        registration = self.registration
        assert (registration.delivered, registration.queued, registration.failed) == (1, 0, 0)


def paused_listener() -> PausedListener:
    bus = EventBus(close_timeout=0.1)
    handled: list[int] = []

    async def handler(body: int) -> None:
        await asyncio.sleep(0)
        handled.append(body)

    return PausedListener(bus, bus.on("paused", handler), handled)


def test_resume_between_runs_of_the_loop_starts_what_waits_on_the_bus_loop() -> None:
    """``resume()`` called by synchronous code while the bus's loop is open but not running
    (between ``run_until_complete`` calls): the buffered message is started on the bus's loop
    and handled when it runs again; nothing is lost and nothing raises."""
    loop = asyncio.new_event_loop()
    try:
        paused = paused_listener()
        loop.run_until_complete(paused.publish_while_paused())
        paused.registration.resume()  # no loop running here
        loop.run_until_complete(asyncio.wait_for(paused.bus.drain(), 5))
        paused.assert_handled_once()
        loop.run_until_complete(paused.bus.close())
    finally:
        loop.close()


def test_resume_on_a_new_loop_after_the_old_one_closed_starts_what_waits_there() -> None:
    """A message buffered while paused on one ``asyncio.run``; ``resume()`` called in a later
    ``asyncio.run``, before any other call to the bus: the bus moves to the new loop and the
    message is handled there."""
    paused = paused_listener()

    async def resume_later() -> None:
        paused.registration.resume()
        await asyncio.wait_for(paused.bus.drain(), 5)
        await paused.bus.close()

    asyncio.run(paused.publish_while_paused())
    asyncio.run(resume_later())
    paused.assert_handled_once()
