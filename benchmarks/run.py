"""TinyBus against the alternatives: every figure a ratio against baselines of the same run.

Run with ``uv run python benchmarks/run.py`` (about 5 minutes on two cores;
``--quick``: about 35 s, with the memory soak scaled down). It writes
``benchmarks/results/results.md`` and ``results.png`` and prints the tables.

Method. The scenarios run in one process, each on a fresh event loop with every contender set
up side by side: a direct ``await handler(x)`` (the floor), the hand-written asyncio bus of
``handrolled.py``, TinyBus, and the peers (``contenders.py``). A contender is first warmed up
and calibrated, so that one measurement lasts about 0.5 s (``--quick``: 0.08 s); then each of
7 rounds (``--quick``: 3) measures every contender once, in alternating order (forward, then
backward), and the figure quoted is the median over the rounds of the per-round ratio to a
baseline. Publish scenarios count until every listener has handled every event (the
queue-based contenders publish them all, then wait until their consumers are done). Peers that
lack a scenario's feature are "n/a".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import contenders as c
import memory
import report

type Kind = Literal["sequential", "in_flight", "publish"]
type Run = Callable[[int], Awaitable[None]]
type Build = Callable[[AsyncExitStack], Awaitable[Mapping[str, c.Call | c.Publisher]]]

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Settings:
    mode: str
    rounds: int
    seconds: float  # target duration of one measurement
    in_flight: int
    patterns: int
    registrations: int
    pending: int
    soak_messages: int
    soak_timeouts: int
    collect: bool = True  # a full garbage collection before each measurement


MODES = {
    "smoke": Settings("smoke", 1, 0.0, 100, 20, 20, 20, 200, 100, collect=False),
    "quick": Settings("quick", 3, 0.08, 1000, 1000, 1000, 1000, 100_000, 10_000),
    "full": Settings("full", 7, 0.5, 1000, 1000, 1000, 1000, 1_000_000, 100_000),
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


@dataclass
class Result:
    scenario: Scenario
    unit: str
    rates: dict[str, list[float]] = field(default_factory=dict)  # per round, items/s
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # p50, p99 in s


NO_REPLIES = {
    c.PYEE: c.NO_REPLIES,
    c.AIOPUBSUB: c.NO_REPLIES,
    c.RX: c.NO_REPLIES,
    c.TINYBUS_INLINE: c.NOT_INLINE,
}
BUBUS_CAPACITY = (
    "refuses a dispatch while 100 events are pending ('EventBus at capacity'); "
    "max_history_size=None lifts that but rescans its whole history per event (about 30 s "
    "for one batch, slower with each)"
)


def scenarios(in_flight: int = 1000, patterns: int = 1000) -> list[Scenario]:
    """The scenarios; the smoke test shrinks the batch in flight and the unrelated patterns."""
    made = [
        Scenario(
            "(1) request, handler returns at once",
            "sequential",
            partial(c.request_contenders, reply="returns"),
            NO_REPLIES,
            latency=True,
        ),
        Scenario(
            "(2) request, handler awaits once",
            "sequential",
            partial(c.request_contenders, reply="awaits"),
            NO_REPLIES,
        ),
        Scenario(
            f"(3) {in_flight:,} requests in flight",
            "in_flight",
            partial(c.request_contenders, reply="returns"),
            {**NO_REPLIES, c.BUBUS: BUBUS_CAPACITY},
            latency=True,
        ),
    ]
    for listeners in (1, 10, 100):
        made.append(
            Scenario(
                f"(4) publish to {listeners} listener{'s' if listeners > 1 else ''}",
                "publish",
                partial(c.publish_contenders, listeners=listeners),
                {},
                listeners=listeners,
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
    validation_na = {**NO_REPLIES, c.BLINKER: c.NO_VALIDATION}
    bodies: tuple[tuple[c.Body, str], ...] = (
        ("plain", "(7) request, Order body, not validated"),
        ("model", "(7) request, validated Order, given an Order"),
        ("dict", "(7) request, validated Order, given a dict"),
    )
    for body, title in bodies:
        made.append(
            Scenario(
                title, "sequential", partial(c.validation_contenders, body=body), validation_na
            )
        )
    return made


# -- measuring -------------------------------------------------------------------------------


def make_run(entry: c.Call | c.Publisher, scenario: Scenario, in_flight: int) -> Run:
    if isinstance(entry, c.Publisher):
        return publishing(entry, scenario)
    call = entry
    if scenario.kind == "in_flight":

        async def run_in_flight(count: int) -> None:
            for _ in range(count):
                await asyncio.gather(*[call(n) for n in range(1, in_flight + 1)])

        return run_in_flight

    async def run_sequential(count: int) -> None:
        for n in range(1, count + 1):
            await call(n)

    return run_sequential


def publishing(publisher: c.Publisher, scenario: Scenario) -> Run:
    publish, settle, tally = publisher.publish, publisher.settle, publisher.tally

    async def run(count: int) -> None:
        tally.arm((count + 1) // 2 if scenario.filtered else count * scenario.listeners)
        if publisher.is_async:
            for n in range(count):
                await publish(n)
        else:
            for n in range(count):
                publish(n)
        if settle is not None:
            await settle()
        if tally.count != tally.target:
            raise AssertionError(f"handled {tally.count} of {tally.target}")

    return run


async def timed(run: Run, count: int, collect: bool = True) -> float:
    if collect:
        gc.collect()
    started = time.perf_counter()
    await run(count)
    return time.perf_counter() - started


async def calibrate(run: Run, seconds: float, collect: bool) -> int:
    """Warm ``run`` up and return the count that makes one measurement last ``seconds``."""
    count = 1
    while True:
        elapsed = await timed(run, count, collect)
        if elapsed >= seconds / 4 or count >= 1 << 22:
            return max(1, round(count * seconds / max(elapsed, 1e-9)))
        count *= 2 if elapsed >= seconds / 40 else 8


async def latencies(call: c.Call, kind: Kind, count: int, in_flight: int) -> list[float]:
    """Each request's time from its call to its reply, over ``count`` requests (in flight:
    ``count`` batches of ``in_flight`` at once)."""
    clock = time.perf_counter
    samples: list[float] = []
    if kind == "sequential":
        for n in range(1, count + 1):
            started = clock()
            await call(n)
            samples.append(clock() - started)
        return samples

    async def one(n: int) -> None:
        started = clock()
        await call(n)
        samples.append(clock() - started)

    for _ in range(count):
        await asyncio.gather(*[one(n) for n in range(1, in_flight + 1)])
    return samples


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


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
        counts: dict[str, int] = {}
        for name, run in runs.items():
            progress.step(f"{scenario.title}: warm-up {name}")
            counts[name] = await calibrate(run, settings.seconds, settings.collect)
        names = list(runs)
        for round_number in range(settings.rounds):
            for name in names if round_number % 2 == 0 else reversed(names):
                progress.step(f"{scenario.title}: {name}")
                elapsed = await timed(runs[name], counts[name], settings.collect)
                result.rates.setdefault(name, []).append(counts[name] * per_op / elapsed)
        if scenario.latency:
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


# -- progress --------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr, redrawn in place on a terminal; elsewhere (or ``quiet``), one
    line per scenario, or nothing."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done = total, 0
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.started = time.perf_counter()
        self.section = ""

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        fraction = min(1.0, self.done / self.total)
        if self.tty:
            width = 28
            bar = "█" * round(fraction * width) + "·" * (width - round(fraction * width))
            columns = shutil.get_terminal_size().columns - 1
            line = f"{bar} {fraction:4.0%} {elapsed:5.1f}s  {label}"[:columns]
            sys.stderr.write("\r" + line + "\x1b[K")
            sys.stderr.flush()
        else:
            section = label.split(":")[0]
            if section != self.section:
                self.section = section
                print(f"[{fraction:4.0%} {elapsed:5.1f}s] {section}", file=sys.stderr)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def total_steps(chosen: list[Scenario], settings: Settings) -> int:
    total = 0
    for scenario in chosen:
        contenders = len(c.CONTENDERS) - len(scenario.na)
        total += contenders * (1 + settings.rounds * (2 if scenario.latency else 1))
    # Memory: registrations (every contender but TinyBus inline, whose are TinyBus's), pending
    # requests, soak warm-up, soak steps and timeouts.
    return total + len(c.CONTENDERS) - 1 + 6 + 1 + SOAK_STEPS + 1


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> report.Report:
    parser = argparse.ArgumentParser(
        description="TinyBus against pyee, blinker, bubus, aiopubsub and reactivex."
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="a run of under a minute")
    group.add_argument("--smoke", action="store_true", help="one tiny pass, for the tests")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no tables")
    arguments = parser.parse_args(argv)
    settings = MODES["smoke" if arguments.smoke else "quick" if arguments.quick else "full"]

    chosen = scenarios(settings.in_flight, settings.patterns)
    progress = Progress(total_steps(chosen, settings), enabled=not arguments.quiet)
    started = time.perf_counter()
    try:
        results = [asyncio.run(measure(scenario, settings, progress)) for scenario in chosen]
        registrations, pending = asyncio.run(
            memory.memory(settings.registrations, settings.pending, progress.step)
        )
        soak = asyncio.run(
            memory.soak(settings.soak_messages, settings.soak_timeouts, progress.step, SOAK_STEPS)
        )
    finally:
        progress.close()
    outcome = report.Report(
        settings.mode,
        settings.rounds,
        settings.seconds,
        results,
        registrations,
        pending,
        soak,
        time.perf_counter() - started,
    )
    markdown = outcome.markdown()
    report.write(arguments.out / "results.md", markdown.encode())
    report.chart(outcome, arguments.out / "results.png")
    if not arguments.quiet:
        print(markdown)
    return outcome


if __name__ == "__main__":
    main()
