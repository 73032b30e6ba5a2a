from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tinybus.testing import FailureLog


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        default=False,
        help="run the stateful model test (tests/model/test_model.py) with 3000 examples, not 300",
    )
    parser.addoption(
        "--uvloop",
        action="store_true",
        default=False,
        help="run every test on uvloop's event loop (uv run --group uvloop pytest --uvloop)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--uvloop"):
        import uvloop  # the uvloop group

        # Every loop the tests make (pytest-asyncio's, asyncio.run's, new_event_loop()'s) is
        # uvloop's; those of tinybus.testing stay virtual-clock selector loops.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def on_uvloop(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Whether ``loop`` (the running one by default) is uvloop's. Its clock reads libuv's
    millisecond time, updated once per loop iteration: a handler that answers within the
    iteration its request was made in has taken no time by it, and two readings across a
    blocked iteration differ by whole milliseconds."""
    loop = loop or asyncio.get_running_loop()
    return type(loop).__module__.startswith("uvloop")


def pytest_report_header(config: pytest.Config) -> str:
    loop = "uvloop" if config.getoption("--uvloop") else "asyncio's default"
    return f"event loop: {loop}"


# The bus fixture is the test kit's (tinybus.testing): closed after each test, which fails
# when the bus reported a failure the test never looked at.
pytest_plugins = ("pytester",)


@pytest.fixture
def tinybus_options() -> dict[str, Any]:
    return {"default_timeout": 5.0, "close_timeout": 0.1}


@pytest.fixture
def failures(bus_failures: FailureLog) -> FailureLog:
    """Every record the bus puts on ``bus.errors`` during the test (the kit's log)."""
    return bus_failures


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
