"""The ``tinybus`` pytest plugin (registered through the ``pytest11`` entry point).

It only defines fixtures, so it changes nothing for a test that asks for none of them:

- ``bus``: an open ``EventBus`` (options from the ``tinybus_options`` fixture, which a
  conftest may override), closed after the test; the test then fails when the bus reported a
  failure on ``bus.errors`` that the test never looked at (``bus_failures``);
- ``bus_failures``: the ``FailureLog`` of the ``bus`` fixture;
- ``record``: ``record(address)`` makes a ``Recorder`` on the ``bus`` fixture, stopped after
  the test.

A conftest's own fixture of the same name wins over the plugin's. ``-p no:tinybus`` turns the
plugin off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from ..bus import EventBus
from .failures import FailureLog
from .recorder import Recorder

_LOG = pytest.StashKey[FailureLog]()


@pytest.fixture
def tinybus_options() -> dict[str, Any]:
    """The ``EventBus`` options of the ``bus`` fixture: override it in a conftest to change
    them. Short timeouts by default, so that a test that waits for nothing fails fast."""
    return {"default_timeout": 5.0, "close_timeout": 0.5}


async def _open_bus(
    request: pytest.FixtureRequest, tinybus_options: dict[str, Any]
) -> AsyncIterator[EventBus]:
    """An open ``EventBus``, closed after the test; the test fails if the bus reported a
    failure it never looked at (see ``bus_failures``)."""
    opened = EventBus(**tinybus_options)
    log = request.node.stash[_LOG] = FailureLog(opened)
    async with opened:
        yield opened
    log.stop()
    log.check()


def _needs_pytest_asyncio() -> EventBus:
    raise pytest.UsageError(
        "the tinybus bus fixture is async and needs pytest-asyncio: pip install pytest-asyncio "
        "(or build an EventBus in the test)"
    )


try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # the kit's bus needs an asyncio test runner
    bus: object = pytest.fixture(name="bus")(_needs_pytest_asyncio)
else:
    bus = async_fixture(name="bus")(_open_bus)


@pytest.fixture
def bus_failures(request: pytest.FixtureRequest, bus: EventBus) -> FailureLog:
    """What the ``bus`` fixture's bus reported on ``bus.errors``; reading it marks it as looked
    at (``bus_failures.expect(ValueError)``, ``assert bus_failures == []``...)."""
    return request.node.stash[_LOG]


@pytest.fixture
def record(bus: EventBus) -> Iterator[Callable[..., Recorder]]:
    """``record(address, kinds=...)``: a ``Recorder`` of what reaches ``address`` on the
    ``bus`` fixture, stopped after the test."""
    made: list[Recorder] = []

    def make(address: Any, **options: Any) -> Recorder:
        recorder = Recorder(bus, address, **options)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.stop()
