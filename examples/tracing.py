"""Tracing and measuring a bus with OpenTelemetry (the ``tinybus[otel]`` extra).

Run it with ``uv run --group otel examples/tracing.py``. It records into the SDK's in-memory
exporter and reader, and prints the trace as a tree and a few of the metrics; an application
would configure exporters (OTLP, the console...) on its providers instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tinybus import EventBus, HandlerExecutionError
from tinybus.otel import OpenTelemetry

spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
metrics = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[metrics])


async def main() -> None:
    # Without the two providers, OpenTelemetry() uses the process's global ones.
    telemetry = OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    async with EventBus(instrumentation=telemetry) as bus:

        @bus.consumer("orders.place")
        async def place(order: dict[str, int]) -> str:
            await bus.publish("orders.placed", order)  # joins the request's trace
            return "accepted"

        @bus.on("orders.placed")
        async def notify(order: dict[str, int]) -> None:
            await asyncio.sleep(0)

        @bus.consumer("orders.cancel")
        def cancel(order: dict[str, int]) -> None:
            raise ValueError("too late to cancel")

        print(await bus.request("orders.place", {"id": 1}))
        try:
            await bus.request("orders.cancel", {"id": 1})
        except HandlerExecutionError as error:
            print(error)
        await bus.drain()

        data = metrics.get_metrics_data()
        assert data is not None
        for metric in data.resource_metrics[0].scope_metrics[0].metrics:
            if metric.name in ("tinybus.messages.delivered", "tinybus.messages.failed"):
                for point in metric.data.data_points:
                    address = dict(point.attributes or {})["messaging.destination.name"]
                    print(f"{metric.name} {address}: {point.value}")  # type: ignore[union-attr]
    print_tree(spans.get_finished_spans())


def print_tree(finished: Sequence[ReadableSpan], parent: int | None = None, depth: int = 0) -> None:
    """Each span under its parent, in the order they started, with its status."""
    children = [
        span for span in finished if (span.parent.span_id if span.parent else None) == parent
    ]
    for span in sorted(children, key=lambda span: span.start_time or 0):
        status = "" if span.status.is_ok else f"  [{span.status.description}]"
        print(f"{'  ' * depth}{span.name} ({span.kind.name}){status}")
        context = span.get_span_context()
        assert context is not None
        print_tree(finished, context.span_id, depth + 1)


if __name__ == "__main__":
    asyncio.run(main())
