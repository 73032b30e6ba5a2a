"""Back-pressure, deadlines that travel, conversations, retries and codecs across buses."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from tinybus import DeliveryOptions, HandlerFailure, HandlerTimeoutError, Message, MessageCodec

from .conftest import Connect


async def test_incoming_messages_enter_the_registrations_buffer_and_drops_are_counted(
    connect: Connect,
) -> None:
    async with connect() as sender, connect() as receiver:
        release = asyncio.Event()
        handled: list[int] = []
        dropped: asyncio.Queue[HandlerFailure] = asyncio.Queue()
        receiver.errors.subscribe(dropped.put_nowait)

        async def slow(body: int) -> None:
            await release.wait()
            handled.append(body)

        registration = receiver.on(
            "firehose", slow, max_concurrency=1, max_buffered=2, overflow="drop_newest"
        )
        await registration.wait_exported()
        for number in range(10):
            await sender.publish("firehose", number)
        async with asyncio.timeout(5):
            for _ in range(7):  # one running, two buffered, seven dropped
                assert (await dropped.get()).dropped
        assert registration.dropped == 7
        assert registration.queued == 2
        release.set()
        await receiver.drain()
        assert handled == [0, 1, 2]


async def test_a_responder_skips_a_request_whose_requester_gave_up(connect: Connect) -> None:
    async with connect() as requester, connect() as responder:
        release, started = asyncio.Event(), asyncio.Event()
        handled: list[str] = []

        async def one_at_a_time(message: Message[str]) -> str:
            handled.append(message.body)
            started.set()
            await release.wait()
            return message.body

        registration = responder.consumer("single", one_at_a_time, max_concurrency=1)
        await registration.wait_exported()
        first = asyncio.ensure_future(requester.request("single", "first", timeout=5))
        async with asyncio.timeout(5):
            await started.wait()
        with pytest.raises(HandlerTimeoutError):  # waits in the buffer behind "first"
            await requester.request("single", "given up", timeout=0.2)
        release.set()
        assert await first == "first"
        await responder.drain()
        assert handled == ["first"]
        assert registration.dropped == 1


async def test_a_conversation_crosses_in_both_directions(connect: Connect) -> None:
    async with connect() as client, connect() as service:

        async def negotiate(message: Message[int]) -> None:
            counter = await message.reply_and_request(message.body + 1)
            final = await counter.reply_and_request(counter.body + 1)
            final.reply(final.body * 100)

        await service.consumer("haggle", negotiate).wait_exported()
        offer = await client.request("haggle", 1, full=True)
        assert offer.body == 2
        counter = await offer.reply_and_request(offer.body + 1)
        assert counter.body == 4
        done = await counter.reply_and_request(counter.body + 1)
        assert done.body == 500


async def test_retry_attempts_send_again_after_a_timeout(connect: Connect) -> None:
    async with connect() as requester, connect() as responder:
        calls: list[int] = []

        async def second_time_lucky(message: Message[int]) -> str:
            calls.append(message.body)
            if len(calls) == 1:
                await asyncio.Event().wait()  # the first attempt never answers
            return "answered"

        await responder.consumer("flaky", second_time_lucky).wait_exported()
        answer = await requester.request(
            "flaky", 7, timeout=0.3, options=DeliveryOptions(retry_attempts=1)
        )
        assert answer == "answered"
        assert calls == [7, 7]


@dataclass
class Point:
    x: int
    y: int


class PointCodec(MessageCodec[Point]):
    name = "point"

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, body: Point) -> bytes:
        self.encoded += 1
        return json.dumps([body.x, body.y]).encode()

    def decode(self, data: bytes) -> Point:
        return Point(*json.loads(data))


async def test_a_body_with_a_codec_crosses_as_the_codecs_bytes(connect: Connect) -> None:
    async with connect() as requester, connect() as responder:
        codecs = PointCodec(), PointCodec()
        requester.register_codec(codecs[0], default_for=Point)
        responder.register_codec(codecs[1], default_for=Point)

        def mirror(point: Point) -> Point:
            assert isinstance(point, Point)
            return Point(point.y, point.x)

        await responder.consumer("mirror", mirror).wait_exported()
        answer = await requester.request("mirror", Point(1, 2))
        assert isinstance(answer, Point)
        assert (answer.x, answer.y) == (2, 1)
        assert codecs[0].encoded >= 1  # (the request's body, and its local transform)
        assert codecs[1].encoded >= 1  # (the reply's)


async def test_order_holds_when_nats_py_must_flush_before_taking_more(connect: Connect) -> None:
    """With a tiny outgoing buffer (pending_size), nats-py suspends a publish to flush: the
    writer finishes it before anything sent after it."""
    async with (
        connect(transport_options={"pending_size": 1024}) as sender,
        connect() as receiver,
    ):
        got: asyncio.Queue[int] = asyncio.Queue()
        await receiver.on("ordered", lambda body: got.put_nowait(body[0])).wait_exported()
        for number in range(50):
            sender.publish_nowait("ordered", [number, "x" * 2000])
        async with asyncio.timeout(10):
            assert [await got.get() for _ in range(50)] == list(range(50))
