"""TinyBus against the alternatives: every figure a ratio against baselines of the same run.

Run with ``uv run --group bench python benchmarks/run.py`` (about 8 minutes on two cores;
``--quick``: under a minute, with the memory soak and the scale curves scaled down). A full run
writes ``benchmarks/results/results.md`` and ``results.png``; ``--quick`` and ``--smoke`` write
to ``benchmarks/.scratch/results/`` (git-ignored) unless ``--out`` says where, so that they
never overwrite the committed results. It prints the tables too.

Method. The scenarios run in one process, each on a fresh event loop with every contender set
up side by side: a direct ``await handler(x)`` (the floor), the hand-written asyncio bus of
``handrolled.py``, TinyBus, and the peers (``contenders.py``). A contender is first warmed up
and calibrated, so that one measurement lasts about 0.5 s (``--quick``: 0.08 s); then each of
7 rounds (``--quick``: 3) measures every contender once, in alternating order (forward, then
backward), and the figure quoted is the median over the rounds of the per-round ratio to a
baseline. Publish scenarios count until every listener has handled every event (the
queue-based contenders publish them all, then wait until their consumers are done). Peers that
lack a scenario's feature are "n/a".

tinybus 0.2.1 cannot be imported next to this tinybus: it is measured in its own environment
and process, with its own direct await and hand-written bus measured the same way
(``legacy.py``). Then come memory (``memory.py``), import time (``startup.py``) and TinyBus's
cost against the size of what the bus holds (``scale.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import contenders as c
import legacy
import memory
import report
import scale
import startup
from common import Progress, results_dir
from harness import (
    Kind,
    latencies,
    measure_rounds,
    percentile,
    publish_run,
    request_run,
)

type Run = Callable[[int], Awaitable[None]]
type Build = Callable[[AsyncExitStack], Awaitable[Mapping[str, c.Call | c.Publisher]]]


@dataclass(frozen=True)
class Settings:
    mode: str
    rounds: int
    seconds: float  # target duration of one measurement
    in_flight: int
    patterns: int
    registrations: int  # registrations counted per contender (bytes and objects)
    pending: int
    soak_messages: int
    soak_timeouts: int
    startup_rounds: int
    collect: bool = True  # a full garbage collection before each measurement


MODES = {
    "smoke": Settings("smoke", 1, 0.0, 100, 20, 20, 20, 200, 100, 1, collect=False),
    "quick": Settings("quick", 3, 0.08, 1000, 1000, 2000, 1000, 100_000, 10_000, 3),
    "full": Settings("full", 7, 0.5, 1000, 1000, 5000, 1000, 1_000_000, 100_000, 15),
}
SOAK_STEPS = 10


@dataclass(frozen=True)
class Scenario:
    title: str
    kind: Kind
    build: Build
    na: Mapping[str, str]
    latency: bool = False
    listeners: int = 1
    filtered: bool = False
    # What tinybus 0.2.1's process measures for this row (legacy_worker.py), if anything.
    legacy: Mapping[str, Any] | None = None


@dataclass
class Result:
    scenario: Scenario
    unit: str
    rates: dict[str, list[float]] = field(default_factory=dict)  # per round, items/s
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # p50, p99 in s
    # tinybus 0.2.1's process: its rates per round, and its baselines' (same rounds).
    legacy: dict[str, list[float]] = field(default_factory=dict)


NO_REPLIES = {
    c.PYEE: c.NO_REPLIES,
    c.AIOPUBSUB: c.NO_REPLIES,
    c.RX: c.NO_REPLIES,
}
REQUESTS_NA = {**NO_REPLIES, c.TINYBUS_INLINE: c.INLINE_ELSEWHERE}
LEGACY_ONLY = "not measured: its process runs (1), (2) and (4) to 1 and 100 listeners"
BUBUS_CAPACITY = (
    "refuses a dispatch while 100 events are pending ('EventBus at capacity'); "
    "max_history_size=None lifts that but rescans its whole history per event (about 30 s "
    "for one batch, slower with each)"
)
BUBUS_NOT_INLINE = "its handlers never run in the requester's task: see (1) and (2)"


def request_legacy(reply: str) -> dict[str, Any]:
    return {"key": reply, "kind": "request", "reply": reply}


def scenarios(in_flight: int = 1000, patterns: int = 1000) -> list[Scenario]:
    """The scenarios; the smoke test shrinks the batch in flight and the unrelated patterns."""
    inline_na = {**NO_REPLIES, c.BUBUS: BUBUS_NOT_INLINE}
    made = [
        Scenario(
            "(1) request, handler returns at once",
            "sequential",
            partial(c.request_contenders, reply="returns"),
            REQUESTS_NA,
            latency=True,
            legacy=request_legacy("returns"),
        ),
        Scenario(
            "(1i) request, handler returns at once, consumer inline=True",
            "sequential",
            partial(c.request_contenders, reply="returns", inline=True),
            inline_na,
            legacy=request_legacy("returns"),
        ),
        Scenario(
            "(2) request, handler awaits once",
            "sequential",
            partial(c.request_contenders, reply="awaits"),
            REQUESTS_NA,
            legacy=request_legacy("awaits"),
        ),
        Scenario(
            "(2i) request, handler awaits once, consumer inline=True",
            "sequential",
            partial(c.request_contenders, reply="awaits", inline=True),
            inline_na,
            legacy=request_legacy("awaits"),
        ),
        Scenario(
            f"(3) {in_flight:,} requests in flight",
            "in_flight",
            partial(c.request_contenders, reply="returns"),
            {**REQUESTS_NA, c.BUBUS: BUBUS_CAPACITY, c.TINYBUS021: LEGACY_ONLY},
            latency=True,
        ),
    ]
    for listeners in (1, 10, 100):
        measured = listeners in (1, 100)
        made.append(
            Scenario(
                f"(4) publish to {listeners} listener{'s' if listeners > 1 else ''}",
                "publish",
                partial(c.publish_contenders, listeners=listeners),
                {} if measured else {c.TINYBUS021: LEGACY_ONLY},
                listeners=listeners,
                legacy=(
                    {"key": f"publish {listeners}", "kind": "publish", "listeners": listeners}
                    if measured
                    else None
                ),
            )
        )
        if listeners == 1:
            made.append(
                Scenario(
                    "(4o) publish to 1 listener with one observe() subscriber",
                    "publish",
                    partial(c.publish_contenders, observed=True),
                    {name: c.NO_OBSERVE for name in c.CONTENDERS if name not in c.OBSERVING},
                )
            )
    made += [
        Scenario(
            "(5) publish through a filter (half pass)",
            "publish",
            partial(c.publish_contenders, filtered=True),
            {name: c.NO_OPERATORS for name in c.CONTENDERS if name not in c.FILTERING},
            filtered=True,
        ),
        Scenario(
            f"(6) publish, {patterns:,} unrelated patterns registered",
            "publish",
            partial(c.publish_contenders, patterns=patterns),
            {name: c.NO_PATTERNS for name in c.CONTENDERS if name not in c.PATTERNS}
            | {c.BUBUS: "no patterns: only '*', every event"},
        ),
    ]
    bodies: tuple[tuple[c.Body, str], ...] = (
        ("plain", "(7) request, Order body, not validated"),
        ("model", "(7) request, validated Order, given an Order"),
        ("dict", "(7) request, validated Order, given a dict"),
    )
    for body, title in bodies:
        na = {**REQUESTS_NA, c.TINYBUS021: LEGACY_ONLY}
        if body != "plain":
            na |= {c.BLINKER: c.NO_VALIDATION, c.TINYBUS021: c.NO_VALIDATION}
        made.append(Scenario(title, "sequential", partial(c.validation_contenders, body=body), na))
    return made


# -- measuring -------------------------------------------------------------------------------


def make_run(entry: c.Call | c.Publisher, scenario: Scenario, in_flight: int) -> Run:
    if isinstance(entry, c.Publisher):
        return publish_run(entry, scenario.listeners, scenario.filtered)
    return request_run(entry, scenario.kind, in_flight)


async def measure(scenario: Scenario, settings: Settings, progress: Progress) -> Result:
    unit = "publishes/s" if scenario.kind == "publish" else "requests/s"
    result = Result(scenario, unit)
    per_op = settings.in_flight if scenario.kind == "in_flight" else 1
    async with AsyncExitStack() as stack:
        built = await scenario.build(stack)
        # What the setup made is frozen out of the collector's sight, so that the collections
        # before each measurement are cheap; the measurements' own garbage is collected.
        gc.collect()
        gc.freeze()
        stack.callback(gc.unfreeze)
        entries = {name: entry for name, entry in built.items() if name not in scenario.na}
        runs = {
            name: make_run(entry, scenario, settings.in_flight) for name, entry in entries.items()
        }
        result.rates, counts = await measure_rounds(
            runs,
            settings.rounds,
            settings.seconds,
            settings.collect,
            per_op,
            progress.step,
            scenario.title,
        )
        if scenario.latency:
            names = list(runs)
            samples: dict[str, list[float]] = {name: [] for name in names}
            for round_number in range(settings.rounds):
                for name in names if round_number % 2 == 0 else reversed(names):
                    progress.step(f"{scenario.title}: latency {name}")
                    entry = entries[name]
                    assert not isinstance(entry, c.Publisher)
                    if settings.collect:
                        gc.collect()
                    samples[name] += await latencies(
                        entry, scenario.kind, counts[name], settings.in_flight
                    )
            for name, values in samples.items():
                values.sort()
                result.latency[name] = (percentile(values, 0.5), percentile(values, 0.99))
    return result


def legacy_scenarios(chosen: list[Scenario]) -> list[dict[str, Any]]:
    """What tinybus 0.2.1's process measures: each key once, under the first row's title."""
    found: dict[str, dict[str, Any]] = {}
    for scenario in chosen:
        if scenario.legacy is not None and scenario.legacy["key"] not in found:
            found[scenario.legacy["key"]] = {**scenario.legacy, "title": scenario.title}
    return list(found.values())


def measure_legacy(
    chosen: list[Scenario],
    results: list[Result],
    settings: Settings,
    step: Callable[[str], None],
    offline: bool,
) -> legacy.Legacy:
    measured = legacy.measure(
        legacy_scenarios(chosen),
        {
            "rounds": settings.rounds,
            "seconds": settings.seconds,
            "collect": settings.collect,
            "registrations": settings.registrations,
            "pending": settings.pending,
        },
        step,
        offline=offline,
    )
    if measured.available:
        for result in results:
            if result.scenario.legacy is not None:
                result.legacy = measured.rates[result.scenario.legacy["key"]]
    return measured


def total_steps(chosen: list[Scenario], settings: Settings, with_legacy: bool) -> int:
    total = 0
    for scenario in chosen:
        contenders = (
            len(c.CONTENDERS)
            - len(c.ELSEWHERE)
            - len([name for name in scenario.na if name not in c.ELSEWHERE])
        )
        total += contenders * (1 + settings.rounds * (2 if scenario.latency else 1))
    if with_legacy:
        total += 1 + legacy.worker_steps(len(legacy_scenarios(chosen)), 3, settings.rounds)
    # Memory: registrations (every contender but TinyBus inline and 0.2.1), pending requests,
    # soak warm-up, soak steps and timeouts; start-up; scale.
    total += len(c.CONTENDERS) - 2 + 6 + 1 + SOAK_STEPS + 1
    return total + settings.startup_rounds + scale.SIZES[settings.mode].steps()


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> report.Report:
    parser = argparse.ArgumentParser(
        description="TinyBus against pyee, blinker, bubus, aiopubsub, reactivex and 0.2.1."
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="a run of under a minute")
    group.add_argument("--smoke", action="store_true", help="one tiny pass, for the tests")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where results go (default: benchmarks/results for a full run, "
        "benchmarks/.scratch/results otherwise)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no tables")
    parser.add_argument(
        "--no-021", action="store_true", help="leave out tinybus 0.2.1 (its own environment)"
    )
    arguments = parser.parse_args(argv)
    settings = MODES["smoke" if arguments.smoke else "quick" if arguments.quick else "full"]
    out = results_dir(arguments.out, full=settings.mode == "full")

    chosen = scenarios(settings.in_flight, settings.patterns)
    with_legacy = not arguments.no_021
    progress = Progress(total_steps(chosen, settings, with_legacy), enabled=not arguments.quiet)
    started = time.perf_counter()
    try:
        results = [asyncio.run(measure(scenario, settings, progress)) for scenario in chosen]
        if with_legacy:
            # The smoke test never reaches the network: uv's cache only.
            measured = measure_legacy(
                chosen, results, settings, progress.step, offline=settings.mode == "smoke"
            )
        else:
            measured = legacy.Legacy(reason="left out (--no-021)")
        memory_figures = asyncio.run(
            memory.memory(settings.registrations, settings.pending, progress.step)
        )
        soak = asyncio.run(
            memory.soak(settings.soak_messages, settings.soak_timeouts, progress.step, SOAK_STEPS)
        )
        imports = startup.startup(
            settings.startup_rounds, measured.interpreter or None, progress.step
        )
        curves = asyncio.run(scale.scale(scale.SIZES[settings.mode], progress.step))
    finally:
        progress.close()
    outcome = report.Report(
        settings.mode,
        settings.rounds,
        settings.seconds,
        results,
        memory_figures,
        soak,
        measured,
        imports,
        curves,
        time.perf_counter() - started,
    )
    markdown = outcome.markdown()
    report.write(out / "results.md", markdown.encode())
    report.chart(outcome, out / "results.png")
    if not arguments.quiet:
        print(markdown)
    return outcome


if __name__ == "__main__":
    main()
