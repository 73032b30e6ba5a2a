"""The tables (Markdown) and the chart (PNG) of a run of ``run.py``."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import contenders as c
from memory import FLAT_OBJECTS, FLAT_RESIDENT, SLOW, TIMEOUT, TINYBUS_ONE_AT_A_TIME, Soak

if TYPE_CHECKING:
    from run import Result

PACKAGES = ("tinybus", "pyee", "blinker", "bubus", "aiopubsub", "reactivex", "pydantic")
NA = "n/a"
MIB = 1024 * 1024

CONTENDER_NOTES = {
    c.DIRECT: "`await handler(x)`, no bus at all: the floor. Publishing to n listeners awaits "
    "each in turn; with a filter, the test is written inline; with validation, the handler is "
    "given `Order.model_validate(body)`.",
    c.HANDROLLED: "`benchmarks/handrolled.py`: an `asyncio.Queue` per listener and per consumer, "
    "each consumed by a task; a request waits on a future kept in a dict, with "
    "`asyncio.timeout` armed. A publish returns at once; the run ends when `queue.join()` says "
    "every listener is done. Its filter is an `if` in the listener; it has no patterns, so in "
    "(6) it publishes to its one listener, as in (4).",
    c.TINYBUS: "`await bus.request(...)` (default 30 s timeout armed) to a consumer annotated "
    "`Message[int]`; `await bus.publish(...)`, which returns once every listener has finished; "
    "listeners annotated `body: int`; `pipe=[ops.filter(...)]`; patterns `other.{i}.*`.",
    c.TINYBUS_INLINE: "TinyBus with listeners registered `inline=True`: each listener's coroutine "
    "is awaited inside `await bus.publish(...)`, one after another, with no task of its own "
    '(README, "Inline handlers"). Requests are never inline.',
    c.PYEE: "`AsyncIOEventEmitter.emit` schedules each coroutine listener as a task and returns "
    "at once; the run ends with `await emitter.wait_for_complete()`.",
    c.BLINKER: "`await signal.send_async(body=x)` awaits each receiver in turn. It returns the "
    "receivers' return values, so a signal with one receiver serves as request/response "
    "(without a timeout).",
    c.BUBUS: "default `EventBus()`; `await bus.dispatch(Event(...))` per event (it refuses more "
    "than 100 pending events), `await bus.dispatch(Request(...)).event_result()` for a reply. "
    "Events are pydantic models; handlers run one event at a time, one handler after another. "
    "It formats its debug messages even when they are not logged, and they describe the bus by "
    "scanning its history (50 events): it slows down until the history is full, so a short "
    "run flatters it, most with many handlers.",
    c.AIOPUBSUB: "`Publisher.publish` puts the message in the queue of every subscribed "
    "`Subscriber`, whose `add_async_listener` task consumes it; aiopubsub cannot tell when "
    "that is done, so the run ends when the listeners have counted every event. Patterns: "
    "`Key('bench', 'other', i, '*')`.",
    c.RX: "a bare `reactivex.subject.Subject`: `subject.on_next(x)` pushes synchronously to "
    "observers, which are plain functions here (it cannot await a coroutine listener without "
    "a task per value, a workaround), so it measures Rx delivery with no await; "
    "`subject.pipe(ops.filter(...))` for the filter.",
}


def git_state() -> str:
    """Which tinybus was measured: the commit of the checkout it was imported from, and whether
    its tinybus/ had uncommitted changes."""
    import tinybus

    root = Path(tinybus.__file__).resolve().parent.parent

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "tinybus")
    except (OSError, subprocess.SubprocessError):
        return f"tinybus from {root}, not a git checkout"
    changes = ", with uncommitted changes in tinybus/" if dirty else ""
    return f"tinybus at commit {commit}{changes}"


def processor() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown processor"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def ratio(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    if value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.4f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    aligned = ["---"] + ["---:"] * (len(header) - 1)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(aligned) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


@dataclass
class Report:
    mode: str
    rounds: int
    seconds: float
    results: list[Result]
    registrations: dict[str, float]
    pending: dict[str, float]
    soak: Soak
    duration: float

    def ratios(self, result: Result, baseline: str) -> dict[str, float]:
        """contender -> median over rounds of its rate / the baseline's rate that round."""
        base = result.rates[baseline]
        return {
            name: statistics.median(
                rate / base_rate for rate, base_rate in zip(rates, base, strict=True)
            )
            for name, rates in result.rates.items()
        }

    def ratio_table(self, baseline: str) -> list[str]:
        rows: list[list[str]] = []
        for result in self.results:
            ratios = self.ratios(result, baseline)
            rows.append(
                [result.scenario.title]
                + [ratio(ratios[name]) if name in ratios else NA for name in c.CONTENDERS]
            )
        return table(["scenario", *c.CONTENDERS], rows)

    def rate_table(self) -> list[str]:
        rows: list[list[str]] = []
        for result in self.results:
            medians = {name: statistics.median(rates) for name, rates in result.rates.items()}
            rows.append(
                [f"{result.scenario.title} ({result.unit})"]
                + [f"{medians[name]:,.0f}" if name in medians else NA for name in c.CONTENDERS]
            )
        return table(["scenario", *c.CONTENDERS], rows)

    def latency_table(self) -> list[str]:
        names = [name for name in c.CONTENDERS if any(name in r.latency for r in self.results)]
        rows: list[list[str]] = []
        for result in self.results:
            if not result.latency:
                continue
            for index, label in enumerate(("p50", "p99")):
                rows.append(
                    [f"{result.scenario.title}, {label}"]
                    + [
                        f"{result.latency[name][index] * 1e6:,.1f}"
                        if name in result.latency
                        else NA
                        for name in names
                    ]
                )
        return table(["scenario (µs)", *names], rows)

    def memory_table(self) -> list[str]:
        names = [*c.CONTENDERS]
        beyond = {name: bytes_ - self.pending[c.DIRECT] for name, bytes_ in self.pending.items()}

        def row(label: str, measured: dict[str, float]) -> list[str]:
            return [label] + [
                f"{measured[name]:,.0f}" if name in measured else NA for name in names
            ]

        # Handlers one at a time: the hand-written bus's consumer always works that way.
        one_at_a_time = {
            c.HANDROLLED: beyond[c.HANDROLLED],
            c.TINYBUS: beyond[TINYBUS_ONE_AT_A_TIME],
        }
        rows = [
            row("bytes per registration", self.registrations),
            row("bytes per pending request", self.pending),
            row("bytes per pending request, beyond a direct await's", beyond),
            row("the same, handlers one at a time (TinyBus: `max_concurrency=1`)", one_at_a_time),
        ]
        return table(["memory (tracemalloc)", *names], rows)

    def soak_lines(self) -> list[str]:
        soak = self.soak
        stages = (
            ("before (after a warm-up)", "before"),
            (f"after {soak.messages:,} messages", "messages"),
            (f"after {soak.timeouts:,} timed-out requests", "after"),
        )
        rows = [
            [label, f"{soak.resident[key] / MIB:,.2f}", f"{soak.objects[key]:,}"]
            for label, key in stages
        ]
        scaled = (
            ""
            if soak.messages >= 1_000_000
            else " (scaled down from the full run's 1,000,000 messages and 100,000 timed-out "
            "requests)"
        )
        verdict = "flat" if soak.flat else "NOT flat"
        return [
            f"TinyBus, one bus: {soak.messages:,} messages (half requests, half publishes to an "
            f"async listener, in turn), then {soak.timeouts:,} requests that time out after "
            f"{TIMEOUT * 1000:g} ms ({soak.batch:,} at a time) while their consumer takes "
            f"{SLOW * 1000:g} ms{scaled}.",
            "",
            *table(["stage", "resident (MiB)", "live objects (gc)"], rows),
            "",
            f"Resident memory grew by {soak.growth / MIB:+.2f} MiB "
            f"({soak.growth / (soak.messages + soak.timeouts):+.1f} bytes per message) and live "
            f"objects by {soak.object_growth:+,}: **{verdict}** (flat: within "
            f"{FLAT_RESIDENT / MIB:g} MiB and {FLAT_OBJECTS:,} objects of the start).",
        ]

    def notes(self) -> list[str]:
        reasons: dict[tuple[str, str], list[str]] = {}
        for result in self.results:
            for name, reason in result.scenario.na.items():
                reasons.setdefault((name, reason), []).append(result.scenario.title.split()[0])
        lines = ["What each contender does:", ""]
        lines += [f"- **{name}**: {note}" for name, note in CONTENDER_NOTES.items()]
        lines += ["", "Not applicable (n/a), and why:", ""]
        lines += [
            f"- {name} in {', '.join(dict.fromkeys(where))}: {reason}."
            for (name, reason), where in reasons.items()
        ]
        lines += [
            "- Pending requests: pyee, aiopubsub and the reactivex Subject have no replies; "
            "bubus is measured with 40 pending (it refuses more than 50 queued).",
        ]
        return lines

    def markdown(self) -> str:
        versions = ", ".join(f"{package} {version(package)}" for package in PACKAGES)
        machine = (
            f"{platform.machine()}, {os.cpu_count()} CPUs ({processor()}), "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{platform.system()} {platform.release()}"
        )
        lines = [
            "# TinyBus against the alternatives",
            "",
            f"- Machine: {machine}",
            f"- Versions: {versions}; {git_state()}",
            f"- Mode: {self.mode}: {self.rounds} round{'s' if self.rounds > 1 else ''} of about "
            f"{self.seconds:g} s per contender and scenario; the run took {self.duration:.0f} s",
            "",
            "Every figure is the median, over the rounds, of a ratio between two contenders "
            "measured in the same round; within a round the contenders take turns, in "
            "alternating order. Publish scenarios count until every listener has handled every "
            "event. Higher is faster.",
            "",
            "## Throughput against the hand-written asyncio bus (1.00)",
            "",
            *self.ratio_table(c.HANDROLLED),
            "",
            "## Throughput against a direct `await handler(x)` (1.00, the floor)",
            "",
            *self.ratio_table(c.DIRECT),
            "",
            "## Latency, from a request's call to its reply (µs)",
            "",
            "In (3), `asyncio.gather` starts the 1,000 requests together and each is timed from "
            "its own call: a bus that handles a request as soon as it is made answers it before "
            "the next is sent, one that queues it answers once its consumer gets to it.",
            "",
            *self.latency_table(),
            "",
            "## Memory",
            "",
            "Traced by tracemalloc, after a warm-up. A registration is one async listener on an "
            "address of its own (the tasks it starts included); a pending request is one waiting "
            "for a handler that waits on a gate, the requester's own task included, which is all "
            "a direct await's pending call is.",
            "",
            *self.memory_table(),
            "",
            *self.soak_lines(),
            "",
            "## Throughput in operations per second (medians; they drift, the ratios hold)",
            "",
            *self.rate_table(),
            "",
            "## Notes",
            "",
            *self.notes(),
            "",
        ]
        return "\n".join(lines)


def write(path: Path, data: bytes) -> None:
    """Write through a temporary file, so that an interrupted run leaves the old results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def chart(report: Report, path: Path) -> None:
    """Grouped horizontal bars: each contender's throughput against the hand-written bus,
    per scenario, on a log scale."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    results = report.results
    names = list(c.CONTENDERS)
    height = 0.8 / len(names)
    figure = Figure(figsize=(12, 1.0 + 0.62 * len(results) * len(names) / 5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    colors = [f"C{index}" for index in range(10)]
    for index, name in enumerate(names):
        ys: list[float] = []
        xs: list[float] = []
        for row, result in enumerate(results):
            ratios = report.ratios(result, c.HANDROLLED)
            if name in ratios:
                ys.append(row + (index - (len(names) - 1) / 2) * height)
                xs.append(ratios[name])
        axes.barh(ys, xs, height=height, label=name, color=colors[index % len(colors)])
    axes.set_xscale("log")
    # Plain numbers (0.1, 1, 10) on the axis, rather than mathtext powers of ten.
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(results)), [result.scenario.title for result in results])
    axes.invert_yaxis()
    axes.set_xlabel("throughput / hand-written asyncio bus (log scale; higher is faster)")
    axes.grid(axis="x", which="both", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes.set_title(
        f"TinyBus and peers, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()} ({report.mode} run; n/a bars left out)"
    )
    inches = figure.get_size_inches()
    figure.subplots_adjust(  # fixed margins: tight_layout would draw the figure twice
        left=3.7 / inches[0],
        right=1 - 1.6 / inches[0],
        top=1 - 0.45 / inches[1],
        bottom=0.6 / inches[1],
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    write(path, buffer.getvalue())
