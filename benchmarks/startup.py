"""Start-up: what importing a library adds to an interpreter that imports asyncio.

For each module X, the time of ``python -c "import asyncio, X"`` minus that of
``python -c "import asyncio"``, each the minimum over ``rounds`` fresh interpreters (the first
run of each, which may write bytecode, is not counted). The commands take turns, in
alternating order from one round to the next, with ``import asyncio`` before each module (so
that the baseline, subtracted from every figure, has the most chances at its minimum).
tinybus 0.2.1 is timed with its own environment's interpreter, against that interpreter's
``import asyncio``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common import SCRATCH

MODULES = ("tinybus", "blinker", "pyee", "reactivex", "pydantic")
LEGACY = "tinybus 0.2.1"


@dataclass
class Startup:
    rounds: int
    baseline: dict[str, float]  # environment ("this" or LEGACY) -> seconds of `import asyncio`
    added: dict[str, float]  # module -> seconds it adds to `import asyncio`
    reason: dict[str, str] = field(default_factory=dict)  # module -> why it is not measured


# Bytecode is written (the first, uncounted run of each command writes what is missing), as it
# is for anyone importing these packages: without it, every start would compile them.
ENVIRONMENT = {
    name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"
}


def run_once(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=SCRATCH, stdout=subprocess.DEVNULL, env=ENVIRONMENT)
    return time.perf_counter() - started


def startup(rounds: int, legacy_python: str | None, step: Callable[[str], None]) -> Startup:
    """``legacy_python``: the interpreter of 0.2.1's environment, if there is one."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    # The project's interpreter, from outside the project: tinybus comes from its install
    # (editable: this checkout), as it does for any script.
    commands: dict[str, list[str]] = {"asyncio": [sys.executable, "-c", "import asyncio"]}
    for module in MODULES:
        commands[module] = [sys.executable, "-c", f"import asyncio, {module}"]
    if legacy_python is not None:
        commands[f"asyncio ({LEGACY})"] = [legacy_python, "-c", "import asyncio"]
        commands[LEGACY] = [legacy_python, "-c", "import asyncio, tinybus"]
    best: dict[str, float] = {}
    reason: dict[str, str] = {}
    for name, command in list(commands.items()):
        try:
            run_once(command)  # compiles what has no bytecode yet
        except (OSError, subprocess.CalledProcessError) as error:
            reason[name] = f"`{' '.join(command[1:])}` failed ({error})"
            del commands[name]
    # The baseline of each environment runs before each of its modules: it gets as many
    # chances at its minimum as all of them together.
    order: list[str] = []
    for name in commands:
        if name == LEGACY:
            order += [f"asyncio ({LEGACY})", LEGACY]
        elif not name.startswith("asyncio"):
            order += ["asyncio", name]
    order = [name for name in order if name in commands]
    for round_number in range(rounds):
        step(f"start-up: round {round_number + 1} of {rounds}")
        for name in order if round_number % 2 == 0 else reversed(order):
            elapsed = run_once(commands[name])
            best[name] = min(best.get(name, elapsed), elapsed)
    baseline = {"this": best.get("asyncio", 0.0)}
    added = {module: best[module] - baseline["this"] for module in MODULES if module in best}
    if legacy_python is not None and LEGACY in best:
        baseline[LEGACY] = best[f"asyncio ({LEGACY})"]
        added[LEGACY] = best[LEGACY] - baseline[LEGACY]
    return Startup(rounds, baseline, added, reason)
