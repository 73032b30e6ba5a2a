"""Deadlines of pending requests: one timer per distinct timeout, not one per request.

Requests made with the same timeout reach their deadlines in the order they were made (the
loop's clock only moves forward), so each timeout value has a lane: a deque of its requests,
earliest deadline first, and one timer, for the head. A request answered in time is not looked
for in its lane: it leaves at once when it is the head (the usual case, since requests tend to
be answered in the order they were made), or is skipped later. A lane is compacted when more
than half of it is answered, so it never holds more than about twice the requests still
waiting. Per waiting request this costs a deque slot, where a timer of its own costs an
``asyncio.TimerHandle``, its arguments and a place in the loop's heap.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

# A lane is compacted when more than half of it, and more than this many, are answered.
COMPACT_FROM = 32


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The loop's clock, as the loop has it now: ``time.monotonic`` itself when that is all
    ``loop.time`` does (asyncio's own loops, neither their class nor the loop patched), which
    spares a Python call per reading; else ``loop.time``."""
    if getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


class Waiting(Protocol):
    """What a lane holds: something with a deadline on the loop's clock, and its lane."""

    deadline: float
    timeout: float
    lane: Lane[Any] | None


class Lane[W: Waiting]:
    """The items added with one timeout, earliest deadline first, and the timer of the head.
    ``answered`` counts the released items this deque still holds."""

    __slots__ = ("answered", "entries", "timeout", "timer", "when")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.entries: deque[W] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.when = math.inf  # when the timer fires
        self.answered = 0


class Deadlines[W: Waiting]:
    """Calls ``expire`` with each waiting item whose deadline has come, unless it was
    ``release``d first."""

    def __init__(
        self, get_loop: Callable[[], asyncio.AbstractEventLoop], expire: Callable[[W], None]
    ) -> None:
        self._get_loop = get_loop
        self._expire = expire
        self._lanes: dict[float, Lane[W]] = {}
        # Timers run the bus's own code: they need no copy of the requester's context.
        self._bare_context = contextvars.Context()

    def add(self, item: W) -> None:
        """Expire ``item`` at its deadline (never, for an infinite one)."""
        deadline = item.deadline
        if math.isinf(deadline):
            return
        lane = self._lanes.get(item.timeout)
        if lane is None:
            lane = self._lanes[item.timeout] = Lane(item.timeout)
        entries = lane.entries
        if entries and entries[-1].deadline > deadline:
            # Made earlier but added later: a request whose handler, in its first step, made
            # requests with the same timeout. Its place is near the tail.
            index = len(entries) - 1
            while index > 0 and entries[index - 1].deadline > deadline:
                index -= 1
            entries.insert(index, item)
        else:
            entries.append(item)
        item.lane = lane
        if deadline < lane.when:
            self._arm(lane, deadline)

    def release(self, item: W) -> None:
        """``item`` needs no deadline any more (it was answered, or its requester left)."""
        lane = item.lane
        if lane is None:
            return
        item.lane = None
        entries = lane.entries
        if entries[0] is item:
            entries.popleft()
            while entries and entries[0].lane is not lane:  # answered earlier, skipped then
                entries.popleft()
                lane.answered -= 1
            return
        lane.answered += 1
        if lane.answered > COMPACT_FROM and 2 * lane.answered > len(entries):
            lane.entries = deque(entry for entry in entries if entry.lane is lane)
            lane.answered = 0

    def clear(self) -> None:
        """Cancel every timer and forget every item."""
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
            for entry in lane.entries:
                entry.lane = None
        self._lanes.clear()

    def _arm(self, lane: Lane[W], when: float) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
        lane.when = when
        lane.timer = self._get_loop().call_at(when, self._due, lane, context=self._bare_context)

    def _due(self, lane: Lane[W]) -> None:
        lane.timer = None
        lane.when = math.inf
        now = self._get_loop().time()
        entries = lane.entries
        while entries:
            head = entries[0]
            if head.lane is not lane:  # answered: skipped
                entries.popleft()
                lane.answered -= 1
                continue
            if head.deadline > now:
                # Not due yet (the loop runs timers a hair early, within its clock's
                # resolution; a timeout never comes early).
                self._arm(lane, head.deadline)
                return
            entries.popleft()
            head.lane = None
            self._expire(head)
        if self._lanes.get(lane.timeout) is lane:  # empty: a later request makes a new one
            del self._lanes[lane.timeout]
