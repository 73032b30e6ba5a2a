"""A virtual clock for time-based tests: an event loop whose time only moves when it waits.

When the loop has nothing ready to run, instead of sleeping until its next timer it moves its
clock to that timer at once. Every Rx operator on ``bus.scheduler``, every request timeout and
every ``asyncio.sleep`` or ``asyncio.timeout`` follows the loop's clock, so a test of
``debounce(10.0)`` runs in microseconds and sees exactly ten virtual seconds pass, whatever
the load on the machine. Real I/O and other threads still wake the loop: with nothing
scheduled it waits for them as any loop does.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, Protocol


class Advancing(Protocol):
    """What a ``VirtualSelector`` moves on when it would have slept: a clock."""

    def advance(self, seconds: float) -> None: ...


class VirtualSelector(selectors.DefaultSelector):
    """A selector that, instead of sleeping until the next timer, advances ``clock``."""

    def __init__(self) -> None:
        super().__init__()
        self.clock: Advancing | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            return super().select(None)  # nothing scheduled: wait for real I/O or a thread
        ready = super().select(0)
        if not ready and timeout > 0 and self.clock is not None:
            self.clock.advance(timeout)
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on a virtual clock, starting at 0.0 (see the module)."""

    def __init__(self) -> None:
        selector = VirtualSelector()
        super().__init__(selector)
        selector.clock = self
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` (the loop does this itself when it would wait)."""
        self._virtual_now += seconds


def run_virtual[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh ``VirtualClockLoop``, as ``asyncio.run`` would."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(coro)
