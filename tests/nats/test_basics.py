"""Several buses, each with its own NATS connection to one real server: publish, send and
request across them, as across processes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from tinybus import (
    HandlerExecutionError,
    HandlerFailure,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Headers,
    Message,
    MessageEncodingError,
    MessageValidationError,
    RemoteError,
    ReplyFailedError,
)

from .conftest import Connect


async def test_a_request_is_answered_by_a_consumer_on_another_bus(connect: Connect) -> None:
    async with connect() as requester, connect() as responder:

        async def double(message: Message[int]) -> int:
            return message.body * 2

        await responder.consumer("double", double).wait_exported()
        assert await requester.request("double", 21) == 42
        assert responder.stats().addresses["double"].handlers[0].delivered == 1
        assert requester.stats().pending_requests == 0


async def test_a_publish_reaches_every_bus_once(connect: Connect) -> None:
    async with connect() as one, connect() as two, connect() as three:
        heard: list[tuple[str, object]] = []
        done = asyncio.Event()

        def listener(name: str):
            def hear(body: object) -> None:
                heard.append((name, body))
                if len(heard) == 4:
                    done.set()

            return hear

        registrations = [
            one.on("news", listener("one")),
            two.on("news", listener("two")),
            two.on("news.*", listener("never")),
            three.on("n*", listener("never")),  # a concrete address, not a pattern
            three.on(">", listener("three, by a pattern")),
            three.on("news", listener("three")),
        ]
        for registration in registrations:
            await registration.wait_exported()
        await one.publish("news", {"n": 1})
        async with asyncio.timeout(5):
            await done.wait()
        # Nothing more arrives: a last round trip through every bus's connection first.
        for registration in registrations:
            await registration.wait_exported()
        await two.drain()
        await three.drain()
    assert sorted(heard, key=str) == sorted(
        [
            ("one", {"n": 1}),
            ("two", {"n": 1}),
            ("three", {"n": 1}),
            ("three, by a pattern", {"n": 1}),
        ],
        key=str,
    )


async def test_nobody_anywhere_is_handler_not_found_at_once(connect: Connect) -> None:
    async with connect() as one, connect():
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(HandlerNotFoundError, match="no responders"):
            await one.request("nobody", 1, timeout=5)
        assert loop.time() - started < 0.5


async def test_a_remote_exception_reaches_the_requester(connect: Connect) -> None:
    async with connect() as requester, connect() as responder:

        def broken(message: Message[int]) -> int:
            raise ValueError("no such order")

        await responder.consumer("broken", broken).wait_exported()
        with pytest.raises(
            HandlerExecutionError, match="raised ValueError: no such order"
        ) as caught:
            await requester.request("broken", 1)
        remote = caught.value.original_error
        assert isinstance(remote, RemoteError)
        assert remote.type_name == "ValueError"
        assert "in broken" in remote.traceback


async def test_a_send_reaches_one_consumer_on_another_bus(connect: Connect) -> None:
    async with connect() as sender, connect() as receiver:
        got: asyncio.Queue[object] = asyncio.Queue()
        await receiver.consumer(
            "jobs", lambda message: got.put_nowait(message.body)
        ).wait_exported()
        await sender.send("jobs", [1, 2])
        async with asyncio.timeout(5):
            assert await got.get() == [1, 2]


async def test_a_send_nobody_consumes_is_reported_on_the_senders_errors(connect: Connect) -> None:
    async with connect() as sender:
        failures: asyncio.Queue[HandlerFailure] = asyncio.Queue()
        sender.errors.subscribe(failures.put_nowait)
        await sender.send("nobody.home", 1)
        async with asyncio.timeout(5):
            failure = await failures.get()
        assert isinstance(failure.exception, HandlerNotFoundError)
        assert failure.address == "nobody.home"


async def test_a_remote_fail_is_reply_failed_with_its_code(connect: Connect) -> None:
    async with connect() as requester, connect() as responder:
        await responder.consumer(
            "pay", lambda message: message.fail(402, "no funds")
        ).wait_exported()
        with pytest.raises(ReplyFailedError, match="no funds") as caught:
            await requester.request("pay", 10)
        assert caught.value.code == 402
        assert caught.value.text == "no funds"
        assert caught.value.address == "pay"


class Order(BaseModel):
    item: str
    quantity: int


async def test_bodies_are_validated_against_the_receivers_annotation(connect: Connect) -> None:
    async with connect() as requester, connect() as responder:

        def total(order: Order) -> int:
            assert isinstance(order, Order)
            return order.quantity * 2

        await responder.consumer("orders", total).wait_exported()
        assert await requester.request("orders", Order(item="tea", quantity=3)) == 6
        assert await requester.request("orders", {"item": "tea", "quantity": 4}) == 8
        with pytest.raises(MessageValidationError, match="not a valid Order") as caught:
            await requester.request("orders", {"item": "tea"})
        assert caught.value.expected == "Order"
        assert caught.value.errors[0]["loc"] == ["quantity"]


async def test_a_remote_timeout_is_the_requesters(connect: Connect) -> None:
    async with connect() as requester, connect() as responder:
        release = asyncio.Event()

        async def slow(message: Message[int]) -> int:
            await release.wait()
            return 1

        await responder.consumer("slow", slow).wait_exported()
        started = asyncio.get_running_loop().time()
        with pytest.raises(HandlerTimeoutError):
            await requester.request("slow", 1, timeout=0.2)
        assert asyncio.get_running_loop().time() - started < 1.0
        release.set()
        assert requester.stats().pending_requests == 0


async def test_a_local_registration_is_invisible_to_other_buses(connect: Connect) -> None:
    async with connect() as one, connect() as two:
        heard: list[object] = []
        await two.consumer("private", lambda message: "here", local=True).wait_exported()
        await two.on("private.news", heard.append, local=True).wait_exported()
        with pytest.raises(HandlerNotFoundError):
            await one.request("private", None)
        await one.publish("private.news", 1)
        assert await two.request("private", None) == "here"
        await two.drain()
        assert heard == []


async def test_headers_round_trip_exactly(connect: Connect) -> None:
    async with connect() as requester, connect() as responder:
        seen: list[Headers] = []

        def echo(message: Message[None]) -> None:
            seen.append(message.headers)
            message.reply("ok", headers={"Status": "503", "X-Multi": ["a", " b "]})

        await responder.consumer("echo", echo).wait_exported()
        sent = [
            ("Status", "503"),
            ("status-x", ""),
            ("Trace-Id", "1"),
            ("trace-id", "2"),
            ("Weird Name: yes", " spaced\tvalue "),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("ünï", "çödé\r\nline"),
        ]
        reply = await requester.request("echo", None, headers=sent, full=True)
        assert seen[0].pairs() == Headers(sent).pairs()  # (as locally: names keep their first case)
        assert [value for _, value in seen[0].pairs()] == [value for _, value in sent]
        assert seen[0].getall("TRACE-ID") == ["1", "2"]
        assert reply.body == "ok"
        assert reply.headers.pairs() == [("Status", "503"), ("X-Multi", "a"), ("X-Multi", " b ")]


@pytest.mark.parametrize(
    "address",
    ["a..b", ".a", "a.", "with space", "tab\tand~tilde", "ünïcödé.日本", "a*b.c>d", "x" * 1024],
)
async def test_every_legal_address_round_trips(connect: Connect, address: str) -> None:
    async with connect() as requester, connect() as responder:
        await responder.consumer(address, lambda message: message.address).wait_exported()
        assert await requester.request(address, None) == address


async def test_an_address_too_long_for_a_subject_fails_before_sending(connect: Connect) -> None:
    async with connect() as bus:
        address = "日" * 1000
        with pytest.raises(MessageEncodingError, match="shorter address"):
            await bus.request(address, None)
        with pytest.raises(MessageEncodingError, match="shorter address"):
            bus.on(address, lambda body: None)
        assert address not in bus.stats().addresses


async def test_an_unencodable_or_oversized_body_fails_before_sending(connect: Connect) -> None:
    async with connect() as sender, connect() as receiver:
        heard: list[object] = []
        sender.on("events", heard.append)
        await receiver.on("events", heard.append).wait_exported()
        with pytest.raises(MessageEncodingError, match="cannot be encoded as JSON"):
            await sender.publish("events", object())
        with pytest.raises(MessageEncodingError, match="max_payload"):
            await sender.publish("events", "x" * (2 * 1024 * 1024))
        await sender.drain()
        await receiver.drain()
        assert heard == []


async def test_request_all_gathers_the_consumers_of_every_bus(connect: Connect) -> None:
    async with connect() as one, connect() as two, connect() as three:
        one.consumer("census", lambda message: "one")
        await two.consumer("census", lambda message: "two, first").wait_exported()
        await two.consumer("census", lambda message: "two, second").wait_exported()

        def broken(message: Message[Any]) -> str:
            raise ValueError("three cannot count")

        await three.consumer("census", broken).wait_exported()
        three.consumer("census", lambda message: "never", local=True)
        three.on("census", lambda body: None)  # a listener is no consumer
        gathered = await one.request_all("census", None, timeout=0.5)
    assert sorted(gathered.replies) == ["one", "two, first", "two, second"]
    [failed] = gathered.failures
    assert isinstance(failed.error, HandlerExecutionError)
    assert "three cannot count" in str(failed.error)


async def test_request_all_with_no_consumer_elsewhere_has_the_local_answers(
    connect: Connect,
) -> None:
    async with connect() as one, connect():
        one.consumer("census", lambda message: "one")
        gathered = await one.request_all("census", None, timeout=0.2)
    assert gathered.replies == ["one"]


async def test_a_local_registration_beside_exported_ones_still_hears_nothing_remote(
    connect: Connect,
) -> None:
    async with connect() as one, connect() as two:
        heard: asyncio.Queue[str] = asyncio.Queue()
        two.consumer("mixed", lambda message: "local only", local=True)
        await two.consumer("mixed", lambda message: "exported").wait_exported()
        two.on("mixed.news", lambda body: heard.put_nowait("local only"), local=True)
        await two.on("mixed.news", lambda body: heard.put_nowait("exported")).wait_exported()
        assert [await one.request("mixed", None) for _ in range(4)] == ["exported"] * 4
        await one.publish("mixed.news", None)
        async with asyncio.timeout(5):
            assert await heard.get() == "exported"
        await two.drain()  # (both listeners were handed the message in one push)
        assert heard.empty()
        # Locally, both take their turns.
        assert sorted([await two.request("mixed", None) for _ in range(2)]) == [
            "exported",
            "local only",
        ]
