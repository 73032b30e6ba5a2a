"""Server restarts, outages, closing, and no-responders for a consumer that is on its way."""

from __future__ import annotations

import asyncio

import pytest

from tinybus import (
    BusClosedError,
    EventBus,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Message,
)

from .conftest import Connect
from .server import NatsServer


async def until_answered(requester: EventBus, address: str, deadline: float) -> object:
    """Request until a consumer answers (the connections come back after a restart at their
    own pace): each attempt bounded, the whole bounded by ``deadline`` seconds."""
    async with asyncio.timeout(deadline):
        while True:
            try:
                return await requester.request(address, None, timeout=0.5)
            except (HandlerNotFoundError, HandlerTimeoutError):
                await asyncio.sleep(0.05)  # (a retry's pace, not a synchronisation)


async def test_after_a_server_restart_the_buses_reconnect_and_resubscribe(
    connect: Connect, server: NatsServer
) -> None:
    async with connect() as requester, connect() as responder:
        await responder.consumer("ping", lambda message: "pong").wait_exported()
        assert await requester.request("ping", None) == "pong"
        await server.stop()
        # During the outage: a request still ends by its deadline, and a registration waits.
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(HandlerTimeoutError):
            await requester.request("ping", None, timeout=0.3)
        assert loop.time() - started < 0.3 + 0.2
        later = responder.consumer("made.during.outage", lambda message: "late but here")
        await server.start()
        async with asyncio.timeout(10):
            await later.wait_exported()
        assert await until_answered(requester, "ping", 10) == "pong"
        assert await until_answered(requester, "made.during.outage", 10) == "late but here"


async def test_close_fails_pending_requests_with_bus_closed(connect: Connect) -> None:
    async with connect() as responder:
        started = asyncio.Event()

        async def hang(message: Message[None]) -> None:
            started.set()
            await asyncio.Event().wait()

        await responder.consumer("hang", hang).wait_exported()
        requester = connect()
        async with requester:
            pending = asyncio.ensure_future(requester.request("hang", None, timeout=30))
            async with asyncio.timeout(5):
                await started.wait()
        with pytest.raises(BusClosedError):
            await pending


async def test_a_responder_closing_answers_bus_closed_at_once(connect: Connect) -> None:
    async with connect() as requester:
        responder = connect(close_timeout=5)
        started = asyncio.Event()
        release = asyncio.Event()

        async def slow(message: Message[None]) -> str:
            started.set()
            await release.wait()
            return "finished"

        async with responder:
            await responder.consumer("slow", slow).wait_exported()
            first = asyncio.ensure_future(requester.request("slow", None, timeout=10))
            async with asyncio.timeout(5):
                await started.wait()
            closing = asyncio.ensure_future(responder.close())
            await asyncio.sleep(0)
            release.set()
            await closing
        # the handler that was running finished within close_timeout: its answer was sent
        assert await first == "finished"


async def test_no_responders_is_retried_within_the_grace_period(connect: Connect) -> None:
    async with (
        connect(transport_options={"no_responders_grace": 5.0}) as requester,
        connect() as responder,
    ):
        asking = asyncio.ensure_future(requester.request("late.consumer", 2, timeout=5))
        await asyncio.sleep(0.05)  # (the request meets "no responders" a few times first)
        assert not asking.done()
        await responder.consumer("late.consumer", lambda message: message.body * 3).wait_exported()
        async with asyncio.timeout(5):
            assert await asking == 6


async def test_a_closing_bus_withdraws_so_other_consumers_take_the_requests(
    connect: Connect,
) -> None:
    async with (
        connect(transport_options={"no_responders_grace": 0}) as requester,
        connect() as other,
    ):
        leaving = connect(close_timeout=10)
        started, release = asyncio.Event(), asyncio.Event()

        async def busy(message: Message[None]) -> str:
            started.set()
            await release.wait()
            return "leaving"

        await leaving.start()
        await leaving.consumer("work", busy).wait_exported()
        await leaving.consumer("only.leaving", lambda message: "here").wait_exported()
        running = asyncio.ensure_future(requester.request("work", None, timeout=10))
        async with asyncio.timeout(5):
            await started.wait()
        await other.consumer("work", lambda message: "other").wait_exported()
        closing = asyncio.ensure_future(leaving.close())
        # The server has the withdrawal once a request to what only the closing bus offered
        # meets "no responders" (its subscriptions end in the order they were made).
        async with asyncio.timeout(5):
            while True:
                try:
                    await requester.request("only.leaving", None)
                except BusClosedError:
                    continue  # (it reached the closing bus before the withdrawal)
                except HandlerNotFoundError:
                    break
        assert [await requester.request("work", None) for _ in range(10)] == ["other"] * 10
        release.set()
        await closing
        assert await running == "leaving"  # its handler finished within close_timeout
