"""``tinybus.notebook``: recordings hold exactly what arrived and when; plots have a row each."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from reactivex import operators as ops

from tinybus import EventBus
from tinybus.notebook import Recording, plot_marbles, record
from tinybus.testing import run_virtual

pytest.importorskip("matplotlib")

GAPS = [0.1, 0.1, 0.1, 0.6, 0.1, 0.8, 0.1]  # a burst, a pause, two, a pause, one


async def keystrokes(bus: EventBus) -> None:
    for key, gap in enumerate(GAPS):
        await bus.publish("keys", key)
        await asyncio.sleep(gap)
    await bus.drain()


def test_recordings_hold_each_value_with_the_time_it_arrived() -> None:
    async def scenario() -> tuple[Recording, Recording, Recording]:
        async with EventBus() as bus:
            raw = record(bus, "keys")
            debounced = record(bus, "keys", pipe=[ops.debounce(0.3)], name="debounce 0.3")
            throttled = record(bus, "keys", pipe=[ops.throttle_first(0.5)])
            await keystrokes(bus)
            return raw, debounced, throttled

    raw, debounced, throttled = run_virtual(scenario())
    assert raw.values == list(range(7))
    assert raw.times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.9, 1.0, 1.8])
    assert debounced.name == "debounce 0.3"
    assert debounced.events == [
        (pytest.approx(0.6), 3),
        (pytest.approx(1.3), 5),
        (pytest.approx(2.1), 6),
    ]
    assert throttled.name == "keys (piped)"
    assert throttled.values == [0, 4, 6]
    assert throttled.times == pytest.approx([0.0, 0.9, 1.8])


def test_stop_ends_a_recording_and_keeps_what_it_has() -> None:
    async def scenario() -> Recording:
        async with EventBus() as bus:
            recording = record(bus, "keys")
            await bus.publish("keys", 1)
            recording.stop()
            await bus.publish("keys", 2)
            assert bus.get_listeners("keys") == []
            return recording

    assert run_virtual(scenario()).values == [1]


def test_plot_marbles_draws_one_labelled_row_per_recording_to_png() -> None:
    async def scenario() -> list[Recording]:
        async with EventBus() as bus:
            recordings = [
                record(bus, "keys", name="raw"),
                record(bus, "keys", pipe=[ops.buffer_with_count(3)], name="batches"),
                record(bus, "nothing", name="silence"),
            ]
            await keystrokes(bus)
            return recordings

    recordings = run_virtual(scenario())
    figure = plot_marbles(*recordings, title="keys")
    assert len(figure.axes) == 3
    assert [axes.get_ylabel() for axes in figure.axes] == ["raw", "batches", "silence"]
    first_row_labels = [text.get_text() for text in figure.axes[0].texts]
    assert first_row_labels == [str(key) for key in range(7)]
    # The last, partial batch was delivered when the bus closed.
    assert [text.get_text() for text in figure.axes[1].texts] == ["[0, 1, 2]", "[3, 4, 5]", "[6]"]
    # What a notebook shows, whatever its matplotlib backend:
    png = cast(Any, figure)._repr_png_()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 5_000


def test_plot_marbles_needs_a_recording() -> None:
    with pytest.raises(ValueError, match="at least one recording"):
        plot_marbles()


def test_the_core_package_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = "import sys, tinybus; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
