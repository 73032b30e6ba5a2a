"""How the bus and its messages show in a notebook (``_repr_html_``): tables, escaped, and
bounded: at most ``MAX_ROWS`` rows per table and short reprs (``reprlib``), with a count of
what was left out, so that a bus with 100,000 addresses or a body of a million items renders
in a few kilobytes."""

from __future__ import annotations

import reprlib
import sys
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from .errors import HandlerFailure, handler_name
from .stats import BusStats

_TABLE = 'style="border-collapse: collapse; text-align: left"'
MAX_ROWS = 50

_short = reprlib.Repr(maxlevel=3, maxlist=20, maxtuple=20, maxdict=20, maxset=20)
_short.maxstring = _short.maxother = 300


def short_repr(value: object) -> str:
    """``repr(value)``, bounded in size (and never failing)."""
    try:
        return _short.repr(value)
    except Exception as exc:
        return f"<{type(value).__name__}: its repr raised {type(exc).__name__}>"


def short_str(value: object) -> str:
    """``str(value)``, bounded in size (and never failing)."""
    try:
        text = str(value)
    except Exception as exc:
        return f"<{type(value).__name__}: its str raised {type(exc).__name__}>"
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text) - 300} more characters)"


def _bounded[T](rows: list[T], what: str, width: int) -> list[T | list[object]]:
    """At most ``MAX_ROWS`` of ``rows``, then a row saying how many were left out."""
    if len(rows) <= MAX_ROWS:
        return list(rows)
    left_out: list[object] = [f"... and {len(rows) - MAX_ROWS} more {what}", *[""] * (width - 1)]
    return [*rows[:MAX_ROWS], left_out]


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table {_TABLE}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def stats_html(stats: BusStats) -> str:
    """The counters as tables: the bus's totals, then one row per handler of each address."""
    totals = stats.totals
    summary = (
        f"{len(stats.addresses)} addresses, {stats.pending_requests} pending requests, "
        f"{stats.running_handlers} running handlers"
    )
    counters = _table(
        ["published", "sent", "requested", "delivered", "replied", "failed", "dropped"],
        [
            [
                totals.published,
                totals.sent,
                totals.requested,
                totals.delivered,
                totals.replied,
                totals.failed,
                totals.dropped,
            ]
        ],
    )
    rows: list[list[object]] = []
    left_out = 0
    for address in stats.addresses.values():
        for handler in address.handlers:
            if len(rows) >= MAX_ROWS:
                left_out += 1  # (counted, not shown)
                continue
            flags = ", ".join(
                flag
                for flag, on in (
                    ("pattern", address.pattern),
                    ("pipe", handler.piped),
                    ("paused", handler.paused),
                )
                if on
            )
            rows.append(
                [
                    address.address,
                    f"{address.published} / {address.sent} / {address.requested}",
                    handler.role,
                    handler.handler,
                    flags,
                    handler.delivered,
                    handler.replied,
                    handler.failed,
                    handler.dropped,
                    handler.queued,
                ]
            )
    addresses = _table(
        [
            "address",
            "published / sent / requested",
            "role",
            "handler",
            "",
            "delivered",
            "replied",
            "failed",
            "dropped",
            "queued",
        ],
        [*rows, [f"... and {left_out} more handlers", *[""] * 9]] if left_out else rows,
    )
    return f"<div>{summary}{counters}{addresses}</div>"


def bus_html(state: str, stats: BusStats, failures: Sequence[HandlerFailure]) -> str:
    parts = [f"<div><b>EventBus</b> ({state})", stats_html(stats)]
    if failures:
        parts.append("<b>Last failures</b>")
        parts.append(
            _table(
                ["address", "handler", "error"],
                (
                    [
                        f.address,
                        handler_name(f.handler),
                        f"{type(f.exception).__name__}: {short_str(f.exception)}",
                    ]
                    for f in failures
                ),
            )
        )
    parts.append("</div>")
    return "".join(parts)


def body_html(body: Any) -> str:
    """A body as HTML: a pydantic model as a table of its fields, anything else as its repr."""
    pydantic = sys.modules.get("pydantic")  # (not imported: the body is no pydantic model)
    if pydantic is not None and isinstance(body, pydantic.BaseModel):
        model: Any = body
        fields = [[name, short_repr(value)] for name, value in model.__dict__.items()]
        table = _table(["field", "value"], _bounded(fields, "fields", 2))
        return f"<b>{escape(type(body).__name__)}</b>" + table
    return f"<code>{escape(short_repr(body))}</code>"


def message_html(
    address: str,
    message_id: str,
    reply_address: str | None,
    headers: Sequence[tuple[str, str]],
    body: Any,
) -> str:
    rows: list[Sequence[object]] = [("address", address), ("id", message_id)]
    if reply_address is not None:
        rows.append(("reply address", reply_address))
    rows += [(f"header {name}", short_str(value)) for name, value in headers]
    table = _table(["", ""], _bounded(rows, "headers", 2))
    return f"<div><b>Message</b>{table}{body_html(body)}</div>"
