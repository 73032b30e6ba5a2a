"""The server restarts while requests stream: every request ends by its own deadline plus a
small margin, whatever the connection is doing, and once the buses have reconnected their
consumers answer again. (Buses in this process, each with its own connection.)"""

from __future__ import annotations

import asyncio

from tinybus import BusClosedError, HandlerNotFoundError, HandlerTimeoutError, Message

from .conftest import Connect
from .server import NatsServer

TIMEOUT = 0.5
MARGIN = 0.5  # a loaded CI machine's scheduling, not the transport's: it adds no wait


async def test_a_server_restart_mid_stream_ends_every_request_by_its_deadline(
    connect: Connect, server: NatsServer
) -> None:
    fast = {"transport_options": {"reconnect_time_wait": 0.05}}
    async with connect(**fast) as requester, connect(**fast) as responder:

        def echo(message: Message[int]) -> int:
            return message.body

        await responder.consumer("echo", echo).wait_exported()
        outcomes: list[str] = []
        midstream = asyncio.Event()  # 50 answered: the stream runs
        restarted = asyncio.Event()
        answered_after = asyncio.Event()

        async def stream(lane: int) -> None:
            n = 0
            while not answered_after.is_set():
                n += 1
                async with asyncio.timeout(TIMEOUT + MARGIN):  # fails the test if it hangs
                    try:
                        assert await requester.request("echo", n, timeout=TIMEOUT) == n
                        outcomes.append("answered")
                        if outcomes.count("answered") >= 50:
                            midstream.set()
                        if restarted.is_set():
                            answered_after.set()
                    except (HandlerTimeoutError, HandlerNotFoundError, BusClosedError) as exc:
                        outcomes.append(type(exc).__name__)

        lanes = [asyncio.create_task(stream(lane)) for lane in range(10)]
        async with asyncio.timeout(10):
            await midstream.wait()
        await server.restart()
        restarted.set()
        async with asyncio.timeout(15):  # reconnection: a few reconnect_time_waits at most
            await asyncio.gather(*lanes)
        assert requester.stats().pending_requests == 0
    assert answered_after.is_set()
    # (BusClosedError: nats-py refused to take the request, its connection being down.)
    assert set(outcomes) <= {
        "answered",
        "HandlerTimeoutError",
        "HandlerNotFoundError",
        "BusClosedError",
    }, outcomes
