"""Explicit replies and failures (``message.reply`` / ``message.fail``), failure kinds and
codes, and the reply as a whole ``Message`` (``request(..., full=True)``)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Gate
from tinybus import (
    BusClosedError,
    EventBus,
    EventBusError,
    FailureKind,
    HandlerExecutionError,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Message,
    MessageValidationError,
    ReplyFailedError,
)
from tinybus.testing import FailureLog


async def test_a_reply_reaches_the_requester_before_the_handler_finishes(bus: EventBus) -> None:
    """The requester resumes while the handler goes on with the rest of its work."""
    rest_of_the_work = asyncio.Event()
    finished = Gate()

    async def handler(message: Message[int]) -> None:
        message.reply(message.body * 2)
        await rest_of_the_work.wait()
        finished.arrive()

    bus.consumer("double", handler)
    assert await bus.request("double", 21) == 42
    assert finished.arrived == 0  # still working
    rest_of_the_work.set()
    await finished.wait()


async def test_the_first_outcome_wins_and_later_ones_are_ignored_quietly(
    bus: EventBus, failures: FailureLog
) -> None:
    def handler(message: Message[str]) -> str:
        message.reply("first")
        message.reply("second")
        message.fail(500, "too late")
        return "returned"

    bus.consumer("answer", handler)
    assert await bus.request("answer", "?") == "first"
    assert failures == []
    assert bus.stats().totals.replied == 1


async def test_fail_gives_the_requester_a_code_and_a_message(
    bus: EventBus, failures: FailureLog
) -> None:
    async def handler(message: Message[str]) -> str:
        message.fail(404, f"no user {message.body}")
        return "ignored"

    bus.consumer("users.get", handler)
    with pytest.raises(ReplyFailedError) as caught:
        await bus.request("users.get", "ada")
    error = caught.value
    assert (error.kind, error.code, error.text) == (
        FailureKind.RECIPIENT_FAILURE,
        404,
        "no user ada",
    )
    assert error.address == "users.get"
    assert "(404): no user ada" in str(error)
    assert failures == []
    assert bus.stats().totals.failed == 1


async def test_a_failure_raised_after_the_reply_is_reported_not_given_to_the_requester(
    bus: EventBus, failures: FailureLog
) -> None:
    def handler(message: Message[int]) -> None:
        message.reply("ok")
        raise RuntimeError("cleanup failed")

    bus.consumer("svc", handler)
    assert await bus.request("svc", 1) == "ok"
    assert [(f.address, type(f.exception)) for f in failures] == [("svc", RuntimeError)]


async def test_reply_and_fail_on_a_published_or_sent_message_do_nothing(
    bus: EventBus, failures: FailureLog
) -> None:
    seen: list[object] = []

    def handler(message: Message[int]) -> None:
        message.reply("nobody asked")
        message.fail(1, "nobody asked either")
        seen.append(message.body)

    bus.consumer("svc", handler)
    await bus.publish("svc", 1)
    await bus.send("svc", 2)
    assert seen == [1, 2]
    assert failures == []


async def test_fail_takes_an_int_code(bus: EventBus) -> None:
    def handler(message: Message[int]) -> None:
        message.fail("404", "not found")  # type: ignore[arg-type]

    bus.consumer("svc", handler)
    with pytest.raises(HandlerExecutionError) as caught:
        await bus.request("svc", 1)
    assert isinstance(caught.value.original_error, TypeError)
    assert "a failure code is an int" in str(caught.value.original_error)


async def test_a_reply_is_validated_against_the_declared_return_type(bus: EventBus) -> None:
    def handler(message: Message[int]) -> int:
        message.reply("not a number")
        return 0

    bus.consumer("svc", handler)
    with pytest.raises(HandlerExecutionError, match="returned an invalid type"):
        await bus.request("svc", 1)


async def test_full_returns_the_reply_message_with_its_headers(bus: EventBus) -> None:
    async def handler(message: Message[int]) -> None:
        await asyncio.sleep(0)  # the reply comes after the request was sent, through its future
        message.reply(message.body + 1, headers={"served-by": "node-1"})

    bus.consumer("inc", handler)
    reply = await bus.request("inc", 1, full=True)
    assert isinstance(reply, Message)
    assert reply.body == 2
    assert dict(reply.headers) == {"served-by": "node-1"}
    assert reply.address.startswith("__tinybus.reply.")
    converted = await bus.request("inc", 5, full=True, response_type=float)
    assert (converted.body, type(converted.body)) == (6.0, float)


async def test_every_failure_says_its_kind_and_code(bus: EventBus) -> None:
    async def slow(message: Message[int]) -> None:
        await asyncio.Event().wait()

    def broken(message: Message[int]) -> None:
        raise ValueError("broken")

    bus.consumer("slow", slow)
    bus.consumer("broken", broken)
    expected = [
        (bus.request("nowhere", 1), HandlerNotFoundError, FailureKind.NO_HANDLERS),
        (bus.request("slow", 1, timeout=0.01), HandlerTimeoutError, FailureKind.TIMEOUT),
        (bus.request("broken", 1), HandlerExecutionError, FailureKind.RECIPIENT_FAILURE),
        (bus.request("broken", "x"), MessageValidationError, FailureKind.ERROR),
    ]
    for call, error_type, kind in expected:
        with pytest.raises(error_type) as caught:
            await call
        assert (caught.value.kind, caught.value.code) == (kind, -1)
    await bus.close()
    with pytest.raises(BusClosedError) as closed:
        await bus.request("broken", 1)
    assert closed.value.kind is FailureKind.ERROR


async def test_a_conversation_goes_back_and_forth_until_someone_just_replies(
    bus: EventBus,
) -> None:
    """reply_and_request on both sides, chained, ended by a plain reply."""
    transcript: list[str] = []

    async def greeter(message: Message[str]) -> None:
        transcript.append(f"consumer got {message.body}")
        name = await message.reply_and_request("who are you?")
        transcript.append(f"consumer got {name.body}")
        name.reply(f"hello, {name.body}", headers={"mood": "glad"})

    bus.consumer("greeter", greeter)
    question = await bus.request("greeter", "hi", full=True)
    assert question.body == "who are you?"
    assert question.reply_address is not None
    answer = await question.reply_and_request("ada", timeout=5)
    assert (answer.body, dict(answer.headers)) == ("hello, ada", {"mood": "glad"})
    assert answer.reply_address is None  # a plain reply: the conversation is over
    assert transcript == ["consumer got hi", "consumer got ada"]
    await bus.drain()
    assert bus.stats().pending_requests == 0


async def test_reply_and_request_needs_a_message_that_awaits_an_answer(bus: EventBus) -> None:
    errors: list[BaseException] = []

    async def listener(message: Message[str]) -> None:
        try:
            await message.reply_and_request("?")
        except EventBusError as error:
            errors.append(error)

    bus.on("evt", listener)
    await bus.publish("evt", "x")
    assert "awaits no answer" in str(errors[0])
    reply = await _plain_reply(bus)
    with pytest.raises(EventBusError, match="awaits no answer"):
        await reply.reply_and_request("?")


async def _plain_reply(bus: EventBus) -> Message[object]:
    bus.consumer("plain", lambda message: "just an answer")
    return await bus.request("plain", 1, full=True)
