"""Instructions per operation, counted by valgrind's callgrind: the stable figure.

Timings on a shared machine drift by 10-30% between runs; instruction counts repeat to within
a few instructions. Each scenario runs in a fresh interpreter under callgrind twice, with
``n`` and ``2n`` operations after the same warm-up, and the difference divided by ``n`` is
the cost of one operation (start-up, imports and warm-up cancel out).

    uv run python benchmarks/instructions.py                 # every scenario
    uv run python benchmarks/instructions.py request publish # scenarios whose name has these

The earlier tinybus 0.2.1 is measured in an environment of its own, when ``uv`` can build
one (``uv venv`` and ``uv pip install tinybus==0.2.1``, under ``benchmarks/.scratch``; see
``tinybus021_python``, which ``legacy.py`` uses too); ``--no-021`` skips it.
"""

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
COUNT = 2000
WARM_UP = 500

type Op = Callable[[int], Awaitable[object]]
type Setup = Callable[[], Awaitable[Op]]


# -- the scenarios, each a setup returning one operation ------------------------------------


def _traced() -> Any:
    """An OpenTelemetry instrumentation recording into the SDK's providers, which keep what
    they record nowhere: the cost of spans, headers and histograms, not of exporting them."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from tinybus.otel import OpenTelemetry

    return OpenTelemetry(tracer_provider=TracerProvider(), meter_provider=MeterProvider())


async def _tinybus_request(awaits: bool, inline: bool, traced: bool = False) -> Op:
    from tinybus import EventBus, Message

    async def returns(message: Message[int]) -> int:
        return message.body

    async def sleeps(message: Message[int]) -> int:
        await asyncio.sleep(0)
        return message.body

    bus = EventBus(instrumentation=_traced() if traced else None)
    options: dict[str, Any] = {"inline": True} if inline else {}
    bus.consumer("bench.request", sleeps if awaits else returns, **options)
    return lambda n: bus.request("bench.request", n)


async def _tinybus_publish(
    listeners: int, inline: bool, observed: bool = False, traced: bool = False
) -> Op:
    from tinybus import EventBus

    bus = EventBus(instrumentation=_traced() if traced else None)
    hits = [0]
    for index in range(listeners):

        async def listener(body: int) -> None:
            hits[0] += 1

        listener.__qualname__ = f"listener_{index}"
        bus.on("bench.event", listener, inline=inline)
    if observed:
        bus.observe("bench.event").subscribe(lambda message: None)
    return lambda n: bus.publish("bench.event", n)


async def _blinker_request(awaits: bool) -> Op:
    import blinker

    async def returns(sender: object, body: int) -> int:
        return body

    async def sleeps(sender: object, body: int) -> int:
        await asyncio.sleep(0)
        return body

    signal = blinker.Namespace().signal("bench.request")
    signal.connect(sleeps if awaits else returns, weak=False)
    return lambda n: signal.send_async(body=n)


async def _blinker_publish(listeners: int) -> Op:
    import blinker

    signal = blinker.Namespace().signal("bench.event")
    hits = [0]
    for _ in range(listeners):

        async def receiver(sender: object, body: int) -> None:
            hits[0] += 1

        signal.connect(receiver, weak=False)
    return lambda n: signal.send_async(body=n)


async def _tinybus021_request(awaits: bool) -> Op:
    from tinybus import EventBus  # the earlier release, in its own environment

    async def returns(message: Any) -> int:
        return message.body

    async def sleeps(message: Any) -> int:
        await asyncio.sleep(0)
        return message.body

    bus = EventBus()
    bus.consumer("bench.request", sleeps if awaits else returns)
    return lambda n: bus.request("bench.request", n)


async def _floor_request(awaits: bool) -> Op:
    """The minimal correct bus: a dict look-up, an eager task per handler, a future per reply."""
    loop = asyncio.get_running_loop()
    pending: dict[int, asyncio.Future[int]] = {}

    async def returns(n: int) -> int:
        return n

    async def sleeps(n: int) -> int:
        await asyncio.sleep(0)
        return n

    handlers = {"bench.request": sleeps if awaits else returns}

    async def answer(key: int, n: int) -> None:
        value = await handlers["bench.request"](n)
        pending[key].set_result(value)

    async def request(n: int) -> int:
        future = pending[n] = loop.create_future()
        try:
            asyncio.Task(answer(n, n), loop=loop, eager_start=True)
            return await future
        finally:
            del pending[n]

    return request


SCENARIOS: dict[str, tuple[Setup, str]] = {
    "tinybus request returns": (lambda: _tinybus_request(False, False), "local"),
    "tinybus request awaits": (lambda: _tinybus_request(True, False), "local"),
    "tinybus request returns inline": (lambda: _tinybus_request(False, True), "local"),
    "tinybus request awaits inline": (lambda: _tinybus_request(True, True), "local"),
    "tinybus request returns traced": (lambda: _tinybus_request(False, False, True), "local"),
    "tinybus publish 1": (lambda: _tinybus_publish(1, False), "local"),
    "tinybus publish 1 inline": (lambda: _tinybus_publish(1, True), "local"),
    "tinybus publish 1 observed": (lambda: _tinybus_publish(1, False, True), "local"),
    "tinybus publish 1 traced": (lambda: _tinybus_publish(1, False, traced=True), "local"),
    "tinybus publish 100": (lambda: _tinybus_publish(100, False), "local"),
    "tinybus publish 100 inline": (lambda: _tinybus_publish(100, True), "local"),
    "blinker request returns": (lambda: _blinker_request(False), "local"),
    "blinker request awaits": (lambda: _blinker_request(True), "local"),
    "blinker publish 1": (lambda: _blinker_publish(1), "local"),
    "blinker publish 100": (lambda: _blinker_publish(100), "local"),
    "floor request returns": (lambda: _floor_request(False), "local"),
    "floor request awaits": (lambda: _floor_request(True), "local"),
    "tinybus 0.2.1 request returns": (lambda: _tinybus021_request(False), "0.2.1"),
    "tinybus 0.2.1 request awaits": (lambda: _tinybus021_request(True), "0.2.1"),
}


async def _run(name: str, count: int) -> None:
    setup, _ = SCENARIOS[name]
    op = await setup()
    for n in range(1, WARM_UP + 1):
        await op(n)
    for n in range(1, count + 1):
        await op(n)


# -- counting ---------------------------------------------------------------------------------


ENV021 = HERE.parent / ".scratch" / "tinybus-0.2.1"


def _installed_021(python: Path) -> bool:
    """Whether ``python`` runs and imports tinybus 0.2.1 (from outside the project, so that
    it cannot import this tinybus instead)."""
    if not python.exists():
        return False
    try:
        found = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('tinybus'))"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=python.parent,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return found.returncode == 0 and found.stdout.strip() == "0.2.1"


def tinybus021_python(offline: bool = False) -> str:
    """The interpreter of an environment with the earlier tinybus 0.2.1 (made once, with uv,
    in ``benchmarks/.scratch``, which git ignores; remade if it does not import 0.2.1).
    ``offline``: from uv's cache only. ``RuntimeError`` (with uv's message) when uv cannot
    make it."""
    python = ENV021 / "bin" / "python"
    if _installed_021(python):
        return str(python)
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    flags = ["--quiet", *(["--offline"] if offline else [])]
    commands = [
        [uv, "venv", *flags, "--clear", "--python", sys.executable, str(ENV021)],
        [uv, "pip", "install", *flags, "--python", str(python), "tinybus==0.2.1"],
    ]
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as error:
            raise RuntimeError(f"{' '.join(command[:3])}: {error}") from error
        if done.returncode != 0:
            message = " ".join(done.stderr.split())[-300:] or f"exit status {done.returncode}"
            raise RuntimeError(f"{' '.join(command[:3])} failed: {message}")
    if not _installed_021(python):
        raise RuntimeError(f"{python} does not import tinybus 0.2.1")
    return str(python)


def _instructions(name: str, count: int) -> int:
    python = sys.executable if SCENARIOS[name][1] == "local" else tinybus021_python()
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            python,
            str(HERE),
            "--one",
            name,
            str(count),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",  # (not the project: the other environment must not import its tinybus)
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no count for {name!r}:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def per_operation(name: str) -> float:
    return (_instructions(name, 2 * COUNT) - _instructions(name, COUNT)) / COUNT


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("filters", nargs="*", help="run the scenarios whose name has all these")
    parser.add_argument("--one", nargs=2, metavar=("SCENARIO", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--no-021", action="store_true", help="skip tinybus 0.2.1")
    args = parser.parse_args()
    if args.one:
        asyncio.run(_run(args.one[0], int(args.one[1])))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    names = [
        name
        for name, (_, env) in SCENARIOS.items()
        if all(word in name for word in args.filters) and not (env != "local" and args.no_021)
    ]
    # Counts do not depend on load: run as many interpreters at once as there are cores.
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for name, figure in zip(names, pool.map(_figure, names), strict=True):
            print(f"{name:<36} {figure}", flush=True)


def _figure(name: str) -> str:
    try:
        return f"{per_operation(name):>10,.0f}"
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        return f"failed: {str(exc).splitlines()[0][:60]}"


if __name__ == "__main__":
    main()
