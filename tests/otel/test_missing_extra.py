"""Without the ``tinybus[otel]`` extra: the core runs as ever, and asking for tracing says
what to install. Runs with or without the otel group (the package is hidden when present)."""

from __future__ import annotations

import subprocess
import sys

HIDE_OPENTELEMETRY = (
    "import sys\nsys.modules['opentelemetry'] = None  # as if it were not installed\n"
)


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE_OPENTELEMETRY + script],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tracing_without_the_extra_names_the_extra_to_install() -> None:
    done = _run(
        "try:\n"
        "    from tinybus.otel import OpenTelemetry\n"
        "except ImportError as error:\n"
        "    print(error)\n"
        "else:\n"
        "    print('imported')\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'tinybus[otel]'" in done.stdout
    assert "OpenTelemetry API" in done.stdout


def test_the_core_never_imports_opentelemetry() -> None:
    done = _run(
        "import asyncio\n"
        "import tinybus\n"
        "async def main():\n"
        "    async with tinybus.EventBus() as bus:\n"
        "        bus.consumer('double', lambda message: message.body * 2)\n"
        "        print(await bus.request('double', 21))\n"
        "asyncio.run(main())\n"
        "loaded = [name for name in sys.modules if name.startswith('opentelemetry')]\n"
        "print(sorted(name for name in loaded if sys.modules[name] is not None))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["42", "[]"]
