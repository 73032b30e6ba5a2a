"""``examples/cluster/``: its service and its client, each a process of its own, against
the test's server, print what its README says."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from .processes import ROOT
from .server import NatsServer

EXAMPLE = ROOT / "examples" / "cluster"


async def run(script: Path, *arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_the_cluster_example_runs_across_processes(server: NatsServer) -> None:
    service = await run(EXAMPLE / "service.py", "--server", server.url, "--name", "svc")
    try:
        assert service.stdout is not None
        async with asyncio.timeout(20):
            assert await service.stdout.readline() == b"ready\n"
        client = await run(EXAMPLE / "client.py", "--server", server.url)
        async with asyncio.timeout(20):
            out, err = await client.communicate()
        assert client.returncode == 0, err.decode()
        assert out.decode().splitlines() == [
            "3 tea cost 7.5 (quoted by svc)",
            "coffee: failed with 404: no such item: coffee",
            "0 tea: cannot quote 0 tea",
            "no quantity: not a valid Order",
            "shipped: 2 cake",
        ]
    finally:
        if service.returncode is None:
            service.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rest, err = await service.communicate()
    assert service.returncode == 0, err.decode()  # it closed its bus and exited
    assert rest.decode().splitlines() == ["svc ships 2 cake"]
