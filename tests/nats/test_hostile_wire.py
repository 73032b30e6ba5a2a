"""Bytes no TinyBus sender would make, sent to a bus's subjects by a raw nats-py client:
nested too deeply to decode, too large to be sensible, of the wrong type for the handler,
under subjects that do not unescape. A request gets a failure that says what was wrong, an
event is reported on ``bus.errors``, no handler is called, and the bus keeps running.

(The malformed headers, kinds and timeouts are in ``test_security.py``.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.errors import MaxPayloadError
from pydantic import BaseModel

from tinybus import EventBus, HandlerFailure, MessageValidationError

from .conftest import Connect
from .server import NatsServer

DEEP = b"[" * 100_000 + b"]" * 100_000  # a JSON document no stack decodes


class Order(BaseModel):
    item: str
    quantity: int


@pytest.fixture
async def raw(server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(server.url)
    try:
        yield client
    finally:
        await client.close()


class Service:
    """A bus with a typed consumer and typed listeners, recording what reaches them."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.called: list[object] = []
        self.failures: asyncio.Queue[HandlerFailure] = asyncio.Queue()
        bus.errors.subscribe(self.failures.put_nowait)

    async def export(self) -> None:
        def total(order: Order) -> int:
            self.called.append(order)
            return order.quantity * 2

        await self.bus.consumer("orders", total).wait_exported()
        await self.bus.on("orders", self.called.append).wait_exported()
        await self.bus.on("shop.>", self.called.append).wait_exported()

    async def reported(self, count: int) -> list[str]:
        async with asyncio.timeout(5):
            return [str((await self.failures.get()).exception) for _ in range(count)]

    async def still_works(self, other: EventBus) -> None:
        """It still answers, and its listeners still hear, a well-formed message."""
        assert await other.request("orders", Order(item="tea", quantity=2)) == 4
        assert self.called == [Order(item="tea", quantity=2)]
        self.called.clear()


async def failure_of(raw: Client, subject: str, data: bytes, **headers: str) -> dict[str, Any]:
    answer = await raw.request(subject, data, timeout=5, headers={"Tb-Kind": "request", **headers})
    assert answer.headers is not None
    assert answer.headers["Tb-Kind"] == "failure"
    return json.loads(answer.data)


async def test_a_request_too_deeply_nested_is_refused_with_a_failure(
    connect: Connect, raw: Client
) -> None:
    async with connect() as bus, connect() as other:
        service = Service(bus)
        await service.export()
        in_body = await failure_of(raw, "tinybus.c.orders", DEEP)
        in_headers = await failure_of(
            raw, "tinybus.c.orders", b"{}", **{"Tb-Headers": "[" * 100_000}
        )
        assert "its body is not JSON we read (nested too deeply)" in in_body["message"]
        assert (
            "its Tb-Headers header is not JSON we read (nested too deeply)"
            in (in_headers["message"])
        )
        assert all("refused" in text for text in await service.reported(2))
        await service.still_works(other)


async def test_an_event_too_deeply_nested_is_reported_and_heard_by_nobody(
    connect: Connect, raw: Client
) -> None:
    async with connect() as bus, connect() as other:
        service = Service(bus)
        await service.export()
        await raw.publish("tinybus.e.orders", DEEP, headers={"Tb-Kind": "publish"})
        [reported] = await service.reported(1)
        assert "'tinybus.e.orders' was refused: its body is not JSON we read" in reported
        await service.still_works(other)


async def test_a_body_of_the_wrong_type_is_a_validation_failure(
    connect: Connect, raw: Client
) -> None:
    async with connect() as bus, connect() as other:
        service = Service(bus)
        await service.export()
        for wrong in (b'"tea"', b"[1, 2]", b"", b'{"item": "tea", "quantity": "many"}'):
            failure = await failure_of(raw, "tinybus.c.orders", wrong)
            assert failure["class"] == "MessageValidationError", wrong
            assert failure["expected"] == "Order"
        # An event: the typed listener refuses it on bus.errors (the untyped ones hear it).
        typed: list[Order] = []

        def hear(order: Order) -> None:
            typed.append(order)

        await bus.on("typed", hear).wait_exported()
        await raw.publish("tinybus.e.typed", b'"tea"', headers={"Tb-Kind": "publish"})
        failure = await asyncio.wait_for(service.failures.get(), 5)
        assert isinstance(failure.exception, MessageValidationError)
        assert failure.address == "typed"
        assert typed == []
        await service.still_works(other)


async def test_an_oversized_body_is_refused_and_the_bus_keeps_running(
    connect: Connect, raw: Client, server: NatsServer
) -> None:
    async with connect() as bus, connect() as other:
        service = Service(bus)
        await service.export()
        # Just under the server's max_payload (1 MB): what the server lets through is read,
        # and validated like any other body.
        huge = json.dumps({"item": "x", "quantity": "9" * 1_000_000}).encode()
        assert len(huge) < raw.max_payload
        failure = await failure_of(raw, "tinybus.c.orders", huge)
        assert failure["class"] == "MessageValidationError"
        # An integer of a million digits is not read at all (Python's int limit).
        failure = await failure_of(raw, "tinybus.c.orders", b"9" * 1_000_000)
        assert "its body is not JSON we read (Exceeds the limit" in failure["message"]
        assert await service.reported(1)
        # What the server does not let through never reaches the bus.
        with pytest.raises(MaxPayloadError):
            await raw.publish("tinybus.c.orders", b"x" * (raw.max_payload + 1))
        await service.still_works(other)


async def test_subjects_that_do_not_unescape_are_refused(connect: Connect, raw: Client) -> None:
    async with connect() as bus, connect() as other:
        service = Service(bus)
        await service.export()
        for subject in ("tinybus.e.shop.~ZZ", "tinybus.e.shop.~FF", "tinybus.e.shop.a~"):
            await raw.publish(subject, b"1", headers={"Tb-Kind": "publish"})
        reported = await service.reported(3)
        assert all("is not" in text and "refused" in text for text in reported), reported
        assert "'~FF' is not UTF-8 once unescaped" in reported[1]
        # A codec this bus does not have: refused with its name.
        failure = await failure_of(raw, "tinybus.c.orders", b"1", **{"Tb-Codec": "nope"})
        assert "no codec named 'nope'" in failure["message"]
        assert await service.reported(1)
        await service.still_works(other)
