"""What the benchmark scripts share that needs nothing but the standard library: where results
go, the progress bar, memory readings, and the helpers of the Markdown reports.

``soak.py`` (and so ``tests/test_soak.py``) imports only this, ``tinybus``, ``reactivex`` and
``pydantic``: it runs in the default environment, without the bench group's peers.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # full runs only: committed
SCRATCH = HERE / ".scratch"  # git-ignored: environments, and the results of other runs
SCRATCH_RESULTS = SCRATCH / "results"

# Flat memory: live objects back to their count at the start, give or take this many, and
# resident memory within this many bytes of it.
FLAT_OBJECTS = 100
FLAT_RESIDENT = 4 * 1024 * 1024
MIB = 1024 * 1024
NA = "n/a"


def results_dir(out: Path | None, full: bool) -> Path:
    """Where a run writes: ``out`` if given, else ``benchmarks/results`` for a full run and
    ``benchmarks/.scratch/results`` for any other, so that a short run never overwrites the
    committed results."""
    if out is not None:
        return out
    return RESULTS if full else SCRATCH_RESULTS


# -- progress --------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr, redrawn in place on a terminal; elsewhere (or ``quiet``), one
    line per section (the text before the first colon of a step's label), or nothing."""

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
        fraction = min(1.0, self.done / max(1, self.total))
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


# -- memory ----------------------------------------------------------------------------------


async def settle_tasks(turns: int = 5) -> None:
    """Let the loop run a few turns: tasks start, or finish what they were cancelled for."""
    for _ in range(turns):
        await asyncio.sleep(0)


def resident_bytes() -> int:
    """Resident set size now (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- reports ---------------------------------------------------------------------------------


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


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({processor()}), "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


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


def write(path: Path, data: bytes) -> None:
    """Write through a temporary file, so that an interrupted run leaves the old results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
