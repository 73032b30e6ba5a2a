"""The bus's reactivex scheduler: loop timers only, each one tracked so the bus can wait for or
cancel it.

A bus is often built at import time, with registrations (and their Rx pipelines) made by
decorators before any loop runs. Every timer goes to the loop the bus is bound to when it is
scheduled, so it runs on the loop thread: reactivex never falls back to its thread-based
timeout scheduler. ``now`` follows the loop's clock, so ``throttle_first`` and ``delay`` agree
with the timers, and a loop with a virtual clock drives every time-based operator.

What ``drain()`` waits for. Operators are opaque, so the scheduler judges by when timers were
set and fired:

- A timer *holds* a message when it was set while a message was being pushed into a pipeline
  (``debounce``, ``delay``, ``timeout``), or by the action of a timer that held one (``delay``
  re-arming for its next item). Its firing may move the message on inside the pipeline.
- The other timers of a pipeline form *chains*: a tick set when the pipeline is subscribed (or
  completed), and the ticks each one re-arms (``buffer_with_time``, ``sample``). A chain may
  hold something when a message entered the pipeline, or moved inside it, since the chain last
  fired; then its next tick is waited for. A chain that fired since carries nothing more, so
  ``drain()`` never waits forever for a periodic tick.

Operators that set a new holding timer on every tick (``buffer_with_time_or_count``) keep
``drain()`` waiting; the docs say so (Reactive streams and flow control).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from reactivex import abc, typing
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable
from reactivex.scheduler.eventloop import AsyncIOScheduler
from reactivex.scheduler.periodicscheduler import PeriodicScheduler


class Owner(Protocol):
    """A pipeline, as far as its timers are concerned."""

    moved_at: int  # the scheduler's ``moves`` when a message last entered or moved inside it


class Chain:
    __slots__ = ("fired_at",)

    def __init__(self, started_at: int) -> None:
        # A new chain carries nothing that entered before it: a pipeline subscribed again
        # after a failure starts empty (``flush`` marks a move after, so its chains count).
        self.fired_at = started_at


class Timer:
    __slots__ = ("chain", "handle", "holds", "owner")

    def __init__(self, holds: bool, owner: Owner | None, chain: Chain | None) -> None:
        self.holds = holds
        self.owner = owner
        self.chain = chain
        self.handle: asyncio.Handle | None = None

    @property
    def awaited(self) -> bool:
        """Whether ``drain()`` waits for this timer."""
        if self.holds:
            return True
        owner, chain = self.owner, self.chain
        return owner is not None and chain is not None and chain.fired_at < owner.moved_at


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
        # The pipeline being subscribed or pushed into, or whose timer runs.
        self.owner: Owner | None = None
        # The chain of the non-holding timer whose action runs.
        self._chain: Chain | None = None
        # Counts pushes and timer firings: orders "moved" against "fired" (see the docstring).
        self.moves = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        """The bus's loop, where every timer is set."""
        return self._get_loop()

    @property
    def timer_count(self) -> int:
        """Timers set and not yet fired or cancelled."""
        return len(self._timers)

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
        holds = self.holding_depth > 0
        chain = None if holds else (self._chain or Chain(self.moves))
        timer = Timer(holds, self.owner, chain)
        inner = SingleAssignmentDisposable()

        def fire() -> None:
            self._settle(timer)
            self.moves += 1
            owner = timer.owner
            if chain is None:
                if owner is not None:
                    owner.moved_at = self.moves
            else:
                chain.fired_at = self.moves
            outer = (self.owner, self._chain, self.holding_depth)
            self.owner, self._chain = owner, chain
            self.holding_depth = 0 if chain is not None else self.holding_depth + 1
            try:
                inner.disposable = self.invoke_action(action, state=state)
            finally:
                self.owner, self._chain, self.holding_depth = outer

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

    def enter(self, owner: Owner) -> tuple[Owner | None, Chain | None, int]:
        """Make ``owner`` the context of the timers set from now on: a message is being pushed
        into it (and it moved). Returns what ``leave`` restores."""
        outer = (self.owner, self._chain, self.holding_depth)
        self.moves += 1
        owner.moved_at = self.moves
        self.owner, self._chain = owner, None
        self.holding_depth += 1
        return outer

    def subscribing(self, owner: Owner) -> tuple[Owner | None, Chain | None, int]:
        """Make ``owner`` the context of the timers set from now on, which start new chains."""
        outer = (self.owner, self._chain, self.holding_depth)
        self.owner, self._chain, self.holding_depth = owner, None, 0
        return outer

    def leave(self, outer: tuple[Owner | None, Chain | None, int]) -> None:
        self.owner, self._chain, self.holding_depth = outer

    def holding(self) -> bool:
        """Whether a pending timer holds a message (see the module's docstring)."""
        return any(timer.awaited for timer in self._timers)

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
        self.owner = None
        self._chain = None
