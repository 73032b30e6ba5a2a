from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tinybus import EventBus, HandlerFailure


@pytest.fixture
async def bus() -> AsyncIterator[EventBus]:
    async with EventBus(default_timeout=5.0, close_timeout=0.1) as bus:
        yield bus


@pytest.fixture
def failures(bus: EventBus) -> list[HandlerFailure]:
    """Every record the bus puts on ``bus.errors`` during the test."""
    seen: list[HandlerFailure] = []
    bus.errors.subscribe(seen.append)
    return seen


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    """Wait, without a fixed sleep, until ``condition()`` is true; fail after ``timeout``."""
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)
