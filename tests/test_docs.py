"""The README's examples run, and print what the README says they print."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = re.compile(r"```python\n(.*?)```\n\n```text\n(.*?)```", re.DOTALL)


def readme_examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall((ROOT / "README.md").read_text())


def test_readme_has_examples() -> None:
    assert len(readme_examples()) >= 6


@pytest.mark.parametrize(("code", "expected"), readme_examples())
def test_readme_example_prints_what_the_readme_shows(code: str, expected: str) -> None:
    output = io.StringIO()
    logger = logging.getLogger("tinybus")
    level = logger.level  # examples may quiet the log; the tests after them must not inherit it
    try:
        with contextlib.redirect_stdout(output):
            code_object = compile(code, "README.md", "exec", dont_inherit=True)
            exec(code_object, {"__name__": "readme_example"})
    finally:
        logger.setLevel(level)
    assert output.getvalue() == expected


def test_main_example_runs_as_the_quick_start_says() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "user_service.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines() == ["User created: john", "Retrieved user: john"]
