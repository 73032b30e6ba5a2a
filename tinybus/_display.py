"""How the bus and its messages show in a notebook (``_repr_html_``): tables, escaped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from pydantic import BaseModel

from .errors import HandlerFailure, handler_name
from .stats import BusStats

_TABLE = 'style="border-collapse: collapse; text-align: left"'


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
    for address in stats.addresses.values():
        for handler in address.handlers:
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
        rows,
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
                        f"{type(f.exception).__name__}: {f.exception}",
                    ]
                    for f in failures
                ),
            )
        )
    parts.append("</div>")
    return "".join(parts)


def body_html(body: Any) -> str:
    """A body as HTML: a pydantic model as a table of its fields, anything else as its repr."""
    if isinstance(body, BaseModel):
        fields = [[name, repr(value)] for name, value in body.__dict__.items()]
        return f"<b>{escape(type(body).__name__)}</b>" + _table(["field", "value"], fields)
    return f"<code>{escape(repr(body))}</code>"


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
    rows += [(f"header {name}", value) for name, value in headers]
    return f"<div><b>Message</b>{_table(['', ''], rows)}{body_html(body)}</div>"
