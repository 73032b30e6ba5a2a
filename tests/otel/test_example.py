"""The tracing example (examples/tracing.py) prints what docs/tracing.md shows: the docs'
examples that need the extra are fenced ```py (tests/docs skips those) and run here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the otel group: uv run --group otel pytest")

ROOT = Path(__file__).resolve().parents[2]


def _shown_output(page: Path, included: str) -> str:
    """The ```text block after the ```py block that includes ``included``."""
    text = page.read_text()
    after = text.split(f'--8<-- "{included}"', 1)[1]
    return after.split("```text\n", 1)[1].split("```\n", 1)[0]


def test_the_tracing_example_prints_what_the_docs_show() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tracing.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == _shown_output(ROOT / "docs" / "tracing.md", "examples/tracing.py")
