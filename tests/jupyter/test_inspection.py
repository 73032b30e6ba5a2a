"""Live inspection: ``bus.stats()``, the plain and notebook displays of the bus and messages."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from tinybus import EventBus, HandlerExecutionError, HandlerTimeoutError, Message
from tinybus.testing import FailureLog


class Order(BaseModel):
    id: int
    item: str


async def test_stats_count_what_the_bus_did_overall_and_per_handler(
    bus: EventBus, failures: FailureLog
) -> None:
    """Totals count calls and outcomes; each address lists its handlers with their own
    counters; patterns are addresses of their own."""

    def double(message: Message[int]) -> int:
        if message.body < 0:
            raise ValueError("negative")
        return message.body * 2

    heard: list[int] = []
    bus.consumer("math.double", double)
    bus.on("math.*", lambda body: heard.append(body))
    await bus.request("math.double", 2)
    await bus.request("math.double", 3)
    with pytest.raises(HandlerExecutionError):
        await bus.request("math.double", -1)
    await bus.publish("math.double", 4)  # reaches the consumer and the pattern listener
    await bus.publish("nowhere", 0)
    await bus.send("math.double", 5)

    stats = bus.stats()
    totals = stats.totals
    assert (totals.published, totals.sent, totals.requested) == (2, 1, 3)
    assert (totals.delivered, totals.replied, totals.failed, totals.dropped) == (6, 2, 1, 0)
    assert stats.pending_requests == 0
    assert set(stats.addresses) == {"math.double", "math.*"}
    exact = stats.addresses["math.double"]
    assert (exact.pattern, exact.published, exact.consumers, exact.listeners) == (False, 1, 1, 0)
    assert (exact.sent, exact.requested) == (1, 3)
    (consumer,) = exact.handlers
    assert consumer.handler.endswith("double")
    assert (consumer.delivered, consumer.replied, consumer.failed) == (5, 2, 1)
    pattern = stats.addresses["math.*"]
    assert (pattern.pattern, pattern.published, pattern.listeners) == (True, 1, 1)
    assert pattern.handlers[0].delivered == 1
    assert heard == [4]
    assert failures == []  # a requester's failure is its own, not a record on bus.errors


async def test_stats_count_listener_failures_and_drops(bus: EventBus, failures: FailureLog) -> None:
    def broken(body: int) -> None:
        raise RuntimeError("boom")

    bus.on("broken", broken)
    ticker = bus.on("ticks", lambda body: None, max_buffered=1, overflow="drop_newest")
    ticker.pause()
    await bus.publish("broken", 1)
    for tick in range(3):
        await bus.publish("ticks", tick)

    stats = bus.stats()
    assert (stats.totals.failed, stats.totals.dropped) == (1, 2)
    (ticks,) = stats.addresses["ticks"].handlers
    assert (ticks.paused, ticks.queued, ticks.dropped, ticks.delivered) == (True, 1, 2, 0)
    assert stats.addresses["broken"].handlers[0].failed == 1
    assert type(bus.recent_failures[0].exception) is RuntimeError
    ticker.resume()  # (its waiting tick is handled, not dropped at close)
    await bus.drain()
    assert len(failures) == 3


async def test_the_bus_plain_repr_summarises_and_the_html_shows_addresses_and_failures(
    bus: EventBus, failures: FailureLog
) -> None:
    bus.consumer("echo", lambda message: message.body)
    bus.on("user.*", lambda body: None, pipe=[])

    def broken(body: str) -> None:
        raise RuntimeError("<oops>")

    bus.on("broken", broken)
    await bus.request("echo", "hi")
    await bus.publish("broken", "x")

    text = repr(bus)
    assert text.startswith("<EventBus open: 3 addresses, 0 pending requests, 0 running handlers")
    assert "requested 1" in text
    assert "replied 1" in text
    assert "failed 1" in text

    assert "published / sent / requested" in bus.stats()._repr_html_()
    html = bus._repr_html_()
    assert html.count("<tr>") >= 6  # header rows, one per handler, the failure
    for shown in ("echo", "user.*", "pattern", "broken", "Last failures"):
        assert shown in html
    assert "RuntimeError: &lt;oops&gt;" in html  # escaped, never raw markup
    assert "<oops>" not in html
    failures.expect(RuntimeError, "<oops>")


def test_a_message_shows_its_address_headers_and_a_model_body_by_fields() -> None:
    message = Message(Order(id=7, item="tea"), address="orders", headers={"trace-id": "42"})
    html = message._repr_html_()
    for shown in ("orders", "header trace-id", "42", "Order", "<td>item</td>", "&#x27;tea&#x27;"):
        assert shown in html
    plain = Message("<b>", address="x")._repr_html_()
    assert "&lt;b&gt;" in plain
    assert "<b>Message</b>" in plain


async def test_stats_survive_registrations_that_end(bus: EventBus) -> None:
    """Totals are the bus's own, not sums over the registrations it has now."""
    registration = bus.on("evt", lambda body: None)
    await bus.publish("evt", 1)
    registration.unregister()
    stats = bus.stats()
    assert stats.totals.delivered == 1
    assert stats.addresses == {}


async def test_a_late_reply_is_not_counted_as_replied(bus: EventBus) -> None:
    """Only what reaches a requester counts: a reply after the requester timed out is dropped."""
    release = asyncio.Event()

    async def slow(message: Message[int]) -> int:
        await release.wait()
        return message.body

    bus.consumer("slow", slow)
    with pytest.raises(HandlerTimeoutError):
        await bus.request("slow", 1, timeout=0.01)
    release.set()
    await bus.drain()
    stats = bus.stats()
    assert (stats.totals.replied, stats.totals.failed, stats.totals.delivered) == (0, 0, 1)
    assert stats.addresses["slow"].handlers[0].replied == 0


async def test_the_notebook_views_stay_small_whatever_the_bus_holds(bus: EventBus) -> None:
    """A bus with thousands of registrations, and a message with a huge body, render in a few
    kilobytes, saying how much was left out."""

    def listener(body: object) -> None: ...

    for n in range(3000):
        bus.on(f"address.{n}", listener)
    for n in range(3000):
        bus.on("crowded", lambda body, n=n: None)
    html = bus._repr_html_()
    assert len(html) < 50_000, len(html)
    assert "... and 5950 more handlers" in html
    message = Message(list(range(2_000_000)), address="big", headers={"a": "x" * 10_000})
    html = message._repr_html_()
    assert len(html) < 5_000, len(html)
    assert "..." in html
