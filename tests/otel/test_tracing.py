"""Tracing through tinybus.otel: a span per publish, send and request on the sender, one per
handler run on the receiver, linked through the message's W3C trace-context headers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the otel group: uv run --group otel pytest")

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from reactivex import operators as ops

from tests.architecture.test_transport_seam import Broker, connected
from tests.otel.telemetry import Telemetry
from tinybus import (
    DeliveryOptions,
    EventBus,
    HandlerExecutionError,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Message,
)
from tinybus.otel import OpenTelemetry


def _parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _ctx(span: ReadableSpan) -> SpanContext:
    assert span.context is not None
    return span.context


async def test_a_handler_span_is_the_child_of_the_publish_span(
    traced: EventBus, telemetry: Telemetry
) -> None:
    seen: list[Message[Any]] = []

    def keep(message: Message[Any]) -> None:
        seen.append(message)

    traced.on("orders.created", keep)
    await traced.publish("orders.created", {"id": 1})
    publish = telemetry.span("publish orders.created")
    process = telemetry.span("process orders.created")
    assert publish.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert _ctx(process).trace_id == _ctx(publish).trace_id
    assert _parent_of(process) == _ctx(publish).span_id
    # The link is the message's own header, as W3C trace context writes it.
    trace_id = f"{_ctx(publish).trace_id:032x}"
    span_id = f"{_ctx(publish).span_id:016x}"
    assert seen[0].headers["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    assert process.attributes is not None
    assert process.attributes["messaging.destination.name"] == "orders.created"
    assert str(process.attributes["tinybus.handler"]).endswith("keep")


async def test_every_listener_of_a_publish_gets_a_span_of_its_own(
    traced: EventBus, telemetry: Telemetry
) -> None:
    traced.on("tick", lambda body: None)
    traced.on("tick", lambda body: None, inline=True)

    async def slow(body: int) -> None:
        await asyncio.sleep(0)

    traced.on("tick", slow)
    traced.on("*", lambda body: None)
    await traced.publish("tick", 1)
    publish = telemetry.span("publish tick")
    processes = [span for span in telemetry.spans() if span.name.startswith("process")]
    assert len(processes) == 4
    assert {_parent_of(span) for span in processes} == {_ctx(publish).span_id}


async def test_a_request_span_waits_for_the_answer_and_the_handler_span_is_its_child(
    traced: EventBus, telemetry: Telemetry
) -> None:
    async def double(body: int) -> int:
        await asyncio.sleep(0)
        return body * 2

    traced.consumer("double", double)
    assert await traced.request("double", 21) == 42
    request = telemetry.span("request double")
    process = telemetry.span("process double")
    assert request.kind is SpanKind.CLIENT
    assert process.kind is SpanKind.SERVER
    assert _parent_of(process) == _ctx(request).span_id
    assert request.status.status_code is StatusCode.UNSET
    # The request's span lasts until its answer: the handler's run lies within it.
    assert request.start_time is not None
    assert request.end_time is not None
    assert process.start_time is not None
    assert process.end_time is not None
    assert request.start_time <= process.start_time <= process.end_time <= request.end_time


async def test_a_request_span_records_the_remote_failure(
    traced: EventBus, telemetry: Telemetry
) -> None:
    def broken(body: int) -> int:
        raise ValueError("no such order")

    traced.consumer("orders.get", broken)
    with pytest.raises(HandlerExecutionError):
        await traced.request("orders.get", 7)
    request = telemetry.span("request orders.get")
    process = telemetry.span("process orders.get")
    assert request.status.status_code is StatusCode.ERROR
    assert request.attributes is not None
    assert request.attributes["error.type"] == "HandlerExecutionError"
    [event] = request.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert "no such order" in str(event.attributes["exception.message"])
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes is not None
    assert process.attributes["error.type"] == "ValueError"


async def test_a_reply_failed_on_purpose_is_the_requests_error(
    traced: EventBus, telemetry: Telemetry
) -> None:
    def refuses(message: Message[int]) -> None:
        message.fail(404, "no such order")

    traced.consumer("orders.find", refuses)
    with pytest.raises(Exception, match="no such order"):
        await traced.request("orders.find", 7)
    assert telemetry.span("request orders.find").status.status_code is StatusCode.ERROR
    # The handler itself returned normally.
    assert telemetry.span("process orders.find").status.status_code is StatusCode.UNSET


async def test_each_attempt_of_a_retried_request_is_a_span_and_a_timeout_is_recorded(
    traced: EventBus, telemetry: Telemetry
) -> None:
    async def never(body: int) -> None:
        await asyncio.Event().wait()

    traced.consumer("stuck", never)
    with pytest.raises(HandlerTimeoutError):
        await traced.request("stuck", 1, timeout=0.01, options=DeliveryOptions(retry_attempts=1))
    attempts = [span for span in telemetry.spans() if span.name == "request stuck"]
    assert len(attempts) == 2
    assert all(span.status.status_code is StatusCode.ERROR for span in attempts)
    assert {str(span.attributes["error.type"]) for span in attempts if span.attributes} == {
        "HandlerTimeoutError"
    }


async def test_a_send_to_nobody_ends_its_span_with_the_error(
    traced: EventBus, telemetry: Telemetry
) -> None:
    with pytest.raises(HandlerNotFoundError):
        await traced.send("nobody", 1)
    span = telemetry.span("send nobody")
    assert span.status.status_code is StatusCode.ERROR
    traced.consumer("somebody", lambda body: None)
    await traced.send("somebody", 1)
    assert _parent_of(telemetry.span("process somebody")) == (
        _ctx(telemetry.span("send somebody")).span_id
    )


async def test_what_a_handler_sends_joins_its_trace(traced: EventBus, telemetry: Telemetry) -> None:
    @traced.consumer("orders.place")
    async def place(body: int) -> int:
        await traced.publish("orders.placed", body)
        return body

    traced.on("orders.placed", lambda body: None)
    await traced.request("orders.place", 1)
    request = telemetry.span("request orders.place")
    place_span = telemetry.span("process orders.place")
    published = telemetry.span("publish orders.placed")
    listener = telemetry.span("process orders.placed")
    assert {_ctx(span).trace_id for span in telemetry.spans()} == {_ctx(request).trace_id}
    assert _parent_of(published) == _ctx(place_span).span_id
    assert _parent_of(listener) == _ctx(published).span_id


async def test_the_senders_current_span_is_the_parent_of_its_messages_spans(
    traced: EventBus, telemetry: Telemetry
) -> None:
    traced.on("a", lambda body: None)
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("http request") as outer:
        await traced.publish("a", 1)
    assert _parent_of(telemetry.span("publish a")) == outer.get_span_context().span_id


async def test_a_body_let_out_by_a_pipe_is_traced_without_a_parent_message(
    traced: EventBus, telemetry: Telemetry
) -> None:
    got: list[int] = []
    traced.on("numbers", got.append, pipe=[ops.map(lambda body: body + 1)])
    await traced.publish("numbers", 1)
    await traced.drain(timeout=5)
    assert got == [2]
    process = telemetry.span("process numbers")
    assert process.attributes is not None
    assert "messaging.message.id" not in process.attributes


async def test_a_cancelled_requester_ends_its_span(traced: EventBus, telemetry: Telemetry) -> None:
    started = asyncio.Event()

    async def slow(body: int) -> None:
        started.set()
        await asyncio.Event().wait()

    traced.consumer("slow", slow)
    requester = asyncio.create_task(traced.request("slow", 1))
    await asyncio.wait_for(started.wait(), 5)
    requester.cancel()
    with pytest.raises(asyncio.CancelledError):
        await requester
    span = telemetry.span("request slow")
    assert span.attributes is not None
    assert span.attributes["error.type"] == "CancelledError"


async def test_trace_context_crosses_a_transport_between_processes_unchanged(
    telemetry: Telemetry,
) -> None:
    """Two buses, as two processes would be, each traced on its own: the handler's span in
    the second continues the requester's trace in the first, read from the headers the
    transport carried across (as copies, as a wire would)."""
    broker = Broker()
    async with (
        connected(broker, instrumentation=telemetry.instrumentation(bus_name="front")) as front,
        connected(broker, instrumentation=telemetry.instrumentation(bus_name="back")) as back,
    ):
        crossed: list[list[tuple[str, str]]] = []

        @back.consumer("prices.get")
        async def price(message: Message[str]) -> int:
            crossed.append(message.headers.pairs())
            return 42

        assert await front.request("prices.get", "tea") == 42
    request = telemetry.span("request prices.get")
    process = telemetry.span("process prices.get")
    assert request.attributes is not None
    assert process.attributes is not None
    assert (request.attributes["tinybus.bus"], process.attributes["tinybus.bus"]) == (
        "front",
        "back",
    )
    assert _ctx(process).trace_id == _ctx(request).trace_id
    assert _parent_of(process) == _ctx(request).span_id
    [headers] = crossed
    assert [name for name, _ in headers] == ["traceparent"]


async def test_an_untraced_bus_adds_no_headers() -> None:
    seen: list[Message[Any]] = []

    def keep(message: Message[Any]) -> None:
        seen.append(message)

    async with EventBus() as bus:
        bus.on("a", keep)
        await bus.publish("a", 1)
    assert seen[0].headers == {}


async def test_copies_asked_for_stay_copies_when_traced(traced: EventBus) -> None:
    body = {"items": [1]}
    got: list[Any] = []
    traced.on("copied", got.append)
    await traced.publish("copied", body, options=DeliveryOptions(copy=True))
    assert got == [body]
    assert got[0] is not body


async def test_an_instrumentation_serves_one_bus(telemetry: Telemetry) -> None:
    instrumentation = telemetry.instrumentation()
    EventBus(instrumentation=instrumentation)
    with pytest.raises(ValueError, match="make one per bus"):
        EventBus(instrumentation=instrumentation)


async def test_without_providers_the_global_ones_are_used(telemetry: Telemetry) -> None:
    """The default: the process's providers (no-ops until an SDK is configured)."""
    async with EventBus(instrumentation=OpenTelemetry()) as bus:
        seen: list[int] = []
        bus.on("a", seen.append)
        await bus.publish("a", 1)
    assert seen == [1]  # delivered; nothing recorded by the test's providers
    assert telemetry.spans() == []


async def test_a_scatter_gather_is_one_request_span_with_a_child_per_consumer(
    traced: EventBus, telemetry: Telemetry
) -> None:
    def broken(body: int) -> int:
        raise ValueError(body)

    traced.consumer("quotes", lambda message: message.body + 1)
    traced.consumer("quotes", lambda message: message.body + 2)
    traced.consumer("quotes", broken)
    gathered = await traced.request_all("quotes", 1, timeout=5)
    assert (sorted(gathered.replies), len(gathered.failures)) == ([2, 3], 1)
    request = telemetry.span("request quotes")
    processes = [span for span in telemetry.spans() if span.name == "process quotes"]
    assert len(processes) == 3
    assert {_parent_of(span) for span in processes} == {_ctx(request).span_id}
    # One consumer's failure is its own span's, not the gathering's.
    assert request.status.status_code is StatusCode.UNSET
    assert sorted(span.status.status_code.name for span in processes) == ["ERROR", "UNSET", "UNSET"]
