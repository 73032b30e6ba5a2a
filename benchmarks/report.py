"""The tables (Markdown) and the chart (PNG) of a run of ``run.py``."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import contenders as c
import scale
from common import (
    FLAT_OBJECTS,
    FLAT_RESIDENT,
    MIB,
    NA,
    git_state,
    machine,
    processor,
    ratio,
    table,
    version,
    write,
)
from legacy import Legacy
from memory import SLOW, TIMEOUT, TINYBUS_ONE_AT_A_TIME, Memory, Soak
from startup import LEGACY, MODULES, Startup

if TYPE_CHECKING:
    from run import Result

# Re-exported: what other scripts took from here before common.py held it.
__all__ = ["Report", "chart", "git_state", "processor", "ratio", "table", "version", "write"]

PACKAGES = ("tinybus", "pyee", "blinker", "bubus", "aiopubsub", "reactivex", "pydantic")

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
    '(README, "Inline handlers"). In (1i) and (2i), a consumer registered `inline=True`, which '
    "runs in the requester's task: `await bus.request(...)` awaits the handler's coroutine "
    "itself, under the request's timeout.",
    c.TINYBUS021: "the earlier tinybus, 0.2.1 from PyPI, in an environment of its own "
    "(`benchmarks/.scratch/tinybus-0.2.1`, made with `uv venv` and `uv pip install`) and a "
    "process of its own (`legacy_worker.py`), since it is the same package as this tinybus. "
    "`await bus.request(address, body)` to a consumer taking a pydantic `Message` "
    "(`message.body`), which awaits `asyncio.wait_for(handler(message), timeout)`: on Python "
    "3.12 that awaits the handler in the requester's task, so its (1i) and (2i) are the same "
    "measurement as its (1) and (2); `await bus.publish(event, body)`, which awaits every "
    "listener with `asyncio.gather` (a task each). That process measures its own direct await "
    "and hand-written bus with the same code (`harness.py`), so its column is, like every "
    "other, a ratio to a baseline measured in the same rounds of the same process (its rates "
    "in the last table are its process's). TinyBus against 0.2.1 bridges the two processes: "
    "(TinyBus / baseline here) / (0.2.1 / baseline there).",
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


@dataclass
class Report:
    mode: str
    rounds: int
    seconds: float
    results: list[Result]
    memory: Memory
    soak: Soak
    legacy: Legacy
    startup: Startup
    curves: list[scale.Curve]
    duration: float

    # -- ratios --------------------------------------------------------------------------------

    def ratios(self, result: Result, baseline: str) -> dict[str, float]:
        """contender -> median over rounds of its rate / the baseline's rate that round (0.2.1:
        against the baseline of its own process, same rounds)."""
        found = median_ratios(result.rates, baseline)
        if result.legacy:
            found[c.TINYBUS021] = median_ratios(result.legacy, baseline)[c.TINYBUS021]
        return found

    def by_title(self, title: str) -> Result | None:
        return next((r for r in self.results if r.scenario.title == title), None)

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
            rates = {**result.rates}
            if result.legacy:
                rates[c.TINYBUS021] = result.legacy[c.TINYBUS021]
            medians = {name: statistics.median(values) for name, values in rates.items()}
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

    # -- TinyBus against 0.2.1, and an observed address ----------------------------------------

    def legacy_table(self) -> list[str]:
        """Per row 0.2.1 ran: TinyBus's ratio to each baseline here, 0.2.1's there, and their
        quotient. In (1i) and (2i), TinyBus is the inline consumer; publishing, TinyBus's
        listeners run in tasks, and inline (TinyBus inline) on a row of their own."""
        header = [
            "scenario",
            "TinyBus / direct await (this process)",
            "0.2.1 / direct await (its process)",
            "**TinyBus / 0.2.1**, through the direct await",
            "TinyBus / 0.2.1, through the hand-written bus",
        ]
        rows: list[list[str]] = []
        for result in self.results:
            if result.scenario.legacy is None:
                continue
            if result.scenario.kind == "publish":
                ours = [c.TINYBUS, c.TINYBUS_INLINE]  # listeners in tasks, and inline
            else:  # (1i) and (2i) have the inline consumer, (1) and (2) the other
                ours = [c.TINYBUS_INLINE if c.TINYBUS_INLINE in result.rates else c.TINYBUS]
            direct = self.ratios(result, c.DIRECT)
            handrolled = self.ratios(result, c.HANDROLLED)
            for name in ours:
                label = result.scenario.title + (f" ({name})" if name != c.TINYBUS else "")
                if c.TINYBUS021 not in direct or name not in direct:
                    rows.append([label, *[NA] * 4])
                    continue
                rows.append(
                    [
                        label,
                        ratio(direct[name]),
                        ratio(direct[c.TINYBUS021]),
                        f"**{ratio(direct[name] / direct[c.TINYBUS021])}**",
                        ratio(handrolled[name] / handrolled[c.TINYBUS021]),
                    ]
                )
        return table(header, rows)

    def observed_table(self) -> list[str]:
        """TinyBus (and TinyBus inline) publishing to one listener with an ``observe()``
        subscriber, against the same publish without it: the quotient of their ratios to each
        baseline, from rows (4o) and (4)."""
        observed = next((r for r in self.results if r.scenario.title.startswith("(4o)")), None)
        plain = self.by_title("(4) publish to 1 listener")
        header = [
            "contender",
            "(4) / direct await",
            "(4o) / direct await",
            "**observed / not**, through the direct await",
            "observed / not, through the hand-written bus",
        ]
        rows: list[list[str]] = []
        if observed is None or plain is None:
            return table(header, rows)
        for name in (c.TINYBUS, c.TINYBUS_INLINE):
            without, with_ = self.ratios(plain, c.DIRECT), self.ratios(observed, c.DIRECT)
            hand_without = self.ratios(plain, c.HANDROLLED)
            hand_with = self.ratios(observed, c.HANDROLLED)
            rows.append(
                [
                    name,
                    ratio(without[name]),
                    ratio(with_[name]),
                    f"**{ratio(with_[name] / without[name])}**",
                    ratio(hand_with[name] / hand_without[name]),
                ]
            )
        return table(header, rows)

    # -- memory --------------------------------------------------------------------------------

    def memory_table(self) -> list[str]:
        names = [*c.CONTENDERS]
        figures = self.memory
        registrations = {**figures.registrations}
        objects = {**figures.objects}
        pending = {**figures.pending}
        beyond = {name: bytes_ - pending[c.DIRECT] for name, bytes_ in pending.items()}
        legacy = self.legacy.memory
        if legacy:
            registrations[c.TINYBUS021] = legacy["registration"][c.TINYBUS021]
            objects[c.TINYBUS021] = legacy["objects"][c.TINYBUS021]
            pending[c.TINYBUS021] = legacy["pending"][c.TINYBUS021]
            beyond[c.TINYBUS021] = legacy["pending"][c.TINYBUS021] - legacy["pending"][c.DIRECT]

        def row(label: str, measured: Mapping[str, float], digits: int = 0) -> list[str]:
            return [label] + [
                f"{measured[name]:,.{digits}f}" if name in measured else NA for name in names
            ]

        # Handlers one at a time: the hand-written bus's consumer always works that way.
        one_at_a_time = {
            c.HANDROLLED: beyond[c.HANDROLLED],
            c.TINYBUS: beyond[TINYBUS_ONE_AT_A_TIME],
        }
        rows = [
            row("bytes per registration", registrations),
            row("GC-tracked objects per address with one listener", objects, 1),
            row("bytes per pending request", pending),
            row("bytes per pending request, beyond a direct await's", beyond),
            row("the same, handlers one at a time (TinyBus: `max_concurrency=1`)", one_at_a_time),
        ]
        return table(["memory", *names], rows)

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

    # -- start-up ------------------------------------------------------------------------------

    def startup_lines(self) -> list[str]:
        imports = self.startup
        added = imports.added
        ours = added.get("tinybus")
        rows: list[list[str]] = []
        names = ["tinybus", LEGACY, *(m for m in MODULES if m != "tinybus")]
        for name in names:
            if name not in added:
                why = imports.reason.get(name) or (
                    self.legacy.reason if name == LEGACY else "not measured"
                )
                rows.append([f"`{name}`" if name != LEGACY else name, NA, f"{NA}: {why}"])
                continue
            versus = ratio(ours / added[name]) if ours is not None and added[name] > 0 else NA
            label = f"`{name}`" if name != LEGACY else f"{name} (its environment)"
            rows.append([label, f"{added[name] * 1000:,.1f}", versus])
        base = imports.baseline
        legacy_base = (
            f"; in 0.2.1's environment, {base[LEGACY] * 1000:,.1f} ms" if LEGACY in base else ""
        )
        return [
            f'What `import X` adds to `python -c "import asyncio"`: the minimum over '
            f"{imports.rounds} fresh interpreters each (`import asyncio`: before each of the "
            f"others), commands taking turns in alternating order, after one run each that is "
            f"not counted (it writes bytecode). "
            f'`python -c "import asyncio"` itself took {base["this"] * 1000:,.1f} ms'
            f"{legacy_base}. tinybus imports reactivex and pydantic: their rows are part of its.",
            "",
            *table(["import", "ms beyond `import asyncio`", "tinybus / this"], rows),
        ]

    # -- notes ---------------------------------------------------------------------------------

    def notes(self) -> list[str]:
        groups: dict[tuple[str, str], list[str]] = {}
        for result in self.results:
            title = result.scenario.title
            for name, reason in result.scenario.na.items():
                groups.setdefault((name, reason), []).append(title)
            if result.scenario.legacy is not None and not self.legacy.available:
                groups.setdefault((c.TINYBUS021, self.legacy.reason), []).append(title)
        # Rows are named by their number, or by their title where rows share a number and the
        # reason is not given for all of them.
        shared: dict[str, list[str]] = {}
        for result in self.results:
            title = result.scenario.title
            shared.setdefault(title.split()[0], []).append(title)

        def where(titles: list[str]) -> str:
            named: list[str] = []
            for title in titles:
                number = title.split()[0]
                if all(other in titles for other in shared[number]):
                    named.append(number)
                else:
                    named.append(f'"{title}"')
            return ", ".join(dict.fromkeys(named))

        lines = ["What each contender does:", ""]
        lines += [f"- **{name}**: {note}" for name, note in CONTENDER_NOTES.items()]
        lines += [
            "",
            "(4o) registers, next to the listener of (4), `bus.observe(address).subscribe(lambda "
            'm: None)`; the baselines publish as in (4). "An observed address" divides '
            "TinyBus's ratio to a baseline in (4o) by the same in (4): rows measured at "
            "different times, bridged by the baselines, as 0.2.1 is.",
            "",
            "Not applicable (n/a), and why:",
            "",
        ]
        lines += [
            f"- {name} in {where(titles)}: {reason}." for (name, reason), titles in groups.items()
        ]
        lines += [
            "- Pending requests: pyee, aiopubsub and the reactivex Subject have no replies; "
            "bubus is measured with 40 pending (it refuses more than 50 queued).",
            "- GC-tracked objects: the growth of `len(gc.get_objects())` after `gc.collect()`, "
            "per registration, over the same registrations as the bytes (one async listener on "
            "an address of its own; the Subject: one Subject per address with one observer).",
        ]
        if self.legacy.available:
            lines.append(
                f"- tinybus {self.legacy.version} ran on Python {self.legacy.python}, from "
                f"`{self.legacy.interpreter}`."
            )
        return lines

    def markdown(self) -> str:
        versions = ", ".join(f"{package} {version(package)}" for package in PACKAGES)
        lines = [
            "# TinyBus against the alternatives",
            "",
            f"- Machine: {machine()}",
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
            "## TinyBus against tinybus 0.2.1",
            "",
            "0.2.1 runs in a process of its own (see the notes). Each process measures the same "
            "baselines the same way, so TinyBus / 0.2.1 = (TinyBus / baseline, here) / (0.2.1 / "
            "baseline, there); the two baselines give two estimates. Above 1: TinyBus is "
            "faster. In (1i) and (2i), TinyBus is its inline consumer; publishing, its listeners "
            "are registered as usual (a task each), then `inline=True` (TinyBus inline).",
            "",
            *self.legacy_table(),
            "",
            "## An observed address",
            "",
            "Publish to one listener with one `bus.observe(address)` subscriber (4o), against "
            "the same publish without it (4): below 1, observing costs that much throughput.",
            "",
            *self.observed_table(),
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
            "a direct await's pending call is. tinybus 0.2.1 was measured the same way in its "
            "own process, against its own direct await.",
            "",
            *self.memory_table(),
            "",
            *self.soak_lines(),
            "",
            "## Start-up",
            "",
            *self.startup_lines(),
            "",
            "## Scale",
            "",
            "TinyBus's cost per operation against the size of what one bus holds "
            f"(`benchmarks/scale.py`). Flat: at the largest size at most {scale.FLAT:g} times "
            "the cost at the smallest (O(1) per operation); linear: the sizes in between lie near "
            "the straight line through the first and last points (O(n) per operation). "
            "Each size is built first (the collector off while building, then what was built "
            "frozen out of its sight); the sizes then take turns, the best of several passes "
            "kept. In parentheses: the cost against the first size's.",
            "",
            *scale.summary(self.curves),
            "",
            *scale.markdown(self.curves),
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


def median_ratios(rates: Mapping[str, list[float]], baseline: str) -> dict[str, float]:
    base = rates[baseline]
    return {
        name: statistics.median(
            rate / base_rate for rate, base_rate in zip(values, base, strict=True)
        )
        for name, values in rates.items()
    }


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
        left=4.7 / inches[0],
        right=1 - 1.6 / inches[0],
        top=1 - 0.45 / inches[1],
        bottom=0.6 / inches[1],
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    write(path, buffer.getvalue())
