"""The comparative benchmark (benchmarks/run.py) runs end to end in its smoke mode: one pass of
a handful of operations per contender, every table and the chart written, where a smoke run
writes by default (benchmarks/.scratch/results, never the committed benchmarks/results)."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

for peer in ("pyee", "blinker", "bubus", "aiopubsub", "matplotlib"):
    pytest.importorskip(
        peer, reason="needs the bench group: uv run --group bench pytest tests/test_benchmarks.py"
    )

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
CONTENDERS = [
    "direct await",
    "hand-written bus",
    "TinyBus",
    "TinyBus inline",
    "tinybus 0.2.1",
    "pyee",
    "blinker",
    "bubus",
    "aiopubsub",
    "reactivex Subject",
]
TITLES = [
    "(1) request, handler returns at once",
    "(1i) request, handler returns at once, consumer inline=True",
    "(2) request, handler awaits once",
    "(2i) request, handler awaits once, consumer inline=True",
    "(3) 100 requests in flight",
    "(4) publish to 1 listener",
    "(4o) publish to 1 listener with one observe() subscriber",
    "(4) publish to 10 listeners",
    "(4) publish to 100 listeners",
    "(5) publish through a filter (half pass)",
    "(6) publish, 20 unrelated patterns registered",
    "(7) request, Order body, not validated",
    "(7) request, validated Order, given an Order",
    "(7) request, validated Order, given a dict",
]
LEGACY_ROWS = {
    "(1) request, handler returns at once",
    "(1i) request, handler returns at once, consumer inline=True",
    "(2) request, handler awaits once",
    "(2i) request, handler awaits once, consumer inline=True",
    "(4) publish to 1 listener",
    "(4) publish to 100 listeners",
}


@pytest.fixture(scope="module")
def benchmarks() -> Iterator[dict[str, Any]]:
    """benchmarks/run.py and its common.py, imported as the script imports its siblings;
    forgotten afterwards."""
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield {"run": importlib.import_module("run"), "common": importlib.import_module("common")}
    for name in set(sys.modules) - before:
        module = getattr(sys.modules[name], "__file__", None) or ""
        if module.startswith(str(BENCHMARKS)):
            del sys.modules[name]


@pytest.fixture(scope="module")
def smoke(benchmarks: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One smoke run, with the default results directories moved under a temporary one."""
    common = benchmarks["common"]
    root = tmp_path_factory.mktemp("benchmarks")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(common, "RESULTS", root / "results")
        patch.setattr(common, "SCRATCH_RESULTS", root / "scratch")
        outcome = benchmarks["run"].main(["--smoke", "--quiet"])
    return root, outcome


@pytest.fixture(scope="module")
def markdown(smoke: Any) -> str:
    root, _ = smoke
    return (root / "scratch" / "results.md").read_text()


def section(markdown: str, title: str) -> list[list[str]]:
    """The cells of the first table after the heading ``title``, header row first."""
    lines = markdown.split(f"## {title}", 1)[1].splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("|"))
    rows: list[list[str]] = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return [rows[0], *rows[2:]]


def test_a_smoke_run_writes_to_the_scratch_directory_not_the_committed_results(
    smoke: Any,
) -> None:
    root, _ = smoke
    assert not (root / "results").exists()
    assert (root / "scratch" / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not list((root / "scratch").glob("*.tmp"))


def test_only_a_full_run_writes_the_committed_results(benchmarks: dict[str, Any]) -> None:
    common = benchmarks["common"]
    assert common.results_dir(None, full=True) == common.RESULTS
    assert common.results_dir(None, full=False) == common.SCRATCH_RESULTS
    assert common.results_dir(Path("elsewhere"), full=True) == Path("elsewhere")
    assert common.SCRATCH_RESULTS.is_relative_to(BENCHMARKS / ".scratch")


def test_the_throughput_tables(smoke: Any, markdown: str) -> None:
    _, outcome = smoke
    assert "Machine: " in markdown
    assert "CPUs" in markdown
    assert "Python" in markdown or "CPython" in markdown
    assert [result.scenario.title for result in outcome.results] == TITLES
    legacy = outcome.legacy.available
    for heading, baseline in (
        ("Throughput against the hand-written asyncio bus", "hand-written bus"),
        ("Throughput against a direct", "direct await"),
        ("Throughput in operations per second", None),
    ):
        header, *rows = section(markdown, heading)
        assert header == ["scenario", *CONTENDERS]
        assert len(rows) == len(TITLES)
        for row in rows:
            assert len(row) == len(header)
            if baseline is not None:
                assert row[header.index(baseline)] == "1.00"
            assert row[header.index("TinyBus")] != "n/a"
        cells = [dict(zip(header, row, strict=True)) for row in rows]
        by_title = dict(zip(TITLES, cells, strict=True))
        request = by_title["(1) request, handler returns at once"]
        assert request["pyee"] == request["aiopubsub"] == request["reactivex Subject"] == "n/a"
        assert request["blinker"] != "n/a"
        assert request["TinyBus inline"] == "n/a"
        for title in ("(1i)", "(2i)"):
            inline = next(cell for name, cell in by_title.items() if name.startswith(title))
            assert inline["TinyBus inline"] != "n/a"
            assert inline["bubus"] == "n/a"
        observed = by_title["(4o) publish to 1 listener with one observe() subscriber"]
        assert {name for name, cell in observed.items() if cell != "n/a"} == {
            "scenario",
            "direct await",
            "hand-written bus",
            "TinyBus",
            "TinyBus inline",
        }
        publish = by_title["(4) publish to 100 listeners"]
        assert all(cell != "n/a" for name, cell in publish.items() if name != "tinybus 0.2.1")
        for title, cell in by_title.items():
            assert (cell["tinybus 0.2.1"] != "n/a") == (legacy and title in LEGACY_ROWS), title


def test_tinybus_against_0_2_1_and_an_observed_address(smoke: Any, markdown: str) -> None:
    _, outcome = smoke
    header, *rows = section(markdown, "TinyBus against tinybus 0.2.1")
    assert len(header) == 5
    assert len(rows) == 8  # (1), (1i), (2), (2i); (4) to 1 and 100, TinyBus and inline
    assert all(len(row) == len(header) for row in rows)
    if outcome.legacy.available:
        assert all(cell != "n/a" for row in rows for cell in row)
    else:
        assert "tinybus 0.2.1 in (1), (1i)" in markdown
        assert outcome.legacy.reason in markdown

    header, *rows = section(markdown, "An observed address")
    assert [row[0] for row in rows] == ["TinyBus", "TinyBus inline"]
    assert all(cell != "n/a" for row in rows for cell in row)


def test_latency_memory_and_start_up(markdown: str) -> None:
    header, *rows = section(markdown, "Latency")
    assert len(rows) == 4
    assert all(len(row) == len(header) for row in rows)

    header, *rows = section(markdown, "Memory")
    assert header == ["memory", *CONTENDERS]
    assert [row[0] for row in rows] == [
        "bytes per registration",
        "GC-tracked objects per address with one listener",
        "bytes per pending request",
        "bytes per pending request, beyond a direct await's",
        "the same, handlers one at a time (TinyBus: `max_concurrency=1`)",
    ]
    assert all(len(row) == len(header) for row in rows)
    objects = dict(zip(header, rows[1], strict=True))
    assert objects["TinyBus"] != "n/a"
    assert objects["blinker"] != "n/a"
    one_at_a_time = dict(zip(header, rows[-1], strict=True))
    measured = {name for name, cell in one_at_a_time.items() if cell != "n/a"}
    assert measured == {header[0], "hand-written bus", "TinyBus"}
    assert "flat" in markdown.split("## Memory", 1)[1]

    header, *rows = section(markdown, "Start-up")
    assert header == ["import", "ms beyond `import asyncio`", "tinybus / this"]
    names = [row[0] for row in rows]
    assert names[0] == "`tinybus`"
    assert {"`blinker`", "`pyee`", "`reactivex`", "`pydantic`"} <= set(names)
    assert any(name.startswith("tinybus 0.2.1") for name in names)
    assert rows[0][1] != "n/a"


def test_scale_has_a_table_and_a_verdict_per_curve(markdown: str) -> None:
    scale = markdown.split("## Scale", 1)[1].split("\n## ", 1)[0]
    for title in (
        "Addresses, each with one listener",
        "Registrations at one address",
        "Unrelated patterns registered",
        "Requests pending",
        "Handlers running",
    ):
        assert f"### {title}" in scale
        table = section(scale.replace("### ", "## "), title)
        verdicts = table[-1][1:]
        assert verdicts
        assert all(
            cell.strip("*") in {"flat", "linear", "grows, less than linearly"} for cell in verdicts
        )


def test_without_0_2_1_its_cells_are_n_a_with_the_reason(
    benchmarks: dict[str, Any], smoke: Any
) -> None:
    """When uv cannot make 0.2.1's environment, the run goes on: its cells are n/a, and the
    notes say why."""
    _, outcome = smoke
    legacy = importlib.import_module("legacy")
    with pytest.MonkeyPatch.context() as patch:

        def cannot(offline: bool = False) -> str:
            raise RuntimeError("uv venv failed: no network")

        patch.setattr(legacy, "tinybus021_python", cannot)
        missing = legacy.measure([], {}, lambda label: None)
        assert not missing.available
        assert "no network" in missing.reason
        for result in outcome.results:
            patch.setattr(result, "legacy", {})
        patch.setattr(outcome, "legacy", missing)
        # Nor could its import time be measured.
        startup = outcome.startup
        added = {name: ms for name, ms in startup.added.items() if name != "tinybus 0.2.1"}
        patch.setattr(outcome, "startup", dataclasses.replace(startup, added=added))
        markdown = outcome.markdown()
    header, *rows = section(markdown, "Throughput against a direct")
    assert all(row[header.index("tinybus 0.2.1")] == "n/a" for row in rows)
    (note,) = [
        line for line in markdown.splitlines() if line.startswith("- ") and missing.reason in line
    ]
    assert note.startswith("- tinybus 0.2.1 in (1), (1i), (2), (2i), ")
    header, *rows = section(markdown, "Start-up")
    (startup,) = [row for row in rows if row[0] == "tinybus 0.2.1"]
    assert startup[1:] == ["n/a", f"n/a: {missing.reason}"]
    header, *rows = section(markdown, "TinyBus against tinybus 0.2.1")
    assert all(cell == "n/a" for row in rows for cell in row[1:])
    header, *rows = section(markdown, "Memory")
    assert all(row[header.index("tinybus 0.2.1")] == "n/a" for row in rows)
