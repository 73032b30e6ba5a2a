"""Deadlines of waiting requests: one heap, and one loop timer for the earliest deadline.

A request that waits for its answer is added with its deadline; the timer fires at the
earliest one and expires every item that is due, then is set for the next. An item released
before its deadline (answered, or its requester gone) is not looked for in the heap: it is
popped at once when it is the earliest (the usual case: requests tend to be answered in the
order they were made), else skipped later; the heap is compacted when more than half of it is
released, so it never holds more than about twice the items still waiting. Whatever the mix
of timeouts, there is one timer, not one per request or per timeout value.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Protocol

# The heap is compacted when more than half of it, and more than this many, are released.
COMPACT_FROM = 32


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The loop's clock, as the loop has it now: ``time.monotonic`` itself when that is all
    ``loop.time`` does (asyncio's own loops, neither their class nor the loop patched), which
    spares a Python call per reading; else ``loop.time``."""
    if getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


class Waiting(Protocol):
    """What waits for a deadline: when (on the loop's clock), and whether it is scheduled."""

    deadline: float
    scheduled: bool


class Deadlines[W: Waiting]:
    """Calls ``expire`` with each item whose deadline has come, unless it was ``release``d
    first."""

    def __init__(
        self, get_loop: Callable[[], asyncio.AbstractEventLoop], expire: Callable[[W], None]
    ) -> None:
        self._get_loop = get_loop
        self._expire = expire
        self._heap: list[tuple[float, int, W]] = []
        self._order = itertools.count()  # ties keep the order items were added in
        self._released = 0  # released items still in the heap
        self._timer: asyncio.TimerHandle | None = None
        self._when = math.inf  # when the timer fires
        # The timer runs the bus's own code: it needs no copy of the requester's context.
        self._bare_context = contextvars.Context()

    @property
    def waiting(self) -> int:
        return len(self._heap) - self._released

    @property
    def timer_count(self) -> int:
        """1 while the timer is set for items that wait, else 0."""
        return 1 if self._timer is not None and self.waiting else 0

    def add(self, item: W) -> None:
        """Expire ``item`` at its deadline (never, for an infinite one)."""
        deadline = item.deadline
        if math.isinf(deadline):
            return
        heapq.heappush(self._heap, (deadline, next(self._order), item))
        item.scheduled = True
        if deadline < self._when:
            self._arm(deadline)

    def release(self, item: W) -> None:
        """``item`` needs no deadline any more (it was answered, or its requester left)."""
        if not item.scheduled:
            return
        item.scheduled = False
        heap = self._heap
        if heap[0][2] is item:
            heapq.heappop(heap)
            while heap and not heap[0][2].scheduled:  # released earlier, skipped now
                heapq.heappop(heap)
                self._released -= 1
            return
        self._released += 1
        if self._released > COMPACT_FROM and 2 * self._released > len(heap):
            self._heap = [entry for entry in heap if entry[2].scheduled]
            heapq.heapify(self._heap)
            self._released = 0

    def clear(self) -> None:
        """Cancel the timer and forget every item."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._when = math.inf
        for _, _, item in self._heap:
            item.scheduled = False
        self._heap = []
        self._released = 0

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._when = when
        self._timer = self._get_loop().call_at(when, self._due, context=self._bare_context)

    def _due(self) -> None:
        self._timer = None
        self._when = math.inf
        now = self._get_loop().time()
        heap = self._heap
        while heap:
            deadline, _, item = heap[0]
            if not item.scheduled:  # released: skipped
                heapq.heappop(heap)
                self._released -= 1
                continue
            if deadline > now:
                # Not due yet (the loop runs timers a hair early, within its clock's
                # resolution; a timeout never comes early).
                self._arm(deadline)
                return
            heapq.heappop(heap)
            item.scheduled = False
            self._expire(item)
