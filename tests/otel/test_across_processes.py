"""A trace crosses processes: a requester here, its consumer in another OS process, the two
buses joined by the NATS transport through a real ``nats-server``. The consumer's span there
is the child of the request's span here, read from the headers that crossed the wire."""

from __future__ import annotations

import asyncio
import sys

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the otel group: uv run --group otel pytest")

from tests.nats.conftest import server  # noqa: F401  (the fixture: a fresh nats-server)
from tests.nats.server import NatsServer
from tests.otel.telemetry import Telemetry
from tinybus import EventBus
from tinybus.nats import NatsTransport

RESPONDER = """
import asyncio, sys
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from tinybus import EventBus, Message
from tinybus.nats import NatsTransport
from tinybus.otel import OpenTelemetry


class Ended(SpanProcessor):
    def __init__(self) -> None:
        self.spans = []
        self.event = asyncio.Event()

    def on_end(self, span) -> None:  # (on the bus's loop: the span ends there)
        self.spans.append(span)
        self.event.set()


async def main(url: str) -> None:
    ended = Ended()
    provider = TracerProvider()
    provider.add_span_processor(ended)
    telemetry = OpenTelemetry(tracer_provider=provider, bus_name="responder")
    async with EventBus(transport=NatsTransport(url), instrumentation=telemetry) as bus:

        async def price(message: Message[str]) -> int:
            print("headers", sorted(message.headers), flush=True)
            return 42

        await bus.consumer("prices.get", price).wait_exported()
        print("ready", flush=True)
        await asyncio.wait_for(ended.event.wait(), 30)
    [span] = ended.spans
    parent = span.parent.span_id if span.parent else 0
    print("span", span.name, f"{span.context.trace_id:032x}", f"{parent:016x}", flush=True)


asyncio.run(main(sys.argv[1]))
"""


async def _line(stream: asyncio.StreamReader) -> str:
    async with asyncio.timeout(30):
        return (await stream.readline()).decode().strip()


async def test_the_consumer_in_another_process_continues_the_requesters_trace(
    server: NatsServer,  # noqa: F811
    telemetry: Telemetry,
) -> None:
    responder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RESPONDER,
        server.url,
        stdout=asyncio.subprocess.PIPE,
    )
    assert responder.stdout is not None
    try:
        assert await _line(responder.stdout) == "ready"
        async with EventBus(
            transport=NatsTransport(server.url),
            default_timeout=10.0,
            instrumentation=telemetry.instrumentation(bus_name="requester"),
        ) as bus:
            assert await bus.request("prices.get", "tea") == 42
        headers = await _line(responder.stdout)
        span = await _line(responder.stdout)
        async with asyncio.timeout(30):
            assert await responder.wait() == 0
    finally:
        if responder.returncode is None:
            responder.kill()
            await responder.wait()
    request = telemetry.span("request prices.get")
    assert request.context is not None
    assert headers == "headers ['traceparent']"
    trace_id, span_id = f"{request.context.trace_id:032x}", f"{request.context.span_id:016x}"
    assert span == f"span process prices.get {trace_id} {span_id}"
