"""A controllable clock for time-based tests: an event loop whose time is virtual.

When the loop has nothing ready to run, instead of sleeping until its next timer it moves its
clock to that timer at once. Every Rx operator on ``bus.scheduler`` follows the loop's clock,
so a test of ``debounce(10.0)`` runs in microseconds and sees exactly ten virtual seconds pass,
whatever the load on the machine.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            return super().select(None)  # nothing scheduled: wait for real I/O or a thread
        ready = super().select(0)
        if not ready and timeout > 0 and self.loop is not None:
            self.loop.advance(timeout)
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


def run_virtual[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh ``VirtualClockLoop``."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(coro)
