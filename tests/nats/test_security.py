"""Allow-lists, credentials, and bytes from a raw NATS client that no TinyBus sender makes."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError

from tinybus import EventBus, EventBusError, HandlerFailure, HandlerNotFoundError
from tinybus.nats import NatsTransport

from .conftest import Connect, started
from .server import NatsServer


async def test_only_exported_registrations_are_offered(connect: Connect) -> None:
    async with (
        connect() as client,
        connect(transport_options={"exports": ["public.>"]}) as service,
    ):
        await service.consumer("public.time", lambda message: "noon").wait_exported()
        internal = service.consumer("internal.secrets", lambda message: "hidden")
        with pytest.raises(EventBusError, match="not offered to other processes"):
            await internal.wait_exported()
        assert await client.request("public.time", None) == "noon"
        with pytest.raises(HandlerNotFoundError):
            await client.request("internal.secrets", None)
        assert await service.request("internal.secrets", None) == "hidden"  # still local


async def test_only_imported_addresses_are_accepted(connect: Connect) -> None:
    async with (
        connect() as client,
        connect(transport_options={"imports": ["orders.*"]}) as service,
    ):
        refused: asyncio.Queue[HandlerFailure] = asyncio.Queue()
        service.errors.subscribe(refused.put_nowait)
        heard: asyncio.Queue[object] = asyncio.Queue()
        await service.consumer("orders.new", lambda message: "taken").wait_exported()
        await service.consumer("admin.reset", lambda message: "reset!").wait_exported()
        await service.on(">", heard.put_nowait).wait_exported()
        assert await client.request("orders.new", 1) == "taken"
        with pytest.raises(HandlerNotFoundError, match="imports"):
            await client.request("admin.reset", None)
        await client.publish("admin.news", "hello")
        await client.publish("orders.shipped", "accepted")
        async with asyncio.timeout(5):
            first = await refused.get()
            second = await refused.get()
            assert await heard.get() == "accepted"  # (published after the refused one)
        assert "admin.reset" in str(first.exception)
        assert "admin.news" in str(second.exception)
        assert heard.empty()


async def test_credentials_pass_through_to_the_connection() -> None:
    server = await started("--auth", "s3cret")
    try:
        bus = EventBus(transport=NatsTransport(server.url, token="s3cret"), close_timeout=0.1)
        async with bus:
            bus.consumer("echo", lambda message: message.body)
            assert await bus.request("echo", 1) == 1  # (local: the connection is what counts)
        refused = EventBus(
            transport=NatsTransport(server.url, token="wrong", allow_reconnect=False)
        )
        with pytest.raises(NatsError, match="Authorization Violation"):
            await refused.start()
    finally:
        await server.stop()


async def raw_client(server: NatsServer) -> Client:
    return await nats.connect(server.url)


async def test_malformed_messages_are_refused_and_the_bus_keeps_running(
    connect: Connect, server: NatsServer
) -> None:
    async with connect() as service:
        failures: asyncio.Queue[HandlerFailure] = asyncio.Queue()
        service.errors.subscribe(failures.put_nowait)
        called: list[object] = []
        await service.consumer("jobs", called.append).wait_exported()
        await service.on("news", called.append).wait_exported()
        raw = await raw_client(server)
        try:
            answers = [
                # no Tb-Kind at all
                await raw.request("tinybus.c.jobs", b"1", timeout=2),
                # a body that is not JSON
                await raw.request(
                    "tinybus.c.jobs", b"{not json", timeout=2, headers={"Tb-Kind": "request"}
                ),
                # headers that are not pairs
                await raw.request(
                    "tinybus.c.jobs",
                    b"1",
                    timeout=2,
                    headers={"Tb-Kind": "request", "Tb-Headers": '{"a": 1}'},
                ),
                # a timeout that is not a number
                await raw.request(
                    "tinybus.c.jobs",
                    b"1",
                    timeout=2,
                    headers={"Tb-Kind": "request", "Tb-Timeout": "soon"},
                ),
            ]
            await raw.publish("tinybus.e.news", b"\xff\xfe", headers={"Tb-Kind": "publish"})
            await raw.publish("tinybus.e.news", b"1", headers={"Tb-Kind": "request"})
            await raw.flush()
        finally:
            await raw.close()
        for answer in answers:
            assert answer.headers is not None
            assert answer.headers["Tb-Kind"] == "failure"
            assert "refused" in json.loads(answer.data)["message"]
        async with asyncio.timeout(5):
            reported = [await failures.get() for _ in range(6)]
        assert all("refused" in str(failure.exception) for failure in reported)
        assert called == []
        service.consumer("still.working", lambda message: "yes")
        assert await service.request("still.working", None) == "yes"
