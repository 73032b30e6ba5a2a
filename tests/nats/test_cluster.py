"""Three NATS servers routed into one cluster, with buses connected to different servers:
requests and publishes cross the routes; a consumer that has just subscribed on one server
answers a request made through another at once (its ``wait_exported()`` and the
no-responders grace); a server killed leaves the buses on the others working, and a bus
that knew the other servers moves to one of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tinybus import EventBus, HandlerNotFoundError, HandlerTimeoutError, Message
from tinybus.nats import NatsTransport

from .conftest import binary_or_skip
from .server import NatsCluster


@pytest.fixture
async def cluster() -> AsyncIterator[NatsCluster]:
    nodes = NatsCluster(binary_or_skip(), 3)
    try:
        await nodes.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        await nodes.stop()
        pytest.skip(f"a nats-server cluster could not start: {exc}")
    try:
        yield nodes
    finally:
        await nodes.stop()


def on(servers: str | list[str], **options: Any) -> EventBus:
    transport = NatsTransport(servers, **options)
    return EventBus(transport=transport, default_timeout=5.0, close_timeout=0.5)


async def test_buses_on_different_servers_reach_each_other(cluster: NatsCluster) -> None:
    node0, node1, node2 = cluster.urls
    async with on(node0) as service, on(node1) as listener, on(node2) as client:
        heard: dict[str, list[object]] = {"service": [], "listener": []}
        await service.on("news", heard["service"].append).wait_exported()
        await listener.on("news", heard["listener"].append).wait_exported()
        # Each consumer is asked through another server the moment its own server has it:
        # the other servers may not know it yet, and answer "no responders" for a while.
        for n in range(30):
            registration = service.consumer(f"fresh.{n}", lambda message: message.body)
            await registration.wait_exported()
            assert await client.request(f"fresh.{n}", n) == n
        await client.publish("news", "hello")
        # Two round trips through each listener's server: the publish reached both before.
        assert await client.request("fresh.0", "sync") == "sync"
        await listener.consumer("sync", lambda message: None).wait_exported()
        await client.request("sync", None)
    assert heard == {"service": ["hello"], "listener": ["hello"]}


async def test_no_consumer_anywhere_in_the_cluster_fails_at_once(cluster: NatsCluster) -> None:
    node0, node1, _ = cluster.urls
    async with on(node0) as client, on(node1):
        async with asyncio.timeout(2):  # the server's answer, not the request's timeout
            with pytest.raises(HandlerNotFoundError, match="no responders"):
                await client.request("nobody", None, timeout=30)


async def test_a_server_killed_leaves_the_buses_on_the_others_working(
    cluster: NatsCluster,
) -> None:
    node0, node1, node2 = cluster.urls

    def answer_as(name: str):
        def answer(message: Message[Any]) -> str:
            return name

        return answer

    # "moved" knows every server, its own first: it reconnects to another when its own dies.
    moved = on([node2, node0, node1], dont_randomize=True)
    async with on(node0) as staying, on(node1) as client, moved:
        await staying.consumer("work", answer_as("staying")).wait_exported()
        await moved.consumer("work", answer_as("moved")).wait_exported()
        heard: list[object] = []
        await staying.on("news", heard.append).wait_exported()

        cluster.nodes[2].kill()
        # Every request ends by its deadline (plus a margin) whatever the cluster is doing
        # (one routed to the dead server just before the others noticed is lost: it ends
        # with its timeout), the staying consumer answers, and "moved" is back through
        # another server.
        answered_by: list[str] = []
        while not {"staying", "moved"} <= set(answered_by):
            assert len(answered_by) < 200, answered_by
            async with asyncio.timeout(0.5 + 1):
                try:
                    answered_by.append(await client.request("work", None, timeout=0.5))
                except (HandlerTimeoutError, HandlerNotFoundError) as exc:
                    answered_by.append(type(exc).__name__)
        await client.publish("news", "after")
        assert await client.request("work", None) in ("staying", "moved")  # (a round trip)
        await staying.request("work", None)  # (and one through the listener's server)
    assert heard == ["after"]
