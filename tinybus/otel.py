"""Tracing and metrics through the OpenTelemetry API: the ``tinybus[otel]`` extra.

``EventBus(instrumentation=OpenTelemetry())`` traces and measures a bus; the core never
imports this module, and a bus built without it pays nothing for it (see
``tinybus.instrumentation``).

Spans, named as OpenTelemetry's messaging conventions name them (``"{operation}
{address}"``): one for each ``publish`` and ``send`` (kind PRODUCER: from the message being
made until it is pushed, with the handlers that run without suspending), one for each
attempt of a ``request`` (kind CLIENT: until its answer, failure or timeout, which the span
records), and one for each run of a handler (``process``: CONSUMER, or SERVER for a
request), whose parent is the span of the message's sender, read from the message's W3C
trace-context headers (``traceparent``, ``tracestate``). Those headers are ordinary headers of
the message, so they cross a transport between processes with it, and a handler in another
process continues the sender's trace. A handler's span is the current span while it runs, so
what it sends in turn joins the trace.

Metrics: the counters ``bus.stats()`` keeps, read when the meter collects (per address:
messages published, sent, requested, delivered, failed, dropped), the gauges it reads (pending
requests, running handlers, buffered messages), and two histograms recorded as things happen:
handler duration and request duration, in seconds.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import CoroutineType
from typing import TYPE_CHECKING, Any, cast

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.propagators.textmap import Getter, Setter, TextMapPropagator
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as missing:  # pragma: no cover (tested in a process without it)
    raise ImportError(
        "tinybus.otel needs the OpenTelemetry API, which the core does not install: "
        "pip install 'tinybus[otel]' (or uv add 'tinybus[otel]')"
    ) from missing

from .errors import handler_name
from .headers import Headers

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from .message import Message
    from .stats import AddressStats, BusStats

__all__ = ["OpenTelemetry"]

SYSTEM = "tinybus"
# Sender spans' kinds: a request waits for its answer, as a client does.
SENDER_KIND = {"publish": SpanKind.PRODUCER, "send": SpanKind.PRODUCER, "request": SpanKind.CLIENT}


class _HeadersGetter(Getter[Headers]):
    """Reads trace context from a message's ``Headers`` (case-insensitive, multi-valued)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        return carrier.getall(key) or None

    def keys(self, carrier: Headers) -> list[str]:
        return list(carrier)


class _DictSetter(Setter[dict[str, str]]):
    """Writes trace context into the headers to add to a message."""

    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        carrier[key] = value


_GETTER = _HeadersGetter()
_SETTER = _DictSetter()


class OpenTelemetry:
    """An ``Instrumentation`` that traces and measures one bus with OpenTelemetry.

    ``tracer_provider`` and ``meter_provider`` default to the global ones (``trace.
    set_tracer_provider``, ``metrics.set_meter_provider``); without an SDK configured the
    API's are no-ops. ``propagator`` writes and reads the trace context of messages: W3C trace
    context by default (``traceparent``, ``tracestate``); give
    ``opentelemetry.propagate.get_global_textmap()`` to use the process's. ``bus_name``, when
    given, is the ``tinybus.bus`` attribute of every span and measurement, to tell apart
    buses that report to one meter provider (their measurements are otherwise added up).
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
        bus_name: str | None = None,
    ) -> None:
        from . import __version__

        self.tracer = trace.get_tracer(SYSTEM, __version__, tracer_provider)
        self.meter = metrics.get_meter(SYSTEM, __version__, meter_provider)
        self.propagator = propagator or TraceContextTextMapPropagator()
        self.base: dict[str, str] = {"messaging.system": SYSTEM}
        if bus_name is not None:
            self.base["tinybus.bus"] = bus_name
        self.handler_duration = self.meter.create_histogram(
            "tinybus.handler.duration", unit="s", description="How long each handler run took."
        )
        self.request_duration = self.meter.create_histogram(
            "tinybus.request.duration",
            unit="s",
            description="How long each request attempt waited for its answer.",
        )
        # Sender spans still open: from ``outgoing`` to ``done``.
        self.open: dict[Message[Any], tuple[Span, float]] = {}
        self.bound = False

    # -- the hook (tinybus.instrumentation.Instrumentation) -----------------------------------

    def bind(self, stats: Callable[[], BusStats]) -> None:
        if self.bound:
            raise ValueError(
                "this OpenTelemetry instrumentation serves a bus already: make one per bus"
            )
        self.bound = True
        _observed(self.meter).add(stats, self.base)

    def outgoing(self, message: Message[Any]) -> Message[Any]:
        kind = message.kind
        address = message.address
        span = self.tracer.start_span(
            f"{kind} {address}",
            kind=SENDER_KIND.get(kind, SpanKind.PRODUCER),
            attributes={
                **self.base,
                "messaging.destination.name": address,
                "messaging.operation.name": kind,
                "messaging.operation.type": "send",
                "messaging.message.id": message.id,
            },
        )
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, trace.set_span_in_context(span), _SETTER)
        traced = message.with_headers(carrier) if carrier else message
        self.open[traced] = (span, time.perf_counter())
        return traced

    def done(self, message: Message[Any], error: BaseException | None) -> None:
        opened = self.open.pop(message, None)
        if opened is None:
            return
        span, started = opened
        if message.kind == "request":
            attributes = {**self.base, "messaging.destination.name": message.address}
            if error is not None:
                attributes["error.type"] = type(error).__qualname__
            self.request_duration.record(time.perf_counter() - started, attributes)
        _end(span, error)

    def handle(
        self,
        address: str,
        handler: Callable[[Any], Any],
        message: Message[Any] | None,
        argument: Any,
    ) -> Any:
        parent = (
            None if message is None else self.propagator.extract(message.headers, getter=_GETTER)
        )
        kind = "publish" if message is None else message.kind
        attributes = {
            **self.base,
            "messaging.destination.name": address,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "tinybus.handler": handler_name(handler),
        }
        if message is not None:
            attributes["messaging.message.id"] = message.id
        span = self.tracer.start_span(
            f"process {address}",
            context=parent,
            kind=SpanKind.SERVER if kind == "request" else SpanKind.CONSUMER,
            attributes=attributes,
        )
        started = time.perf_counter()
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            result: Any = handler(argument)
        except BaseException as error:
            self._handled(span, started, address, error)
            raise
        finally:
            otel_context.detach(token)
        if type(result) is CoroutineType or (result is not None and hasattr(result, "__await__")):
            return self._run(span, started, address, cast("Awaitable[Any]", result))
        self._handled(span, started, address, None)
        return result

    # -- the handler's run -----------------------------------------------------------------------

    async def _run(
        self, span: Span, started: float, address: str, awaitable: Awaitable[Any]
    ) -> Any:
        """The handler's coroutine, with its span current, until it ends."""
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            value = await awaitable
        except BaseException as error:
            self._handled(span, started, address, error)
            raise
        finally:
            otel_context.detach(token)
        self._handled(span, started, address, None)
        return value

    def _handled(
        self, span: Span, started: float, address: str, error: BaseException | None
    ) -> None:
        attributes = {**self.base, "messaging.destination.name": address}
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        self.handler_duration.record(time.perf_counter() - started, attributes)
        _end(span, error)


def _end(span: Span, error: BaseException | None) -> None:
    if error is not None:
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


# -- metrics read from bus.stats() ---------------------------------------------------------------

# Per address, each read from the address's statistics.
COUNTERS: dict[str, tuple[str, Callable[[AddressStats], int]]] = {
    "tinybus.messages.published": ("Messages published to the address.", lambda a: a.published),
    "tinybus.messages.sent": ("Messages sent to a consumer of the address.", lambda a: a.sent),
    "tinybus.messages.requested": (
        "Request attempts that reached a consumer of the address.",
        lambda a: a.requested,
    ),
    "tinybus.messages.delivered": (
        "Messages handed to a handler of the address.",
        lambda a: sum(handler.delivered for handler in a.handlers),
    ),
    "tinybus.messages.failed": (
        "Handler failures at the address.",
        lambda a: sum(handler.failed for handler in a.handlers),
    ),
    "tinybus.messages.dropped": (
        "Messages flow control dropped at the address.",
        lambda a: sum(handler.dropped for handler in a.handlers),
    ),
}
# For the whole bus.
GAUGES: dict[str, tuple[str, Callable[[BusStats], int]]] = {
    "tinybus.requests.pending": (
        "Requests whose requester waits for an answer.",
        lambda s: s.pending_requests,
    ),
    "tinybus.handlers.running": ("Handler tasks running.", lambda s: s.running_handlers),
    "tinybus.messages.queued": ("Messages waiting in registrations' buffers.", lambda s: s.queued),
}


class _Observed:
    """The buses whose statistics one meter reports (its instruments are made once: a
    meter keeps the first callbacks given for a name)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.buses: list[tuple[Callable[[], Callable[[], BusStats] | None], dict[str, str]]] = []
        for name, (description, read) in COUNTERS.items():
            meter.create_observable_counter(
                name, [self._per_address(read)], unit="{message}", description=description
            )
        for name, (description, read_bus) in GAUGES.items():
            meter.create_observable_up_down_counter(
                name, [self._per_bus(read_bus)], unit="{message}", description=description
            )

    def add(self, stats: Callable[[], BusStats], base: dict[str, str]) -> None:
        # A bus's own ``stats`` is held weakly: the meter keeps no bus alive.
        held = weakref.WeakMethod(stats) if hasattr(stats, "__self__") else lambda: stats
        self.buses.append((held, base))

    def _snapshots(self) -> Iterable[tuple[BusStats, dict[str, str]]]:
        alive = [(ref, base) for ref, base in self.buses if ref() is not None]
        self.buses = alive
        for ref, base in alive:
            stats = ref()
            if stats is not None:
                yield stats(), base

    def _per_address(
        self, read: Callable[[AddressStats], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            totals: dict[tuple[tuple[str, str], ...], int] = {}
            for snapshot, base in self._snapshots():
                for address, numbers in snapshot.addresses.items():
                    key = _key(base, address)
                    totals[key] = totals.get(key, 0) + read(numbers)
            return [Observation(value, dict(key)) for key, value in totals.items()]

        return observe

    def _per_bus(
        self, read: Callable[[BusStats], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            totals: dict[tuple[tuple[str, str], ...], int] = {}
            for snapshot, base in self._snapshots():
                key = tuple(sorted(base.items()))
                totals[key] = totals.get(key, 0) + read(snapshot)
            return [Observation(value, dict(key)) for key, value in totals.items()]

        return observe


def _key(base: Mapping[str, str], address: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**base, "messaging.destination.name": address}.items()))


_METERS: weakref.WeakKeyDictionary[metrics.Meter, _Observed] = weakref.WeakKeyDictionary()


def _observed(meter: metrics.Meter) -> _Observed:
    observed = _METERS.get(meter)
    if observed is None:
        observed = _METERS[meter] = _Observed(meter)
    return observed
