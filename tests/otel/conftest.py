"""Fixtures for tinybus.otel's tests. The SDK they record with (the ``otel`` group) is
imported only when a test asks for them; each test module skips without it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from tinybus import EventBus

if TYPE_CHECKING:
    from tests.otel.telemetry import Telemetry

NEEDS_OTEL = "needs the otel group: uv run --group otel pytest tests/otel"


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    from tests.otel.telemetry import Telemetry

    recorded = Telemetry()
    yield recorded
    recorded.shutdown()


@pytest.fixture
async def traced(telemetry: Telemetry) -> AsyncIterator[EventBus]:
    """A bus traced and measured into ``telemetry``."""
    instrumentation = telemetry.instrumentation()
    async with EventBus(
        default_timeout=5.0, close_timeout=0.1, instrumentation=instrumentation
    ) as bus:
        yield bus
    assert instrumentation.open == {}, "a sender's span was never ended"
