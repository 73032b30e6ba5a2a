"""request(): one consumer, its reply, and every way that can fail."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from typing import Any

import pytest

from tests.conftest import Gate, on_uvloop
from tinybus import (
    BusClosedError,
    DeliveryOptions,
    EventBus,
    EventBusError,
    HandlerExecutionError,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Message,
)
from tinybus.testing import FailureLog


async def test_async_consumer_reply_is_returned(bus: EventBus) -> None:
    @bus.consumer("double")
    async def double(message: Message[int]) -> int:
        return message.body * 2

    assert await bus.request("double", 21) == 42


async def test_plain_function_consumer_reply_is_returned(bus: EventBus) -> None:
    bus.consumer("upper", lambda message: message.body.upper())
    assert await bus.request("upper", "abc") == "ABC"


async def test_none_is_a_valid_reply(bus: EventBus) -> None:
    bus.consumer("nothing", lambda message: None)
    assert await bus.request("nothing", 1) is None


async def test_consumer_that_suspends_replies(bus: EventBus) -> None:
    @bus.consumer("slow")
    async def slow(message: Message[str]) -> str:
        await asyncio.sleep(0.01)
        return message.body + "!"

    assert await bus.request("slow", "hi") == "hi!"


async def test_consumer_receives_message_envelope(bus: EventBus) -> None:
    seen: list[Message[Any]] = []

    @bus.consumer("inspect")
    def inspect(message: Message[dict[str, int]]) -> None:
        seen.append(message)

    await bus.request("inspect", {"a": 1}, headers={"trace": "t-1"})
    [message] = seen
    assert message.address == "inspect"
    assert message.body == {"a": 1}
    assert dict(message.headers) == {"trace": "t-1"}
    assert message.reply_address is not None
    assert message.id


async def test_no_consumer_fails_at_once_naming_the_address(bus: EventBus) -> None:
    started = time.monotonic()
    with pytest.raises(HandlerNotFoundError, match=r"'nobody\.home'") as caught:
        await bus.request("nobody.home", 1, timeout=10)
    assert time.monotonic() - started < 1.0
    assert caught.value.address == "nobody.home"
    assert isinstance(caught.value, EventBusError)


@pytest.mark.parametrize("asynchronous", [True, False])
async def test_handler_exception_becomes_handler_execution_error(
    bus: EventBus, asynchronous: bool
) -> None:
    original = KeyError("user 42 missing")

    async def failing_async(message: Message[int]) -> None:
        await asyncio.sleep(0)
        raise original

    def failing_sync(message: Message[int]) -> None:
        raise original

    bus.consumer("users.get", failing_async if asynchronous else failing_sync)
    with pytest.raises(HandlerExecutionError) as caught:
        await bus.request("users.get", 42)
    error = caught.value
    assert error.original_error is original
    assert error.__cause__ is original
    assert error.address == "users.get"
    assert "user 42 missing" in str(error)
    assert "'users.get'" in str(error)
    assert "KeyError" in str(error)


async def test_handler_failure_for_a_requester_is_not_also_reported(
    bus: EventBus, failures: FailureLog
) -> None:
    bus.consumer("boom", lambda message: 1 / 0)
    with pytest.raises(HandlerExecutionError):
        await bus.request("boom", None)
    assert failures == []


async def test_timeout_raises_handler_timeout_error(bus: EventBus) -> None:
    never = asyncio.Event()

    @bus.consumer("hang")
    async def hang(message: Message[None]) -> None:
        await never.wait()

    with pytest.raises(HandlerTimeoutError) as caught:
        await bus.request("hang", None, timeout=0.05)
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert error.address == "hang"
    assert error.timeout == 0.05
    assert str(error) == "the request to 'hang' timed out after 0.05 s without a reply"
    never.set()


async def test_timeout_never_fires_early(bus: EventBus) -> None:
    release = asyncio.Event()

    @bus.consumer("hang")
    async def hang(message: Message[None]) -> None:
        await release.wait()

    # (By the wall clock. Timeouts follow the loop's clock: uvloop's counts milliseconds, read
    # once per loop iteration, so there they may end up to a millisecond early by this one.)
    resolution = 0.001 if on_uvloop() else 0.0
    for timeout in (0.001, 0.01, 0.03):
        started = time.monotonic()
        with pytest.raises(HandlerTimeoutError):
            await bus.request("hang", None, timeout=timeout)
        assert time.monotonic() - started >= timeout - resolution
    release.set()


async def test_default_timeout_comes_from_the_bus() -> None:
    async with EventBus(default_timeout=0.05, close_timeout=0) as bus:
        bus.consumer("hang", lambda message: asyncio.Event().wait())
        with pytest.raises(HandlerTimeoutError) as caught:
            await bus.request("hang", None)
        assert caught.value.timeout == 0.05


async def test_timeout_from_options_and_explicit_keyword_wins(bus: EventBus) -> None:
    bus.consumer("hang", lambda message: asyncio.Event().wait())
    with pytest.raises(HandlerTimeoutError) as from_options:
        await bus.request("hang", None, options=DeliveryOptions(timeout=0.02))
    assert from_options.value.timeout == 0.02
    with pytest.raises(HandlerTimeoutError) as explicit:
        await bus.request("hang", None, timeout=0.03, options=DeliveryOptions(timeout=9))
    assert explicit.value.timeout == 0.03


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "1", None])
def test_invalid_default_timeout_is_refused(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="timeout"):
        EventBus(default_timeout=bad)


@pytest.mark.parametrize("bad", [0, -0.5, "soon", True])
async def test_invalid_request_timeout_is_refused(bus: EventBus, bad: Any) -> None:
    bus.consumer("echo", lambda message: message.body)
    with pytest.raises((TypeError, ValueError), match="timeout"):
        await bus.request("echo", 1, timeout=bad)


async def test_handler_keeps_running_after_timeout_and_late_reply_is_dropped(
    bus: EventBus, failures: FailureLog
) -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

    @bus.consumer("late")
    async def late(message: Message[None]) -> str:
        await release.wait()
        finished.set()
        return "too late"

    with pytest.raises(HandlerTimeoutError):
        await bus.request("late", None, timeout=0.02)
    release.set()
    await asyncio.wait_for(finished.wait(), 5)
    assert "0 pending requests" in repr(bus)
    assert failures == []


async def test_handler_failing_after_its_requester_left_is_reported(
    bus: EventBus, failures: FailureLog
) -> None:
    release = asyncio.Event()

    async def late_failure(message: Message[None]) -> None:
        await release.wait()
        raise RuntimeError("nobody is listening")

    bus.consumer("late", late_failure)
    with pytest.raises(HandlerTimeoutError):
        await bus.request("late", None, timeout=0.02)
    release.set()
    [failure] = await failures.wait(1)
    assert failure.address == "late"
    assert failure.handler is late_failure
    assert isinstance(failure.exception, RuntimeError)


async def test_retry_attempts_resend_after_a_timeout(bus: EventBus) -> None:
    attempts: list[int] = []

    @bus.consumer("flaky")
    async def flaky(message: Message[int]) -> str:
        attempts.append(message.body)
        if len(attempts) < 3:
            await asyncio.Event().wait()
        return "third time lucky"

    options = DeliveryOptions(timeout=0.02, retry_attempts=2)
    assert await bus.request("flaky", 7, options=options) == "third time lucky"
    assert attempts == [7, 7, 7]
    attempts.clear()
    with pytest.raises(HandlerTimeoutError):
        await bus.request("flaky", 8, options=DeliveryOptions(timeout=0.02, retry_attempts=1))
    assert attempts == [8, 8]


async def test_round_robin_over_consumers_is_fair(bus: EventBus) -> None:
    counts: Counter[str] = Counter()
    for name in ("a", "b", "c"):
        bus.consumer("work", lambda message, name=name: counts.update([name]))
    for _ in range(300):
        await bus.request("work", None)
    assert counts == {"a": 100, "b": 100, "c": 100}


async def test_round_robin_skips_an_unregistered_consumer(bus: EventBus) -> None:
    order: list[str] = []
    bus.consumer("work", lambda message: order.append("a"))
    middle = bus.consumer("work", lambda message: order.append("b"))
    bus.consumer("work", lambda message: order.append("c"))
    await bus.request("work", None)
    await bus.request("work", None)
    middle.unregister()
    for _ in range(4):
        await bus.request("work", None)
    assert order == ["a", "b", "c", "a", "c", "a"]


async def test_thousand_concurrent_requests_each_get_their_own_reply(bus: EventBus) -> None:
    @bus.consumer("square")
    async def square(message: Message[int]) -> int:
        await asyncio.sleep(0.001)
        return message.body * message.body

    replies = await asyncio.gather(*(bus.request("square", n) for n in range(1000)))
    assert replies == [n * n for n in range(1000)]
    assert "0 pending requests" in repr(bus)
    assert "0 running handlers" in repr(bus)


async def test_no_pending_entries_leak_after_timeouts_and_cancellations(bus: EventBus) -> None:
    release = asyncio.Event()
    handlers: list[asyncio.Task[Any]] = []
    started = Gate(100)

    @bus.consumer("hang")
    async def hang(message: Message[int]) -> int:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        started.arrive()
        await release.wait()
        return message.body

    timed_out = [bus.request("hang", n, timeout=0.01) for n in range(50)]
    results = await asyncio.gather(*timed_out, return_exceptions=True)
    assert all(isinstance(result, HandlerTimeoutError) for result in results)

    requesters = [asyncio.create_task(bus.request("hang", n)) for n in range(50)]
    await started.wait()
    for requester in requesters:
        requester.cancel()
    cancelled = await asyncio.gather(*requesters, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in cancelled)
    assert "0 pending requests" in repr(bus)

    release.set()
    await asyncio.wait(handlers, timeout=5)
    assert "0 running handlers" in repr(bus)
    assert "0 pending requests" in repr(bus)


async def test_cancelling_the_requester_does_not_cancel_the_handler(bus: EventBus) -> None:
    release = asyncio.Event()
    outcome: list[str] = []
    started, ended = Gate(), Gate()

    @bus.consumer("job")
    async def job(message: Message[None]) -> None:
        started.arrive()
        try:
            await release.wait()
            outcome.append("finished")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        finally:
            ended.arrive()

    requester = asyncio.create_task(bus.request("job", None))
    await started.wait()
    requester.cancel()
    with pytest.raises(asyncio.CancelledError):
        await requester
    release.set()
    await ended.wait()
    assert outcome == ["finished"]


async def test_consumer_may_request_another_address(bus: EventBus) -> None:
    @bus.consumer("users.get")
    async def get_user(message: Message[int]) -> dict[str, Any]:
        profile = await bus.request("profiles.get", message.body)
        return {"id": message.body, "profile": profile}

    @bus.consumer("profiles.get")
    async def get_profile(message: Message[int]) -> str:
        await asyncio.sleep(0)
        return f"profile-{message.body}"

    assert await bus.request("users.get", 3) == {"id": 3, "profile": "profile-3"}


async def test_listener_requesting_back_from_a_publish_does_not_deadlock(bus: EventBus) -> None:
    answers: list[str] = []

    @bus.consumer("orders.create")
    async def create(message: Message[str]) -> str:
        await bus.publish("orders.created", message.body)
        return "created"

    @bus.consumer("orders.audit")
    async def audit(message: Message[str]) -> str:
        return f"audited {message.body}"

    @bus.on("orders.created")
    async def on_created(order: str) -> None:
        answers.append(await bus.request("orders.audit", order))

    assert await asyncio.wait_for(bus.request("orders.create", "o-1"), 5) == "created"
    assert answers == ["audited o-1"]


async def test_deep_chain_of_nested_requests_does_not_exhaust_the_stack(bus: EventBus) -> None:
    @bus.consumer("countdown")
    async def countdown(message: Message[int]) -> int:
        if message.body == 0:
            return 0
        return 1 + await bus.request("countdown", message.body - 1)

    assert await bus.request("countdown", 2000) == 2000


async def test_keyboard_interrupt_in_a_handler_is_not_swallowed(bus: EventBus) -> None:
    def interrupted(message: Message[None]) -> None:
        raise KeyboardInterrupt

    bus.consumer("ctrl-c", interrupted)
    with pytest.raises(KeyboardInterrupt):
        await bus.request("ctrl-c", None)
    assert "0 pending requests" in repr(bus)


async def test_handler_cancelled_from_inside_fails_the_request(bus: EventBus) -> None:
    @bus.consumer("self-cancel")
    async def self_cancel(message: Message[None]) -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError

    with pytest.raises(HandlerExecutionError) as caught:
        await bus.request("self-cancel", None)
    assert isinstance(caught.value.original_error, asyncio.CancelledError)


async def test_request_after_close_raises_bus_closed(bus: EventBus) -> None:
    bus.consumer("echo", lambda message: message.body)
    await bus.close()
    with pytest.raises(BusClosedError):
        await bus.request("echo", 1)


async def test_logging_goes_to_the_tinybus_logger(
    bus: EventBus, caplog: pytest.LogCaptureFixture, failures: FailureLog
) -> None:
    def broken(value: int) -> None:
        raise ValueError("bad value")

    bus.on("evt", broken)
    with caplog.at_level(logging.ERROR, logger="tinybus"):
        await bus.publish("evt", 1)
    [record] = caplog.records
    assert record.name == "tinybus"
    assert "broken" in record.getMessage()
    assert "'evt'" in record.getMessage()
    assert record.exc_info is not None
    failures.expect(ValueError, "bad value")


async def test_depth_limit_holds_under_an_eager_task_factory(bus: EventBus) -> None:
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
    try:

        @bus.consumer("countdown")
        async def countdown(message: Message[int]) -> int:
            if message.body == 0:
                return 0
            return 1 + await bus.request("countdown", message.body - 1)

        assert await bus.request("countdown", 2000, timeout=10) == 2000
    finally:
        asyncio.get_running_loop().set_task_factory(None)


async def test_a_requester_coroutine_closed_midway_leaves_nothing_behind(bus: EventBus) -> None:
    loop = asyncio.get_running_loop()
    problems: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: problems.append(context))
    release = asyncio.Event()

    @bus.consumer("hang")
    async def hang(message: Message[None]) -> None:
        await release.wait()

    request = bus.request("hang", None, timeout=0.01)
    request.send(None)  # runs up to the await on the reply
    request.close()  # e.g. an async generator or coroutine dropped by its owner
    await asyncio.sleep(0.05)  # past the timeout: nothing may fire for the dropped request
    assert "0 pending requests" in repr(bus)
    assert problems == []
    release.set()
    loop.set_exception_handler(None)


async def test_infinite_timeout_waits_for_as_long_as_it_takes(bus: EventBus) -> None:
    @bus.consumer("slow")
    async def slow(message: Message[int]) -> int:
        await asyncio.sleep(0.02)
        return message.body

    assert await bus.request("slow", 1, timeout=math.inf) == 1
    assert await bus.request("slow", 2, options=DeliveryOptions(timeout=math.inf)) == 2
