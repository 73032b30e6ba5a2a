"""Vert.x event-bus parity: the behaviours of Vert.x's ``EventBus``, walked through one by one.

Each test is named after the behaviour it shows, in the order of the README's table of Vert.x
names: round-robin, registrations, address isolation, publish, failures and their kinds,
timeouts and late replies, explicit replies, conversations, headers, flow control, producers
and being told a registration ended. Nothing here sleeps to synchronise: tests wait on a
``Gate``, an ``asyncio.Event``, a task or ``bus.drain()``, always bounded by a timeout. A
request that must fail "at once" is made with ``timeout=math.inf``, so that nothing but the
behaviour under test can end it, and awaited with a short bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest

from tests.conftest import Gate
from tinybus import (
    BufferFullError,
    DeliveryOptions,
    Envelope,
    EventBus,
    EventBusError,
    FailureKind,
    HandlerAlreadyRegisteredError,
    HandlerExecutionError,
    HandlerFailure,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Headers,
    Message,
    MessageCodec,
    MessageDroppedError,
    Registration,
    ReplyFailedError,
)
from tinybus.testing import FailureLog, run_virtual

# How long a test waits for something that should happen at once (never reached when it does).
PROMPTLY = 1.0


def tagged(name: str, into: list[str]) -> Callable[[Message[Any]], str]:
    """A consumer that records ``name`` for every message it gets and replies with it; a new
    function each time, so several can share an address."""

    def handle(message: Message[Any]) -> str:
        into.append(name)
        return name

    handle.__qualname__ = f"consumer_{name}"
    return handle


def start_eagerly[T](coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """``coro`` as a task whose first step has run already: done on return if and only if it
    finished without ever suspending, i.e. at once."""
    return asyncio.Task(coro, loop=asyncio.get_running_loop(), eager_start=True)


async def suspend() -> None:
    """Give the loop one turn, as an async handler that awaits something would."""
    loop = asyncio.get_running_loop()
    turned = loop.create_future()
    loop.call_soon(turned.set_result, None)
    await turned


async def failure_of(task: asyncio.Task[Any]) -> BaseException:
    """The exception ``task`` ends with, waited for no longer than ``PROMPTLY``."""
    done, _ = await asyncio.wait([task], timeout=PROMPTLY)
    assert done, "still waiting: the failure did not come at once"
    error = task.exception()
    assert error is not None, f"succeeded with {task.result()!r}"
    return error


# -- round-robin ----------------------------------------------------------------------------


async def test_round_robin_over_10_consumers_and_100_sends_gives_exactly_10_each(
    bus: EventBus, failures: FailureLog
) -> None:
    order: list[str] = []
    for index in range(10):
        bus.consumer("work", tagged(f"c{index}", order))
    for n in range(100):
        await bus.send("work", n)
    assert Counter(order) == {f"c{index}": 10 for index in range(10)}
    assert order == [f"c{n % 10}" for n in range(100)]  # strictly in turn, not merely fair
    address = bus.stats().addresses["work"]
    assert address.sent == 100
    assert [handler.delivered for handler in address.handlers] == [10] * 10
    assert failures == []


async def test_round_robin_over_10_consumers_and_100_requests_gives_exactly_10_each(
    bus: EventBus, failures: FailureLog
) -> None:
    """All 100 are in flight at once (every handler waits), and each reply says who made it."""
    release = asyncio.Event()
    arrived = Gate(100)

    def worker(index: int) -> Callable[[Message[int]], Coroutine[Any, Any, tuple[int, int]]]:
        async def handle(message: Message[int]) -> tuple[int, int]:
            arrived.arrive()
            await release.wait()
            return index, message.body

        handle.__qualname__ = f"worker_{index}"
        return handle

    for index in range(10):
        bus.consumer("work", worker(index))
    requests = [asyncio.create_task(bus.request("work", n)) for n in range(100)]
    await arrived.wait()
    assert bus.stats().pending_requests == 100
    release.set()
    replies = await asyncio.gather(*requests)
    assert replies == [(n % 10, n) for n in range(100)]
    assert Counter(index for index, _ in replies) == dict.fromkeys(range(10), 10)
    stats = bus.stats()
    assert stats.pending_requests == 0
    assert stats.addresses["work"].requested == 100
    assert [handler.replied for handler in stats.addresses["work"].handlers] == [10] * 10
    assert failures == []


async def test_sends_and_requests_share_one_turn_and_publish_takes_none(bus: EventBus) -> None:
    order: list[str] = []
    for name in ("a", "b", "c"):
        bus.consumer("work", tagged(name, order))
    await bus.send("work", 0)  # a
    assert await bus.request("work", 1) == "b"
    await bus.publish("work", 2)  # every consumer, and nobody's turn: a, b, c
    assert await bus.request("work", 3) == "c"
    await bus.send("work", 4)  # a
    assert order == ["a", "b", "a", "b", "c", "c", "a"]


# -- registrations ----------------------------------------------------------------------------


async def test_an_unregistered_consumer_is_skipped_by_round_robin(bus: EventBus) -> None:
    order: list[str] = []
    registrations = [bus.consumer("work", tagged(f"c{index}", order)) for index in range(5)]
    for n in range(2):
        await bus.request("work", n)  # c0, c1: c2 is next
    registrations[2].unregister()  # the one whose turn it is
    registrations[0].unregister()  # one already served
    for n in range(6):
        await bus.request("work", n)
    assert order == ["c0", "c1", "c3", "c4", "c1", "c3", "c4", "c1"]
    for registration in registrations:
        registration.unregister()
    with pytest.raises(HandlerNotFoundError):
        await bus.request("work", None)


async def test_unregister_is_idempotent(bus: EventBus) -> None:
    order: list[str] = []
    ended: list[Registration] = []
    a = bus.consumer("work", tagged("a", order))
    b = bus.consumer("work", tagged("b", order))
    bus.consumer("work", tagged("c", order))
    b.on_unregistered(ended.append)
    assert await bus.request("work", 0) == "a"
    b.unregister()
    b.unregister()  # nothing more: not another consumer removed, not the turn moved again
    b.unregister()
    assert ended == [b]
    for n in range(4):
        await bus.request("work", n)
    assert order == ["a", "c", "a", "c", "a"]
    assert bus.stats().addresses["work"].consumers == 2
    assert a.is_registered


async def test_is_registered_is_true_until_unregistered_or_the_bus_closes() -> None:
    bus = EventBus(close_timeout=0.1)
    consumer = bus.consumer("work", lambda message: None)
    listener = bus.on("news", lambda body: None)
    assert consumer.is_registered
    assert listener.is_registered
    assert consumer.address == "work"
    assert listener.address == "news"
    consumer.unregister()
    assert not consumer.is_registered
    assert listener.is_registered
    await bus.close()
    assert not listener.is_registered
    consumer.unregister()  # still harmless after close
    listener.unregister()


# -- addresses and publish --------------------------------------------------------------------


async def test_addresses_are_isolated_a_message_to_a_never_reaches_a_b_or_ab(
    bus: EventBus, failures: FailureLog
) -> None:
    seen: list[tuple[str, str, object]] = []

    def consumer_at(address: str) -> Callable[[Message[str]], str]:
        def consume(message: Message[str]) -> str:
            seen.append(("consumer", address, message.body))
            return address

        return consume

    def listener_at(address: str) -> Callable[[str], None]:
        def listen(body: str) -> None:
            seen.append(("listener", address, body))

        return listen

    for address in ("a", "a.b", "ab", "A", "b.a"):
        bus.consumer(address, consumer_at(address))
        bus.on(address, listener_at(address))

    assert await bus.request("a", "request") == "a"
    await bus.send("a", "send")
    await bus.publish("a", "publish")
    assert seen == [
        ("consumer", "a", "request"),
        ("consumer", "a", "send"),
        ("consumer", "a", "publish"),
        ("listener", "a", "publish"),
    ]
    for address in ("a.b", "ab", "A", "b.a"):
        assert bus.stats().addresses[address].handlers[0].delivered == 0
    with pytest.raises(HandlerNotFoundError):
        await bus.request("a.", "no such address")  # nor does a near miss reach "a"
    assert failures == []


async def test_publish_reaches_every_consumer_and_listener_of_its_address_once(
    bus: EventBus, failures: FailureLog
) -> None:
    got: list[tuple[str, object, str | None]] = []

    def consumer(name: str) -> Callable[[Message[int]], str]:
        def consume(message: Message[int]) -> str:
            got.append((name, message.body, message.reply_address))
            return "a reply nobody awaits"

        return consume

    def listener(name: str) -> Callable[[int], None]:
        def listen(body: int) -> None:
            got.append((name, body, None))

        return listen

    for index in range(3):
        bus.consumer("news", consumer(f"consumer{index}"))
        bus.on("news", listener(f"listener{index}"))

    async def async_listener(body: int) -> None:
        await suspend()
        got.append(("async listener", body, None))

    bus.on("news", async_listener)
    await bus.publish("news", 7)  # returns once every handler has finished with it
    assert sorted(got, key=lambda entry: entry[0]) == [
        ("async listener", 7, None),
        ("consumer0", 7, None),  # a published message has no reply address
        ("consumer1", 7, None),
        ("consumer2", 7, None),
        ("listener0", 7, None),
        ("listener1", 7, None),
        ("listener2", 7, None),
    ]
    stats = bus.stats()
    assert stats.totals.delivered == 7
    assert stats.totals.replied == 0  # consumers' return values were discarded
    assert failures == []


async def test_a_request_or_send_never_reaches_a_listener(bus: EventBus) -> None:
    heard: list[object] = []
    bus.on("svc", heard.append)
    bus.consumer("svc", lambda message: "consumer")
    assert await bus.request("svc", 1) == "consumer"
    await bus.send("svc", 2)
    assert heard == []


# -- failures ---------------------------------------------------------------------------------


async def test_request_with_no_consumer_fails_at_once_with_handler_not_found_error(
    bus: EventBus, failures: FailureLog
) -> None:
    bus.on("listeners.only", lambda body: None)  # a listener is no consumer
    for address in ("nowhere", "listeners.only"):
        request = start_eagerly(bus.request(address, 1, timeout=math.inf))
        assert request.done(), "the request suspended instead of failing at once"
        error = request.exception()
        assert isinstance(error, HandlerNotFoundError)
        assert (error.kind, error.code, error.address) == (FailureKind.NO_HANDLERS, -1, address)
        assert isinstance(error, EventBusError)
        assert repr(address) in str(error)
    with pytest.raises(HandlerNotFoundError):  # retries are for lost replies, not this
        await bus.request("nowhere", 1, options=DeliveryOptions(timeout=5, retry_attempts=3))
    stats = bus.stats()
    assert stats.pending_requests == 0
    assert stats.totals.requested == 0
    assert failures == []


async def test_send_with_no_consumer_fails_at_once_with_handler_not_found_error(
    bus: EventBus, failures: FailureLog
) -> None:
    bus.on("listeners.only", lambda body: None)
    for address in ("nowhere", "listeners.only"):
        send = start_eagerly(bus.send(address, 1))
        assert send.done(), "the send suspended instead of failing at once"
        error = send.exception()
        assert isinstance(error, HandlerNotFoundError)
        assert (error.kind, error.code, error.address) == (FailureKind.NO_HANDLERS, -1, address)
        with pytest.raises(HandlerNotFoundError):
            bus.send_nowait(address, 1)
    await bus.publish("nowhere", 1)  # publishing to nobody is no error, as in Vert.x
    assert bus.stats().totals.sent == 0
    assert failures == []


@pytest.mark.parametrize("suspends", [False, True], ids=["plain", "after-suspending"])
async def test_recipient_failure_carries_kind_recipient_failure(
    bus: EventBus, failures: FailureLog, suspends: bool
) -> None:
    boom = KeyError("no user 42")

    async def get_user(message: Message[int]) -> str:
        if suspends:
            await suspend()
        raise boom

    bus.consumer("users.get", get_user)
    with pytest.raises(HandlerExecutionError) as caught:
        await bus.request("users.get", 42)
    error = caught.value
    assert (error.kind, error.code, error.address) == (
        FailureKind.RECIPIENT_FAILURE,
        -1,
        "users.get",
    )
    assert error.original_error is boom
    assert error.__cause__ is boom
    assert failures == []  # the requester has it: not reported twice
    assert bus.stats().totals.failed == 1


@pytest.mark.parametrize("code", [404, 0, -7])
async def test_message_fail_gives_reply_failed_error_with_that_code_and_text(
    bus: EventBus, failures: FailureLog, code: int
) -> None:
    async def get_user(message: Message[str]) -> None:
        await suspend()
        message.fail(code, f"no user {message.body}")

    bus.consumer("users.get", get_user)
    with pytest.raises(ReplyFailedError) as caught:
        await bus.request("users.get", "ada")
    error = caught.value
    assert (error.kind, error.code, error.text, error.address) == (
        FailureKind.RECIPIENT_FAILURE,
        code,
        "no user ada",
        "users.get",
    )
    assert failures == []
    assert bus.stats().pending_requests == 0


# -- timeouts ---------------------------------------------------------------------------------


async def test_a_late_reply_after_the_requesters_timeout_is_ignored(
    bus: EventBus, failures: FailureLog
) -> None:
    """No error anywhere, nothing pending, nothing counted; the handler ran to its end."""
    release = asyncio.Event()
    finished = Gate()

    async def slow(message: Message[str]) -> str:
        await release.wait()
        message.reply(f"explicit {message.body}", headers={"late": "yes"})
        finished.arrive()
        return f"returned {message.body}"

    bus.consumer("slow", slow)
    with pytest.raises(HandlerTimeoutError) as caught:
        await bus.request("slow", "ping", timeout=0.02)
    error = caught.value
    assert (error.kind, error.code, error.address, error.timeout) == (
        FailureKind.TIMEOUT,
        -1,
        "slow",
        0.02,
    )
    assert isinstance(error, TimeoutError)
    assert bus.stats().pending_requests == 0
    release.set()
    await finished.wait()
    await bus.drain()
    assert failures == []
    stats = bus.stats()
    assert (stats.pending_requests, stats.running_handlers) == (0, 0)
    assert (stats.totals.replied, stats.totals.failed) == (0, 0)
    [handler] = stats.addresses["slow"].handlers
    assert (handler.delivered, handler.replied, handler.failed) == (1, 0, 0)
    assert await bus.request("slow", "again") == "explicit again"  # and the bus goes on


async def test_a_request_that_timed_out_while_queued_never_reaches_its_consumer(
    bus: EventBus, failures: FailureLog
) -> None:
    release = asyncio.Event()
    handled: list[str] = []
    started = Gate()

    async def actor(message: Message[str]) -> str:
        handled.append(message.body)
        started.arrive()
        await release.wait()
        return message.body

    bus.consumer("actor", actor, max_concurrency=1)
    first = asyncio.create_task(bus.request("actor", "first"))
    await started.wait()  # "first" is being handled: the next request queues behind it
    with pytest.raises(HandlerTimeoutError):
        await bus.request("actor", "queued", timeout=0.02)
    release.set()
    assert await first == "first"
    await bus.drain()
    assert handled == ["first"]
    assert bus.stats().pending_requests == 0
    assert failures == []


def test_a_reply_arriving_as_the_timeout_fires_yields_exactly_one_outcome() -> None:
    """On a virtual clock, so the tie is exact: every handler answers by a timer set for the
    very instant its request's timeout fires. Odd requests are replied to, even ones failed.
    Each requester gets exactly one outcome, and a reply at the deadline is late: the timeout
    wins, the late reply is dropped quietly, a late failure is reported once on ``bus.errors``;
    nothing is left pending and no late reply is counted."""
    count, timeout = 400, 1.0

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with EventBus(default_timeout=5.0, close_timeout=0.1) as bus:
            failures: list[HandlerFailure] = []
            bus.errors.subscribe(failures.append)

            async def on_the_deadline(message: Message[int]) -> None:
                answered = loop.create_future()

                def answer() -> None:
                    if message.body % 2:
                        message.reply(message.body)
                    else:
                        message.fail(message.body, "failed on the deadline")
                    answered.set_result(None)

                loop.call_at(loop.time() + timeout, answer)
                await answered

            bus.consumer("race", on_the_deadline)
            started = loop.time()
            outcomes = await asyncio.gather(
                *(bus.request("race", n, timeout=timeout) for n in range(count)),
                return_exceptions=True,
            )
            assert loop.time() - started == timeout  # everything happened at the one instant
            await bus.drain()

            replied = failed = timed_out = 0
            late_failures: set[int] = set()
            for n, outcome in enumerate(outcomes):
                if isinstance(outcome, HandlerTimeoutError):
                    timed_out += 1
                    if n % 2 == 0:
                        late_failures.add(n)
                elif n % 2:
                    assert outcome == n, f"request {n} got {outcome!r}"
                    replied += 1
                else:
                    assert isinstance(outcome, ReplyFailedError), f"request {n}: {outcome!r}"
                    assert outcome.code == n
                    failed += 1
            assert replied + failed + timed_out == count
            # A reply at the deadline is late, whatever order the loop runs them in: the timeout
            # wins every tie, and the late answers are dropped (failures reported) below.
            assert timed_out == count
            assert replied + failed == 0
            assert all(isinstance(failure.exception, ReplyFailedError) for failure in failures)
            late_codes = [cast(ReplyFailedError, failure.exception).code for failure in failures]
            assert sorted(late_codes) == sorted(late_failures)  # each one once, none of the others
            stats = bus.stats()
            assert (stats.pending_requests, stats.running_handlers) == (0, 0)
            assert stats.totals.replied == replied
            assert stats.totals.failed == failed + len(late_failures)

    run_virtual(scenario())


async def test_replies_racing_their_timeouts_on_the_real_clock_each_give_one_outcome(
    bus: EventBus, failures: FailureLog
) -> None:
    """Handlers reply by timers spread from just before to just after the requests' timeout:
    whichever way each race goes, every requester gets its own reply or a timeout, once."""
    count, timeout = 200, 0.02
    loop = asyncio.get_running_loop()
    finished = Gate(count)

    async def around_the_deadline(message: Message[int]) -> None:
        answered = loop.create_future()

        def answer() -> None:
            message.reply(message.body)
            answered.set_result(None)
            finished.arrive()

        jitter = (message.body % 21 - 10) * 0.0001  # -1 ms .. +1 ms
        loop.call_at(loop.time() + timeout + jitter, answer)
        await answered

    bus.consumer("race", around_the_deadline)
    outcomes = await asyncio.gather(
        *(bus.request("race", n, timeout=timeout) for n in range(count)), return_exceptions=True
    )
    await finished.wait()
    await bus.drain()
    replies = [n for n, outcome in enumerate(outcomes) if outcome == n]
    timeouts = [outcome for outcome in outcomes if isinstance(outcome, HandlerTimeoutError)]
    assert len(replies) + len(timeouts) == count
    stats = bus.stats()
    assert (stats.pending_requests, stats.running_handlers) == (0, 0)
    assert stats.totals.replied == len(replies)
    assert failures == []


# -- explicit replies -------------------------------------------------------------------------


async def test_first_outcome_wins_reply_then_fail_then_return_value(
    bus: EventBus, failures: FailureLog
) -> None:
    async def answer(message: Message[str]) -> str:
        message.reply("first", headers={"which": "reply"})
        await suspend()
        message.fail(500, "second")
        message.reply("third")
        return "returned"

    bus.consumer("answer", answer)
    reply = await bus.request("answer", "?", full=True)
    assert (reply.body, dict(reply.headers)) == ("first", {"which": "reply"})
    await bus.drain()
    assert failures == []
    totals = bus.stats().totals
    assert (totals.replied, totals.failed) == (1, 0)


async def test_first_outcome_wins_fail_then_reply_then_return_value(
    bus: EventBus, failures: FailureLog
) -> None:
    def answer(message: Message[str]) -> str:
        message.fail(409, "first")
        message.reply("second")
        return "returned"

    bus.consumer("answer", answer)
    with pytest.raises(ReplyFailedError) as caught:
        await bus.request("answer", "?")
    assert (caught.value.code, caught.value.text) == (409, "first")
    assert failures == []


async def test_first_outcome_wins_and_a_raise_after_the_reply_is_reported_not_returned(
    bus: EventBus, failures: FailureLog
) -> None:
    async def answer(message: Message[str]) -> str:
        message.reply("first")
        await suspend()
        raise RuntimeError("cleanup failed")

    bus.consumer("answer", answer)
    assert await bus.request("answer", "?") == "first"
    await bus.drain()
    assert [(f.address, type(f.exception), str(f.exception)) for f in failures] == [
        ("answer", RuntimeError, "cleanup failed")
    ]


async def test_reply_or_fail_on_a_published_or_sent_message_does_nothing(
    bus: EventBus, failures: FailureLog
) -> None:
    seen: list[tuple[object, str | None, str]] = []

    async def consumer(message: Message[int]) -> str:
        message.reply("nobody asked")
        message.fail(1, "nobody asked either")
        try:
            await message.reply_and_request("nobody will answer")
        except EventBusError as error:
            seen.append((message.body, message.reply_address, type(error).__name__))
        return "discarded"

    def listener(message: Message[int]) -> None:
        message.reply("nobody asked")
        message.fail(2, "nobody asked either")
        seen.append((message.body, message.reply_address, "listener"))

    bus.consumer("svc", consumer)
    bus.on("svc", listener)
    await bus.publish("svc", 1)
    await bus.send("svc", 2)
    assert seen == [
        (1, None, "EventBusError"),
        (1, None, "listener"),
        (2, None, "EventBusError"),
    ]
    totals = bus.stats().totals
    assert (totals.replied, totals.failed) == (0, 0)
    assert failures == []


# -- conversations ----------------------------------------------------------------------------


async def test_reply_to_reply_a_conversation_goes_back_and_forth_with_headers(
    bus: EventBus, failures: FailureLog
) -> None:
    transcript: list[tuple[str, object, str | None]] = []

    async def login(message: Message[str]) -> None:
        transcript.append(("server got", message.body, message.headers.get("step")))
        password = await message.reply_and_request(
            f"password for {message.body}?", headers={"Step": "challenge"}, timeout=5
        )
        transcript.append(("server got", password.body, password.headers.get("step")))
        otp = await password.reply_and_request("one-time code?")
        transcript.append(("server got", otp.body, otp.headers.get("step")))
        otp.reply("welcome", headers={"step": "done"})

    bus.consumer("auth.login", login)
    question = await bus.request("auth.login", "ada", headers={"step": "hello"}, full=True)
    assert question.body == "password for ada?"
    assert question.headers["STEP"] == "challenge"
    assert question.reply_address is not None  # it awaits an answer
    code_question = await question.reply_and_request("s3cret", headers={"step": "password"})
    assert code_question.body == "one-time code?"
    welcome = await code_question.reply_and_request("123456", headers={"step": "otp"})
    assert (welcome.body, dict(welcome.headers)) == ("welcome", {"step": "done"})
    assert welcome.reply_address is None  # a plain reply: the conversation is over
    welcome.reply("nobody waits for this")  # does nothing
    await bus.drain()
    assert transcript == [
        ("server got", "ada", "hello"),
        ("server got", "s3cret", "password"),
        ("server got", "123456", "otp"),
    ]
    assert bus.stats().pending_requests == 0
    assert failures == []


async def test_a_conversation_leg_can_be_failed_by_either_side(
    bus: EventBus, failures: FailureLog
) -> None:
    server_saw: list[tuple[FailureKind, int, str]] = []

    async def login(message: Message[str]) -> None:
        if message.body == "mallory":
            try:
                await message.reply_and_request("password?")
            except ReplyFailedError as error:  # the requester failed our reply
                server_saw.append((error.kind, error.code, error.text))
            return
        password = await message.reply_and_request("password?")
        password.fail(401, "wrong password")

    bus.consumer("auth.login", login)

    question = await bus.request("auth.login", "ada", full=True)
    with pytest.raises(ReplyFailedError) as caught:
        await question.reply_and_request("guess")
    assert (caught.value.kind, caught.value.code, caught.value.text) == (
        FailureKind.RECIPIENT_FAILURE,
        401,
        "wrong password",
    )

    question = await bus.request("auth.login", "mallory", full=True)
    question.fail(403, "not telling")
    question.reply("second answer: ignored")
    await bus.drain()
    assert server_saw == [(FailureKind.RECIPIENT_FAILURE, 403, "not telling")]
    assert bus.stats().pending_requests == 0
    assert failures == []


async def test_a_conversation_leg_times_out_on_its_own_and_a_late_answer_is_ignored(
    bus: EventBus, failures: FailureLog
) -> None:
    outcome: list[HandlerTimeoutError] = []
    done = Gate()

    async def ask(message: Message[str]) -> None:
        try:
            await message.reply_and_request("are you there?", timeout=0.02)
        except HandlerTimeoutError as error:
            outcome.append(error)
        done.arrive()

    bus.consumer("ask", ask)
    question = await bus.request("ask", "hi", full=True)  # this leg was answered in time
    await done.wait()
    [error] = outcome
    assert (error.kind, error.timeout) == (FailureKind.TIMEOUT, 0.02)
    question.reply("too late")
    await bus.drain()
    assert failures == []
    assert bus.stats().pending_requests == 0


async def test_reply_and_request_to_a_requester_that_stopped_waiting_fails_at_once(
    bus: EventBus, failures: FailureLog
) -> None:
    """As in Vert.x, where the requester's reply handler is unregistered when it times out, a
    ``reply_and_request`` to it finds nobody and fails with ``NO_HANDLERS`` at once, not after
    the leg's timeout (an hour here)."""
    release = asyncio.Event()
    outcome: list[EventBusError] = []
    done = Gate()

    async def answer_late(message: Message[str]) -> None:
        await release.wait()
        try:
            await message.reply_and_request("still there?", timeout=3600)
        except EventBusError as error:
            outcome.append(error)
        done.arrive()

    bus.consumer("svc", answer_late)
    with pytest.raises(HandlerTimeoutError):
        await bus.request("svc", "hi", timeout=0.01, full=True)
    release.set()
    await done.wait()
    [error] = outcome
    assert error.kind is FailureKind.NO_HANDLERS, f"got {error!r}"
    assert failures == []


# -- headers ----------------------------------------------------------------------------------


async def test_headers_arrive_case_insensitive_multi_valued_and_as_copies(
    bus: EventBus, failures: FailureLog
) -> None:
    got: list[Headers] = []

    def consumer(message: Message[int]) -> None:
        got.append(message.headers)
        reply_headers = {"Reply-Tag": ["r1", "r2"]}
        message.reply(message.body, headers=reply_headers)
        reply_headers["Reply-Tag"].append("added after the reply")

    def listener(message: Message[int]) -> None:
        got.append(message.headers)

    bus.consumer("svc", consumer)
    bus.on("svc", listener)

    tags = ["a", "b"]
    sent: dict[str, str | list[str]] = {"Trace-Id": "t1", "tag": tags}
    reply = await bus.request("svc", 1, headers=sent, full=True)
    await bus.send("svc", 2, headers=[("X-Pair", "1"), ("x-pair", "2")])
    await bus.publish("svc", 3, headers={"TRACE-ID": "t3"})
    sent["Trace-Id"] = "changed"
    tags.append("changed")

    request_headers, send_headers, *published = got
    assert request_headers["trace-id"] == request_headers["TRACE-ID"] == "t1"
    assert list(request_headers) == ["Trace-Id", "tag"]  # names keep their first spelling
    assert request_headers.getall("TAG") == ["a", "b"]
    assert request_headers.getall("missing") == []
    assert send_headers.getall("X-PAIR") == ["1", "2"]
    assert send_headers["x-pair"] == "1"
    assert [dict(headers) for headers in published] == [{"TRACE-ID": "t3"}] * 2
    assert reply.headers.getall("reply-tag") == ["r1", "r2"]
    with pytest.raises(TypeError):
        cast(Any, request_headers)["trace-id"] = "a receiver cannot change them"
    assert failures == []


async def test_headers_given_as_options_are_copies_and_the_call_wins(bus: EventBus) -> None:
    got: list[Headers] = []
    bus.consumer("svc", lambda message: got.append(message.headers))
    defaults = {"tenant": "acme", "trace": "0"}
    options = DeliveryOptions(headers=defaults)
    defaults["tenant"] = "changed"
    await bus.request("svc", 1, options=options, headers={"TRACE": "1"})
    assert got[0].pairs() == [("tenant", "acme"), ("TRACE", "1")]  # one trace, the call's


# -- flow control -----------------------------------------------------------------------------


async def test_pause_with_a_full_buffer_drop_newest_reports_message_dropped_error(
    bus: EventBus, failures: FailureLog
) -> None:
    handled: list[int] = []
    ticks = bus.on("ticks", handled.append, max_buffered=2, overflow="drop_newest")
    ticks.pause()
    for tick in range(5):
        await bus.publish("ticks", tick)  # never held: the newest goes
    assert (ticks.queued, ticks.dropped) == (2, 3)
    assert [failure.message.body for failure in failures if failure.message] == [2, 3, 4]
    for failure in failures:
        assert isinstance(failure.exception, MessageDroppedError)
        assert failure.exception.reason == "overflow"
        assert failure.exception.address == "ticks"
        assert failure.handler == handled.append  # (a new bound method at each access)
    ticks.resume()
    await bus.drain()
    assert handled == [0, 1]
    totals = bus.stats().totals
    assert (totals.dropped, totals.failed) == (3, 0)


async def test_pause_with_a_full_buffer_drop_oldest_drops_the_oldest(
    bus: EventBus, failures: FailureLog
) -> None:
    handled: list[int] = []
    ticks = bus.on("ticks", handled.append, max_buffered=2, overflow="drop_oldest")
    ticks.pause()
    for tick in range(5):
        await bus.publish("ticks", tick)
    assert [failure.message.body for failure in failures if failure.message] == [0, 1, 2]
    ticks.resume()
    await bus.drain()
    assert handled == [3, 4]


async def test_pause_with_a_full_buffer_error_policy_raises_buffer_full_error(
    bus: EventBus, failures: FailureLog
) -> None:
    strict: list[int] = []
    relaxed: list[int] = []
    registration = bus.on("rows", strict.append, max_buffered=1, overflow="error")
    bus.on("rows", relaxed.append)
    registration.pause()
    await bus.publish("rows", 0)
    with pytest.raises(BufferFullError) as caught:
        await bus.publish("rows", 1)
    error = caught.value
    assert isinstance(error, MessageDroppedError)
    assert (error.address, error.reason, error.kind) == ("rows", "overflow", FailureKind.ERROR)
    with pytest.raises(BufferFullError):  # at the call: the push is synchronous
        bus.publish_nowait("rows", 2)
    assert (registration.queued, registration.dropped) == (1, 2)
    await bus.drain()
    assert relaxed == [0, 1, 2]  # everyone else got the message (at the loop's next turn)
    assert failures == []  # the publisher was told: not reported as well
    registration.resume()
    await bus.drain()
    assert strict == [0]


async def test_pause_with_a_full_buffer_error_policy_refuses_a_send(bus: EventBus) -> None:
    handled: list[int] = []
    registration = bus.consumer(
        "jobs", lambda message: handled.append(message.body), max_buffered=1, overflow="error"
    )
    registration.pause()
    await bus.send("jobs", 0)
    with pytest.raises(BufferFullError):
        await bus.send("jobs", 1)
    registration.resume()
    await bus.drain()
    assert handled == [0]


async def test_pause_with_a_full_buffer_block_holds_the_publisher_until_resume(
    bus: EventBus, failures: FailureLog
) -> None:
    handled: list[int] = []
    rows = bus.on("rows", handled.append, max_buffered=1)  # overflow="block"
    rows.pause()
    await bus.publish("rows", 0)  # room in the buffer
    held = asyncio.create_task(bus.publish("rows", 1))
    done, _ = await asyncio.wait([held], timeout=0.02)
    assert not done  # waiting for room: nothing lost
    assert rows.queued == 2
    rows.resume()
    await asyncio.wait_for(held, PROMPTLY)
    await bus.drain()
    assert handled == [0, 1]
    assert failures == []


@pytest.mark.parametrize("overflow", ["drop_newest", "error"])
async def test_a_request_dropped_by_a_full_buffer_fails_at_once(
    bus: EventBus, failures: FailureLog, overflow: Any
) -> None:
    registration = bus.consumer(
        "svc", lambda message: message.body, max_buffered=1, overflow=overflow
    )
    registration.pause()
    queued = asyncio.create_task(bus.request("svc", "queued", timeout=math.inf))
    await suspend()  # let it reach the buffer
    assert registration.queued == 1
    refused = start_eagerly(bus.request("svc", "one too many", timeout=math.inf))
    assert refused.done(), "the dropped request suspended instead of failing at once"
    error = refused.exception()
    assert isinstance(error, BufferFullError if overflow == "error" else MessageDroppedError)
    assert (error.address, error.reason) == ("svc", "overflow")
    assert registration.dropped == 1
    registration.resume()
    assert await asyncio.wait_for(queued, PROMPTLY) == "queued"
    assert bus.stats().pending_requests == 0
    assert failures == []  # the requester was told: not reported as well


async def test_a_request_dropped_as_the_oldest_fails_at_once(
    bus: EventBus, failures: FailureLog
) -> None:
    registration = bus.consumer(
        "svc", lambda message: message.body, max_buffered=1, overflow="drop_oldest"
    )
    registration.pause()
    oldest = asyncio.create_task(bus.request("svc", "oldest", timeout=math.inf))
    await suspend()
    newest = asyncio.create_task(bus.request("svc", "newest", timeout=math.inf))
    error = await failure_of(oldest)
    assert isinstance(error, MessageDroppedError)
    assert error.reason == "overflow"
    registration.resume()
    assert await asyncio.wait_for(newest, PROMPTLY) == "newest"
    assert bus.stats().pending_requests == 0
    assert failures == []


async def test_a_consumer_unregistered_with_a_queued_request_fails_that_requester_at_once(
    bus: EventBus, failures: FailureLog
) -> None:
    """Paused: every request waiting for it fails with ``MessageDroppedError`` ("unregistered")
    rather than waiting for a timeout that here would never come; a queued send, which nobody
    awaits, is reported on ``bus.errors``."""
    registration = bus.consumer("svc", lambda message: message.body)
    registration.pause()
    requests = [asyncio.create_task(bus.request("svc", n, timeout=math.inf)) for n in range(3)]
    await suspend()
    await bus.send("svc", "sent")
    assert registration.queued == 4
    registration.unregister()
    for request in requests:
        error = await failure_of(request)
        assert isinstance(error, MessageDroppedError)
        assert (error.address, error.reason) == ("svc", "unregistered")
    [reported] = failures
    assert isinstance(reported.exception, MessageDroppedError)
    assert reported.exception.reason == "unregistered"
    assert reported.message is not None
    assert reported.message.body == "sent"
    stats = bus.stats()
    assert stats.pending_requests == 0
    assert stats.totals.dropped == 4


async def test_a_busy_consumer_unregistered_answers_its_running_request_and_fails_the_queued(
    bus: EventBus, failures: FailureLog
) -> None:
    release = asyncio.Event()
    started = Gate()

    async def actor(message: Message[str]) -> str:
        started.arrive()
        await release.wait()
        return f"done {message.body}"

    registration = bus.consumer("actor", actor, max_concurrency=1)
    running = asyncio.create_task(bus.request("actor", "running", timeout=math.inf))
    await started.wait()
    queued = asyncio.create_task(bus.request("actor", "queued", timeout=math.inf))
    await suspend()
    assert registration.queued == 1
    registration.unregister()
    error = await failure_of(queued)
    assert isinstance(error, MessageDroppedError)
    assert error.reason == "unregistered"
    release.set()
    assert await asyncio.wait_for(running, PROMPTLY) == "done running"
    assert bus.stats().pending_requests == 0
    assert failures == []


# -- producers --------------------------------------------------------------------------------


async def test_a_sender_uses_its_default_headers_and_timeout_and_each_call_overrides(
    bus: EventBus, failures: FailureLog
) -> None:
    seen: list[tuple[object, list[tuple[str, str]]]] = []
    release = asyncio.Event()

    async def echo(message: Message[Any]) -> None:
        seen.append((message.body, message.headers.pairs()))
        if message.body == "hang":
            await release.wait()  # no answer before the end of the test
            return
        message.reply(message.body, headers={"served-by": "echo"})

    bus.consumer("svc", echo)
    defaults = {"tenant": "acme", "trace": "0"}
    sender = bus.sender("svc", headers=defaults, timeout=0.02)
    defaults["tenant"] = "changed"  # the sender keeps a copy
    await sender.send("a")
    assert await sender.request("b", headers={"TRACE": "1"}) == "b"
    reply = await sender.request("c", options=DeliveryOptions(headers={"x": "y"}), full=True)
    assert (reply.body, dict(reply.headers)) == ("c", {"served-by": "echo"})
    assert seen == [
        ("a", [("tenant", "acme"), ("trace", "0")]),
        ("b", [("tenant", "acme"), ("TRACE", "1")]),
        ("c", [("tenant", "acme"), ("trace", "0"), ("x", "y")]),
    ]
    with pytest.raises(HandlerTimeoutError) as caught:
        await sender.request("hang")
    assert caught.value.timeout == 0.02  # the sender's
    with pytest.raises(HandlerTimeoutError) as caught:
        await sender.request("hang", timeout=0.03)
    assert caught.value.timeout == 0.03  # the call's
    with pytest.raises(HandlerTimeoutError) as caught:
        await sender.request("hang", options=DeliveryOptions(timeout=0.01))
    assert caught.value.timeout == 0.01  # the call's options'
    with pytest.raises(HandlerNotFoundError):
        await bus.sender("nowhere").request(1)
    release.set()
    await bus.drain()
    assert failures == []


async def test_a_publisher_uses_its_default_headers_and_each_call_overrides(
    bus: EventBus, failures: FailureLog
) -> None:
    seen: list[tuple[str, object, dict[str, str]]] = []

    def listener(message: Message[int]) -> None:
        seen.append(("listener", message.body, dict(message.headers)))

    def consumer(message: Message[int]) -> None:
        seen.append(("consumer", message.body, dict(message.headers)))

    bus.on("prices", listener)
    bus.consumer("prices", consumer)
    publisher = bus.publisher(
        "prices", headers={"currency": "EUR"}, options=DeliveryOptions(headers={"source": "x"})
    )
    assert publisher.address == "prices"
    await publisher.publish(1)
    await publisher.publish(2, headers={"Currency": "USD"})
    await publisher.publish(3, options=DeliveryOptions(headers={"extra": "1"}))
    assert seen == [
        ("listener", 1, {"source": "x", "currency": "EUR"}),
        ("consumer", 1, {"source": "x", "currency": "EUR"}),
        ("listener", 2, {"source": "x", "Currency": "USD"}),
        ("consumer", 2, {"source": "x", "Currency": "USD"}),
        ("listener", 3, {"source": "x", "currency": "EUR", "extra": "1"}),
        ("consumer", 3, {"source": "x", "currency": "EUR", "extra": "1"}),
    ]
    assert failures == []


# -- the end of a registration ----------------------------------------------------------------


async def test_registration_on_unregistered_is_called_on_unregister(bus: EventBus) -> None:
    told: list[tuple[str, Registration]] = []
    consumer = bus.consumer("svc", lambda message: None)
    listener = bus.on("evt", lambda body: None)
    consumer.on_unregistered(lambda r: told.append(("first", r)))
    consumer.on_unregistered(lambda r: told.append(("second", r)))
    listener.on_unregistered(lambda r: told.append(("listener", r)))
    waiter = asyncio.create_task(consumer.wait_unregistered())
    assert told == []
    consumer.unregister()
    assert told == [("first", consumer), ("second", consumer)]  # at once, in order
    assert not consumer.is_registered
    consumer.unregister()  # told once only
    assert len(told) == 2
    await asyncio.wait_for(waiter, PROMPTLY)
    bus.remove_listener("evt", listener.handler)  # the other way to unregister
    assert told[2:] == [("listener", listener)]
    consumer.on_unregistered(lambda r: told.append(("after the end", r)))  # called at once
    assert told[3:] == [("after the end", consumer)]


async def test_registration_on_unregistered_is_called_on_close() -> None:
    told: list[str] = []
    bus = EventBus(close_timeout=0.1)
    consumer = bus.consumer("svc", lambda message: None)
    listener = bus.on("evt", lambda body: None)
    gone = bus.on("gone", lambda body: None)
    for name, registration in (("consumer", consumer), ("listener", listener), ("gone", gone)):
        registration.on_unregistered(lambda r, name=name: told.append(name))
    gone.unregister()
    waiter = asyncio.create_task(listener.wait_unregistered())
    assert await bus.request("svc", 1) is None  # binds the bus to this loop
    assert told == ["gone"]
    await bus.close()
    assert sorted(told) == ["consumer", "gone", "listener"]  # each once, "gone" not again
    assert not consumer.is_registered
    assert not listener.is_registered
    await asyncio.wait_for(waiter, PROMPTLY)
    await bus.close()  # closing again tells nobody again
    assert len(told) == 3


# -- second pass: codecs on replies, chosen along the MRO or by a selector ----------------------


class Stamp(MessageCodec[Any]):
    """A codec whose local transform returns a copy stamped with its name: which codec a
    body went through is visible in what the receiver gets."""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, body: Any) -> bytes:
        raise AssertionError("only transform is used locally")

    def decode(self, data: bytes) -> Any:
        raise AssertionError("only transform is used locally")

    def transform(self, body: Any) -> Any:
        return {**body, "via": self.name}


class Base(dict[str, Any]):
    pass


class Derived(Base):
    pass


class Own(Base):
    pass


async def test_a_default_codec_applies_to_a_reply_however_it_is_given(bus: EventBus) -> None:
    """Vert.x looks the reply's codec up as it does the request's; so does TinyBus: the
    return value, ``message.reply`` and ``reply_and_request`` all go through it."""
    bus.register_codec(Stamp("stamp"), default_for=dict)

    def returns(message: Message[Any]) -> dict[str, Any]:
        return {"answer": "returned", "asked": message.body}

    def replies(message: Message[Any]) -> None:
        message.reply({"answer": "replied"})

    async def converses(message: Message[Any]) -> None:
        answer = await message.reply_and_request({"answer": "asks back"})
        answer.reply({"answer": "last"})

    bus.consumer("returns", returns)
    bus.consumer("replies", replies)
    bus.consumer("converses", converses)
    assert await bus.request("returns", {"q": 1}) == {
        "answer": "returned",
        "asked": {"q": 1, "via": "stamp"},  # the request went through it too
        "via": "stamp",
    }
    assert await bus.request("replies", {}) == {"answer": "replied", "via": "stamp"}
    first = await bus.request("converses", {}, full=True)
    assert first.body == {"answer": "asks back", "via": "stamp"}
    last = await first.reply_and_request({"answer": "and the requester's answer"})
    assert last.body == {"answer": "last", "via": "stamp"}
    assert await bus.request("returns", [1]) != [1, "via"]  # not a dict: no codec
    bus.unregister_codec("stamp")
    assert await bus.request("replies", {}) == {"answer": "replied"}


async def test_default_codecs_are_chosen_along_the_body_types_mro(bus: EventBus) -> None:
    """A subclass uses its nearest base's default codec unless it has one of its own."""
    bus.register_codec(Stamp("base"), default_for=Base)
    bus.register_codec(Stamp("own"), default_for=Own)
    bus.consumer("echo", lambda message: message.body)
    assert (await bus.request("echo", Base()))["via"] == "base"
    assert (await bus.request("echo", Derived()))["via"] == "base"
    assert (await bus.request("echo", Own()))["via"] == "own"
    assert await bus.request("echo", {"plain": 1}) == {"plain": 1}  # dict is Base's base
    bus.unregister_codec("base")  # forgotten for Derived too
    assert await bus.request("echo", Derived()) == {}
    assert (await bus.request("echo", Own()))["via"] == "own"


async def test_a_codec_selector_names_the_codec_of_bodies_without_a_default(
    bus: EventBus,
) -> None:
    """Vert.x's ``codecSelector``: asked for a body with no default codec; a codec named in
    the options still wins, and a default codec is found before it is asked."""
    asked: list[Any] = []

    def selector(body: Any) -> str | None:
        asked.append(body)
        return "selected" if isinstance(body, dict) and "pick" in body else None

    bus.register_codec(Stamp("selected"))
    bus.register_codec(Stamp("named"))
    bus.register_codec(Stamp("default"), default_for=Own)
    bus.codec_selector(selector)
    bus.consumer("via", lambda message: message.body.get("via"))  # which codec it came through
    bus.consumer("reply", lambda message: {"pick": "reply"})
    assert await bus.request("via", {"pick": 1}) == "selected"
    assert await bus.request("via", {"leave": 1}) is None
    assert await bus.request("via", {"pick": 1}, options=DeliveryOptions(codec="named")) == "named"
    assert await bus.request("via", Own(pick=1)) == "default"
    assert await bus.request("reply", None) == {"pick": "reply", "via": "selected"}
    # Asked only for bodies that had no codec named and no default (replies too).
    assert asked == [
        *({"pick": 1}, "selected", {"leave": 1}, None, "named", "default"),
        *(None, {"pick": "reply"}),
    ]
    bus.codec_selector(lambda body: "nothing-by-this-name")
    with pytest.raises(ValueError, match="no codec named 'nothing-by-this-name'"):
        await bus.request("via", {})
    bus.codec_selector(lambda body: 42)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="must return a codec's name or None"):
        await bus.publish("evt", {})
    with pytest.raises(TypeError, match="a codec selector is a function"):
        bus.codec_selector("selected")  # type: ignore[arg-type]
    bus.codec_selector(None)
    assert await bus.request("via", {"pick": 1}) is None


async def test_a_codec_failing_on_a_reply_fails_the_request_or_the_reply_call(
    bus: EventBus,
) -> None:
    """A return value the codec refuses fails its request (the handler's failure); an
    explicit ``reply`` it refuses raises in the handler, which may still answer."""

    class Refuses(Stamp):
        def transform(self, body: Any) -> Any:
            raise ValueError("cannot encode this")

    bus.register_codec(Refuses("refuses"), default_for=Own)

    def returns(message: Message[Any]) -> Any:
        return Own(x=1)

    def replies(message: Message[Any]) -> Any:
        try:
            message.reply(Own(x=1))
        except ValueError as error:
            return f"reply refused: {error}"
        return "reply sent"

    bus.consumer("returns", returns)
    bus.consumer("replies", replies)
    with pytest.raises(HandlerExecutionError) as caught:
        await bus.request("returns", None)
    assert isinstance(caught.value.original_error, ValueError)
    assert await bus.request("replies", None) == "reply refused: cannot encode this"


# -- second pass: options, reply options, message.kind -----------------------------------------


async def test_a_call_can_switch_off_a_producers_retries_and_copying(bus: EventBus) -> None:
    """Options a call gives replace the producer's, falsy ones too: ``retry_attempts=0`` and
    ``copy=False`` are given, not "unset" (``None`` is "not given")."""
    attempts: list[int] = []
    bodies: list[Any] = []

    async def never_answers(message: Message[Any]) -> None:
        attempts.append(message.body)
        bodies.append(message.body)
        await asyncio.Event().wait()

    bus.consumer("slow", never_answers)
    sender = bus.sender("slow", options=DeliveryOptions(retry_attempts=2, copy=True))
    assert sender.options.retry_attempts == 2
    body = {"n": 1}
    with pytest.raises(HandlerTimeoutError):
        await sender.request(body, timeout=0.01)
    assert len(attempts) == 3
    assert bodies[0] is not body
    attempts.clear()
    bodies.clear()
    with pytest.raises(HandlerTimeoutError):
        await sender.request(
            body, timeout=0.01, options=DeliveryOptions(retry_attempts=0, copy=False)
        )
    assert len(attempts) == 1
    assert bodies[0] is body
    kept = DeliveryOptions(retry_attempts=2, copy=True).overlay(DeliveryOptions(timeout=1))
    assert (kept.retry_attempts, kept.copy, kept.timeout) == (2, True, 1.0)  # not given: kept
    await bus.close(timeout=0)


async def test_a_reply_carries_headers_a_named_codec_and_its_own_copy(bus: EventBus) -> None:
    """``message.reply(body, headers=..., options=...)``, as Vert.x's ``reply(body,
    DeliveryOptions)``: the call's headers over the options', a codec by name, a copy."""
    kept = {"items": [1]}
    bus.register_codec(Stamp("named"))

    def answer(message: Message[Any]) -> None:
        options = DeliveryOptions(headers={"a": "options", "b": "options"}, copy=True)
        if message.body == "codec":
            options = DeliveryOptions(codec="named")
        message.reply(kept, headers={"b": "call"}, options=options)

    bus.consumer("svc", answer)
    reply = await bus.request("svc", "copy", full=True)
    assert dict(reply.headers) == {"a": "options", "b": "call"}
    assert reply.body == kept
    assert reply.body is not kept
    assert (await bus.request("svc", "codec")) == {"items": [1], "via": "named"}

    leg_timeouts: list[float] = []

    async def converse(message: Message[Any]) -> None:
        try:
            await message.reply_and_request(
                "next?", options=DeliveryOptions(headers={"leg": "1"}, timeout=0.01)
            )
        except HandlerTimeoutError as error:
            leg_timeouts.append(error.timeout)

    bus.consumer("talk", converse)
    first = await bus.request("talk", None, full=True)
    assert dict(first.headers) == {"leg": "1"}
    await bus.drain(timeout=PROMPTLY)  # the requester never answers: the leg's timeout ends it
    assert leg_timeouts == [0.01]
    bus.consumer("bad", lambda message: message.reply(1, options={"copy": True}))
    with pytest.raises(HandlerExecutionError) as caught:
        await bus.request("bad", None)
    assert "options must be a DeliveryOptions" in str(caught.value.original_error)


async def test_message_kind_says_whether_it_was_published_sent_or_requested(
    bus: EventBus,
) -> None:
    """Vert.x's ``isSend()``: ``message.kind`` is ``"publish"``, ``"send"`` or ``"request"``;
    a reply seen with ``full=True`` is a ``"reply"``."""
    kinds: list[str] = []
    bus.consumer("svc", lambda message: kinds.append(message.kind))
    await bus.publish("svc", 1)
    await bus.send("svc", 2)
    await bus.request("svc", 3)
    reply = await bus.request("svc", 4, full=True)
    assert kinds == ["publish", "send", "request", "request"]
    assert reply.kind == "reply"


# -- second pass: nobody listening is visible, producers close ----------------------------------


async def test_publish_returns_how_many_registrations_it_reached(bus: EventBus) -> None:
    """Vert.x's publish gives no sign that nobody listened; TinyBus's returns the number of
    registrations the message reached: the address's listeners and consumers and the
    listeners of the patterns it matches, ``observe()`` subscribers not counted."""
    heard: list[str] = []
    assert await bus.publish("orders.created", 1) == 0  # nobody here
    assert bus.publish_nowait("orders.created", 1) == 0
    bus.on("orders.created", lambda body: heard.append("listener"))
    bus.consumer("orders.created", lambda message: heard.append("consumer"))
    bus.on("orders.*", lambda body: heard.append("pattern"))
    bus.observe("orders.created").subscribe(lambda message: heard.append("observer"))
    paused = bus.on("orders.created", lambda body: heard.append("paused"))
    paused.pause()  # reached: it waits in the registration's buffer
    assert await bus.publish("orders.created", 2) == 4
    assert bus.publish_nowait("orders.created", 3) == 4
    assert await bus.publish("orders.shipped", 4) == 1  # the pattern only
    paused.resume()
    await bus.drain(timeout=PROMPTLY)
    expected = {"listener": 2, "consumer": 2, "paused": 2, "pattern": 3, "observer": 2}
    assert Counter(heard) == expected
    assert await bus.publisher("orders.cancelled").publish(5) == 1
    with pytest.raises(HandlerNotFoundError):  # send to nobody still raises
        await bus.send("orders.cancelled", 6)


async def test_a_closed_producer_refuses_every_later_call(bus: EventBus) -> None:
    """Vert.x's ``MessageProducer.close()``: a closed producer sends nothing more, and says
    so; its ``options`` may be replaced while it is open."""
    seen: list[tuple[object, dict[str, str]]] = []
    bus.consumer("svc", lambda message: seen.append((message.body, dict(message.headers))))
    sender = bus.sender("svc", headers={"v": "1"})
    publisher = bus.publisher("svc")
    await sender.send("a")
    sender.options = DeliveryOptions(headers={"v": "2"})
    await sender.send("b")
    with pytest.raises(TypeError, match="options must be a DeliveryOptions"):
        sender.options = {"headers": {}}  # type: ignore[assignment]
    sender.close()
    sender.close()  # closing twice does nothing
    publisher.close()
    assert sender.is_closed
    assert "closed" in repr(publisher)
    with pytest.raises(EventBusError, match="this sender to 'svc' is closed"):
        await sender.send("c")
    with pytest.raises(EventBusError, match=r"bus.sender\('svc'\)"):
        await sender.request("d")
    with pytest.raises(EventBusError, match="this publisher to 'svc' is closed"):
        await publisher.publish("e")
    assert seen == [("a", {"v": "1"}), ("b", {"v": "2"})]


# -- second pass: one listener registered several times ----------------------------------------


async def test_the_same_listener_registered_twice_is_called_twice_and_unregistered_alone(
    bus: EventBus,
) -> None:
    """Vert.x registers the same handler at one address as many times as asked
    (``testRegisterSameHandlerMultipleTimes``), each a ``MessageConsumer`` of its own; so do
    TinyBus listeners. The same consumer function twice stays refused, as in tinybus 0.2.x."""
    received: list[int] = []
    registrations = [bus.on("news", received.append) for _ in range(3)]
    assert await bus.publish("news", 1) == 3
    assert received == [1, 1, 1]
    registrations[1].unregister()
    assert [r.is_registered for r in registrations] == [True, False, True]
    assert await bus.publish("news", 2) == 2
    assert received == [1, 1, 1, 2, 2]
    handle = tagged("once", [])
    bus.consumer("svc", handle)
    with pytest.raises(HandlerAlreadyRegisteredError, match="already registered at address 'svc'"):
        bus.consumer("svc", handle)


# -- second pass: demand-driven consumption, a live max_buffered --------------------------------


async def test_fetch_on_a_paused_registration_delivers_up_to_n_waiting_messages(
    bus: EventBus,
) -> None:
    """Vert.x's ``pause()`` then ``fetch(n)``: n more messages, in order, the registration
    staying paused; fetches add up, and the demand carries over to messages still to come."""
    heard: list[int] = []
    registration = bus.on("ticks", heard.append)
    registration.pause()
    for n in range(5):
        await bus.publish("ticks", n)
    registration.fetch(2)
    assert heard == []  # never inside the caller
    await bus.drain(timeout=PROMPTLY)
    assert heard == [0, 1]
    assert registration.is_paused
    assert registration.queued == 3
    registration.fetch(1)
    registration.fetch(3)  # adds up: 4, of which 3 wait now
    await bus.drain(timeout=PROMPTLY)
    assert heard == [0, 1, 2, 3, 4]
    await bus.publish("ticks", 5)  # the fourth fetched
    await bus.publish("ticks", 6)  # no demand left: waits
    assert heard == [0, 1, 2, 3, 4, 5]
    assert registration.queued == 1
    registration.pause()  # forgets demand, had there been any
    registration.resume()
    await bus.drain(timeout=PROMPTLY)
    assert heard == [0, 1, 2, 3, 4, 5, 6]
    registration.fetch(1)  # not paused: nothing to do
    with pytest.raises(ValueError, match="fetch\\(\\) takes a count of messages, an int >= 1"):
        registration.fetch(0)


async def test_resume_never_runs_a_handler_inside_the_caller(bus: EventBus) -> None:
    """As Vert.x's ``testSelfSendDoesNotTrampoline`` asks of delivery: a handler that resumes
    its own registration is not re-entered; what waited runs once it has returned."""
    events: list[str] = []

    def handler(body: int) -> None:
        events.append(f"start {body}")
        registration.resume()
        events.append(f"end {body}")

    registration = bus.on("self", handler)
    registration.pause()
    await bus.publish("self", 1)
    await bus.publish("self", 2)
    registration.fetch(1)
    await bus.drain(timeout=PROMPTLY)
    assert events == ["start 1", "end 1", "start 2", "end 2"]


async def test_a_live_max_buffered_applies_the_overflow_policy_to_what_is_over_it(
    bus: EventBus, failures: list[HandlerFailure]
) -> None:
    """Vert.x's ``setMaxBufferedMessages`` on a live consumer: never silently ignored."""
    heard: dict[str, list[int]] = {"oldest": [], "newest": [], "block": [], "error": []}
    registrations = {
        "oldest": bus.on("a", heard["oldest"].append, overflow="drop_oldest"),
        "newest": bus.on("a", heard["newest"].append, overflow="drop_newest"),
        "block": bus.on("a", heard["block"].append, overflow="block"),
        "error": bus.on("a", heard["error"].append, overflow="error"),
    }
    for registration in registrations.values():
        registration.pause()
    for n in range(5):
        bus.publish_nowait("a", n)
    for name in ("oldest", "newest", "block"):
        registrations[name].max_buffered = 2
        assert registrations[name].max_buffered == 2
    with pytest.raises(ValueError, match="max_buffered=2 is less than the 5 messages waiting"):
        registrations["error"].max_buffered = 2
    assert registrations["error"].max_buffered == 1000  # unchanged
    registrations["error"].max_buffered = 5  # not less: accepted
    assert [registrations[name].dropped for name in heard] == [3, 3, 0, 0]
    assert registrations["block"].queued == 5  # 2 in the buffer, 3 waiting outside it
    with pytest.raises(ValueError, match="max_buffered must be an int >= 0"):
        registrations["block"].max_buffered = -1
    for registration in registrations.values():
        registration.resume()
    await bus.drain(timeout=PROMPTLY)
    assert heard == {
        "oldest": [3, 4],
        "newest": [0, 1],
        "block": [0, 1, 2, 3, 4],
        "error": [0, 1, 2, 3, 4],
    }
    assert len(failures) == 6
    assert all(failure.dropped for failure in failures)
    failures.clear()


# -- second pass: outbound interceptors see replies and failures --------------------------------


async def test_outbound_interceptors_see_replies_and_failures_at_the_consumer(
    bus: EventBus,
) -> None:
    """Vert.x's outbound interceptors see a reply as it is sent
    (``testOutboundInterceptorOnReply``):
    they may stamp it, see a failure, and reject either."""
    seen: list[tuple[str, object]] = []

    @bus.add_interceptor
    def watch(envelope: Envelope) -> Message[Any] | None:
        seen.append((envelope.kind, envelope.body))
        if envelope.kind == "reply" and envelope.body == "refuse":
            raise PermissionError("no such reply")
        if envelope.kind == "failure" and isinstance(envelope.body, ReplyFailedError):
            raise RuntimeError("an interceptor that fails on a failure")
        if envelope.kind == "reply":
            return envelope.message.with_headers({"seen": "yes"})
        return None

    def answer(message: Message[Any]) -> Any:
        if message.body == "raise":
            raise KeyError("boom")
        if message.body == "fail":
            message.fail(7, "failed")
            return None
        return message.body

    bus.consumer("svc", answer)
    reply = await bus.request("svc", "ok", full=True)
    assert (reply.body, dict(reply.headers)) == ("ok", {"seen": "yes"})
    with pytest.raises(HandlerExecutionError) as refused:
        await bus.request("svc", "refuse")
    assert isinstance(refused.value.original_error, PermissionError)
    with pytest.raises(HandlerExecutionError) as raised:
        await bus.request("svc", "raise")
    assert isinstance(raised.value.original_error, KeyError)
    with pytest.raises(HandlerExecutionError) as failed:  # fail() raised the interceptor's
        await bus.request("svc", "fail")
    assert isinstance(failed.value.original_error, RuntimeError)
    kinds = [kind for kind, _ in seen]
    # ok: its reply; refuse: its reply, rejected (that failure is not intercepted again);
    # raise: its failure; fail: the failure fail() gave, then the handler's, once fail() raised.
    assert kinds == [
        *("request", "reply", "request", "reply"),
        *("request", "failure", "request", "failure", "failure"),
    ]


async def test_an_interceptor_raising_on_a_handlers_failure_leaves_it_and_is_logged(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler's failure still reaches its requester; the interceptor's raise is logged."""

    @bus.add_interceptor
    def breaks_on_failures(envelope: Envelope) -> None:
        if envelope.kind == "failure":
            raise RuntimeError("the interceptor's own bug")

    bus.consumer("svc", lambda message: {}[message.body])
    with (
        caplog.at_level(logging.ERROR, logger="tinybus"),
        pytest.raises(HandlerExecutionError) as caught,
    ):
        await bus.request("svc", "missing")
    assert isinstance(caught.value.original_error, KeyError)
    logged = [r for r in caplog.records if r.name == "tinybus"]
    assert [r.getMessage() for r in logged] == ["an interceptor raised on a failure for 'svc'"]
    assert logged[0].exc_info is not None
    assert isinstance(logged[0].exc_info[1], RuntimeError)


# -- second pass: no trampolining -----------------------------------------------------------------


async def test_self_send_does_not_trampoline(bus: EventBus, failures: FailureLog) -> None:
    """Vert.x ``testSelfSendDoesNotTrampoline``: a handler that ``send_nowait``s to its own
    address is not re-entered inside that call; what it did after the send happened before
    the message it sent was handled. 10,000 sends in a chain end without a RecursionError,
    in order."""
    trace: list[str] = []

    def relay(message: Message[int]) -> None:
        trace.append(f"got {message.body}")
        if message.body > 0:
            bus.send_nowait("self", message.body - 1)
            trace.append(f"sent {message.body - 1}")  # nothing ran under the sender

    bus.consumer("self", relay)
    bus.send_nowait("self", 10_000)
    assert trace == []
    async with asyncio.timeout(30):
        await bus.drain()
    expected: list[str] = []
    for n in range(10_000, 0, -1):
        expected += [f"got {n}", f"sent {n - 1}"]
    assert trace == [*expected, "got 0"]
    assert failures == []


async def test_publish_nowait_returns_before_any_listener_ran(bus: EventBus) -> None:
    """``publish_nowait`` pushes the message at once (counted, routed, its count returned) and
    returns before any listener ran; ``drain()`` waits for them."""
    heard: list[int] = []

    async def later(body: int) -> None:
        heard.append(-body)

    bus.on("rows", heard.append)
    bus.on("rows", later)
    bus.on("rows", heard.append, inline=True)
    assert bus.publish_nowait("rows", 1) == 3
    assert heard == []
    assert (bus.stats().totals.published, bus.stats().totals.delivered) == (1, 0)
    async with asyncio.timeout(5):
        await bus.drain()
    assert sorted(heard) == [-1, 1, 1]


async def test_a_registration_unregistered_before_its_nowait_turn_is_not_called(
    bus: EventBus, failures: FailureLog
) -> None:
    """Between a ``*_nowait`` push and the turn its handler would run at, the registration
    ended: neither handler is called, and each message is that registration's drop, counted
    and reported as one still in its buffer would be, never lost unseen."""
    heard: list[object] = []
    listener = bus.on("rows", heard.append)
    consumer = bus.consumer("jobs", heard.append)
    assert bus.publish_nowait("rows", 1) == 1
    bus.send_nowait("jobs", 2)
    listener.unregister()
    consumer.unregister()
    async with asyncio.timeout(5):
        await bus.drain()
    assert heard == []
    assert [(f.address, f.message and f.message.body) for f in failures] == [
        ("rows", 1),
        ("jobs", 2),
    ]
    assert all(isinstance(f.exception, MessageDroppedError) for f in failures)
    assert all("unregistered" in str(f.exception) for f in failures)
    assert bus.stats().totals.dropped == 2


async def test_an_awaited_publish_still_runs_a_handler_that_does_not_suspend_before_returning(
    bus: EventBus,
) -> None:
    """Awaited ``publish`` keeps its behaviour: a plain function has run when it returns,
    and so has a coroutine that does not suspend."""
    heard: list[str] = []

    async def quick(body: int) -> None:
        heard.append(f"quick {body}")

    bus.on("rows", lambda body: heard.append(f"plain {body}"))
    bus.on("rows", quick)
    assert await bus.publish("rows", 1) == 2
    assert heard == ["plain 1", "quick 1"]


async def test_nowait_then_awaited_publish_keep_their_order_at_each_listener(
    bus: EventBus,
) -> None:
    """One sender's messages reach a listener in the order sent, whether it awaited or not:
    an awaited publish after a ``publish_nowait`` whose handlers have not run yet goes behind
    them (and still returns once its own handlers have finished)."""
    heard: list[int] = []
    bus.on("rows", heard.append)
    bus.publish_nowait("rows", 0)
    bus.publish_nowait("rows", 1)
    await bus.publish("rows", 2)
    assert heard == [0, 1, 2]
