"""tinybus 0.2.1 against this TinyBus, each in its own process.

0.2.1 (on PyPI) has the same package name as this tinybus, so it is installed in an environment
of its own, under ``benchmarks/.scratch/tinybus-0.2.1`` (git-ignored; made with ``uv venv`` and
``uv pip install``, see ``instructions.tinybus021_python``), and measured there by
``legacy_worker.py``. That process measures the direct ``await handler(x)`` and the hand-written
bus too, with the same code (``harness.py``), so 0.2.1's figures are ratios to baselines of its
own process, and TinyBus against 0.2.1 is bridged through them:

    TinyBus / 0.2.1 = (TinyBus / baseline, in run.py's process)
                      / (0.2.1 / baseline, in 0.2.1's process)

When uv cannot make the environment, or the process fails, 0.2.1's figures are "n/a" with the
reason, and the rest of the run goes on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import SCRATCH
from instructions import tinybus021_python

WORKER = Path(__file__).resolve().parent / "legacy_worker.py"


@dataclass
class Legacy:
    """What 0.2.1's process measured, or why it could not."""

    reason: str = ""  # why there are no figures ("" when there are)
    interpreter: str = ""  # its environment's python, when there is one
    version: str = ""
    python: str = ""
    rates: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # key -> name -> rates
    memory: dict[str, dict[str, float]] = field(default_factory=dict)  # row -> name -> value

    @property
    def available(self) -> bool:
        return not self.reason


def worker_steps(scenarios: int, contenders: int, rounds: int) -> int:
    """How many progress steps the worker reports."""
    return scenarios * contenders * (1 + rounds) + 4


def measure(
    scenarios: list[dict[str, Any]],
    settings: dict[str, Any],
    step: Callable[[str], None],
    offline: bool = False,
) -> Legacy:
    """Run ``legacy_worker.py`` in 0.2.1's environment (made first if need be: from uv's cache
    only when ``offline``) on ``scenarios`` (each a dict with ``key``, ``title``, ``kind``:
    ``"request"`` or ``"publish"``, and ``reply`` or ``listeners``)."""
    step("tinybus 0.2.1: its environment")
    try:
        python = tinybus021_python(offline=offline)
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        return Legacy(reason=f"uv could not make its environment ({first_line(error)})")
    arguments = json.dumps({**settings, "scenarios": scenarios})
    SCRATCH.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    # Its result goes to a file (no pipe to fill while its progress is read from stderr).
    with tempfile.TemporaryFile("w+") as result:
        try:
            with subprocess.Popen(
                [python, str(WORKER), arguments],
                stdout=result,
                stderr=subprocess.PIPE,
                text=True,
                cwd=SCRATCH,  # not the project: the worker must not import this tinybus
            ) as process:
                assert process.stderr is not None
                for line in process.stderr:
                    if line.startswith("STEP "):
                        step(line[5:].rstrip("\n"))
                    else:
                        errors.append(line.rstrip("\n"))
        except OSError as error:
            return Legacy(reason=f"its interpreter did not start ({first_line(error)})")
        result.seek(0)
        output = result.read()
    if process.returncode != 0:
        failure = " ".join(errors[-3:])[-300:]
        return Legacy(reason=f"its process failed: {failure}", interpreter=python)
    try:
        outcome = json.loads(output)
    except json.JSONDecodeError:
        return Legacy(reason=f"its process printed no result: {output[-200:]!r}")
    if outcome["version"] != "0.2.1":
        return Legacy(reason=f"its environment imported tinybus {outcome['version']}")
    if errors:
        print("\n".join(errors), file=sys.stderr)
    return Legacy(
        interpreter=python,
        version=outcome["version"],
        python=outcome["python"],
        rates=outcome["rates"],
        memory=outcome["memory"],
    )


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
