"""``drain()`` and ``close()``: waiting for the bus to be quiet, and ending everything.

Quiet means: no handler task runs (but those that wait for quiet themselves: a handler may
drain or close the bus it runs on, and two handlers may both drain it), no message waits in
a buffer (except behind a paused registration), and no Rx operator holds a message on a
timer (see ``_scheduler``). Waiting costs O(1) for each handler that ends: the waiter is
woken only when nothing is left running.

``close()`` fails pending requests at once, lets pipelines emit what they hold, waits for
quiet during its grace period, then cancels what is left (timers, handlers) and drops what
still waits in buffers (reported, requesters failed). Cancelled handlers get the grace period
again (at least ``CANCEL_GRACE``) to stop; a handler that ignores its cancellation is then
logged and left running. Address streams, ``observe_all()`` and ``bus.errors`` complete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ._failures import Failures
from ._loop import LoopBinding
from ._registry import Registry
from ._replies import ReplySubject
from ._routes import Routes
from ._scheduler import BusScheduler
from ._taps import Taps
from ._tasks import Tasks
from ._transport import Transport
from .errors import EventBusError, handler_name

logger = logging.getLogger("tinybus")

# The least time cancelled handlers get to stop, whatever the close timeout.
CANCEL_GRACE = 1.0


class Shutdown:
    """The bus's ``drain()`` and ``close()``."""

    def __init__(
        self,
        binding: LoopBinding,
        tasks: Tasks,
        replies: ReplySubject,
        registry: Registry,
        routes: Routes,
        scheduler: BusScheduler,
        taps: Taps,
        failures: Failures,
        transport: Transport | None,
    ) -> None:
        self.binding = binding
        self.tasks = tasks
        self.replies = replies
        self.registry = registry
        self.routes = routes
        self.scheduler = scheduler
        self.taps = taps
        self.failures = failures
        self.transport = transport
        self._closing: asyncio.Future[None] | None = None
        self._closers: set[asyncio.Task[Any]] = set()  # handlers waiting in a second close()

    async def drain(self, timeout: float | None) -> None:
        loop = self.binding.check(None)
        deadline = None if timeout is None else loop.time() + timeout
        if not await self.until_quiet(loop, deadline):
            raise TimeoutError(f"the bus was not quiet within {timeout:g} s")

    async def until_quiet(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> bool:
        """Wait as ``drain()`` does, until ``deadline``; whether the bus got quiet in time."""
        tasks = self.tasks
        scheduler = self.scheduler
        with _waiting_for_quiet(tasks):
            while True:
                if not tasks.closing:
                    # Buffered messages wait behind running handlers, which start them as
                    # they finish: started here are those with no handler left to start
                    # them (the loop changed, or they were resumed from another task).
                    # Once close() has cancelled handlers, what waits is dropped instead.
                    for mailbox in list(tasks.mailboxes):
                        mailbox.pump()
                holding = scheduler.holding()
                if len(tasks.running) <= tasks.quiet_waiters and not holding:
                    return True
                timeout = None if deadline is None else deadline - loop.time()
                if timeout is not None and timeout <= 0:
                    return False
                waits: list[asyncio.Future[Any]] = [tasks.quiet()]
                if holding:
                    waits.append(scheduler.settled())
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    async def close(self, grace: float, on_closed: Callable[[], None]) -> None:
        if self._closing is not None:
            await self._second_close(self._closing)
            return
        binding = self.binding
        loop = binding.loop
        if loop is None:  # never used: nothing runs or waits
            binding.closed = True
            await self._finish(on_closed)
            return
        if loop.is_closed():
            # Used on a loop that has ended: this one takes over, and what waited in buffers
            # is handled within the grace period, as on the old loop.
            loop = binding.get()
        if asyncio.get_running_loop() is not loop:
            raise EventBusError("close() must be awaited on the event loop the bus is bound to")
        binding.closed = True
        if self.transport is not None:
            self.transport.closing()
        closing = self._closing = loop.create_future()
        try:
            self.replies.fail_all()
            for pipeline in list(self.registry.pipelines):
                if pipeline.started:
                    pipeline.flush()
            await self.until_quiet(loop, loop.time() + grace)
            self.scheduler.cancel_all()
            for pipeline in list(self.registry.pipelines):
                pipeline.stop()
            self.registry.pipelines.clear()
            self._discard_waiting()
            await self._cancel_running(loop, max(grace, CANCEL_GRACE))
        except BaseException:
            # Cancelled while waiting: a later close() must do the rest, not return at once.
            self._closing = None
            self.tasks.cancel_others()
            raise
        else:
            self.replies.fail_all()
            await self._finish(on_closed)
        finally:
            closing.set_result(None)

    async def loop_ending(self) -> None:
        """The bus's loop is ending with the bus open (``LoopBinding``): the calls from other
        threads accepted before now run first; then the handlers still running (started after
        ``asyncio.run`` cancelled every task, say) are cancelled and reported, as that
        cancellation is, rather than destroyed with the loop. Buffered messages stay for the
        next loop the bus serves."""
        await asyncio.sleep(0)
        # (Those calls' handlers start at the loop's next turn, as for any *_nowait caller.)
        await asyncio.sleep(0)
        tasks = self.tasks
        tasks.ending = True
        running = tasks.others()
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=CANCEL_GRACE)

    async def _second_close(self, closing: asyncio.Future[None]) -> None:
        """A second caller waits for the first. A handler doing so counts as quiet: the first
        close() neither waits for it nor cancels it."""
        current = asyncio.current_task()
        if current is not None:
            self._closers.add(current)
        self.tasks.wait_for_quiet(current)
        try:
            await asyncio.shield(closing)
        finally:
            self.tasks.stop_waiting(current)
            if current is not None:
                self._closers.discard(current)

    async def _cancel_running(self, loop: asyncio.AbstractEventLoop, grace: float) -> None:
        """Cancel every running handler (but the caller, and handlers waiting in close())
        and wait, at most ``grace`` seconds, until they have stopped."""
        tasks = self.tasks
        tasks.closing = True
        deadline = loop.time() + grace
        cancelled: set[asyncio.Task[Any]] = set()
        while running := tasks.others() - self._closers:
            for task in running - cancelled:  # once each: their cleanups may await
                task.cancel()
            cancelled |= running
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.error(
                    "close() left %d handler(s) running: they did not stop within %g s of "
                    "being cancelled: %s",
                    len(running),
                    grace,
                    ", ".join(sorted(_describe(task) for task in running)),
                )
                return
            await asyncio.wait(running, timeout=remaining)

    def _discard_waiting(self) -> None:
        for mailbox in list(self.tasks.mailboxes):
            mailbox.discard_all("closed")
        self.tasks.mailboxes.clear()

    async def _finish(self, on_closed: Callable[[], None]) -> None:
        self.binding.unwatch()
        for endpoint in self.registry.endpoints():
            endpoint.ended()
        self.routes.complete()
        # (The reply Subject stays open: an answer given after close() is late, and a late
        # failure is still reported.)
        self.taps.complete()
        self.failures.errors.on_completed()
        if self.transport is not None:
            await self.transport.close()
        on_closed()


class _waiting_for_quiet:
    """While a handler task waits for quiet, it does not count as running."""

    def __init__(self, tasks: Tasks) -> None:
        self._tasks = tasks
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        self._task = asyncio.current_task()
        self._tasks.wait_for_quiet(self._task)

    def __exit__(self, *exc: object) -> None:
        self._tasks.stop_waiting(self._task)


def _describe(task: asyncio.Task[Any]) -> str:
    """The handler a task of the bus's runs (``Endpoint.run``'s, or the task's coroutine)."""
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None)
    names: dict[str, Any] = {} if frame is None else frame.f_locals
    endpoint: Any = names.get("self", names.get("endpoint"))  # (``called_later``'s)
    handler = getattr(endpoint, "handler", None)
    if handler is not None:
        return f"{handler_name(handler)} at {getattr(endpoint, 'address', '?')!r}"
    return handler_name(coro) if coro is not None else repr(task)
