"""Registration options are checked at the call, each mistake with an error that names it."""

from __future__ import annotations

from typing import Any

import pytest
from reactivex import operators as ops

from tinybus import EventBus


@pytest.mark.parametrize(
    ("options", "error", "says"),
    [
        ({"max_concurency": 1}, TypeError, "unknown registration option"),
        ({"validate": "yes"}, TypeError, "validate must be True, False or None"),
        ({"pipe": ops.filter(bool)}, TypeError, "pipe must be a list"),
        ({"pipe": "filter"}, TypeError, "pipe must be a list"),
        ({"pipe": [ops.filter(bool), 3]}, TypeError, "pipe must hold reactivex operators"),
        ({"on_error": "ignore"}, ValueError, "on_error must be"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be an int >= 1"),
        ({"max_concurrency": 1.5}, ValueError, "max_concurrency must be an int >= 1"),
        ({"max_buffered": -1}, ValueError, "max_buffered must be an int >= 0"),
        ({"overflow": "drop"}, ValueError, "overflow must be one of"),
    ],
)
async def test_a_wrong_option_is_refused_and_registers_nothing(
    bus: EventBus, options: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        bus.on("evt", lambda body: None, **options)
    with pytest.raises(error, match=says):
        bus.consumer("svc", lambda message: None, **options)
    assert bus.get_listeners("evt") == []
    assert bus.get_consumers() == []


REFUSED = r"must be the last segment|concrete addresses"


@pytest.mark.parametrize("address", ["user.*", "user.>", "a.>.b"])
async def test_publishing_to_a_pattern_is_refused_whoever_listens(
    bus: EventBus, address: str
) -> None:
    """With no listener at all, with an exact one, and with pattern listeners."""
    with pytest.raises(ValueError, match=REFUSED):
        await bus.publish(address, 1)
    with pytest.raises(ValueError, match=REFUSED):
        bus.publish_nowait(address, 1)
    bus.on("user.>", lambda body: None)
    with pytest.raises(ValueError, match=REFUSED):
        await bus.publish(address, 1)


async def test_pause_after_unregister_does_nothing(bus: EventBus) -> None:
    heard: list[int] = []
    registration = bus.on("evt", heard.append)
    registration.unregister()
    registration.pause()
    assert not registration.is_paused
    await bus.publish("evt", 1)
    assert heard == []
    assert bus.stats().addresses == {}
