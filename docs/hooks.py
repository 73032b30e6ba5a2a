"""MkDocs hook (see mkdocs.yml): the benchmark chart, which benchmarks/run.py writes next to its
tables in benchmarks/results/, is added to the site as benchmarks/results.png, so that the
Benchmarks page shows the chart of the latest committed run rather than a copy of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

CHART = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "results.png"


def on_files(files: Files, *, config: Any) -> Files:
    if CHART.exists():
        files.append(File.generated(config, "benchmarks/results.png", abs_src_path=str(CHART)))
    return files
