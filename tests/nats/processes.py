"""Buses in OS processes of their own (``worker.py``, run with this interpreter), for the
tests across processes: each signals readiness on its stdout after ``wait_exported()`` and
logs to a file of its own."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).parents[2]  # the repository


class Worker:
    """One ``worker.py`` process; ``seen()`` waits for a line it printed."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._printed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, url: str, timeout: float = 20.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            url,
            self.name,
            str(self.log),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read(self.process))
        await self.seen(f"ready {self.name}", timeout=timeout)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            async with self._printed:
                self.lines.append(line.decode().rstrip("\n"))
                self._printed.notify_all()
        async with self._printed:
            self._printed.notify_all()  # it exited: nothing more will come

    async def seen(self, line: str, timeout: float = 5.0) -> None:
        """Wait until the worker has printed ``line`` (fails, with its log, if it exits or
        ``timeout`` passes first)."""
        try:
            async with asyncio.timeout(timeout), self._printed:
                await self._printed.wait_for(lambda: line in self.lines or self._exited())
        except TimeoutError:
            raise AssertionError(f"{self.name} did not print {line!r}:\n{self.logged()}") from None
        if line not in self.lines:
            raise AssertionError(f"{self.name} exited before {line!r}:\n{self.logged()}")

    def _exited(self) -> bool:
        return self._reader is None or self._reader.done()

    def logged(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log)"

    def kill(self) -> None:
        """SIGKILL: the process ends without closing anything."""
        assert self.process is not None
        self.process.kill()

    async def stop(self, timeout: float = 10.0) -> int:
        """Close its stdin (it closes its bus and exits) and return its exit code; killed if
        it has not exited within ``timeout``."""
        process = self.process
        assert process is not None
        assert process.stdin is not None
        if process.returncode is None:
            process.stdin.close()
        try:
            async with asyncio.timeout(timeout):
                code = await process.wait()
        except TimeoutError:
            process.kill()
            code = await process.wait()
        if self._reader is not None:
            await self._reader
        return code
