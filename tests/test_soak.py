"""The soak of benchmarks/soak.py, scaled down: the same ``soak()``, 20,000 publishes and 4,000
requests (after a warm-up of one window: 5,000 publishes, 1,000 requests) through one bus with
100 registrations. Every counter the script keeps must equal ``bus.stats()``, nothing may be
left in the bus, and memory must stay flat. It runs in the default environment: soak.py
imports none of the benchmark's peers."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCALE = 0.02
KIB = 1024
# Measured at this scale: tracemalloc +15-20 KiB, RSS +0-1.2 MiB, live objects +2. A leak of
# one 32-byte object per message (24,000 of them) would add 750 KiB to tracemalloc, and of
# 64 bytes per request 250 KiB; the RSS bound only guards against gross leaks.
TRACED_BOUND = 256 * KIB
RESIDENT_BOUND = 8 * 1024 * KIB
OBJECTS_BOUND = 100


@pytest.fixture(scope="module")
def soak() -> Iterator[Any]:
    """benchmarks/soak.py, imported as the script imports its siblings; forgotten afterwards."""
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("soak")
    for name in set(sys.modules) - before:
        module = getattr(sys.modules[name], "__file__", None) or ""
        if module.startswith(str(BENCHMARKS)):
            del sys.modules[name]


@pytest.fixture(scope="module")
def result(soak: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(120):
            return await soak.soak(
                round(soak.PUBLISHES * SCALE), round(soak.REQUESTS * SCALE), progress_lines=1
            )

    return asyncio.run(bounded())


def test_the_workload_is_what_the_soak_says(soak: Any, result: Any) -> None:
    outcomes = result.workload.outcomes
    assert (result.publishes, result.requests) == (20_000, 4_000)
    assert result.stats.subscriptions == soak.REGISTRATIONS == 100
    made = result.workload.requested
    assert made == 5_000  # the warm-up's 1,000 included
    assert (outcomes.replies, outcomes.timeouts, outcomes.cancelled, outcomes.failures) == (
        made * 15 // 20,
        made * 2 // 20,
        made * 2 // 20,
        made // 20,
    )
    assert outcomes.unexpected == []
    # Flow control dropped messages, a listener failed, and timed-out requests were skipped in
    # consumer_6_slow_limited's buffer: those paths were exercised. (Of the 50 requests a window
    # routes to it at once, at most four can start before their 5 ms timeout: it runs two at a
    # time, for 20 ms each.)
    assert result.workload.dropped.total() > 0
    assert result.workload.failed.total() > 0
    assert soak.skipped_requests(result.workload, result.routed) > 0


def test_requests_reconcile(result: Any) -> None:
    """Requesters' outcomes against each consumer's own counts and ``bus.stats()``."""
    assert result.problems["requests"] == []


def test_every_request_is_delivered_or_dropped(result: Any) -> None:
    """Per consumer, requests routed to it (round-robin) = delivered + dropped; a request that
    waited in its buffer until after its requester gave up is skipped, and counted as dropped."""
    assert result.problems["accounted"] == []
    handlers = {
        handler.handler: handler
        for address in result.stats.addresses.values()
        for handler in address.handlers
    }
    for name, routed in result.routed.items():
        assert handlers[name].delivered + handlers[name].dropped == routed
    assert sum(result.routed.values()) == result.stats.totals.requested


def test_listeners_reconcile(result: Any) -> None:
    """Publishes x listeners reached (from the bodies) = delivered + dropped, per listener."""
    assert result.problems["listeners"] == []


def test_totals_reconcile(result: Any) -> None:
    assert result.problems["totals"] == []
    totals = result.stats.totals
    workload = result.workload
    assert totals.delivered == sum(workload.calls.values())
    # Drops reported on bus.errors, and requests skipped in a buffer (not reported).
    skipped = result.routed["consumer_6_slow_limited"] - workload.calls["consumer_6_slow_limited"]
    assert totals.dropped == workload.dropped.total() + skipped


def test_nothing_is_left_behind(result: Any) -> None:
    assert result.problems["left_behind"] == []
    stats = result.stats
    assert (stats.pending_requests, stats.running_handlers, stats.scheduled_timers) == (0, 0, 0)
    assert stats.queued == 0


def test_memory_is_flat(result: Any) -> None:
    assert result.memory_problems(TRACED_BOUND, RESIDENT_BOUND, OBJECTS_BOUND) == []


def test_the_soak_imports_none_of_the_benchmarks_peers() -> None:
    peers = ("pyee", "blinker", "bubus", "aiopubsub", "matplotlib", "contenders", "run")
    script = (
        f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import soak; "
        f"print(sorted(name for name in {peers!r} if name in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"
