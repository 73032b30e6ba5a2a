"""Streams seen in a notebook: record what reaches an address, draw it as marble timelines.

``record(bus, address, pipe=[...])`` listens (through the same operators a listener would use)
and keeps each value with the loop time it arrived at; ``plot_marbles(*recordings)`` draws
recordings as one timeline each, in one figure, on a shared time axis. Plotting needs
matplotlib, the ``tinybus[notebook]`` extra; it is imported only when ``plot_marbles`` runs, and
the core package never imports it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from ._address import AddressLike
from ._pipeline import Operator
from .bus import EventBus
from .registration import Registration

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Recording:
    """What reached a recorded address: ``(time, value)`` pairs, times in seconds since
    ``started_at`` (the loop's clock when recording began)."""

    name: str
    started_at: float
    arrivals: list[tuple[float, Any]] = field(default_factory=list[tuple[float, Any]])
    registration: Registration | None = None

    @property
    def events(self) -> list[tuple[float, Any]]:
        return [(at - self.started_at, value) for at, value in self.arrivals]

    @property
    def times(self) -> list[float]:
        return [at for at, _ in self.events]

    @property
    def values(self) -> list[Any]:
        return [value for _, value in self.arrivals]

    def stop(self) -> None:
        """Stop recording (what was recorded stays)."""
        if self.registration is not None:
            self.registration.unregister()


def record(
    bus: EventBus,
    address: AddressLike,
    *,
    pipe: Sequence[Operator] | None = None,
    name: str | None = None,
) -> Recording:
    """Record the bodies published to ``address`` (or a pattern), after ``pipe`` if given,
    from now until ``recording.stop()`` or the bus closes. Call it on the bus's loop (a
    notebook cell is)."""
    loop = asyncio.get_running_loop()
    recording = Recording(name or _describe(address, pipe), loop.time())

    def arrive(value: Any) -> None:
        recording.arrivals.append((loop.time(), value))

    recording.registration = bus.on(address, arrive, pipe=pipe, validate=False)
    return recording


def plot_marbles(
    *recordings: Recording,
    title: str | None = None,
    width: float = 9.0,
    row_height: float = 0.9,
) -> Figure:
    """One timeline per recording, top to bottom, on a shared time axis that starts when the
    earliest of them did; each value a marble labelled with it. Returns the matplotlib
    ``Figure``, which a notebook shows as a picture, whatever its matplotlib backend;
    ``figure.savefig(...)`` writes it to a file."""
    if not recordings:
        raise ValueError("plot_marbles needs at least one recording")
    marble_figure = _displayable_figure()

    origin = min(recording.started_at for recording in recordings)
    end = max(
        [recording.arrivals[-1][0] for recording in recordings if recording.arrivals] + [origin]
    )
    span = max(end - origin, 1e-3)
    height = 1.0 + row_height * len(recordings)
    figure = marble_figure(figsize=(width, height))
    axes = figure.subplots(len(recordings), 1, sharex=True, squeeze=False)[:, 0]
    for row, recording in zip(axes, recordings, strict=True):
        times = [at - origin for at, _ in recording.arrivals]
        row.axhline(0, color="0.6", linewidth=1, zorder=1)
        row.scatter(times, [0] * len(times), s=140, zorder=2, edgecolors="black")
        for at, value in zip(times, recording.values, strict=True):
            row.annotate(
                _label(value),
                (at, 0),
                xytext=(0, 9),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
        row.set_ylim(-1, 1.6)
        row.set_yticks([])
        row.set_ylabel(recording.name, rotation=0, ha="right", va="center", fontsize=9)
        for side in ("top", "right", "left"):
            row.spines[side].set_visible(False)
    axes[-1].set_xlim(-0.03 * span, span * 1.05)
    axes[-1].set_xlabel("seconds")
    if title:
        figure.suptitle(title)  # pyright: ignore[reportUnknownMemberType]
    figure.subplots_adjust(
        left=0.25, right=0.97, hspace=0.35, bottom=0.55 / height, top=1 - 0.4 / height
    )
    return figure


@cache
def _displayable_figure() -> type[Figure]:
    """A matplotlib ``Figure`` that shows itself in a notebook: a bare ``Figure`` (not made by
    pyplot) shows only as text unless the notebook ran ``%matplotlib inline``."""
    try:
        from matplotlib.figure import Figure  # the tinybus[notebook] extra
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "plot_marbles needs matplotlib: install TinyBus with its notebook extra "
            "(`uv add <your tinybus clone or wheel> --extra notebook`; see the README, "
            "Install), or install matplotlib itself",
            name=exc.name,
        ) from exc

    class MarbleFigure(Figure):
        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)  # pyright: ignore[reportUnknownMemberType]
            return buffer.getvalue()

    return MarbleFigure


def _label(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 14 else text[:13] + "…"


def _describe(address: AddressLike, pipe: Sequence[Operator] | None) -> str:
    address_name = str(getattr(address, "value", address))
    return f"{address_name} (piped)" if pipe else address_name
