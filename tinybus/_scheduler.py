"""The bus's reactivex scheduler: loop timers only, each one tracked so the bus can wait for or
cancel it.

A bus is often built at import time, with registrations (and their Rx pipelines) made by
decorators before any loop runs. Every timer goes to the loop the bus is bound to when it is
scheduled, so it runs on the loop thread: reactivex never falls back to its thread-based
timeout scheduler. ``now`` follows the loop's clock, so ``throttle_first`` and ``delay`` agree
with the timers, and a loop with a virtual clock drives every time-based operator.

A timer *holds* a message when it was scheduled while a message was being pushed into a
pipeline (``debounce``, ``delay``, ``timeout``), or by the action of a timer that held one.
Timers scheduled when a pipeline is subscribed (``buffer_with_time``'s ticks, ``sample``'s)
hold nothing by themselves: ``drain()`` waits for every holding timer, and for the others only
once, so that a periodic flush delivers what it holds without making ``drain()`` wait forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from reactivex import abc, typing
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable
from reactivex.scheduler.eventloop import AsyncIOScheduler
from reactivex.scheduler.periodicscheduler import PeriodicScheduler


class Timer:
    __slots__ = ("handle", "holds")

    def __init__(self, holds: bool) -> None:
        self.holds = holds
        self.handle: asyncio.Handle | None = None


class BusScheduler(AsyncIOScheduler):
    """An ``AsyncIOScheduler`` for the bus's loop, whatever loop that is when a timer is set."""

    def __init__(self, get_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        PeriodicScheduler.__init__(self)
        self._get_loop = get_loop
        self._timers: set[Timer] = set()
        self._settled: asyncio.Future[None] | None = None
        self._clock: tuple[asyncio.AbstractEventLoop, float] | None = None
        # >0 while a message is being pushed into a pipeline or a holding timer runs.
        self.holding_depth = 0

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self._get_loop()

    @property
    def now(self) -> datetime:
        loop = self._get_loop()
        clock = self._clock
        if clock is None or clock[0] is not loop:
            clock = self._clock = (loop, time.time() - loop.time())
        return datetime.fromtimestamp(loop.time() + clock[1], UTC)

    def schedule(
        self, action: typing.ScheduledAction[Any], state: Any = None
    ) -> abc.DisposableBase:
        return self._arm(0.0, action, state)

    def schedule_relative(
        self, duetime: typing.RelativeTime, action: typing.ScheduledAction[Any], state: Any = None
    ) -> abc.DisposableBase:
        return self._arm(self.to_seconds(duetime), action, state)

    def schedule_absolute(
        self, duetime: typing.AbsoluteTime, action: typing.ScheduledAction[Any], state: Any = None
    ) -> abc.DisposableBase:
        return self._arm(self.to_seconds(self.to_datetime(duetime) - self.now), action, state)

    def _arm(
        self, seconds: float, action: typing.ScheduledAction[Any], state: Any
    ) -> abc.DisposableBase:
        loop = self._get_loop()
        timer = Timer(self.holding_depth > 0)
        inner = SingleAssignmentDisposable()

        def fire() -> None:
            self._settle(timer)
            if timer.holds:
                self.holding_depth += 1
                try:
                    inner.disposable = self.invoke_action(action, state=state)
                finally:
                    self.holding_depth -= 1
            else:
                inner.disposable = self.invoke_action(action, state=state)

        timer.handle = loop.call_soon(fire) if seconds <= 0 else loop.call_later(seconds, fire)
        self._timers.add(timer)

        def cancel() -> None:
            if timer in self._timers:
                assert timer.handle is not None
                timer.handle.cancel()
                self._settle(timer)

        return CompositeDisposable(inner, Disposable(cancel))

    def _settle(self, timer: Timer) -> None:
        self._timers.discard(timer)
        settled = self._settled
        if settled is not None:
            self._settled = None
            if not settled.done():
                settled.set_result(None)

    # -- for drain() and close() ----------------------------------------------------------

    def pending(self) -> set[Timer]:
        return set(self._timers)

    def holding(self) -> bool:
        return any(timer.holds for timer in self._timers)

    def is_pending(self, timer: Timer) -> bool:
        return timer in self._timers

    def settled(self) -> asyncio.Future[None]:
        """A future that completes when any timer fires or is cancelled."""
        if self._settled is None:
            self._settled = self._get_loop().create_future()
        return self._settled

    def cancel_all(self) -> None:
        for timer in list(self._timers):
            if timer.handle is not None:
                timer.handle.cancel()
            self._settle(timer)

    def reset(self) -> None:
        """Forget the timers of a loop that is gone."""
        self._timers.clear()
        self._settled = None
        self.holding_depth = 0
