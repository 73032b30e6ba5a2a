"""The comparative benchmark (benchmarks/run.py) runs end to end in its smoke mode: one pass of
a handful of operations per contender, tables and chart written."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

for peer in ("pyee", "blinker", "bubus", "aiopubsub", "matplotlib"):
    pytest.importorskip(peer, reason="needs the bench group (a default group: uv sync)")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
CONTENDERS = [
    "direct await",
    "hand-written bus",
    "TinyBus",
    "TinyBus inline",
    "pyee",
    "blinker",
    "bubus",
    "aiopubsub",
    "reactivex Subject",
]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """benchmarks/run.py, imported as the script imports its siblings; forgotten afterwards."""
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield importlib.import_module("run")
    for name in set(sys.modules) - before:
        module = getattr(sys.modules[name], "__file__", None) or ""
        if module.startswith(str(BENCHMARKS)):
            del sys.modules[name]


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


def test_smoke_run_writes_every_table_and_the_chart(run: Any, tmp_path: Path) -> None:
    outcome = run.main(["--smoke", "--quiet", "--out", str(tmp_path)])

    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    markdown = (tmp_path / "results.md").read_text()
    assert not list(tmp_path.glob("*.tmp"))
    assert "Machine: " in markdown
    assert "CPUs" in markdown
    assert "Python" in markdown or "CPython" in markdown

    titles = [result.scenario.title for result in outcome.results]
    assert len(titles) == 11
    for heading, baseline in (
        ("Throughput against the hand-written asyncio bus", "hand-written bus"),
        ("Throughput against a direct", "direct await"),
    ):
        header, *rows = section(markdown, heading)
        assert header == ["scenario", *CONTENDERS]
        assert [row[0] for row in rows] == titles
        for row in rows:
            assert len(row) == len(header)
            assert row[header.index(baseline)] == "1.00"
            assert row[header.index("TinyBus")] != "n/a"
        by_title = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
        request = by_title["(1) request, handler returns at once"]
        assert request["pyee"] == request["aiopubsub"] == request["reactivex Subject"] == "n/a"
        assert request["blinker"] != "n/a"
        assert all(cell != "n/a" for cell in by_title["(4) publish to 100 listeners"].values())

    header, *rows = section(markdown, "Latency")
    assert len(rows) == 4
    assert all(len(row) == len(header) for row in rows)

    header, *rows = section(markdown, "Memory")
    assert header == ["memory (tracemalloc)", *CONTENDERS]
    assert [row[0] for row in rows] == [
        "bytes per registration",
        "bytes per pending request",
        "bytes per pending request, beyond a direct await's",
        "the same, handlers one at a time (TinyBus: `max_concurrency=1`)",
    ]
    assert all(len(row) == len(header) for row in rows)
    one_at_a_time = dict(zip(header, rows[-1], strict=True))
    measured = {name for name, cell in one_at_a_time.items() if cell != "n/a"}
    assert measured == {header[0], "hand-written bus", "TinyBus"}
    assert "flat" in markdown.split("## Memory", 1)[1]
