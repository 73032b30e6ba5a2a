"""``benchmarks/nats_bench.py`` runs end to end in its smoke mode against the test's server
and writes its report where it is told (FastStream's column only where the nats-bench group
is installed; the report says so otherwise)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

from .processes import ROOT
from .server import NatsServer


async def test_the_nats_benchmark_runs_in_its_smoke_mode(
    server: NatsServer, tmp_path: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "benchmarks" / "nats_bench.py"),
        "--smoke",
        "--server",
        server.url,
        "--out",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    report = (tmp_path / "nats.md").read_text()
    assert out.decode().strip() == report.strip()
    for row in (
        "| request/reply, one at a time | 1.00 |",
        "| request/reply, 100 in flight | 1.00 |",
        "| publish to a listener in another connection | 1.00 |",
    ):
        assert row in report
    if importlib.util.find_spec("faststream") is None:
        assert "FastStream's NATS broker is not installed" in report
    else:
        assert "| raw nats-py with TinyBus's headers | TinyBus | FastStream |" in report
    assert "TinyBus" in report.split("## Targets (issue 16)")[1]
