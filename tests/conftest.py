from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tinybus import EventBus, HandlerFailure


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        default=False,
        help="run the stateful model test (tests/test_model.py) with 3000 examples, not 300",
    )


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


class Gate:
    """Counts arrivals; ``wait()`` returns once ``expected`` have arrived, or fails after 5 s."""

    def __init__(self, expected: int = 1) -> None:
        self.expected = expected
        self.arrived = 0
        self._reached = asyncio.Event()

    def arrive(self, *_: object) -> None:
        self.arrived += 1
        if self.arrived >= self.expected:
            self._reached.set()

    def recorder[T](self, into: list[T]) -> Callable[[T], None]:
        """A callback that appends to ``into`` and counts as an arrival."""

        def record(item: T) -> None:
            into.append(item)
            self.arrive()

        return record

    async def wait(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            await self._reached.wait()
