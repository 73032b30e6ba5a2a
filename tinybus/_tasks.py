"""The tasks the bus starts for handlers: started eagerly, owned until they end, waited for.

Every coroutine a handler returns runs in a task of the bus's (``Tasks.start``), started
eagerly: its first step runs inside the call that delivers the message, so a handler that
finishes without suspending costs no trip through the event loop. Eager starts nest (a
handler that sends starts the next handler inside its own first step); past
``MAX_EAGER_DEPTH`` a task is scheduled the ordinary way, so handlers that call each other
never grow the stack without bound.

A ``*_nowait`` caller never runs a handler in its own call stack (``Tasks.later`` counts
its push under way): each handler it reaches is called in a task of the bus's
(``called_later``) at the loop's next turn, so a handler that ``send_nowait``s to its own
address does not recurse, and nothing changes under the sender before it returns. Until those
calls have been made (``later`` counts them too), every handler call takes the same way, in
order behind them, so a registration sees one sender's messages in the order they were sent
(an awaited publish waits for its tasks, as for any handler's).

A task stays in ``running`` until it ends: ``drain()`` and ``close()`` wait for those, and
``close()`` cancels what is left. Waiting for quiet costs O(1) per task that ends: the waiter
is woken only when no task is left but those that wait for quiet themselves (a handler that
drains the bus it runs on).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .errors import MessageDroppedError

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._flow import Mailbox
    from .message import Message

MAX_EAGER_DEPTH = 16


class Collected:
    """What one publish or send set off that its caller awaits: the tasks it started, the
    inline handlers whose turn comes in the caller's task, room waited for under
    ``overflow="block"``, and the first refusal (``BufferFullError``) to raise at the end."""

    __slots__ = ("can_wait", "message", "refusal", "turns", "waits")

    def __init__(self) -> None:
        self.can_wait = True  # False: a caller that will not await (publish_nowait)
        self.message: Message[Any] | None = None  # set once there is something to await
        self.waits: list[asyncio.Future[Any]] | None = None  # (made when needed)
        self.turns: list[Endpoint] | None = None  # inline endpoints, called in order
        self.refusal: BaseException | None = None

    def wait_for(self, future: asyncio.Future[Any]) -> None:
        if self.waits is None:
            self.waits = [future]
        else:
            self.waits.append(future)

    def take_turn(self, endpoint: Endpoint) -> None:
        if self.turns is None:
            self.turns = [endpoint]
        else:
            self.turns.append(endpoint)


class Tasks:
    """The running handler tasks of one bus, the mailboxes whose messages wait for them, and
    what the push under way collects for its caller."""

    def __init__(self, get_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self._get_loop = get_loop
        self.loop: asyncio.AbstractEventLoop | None = None  # the bus's, set when it binds
        self.running: set[asyncio.Task[Any]] = set()
        self.mailboxes: set[Mailbox] = set()  # those with a buffer, or waiting to empty it
        # What the push under way collects for its caller; None outside a push (and inside
        # a handler's first step: what a handler sets off is its own).
        self.collecting: Collected | None = None
        # Not 0 while a *_nowait caller's message is pushed, or a handler call it set off
        # waits for the loop's next turn: handlers are called in tasks (``called_later``).
        self.later = 0
        # Set once close() cancels the running handlers: their cancellation is no failure.
        self.closing = False
        # Set while the loop ends with the bus open: buffered messages wait for the next.
        self.ending = False
        self._depth = 0
        # Quiet means: no task running but those waiting for quiet themselves (a handler that
        # drains or closes the bus it runs on), which are ``waiting``; ``quiet_waiters``
        # counts those of them that are in ``running`` (one that drains in its first step is
        # added to ``running`` only once that step returns).
        self._quiet: asyncio.Future[None] | None = None
        self.waiting: set[asyncio.Task[Any]] = set()
        self.quiet_waiters = 0
        self._bare_context = contextvars.Context()

    def bound_loop(self) -> asyncio.AbstractEventLoop:
        """The bus's loop (bound to the running one first, if its own has closed)."""
        return self._get_loop()

    def start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run ``coro`` in a task of the bus's, started eagerly; the task if it is still
        running (None when it finished in its first step)."""
        loop = self.loop or self._get_loop()  # (resume() may come between runs of the loop)
        if self._depth < MAX_EAGER_DEPTH:
            self._depth += 1
            collecting, self.collecting = self.collecting, None
            try:
                task = asyncio.Task(coro, loop=loop, eager_start=True)
            finally:
                self._depth -= 1
                self.collecting = collecting
            if task.done():
                return None
            if collecting is not None:
                collecting.wait_for(task)
        else:
            # Not loop.create_task: an eager task factory on the loop would start it eagerly
            # again, and the depth would have no bound. Cancelled before its first step, its
            # coroutine never runs: the done callback takes it out of ``running`` then.
            task = asyncio.Task(coro, loop=loop)
            task.add_done_callback(self.ended, context=self._bare_context)
            if self.collecting is not None:
                self.collecting.wait_for(task)
        self.running.add(task)
        if task in self.waiting:  # it waits for quiet since its first step
            self.quiet_waiters += 1
        return task

    def start_later(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """``start`` for a handler's call at the loop's next turn (``called_later``)."""
        self.later += 1  # (until that turn)
        try:
            return self.start(coro)
        except BaseException:
            self.later -= 1
            raise

    def wait_for_quiet(self, task: asyncio.Task[Any] | None) -> None:
        """``task`` (the current one) waits for quiet: it does not count as running."""
        if task is not None:
            self.waiting.add(task)
            if task in self.running:
                self.quiet_waiters += 1
            self._wake()

    def stop_waiting(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None and task in self.waiting:
            self.waiting.discard(task)
            if task in self.running:
                self.quiet_waiters -= 1

    def leave(self) -> None:
        """The current task, a handler's, ends: the last step of every handler task."""
        running = self.running
        if running:
            # (Given the loop: no error when a task the loop left pending is destroyed.)
            task = asyncio.current_task(self.loop)
            if task is not None:
                running.discard(task)
            if self._quiet is not None and len(running) <= self.quiet_waiters:
                self._wake()

    def ended(self, task: asyncio.Task[Any]) -> None:
        """``task`` ended (a done callback: for a mailbox's task, or one never started)."""
        running = self.running
        running.discard(task)
        if self._quiet is not None and len(running) <= self.quiet_waiters:
            self._wake()

    def others(self) -> set[asyncio.Task[Any]]:
        """The running handlers, except the current task (a handler calling drain or close)."""
        current = asyncio.current_task()
        return {task for task in self.running if task is not current}

    def quiet(self) -> asyncio.Future[None]:
        """A future set when no handler runs but those waiting for quiet (or when woken)."""
        if self._quiet is None:
            self._quiet = (self.loop or self._get_loop()).create_future()
        return self._quiet

    def _wake(self) -> None:
        quiet, self._quiet = self._quiet, None
        if quiet is not None and not quiet.done():
            quiet.set_result(None)

    def cancel_others(self) -> None:
        """Cancel every running handler but the caller, once each (cleanups may run)."""
        self.closing = True
        for task in self.others():
            if not task.cancelling():
                task.cancel()

    def reset(self) -> None:
        """Forget the tasks of a loop that is gone."""
        self.closing = self.ending = False
        self.running.clear()
        for mailbox in self.mailboxes:
            mailbox.reset()
        self.collecting = None
        self.later = 0
        self._depth = 0
        self._quiet = None
        self.waiting.clear()
        self.quiet_waiters = 0


async def called_later(endpoint: Endpoint, item: Any, watched: bool) -> None:
    """The body of a task ``Endpoint.call`` starts for a ``*_nowait`` caller's message. Its
    first step (eager, in the caller's stack) only yields; at the loop's next turn the
    handler is called here, as an inline turn calls it, and what it returns is awaited in
    this same task (``Endpoint.run``); ``watched`` as there. Cancelled before the handler was
    called (the loop ending, say), the message is the handler's failure, as a running
    handler's cancellation is: reported, never lost unseen. A registration without a pipeline
    or a mailbox that was unregistered before its turn is not called: the message is its drop
    (counted; reported, or its requester fails). What a mailbox started is its running
    message, which an unregistering lets finish, and a pipeline hands over what it let out
    before it completed."""
    message = item if endpoint.items_are_messages else None
    tasks = endpoint.tasks
    awaitable = None
    try:
        try:
            await asyncio.sleep(0)
        finally:
            tasks.later = max(tasks.later - 1, 0)  # (0 after ``reset``: a loop gone)
        if not watched and not endpoint.registered and endpoint.pipeline is None:
            endpoint.counts.dropped += 1
            endpoint.discard(item, MessageDroppedError(endpoint, "unregistered"))
            return
        awaitable = endpoint.call(item, True)
    except asyncio.CancelledError as exc:  # (call() hands on what the handler raises)
        if endpoint.raised(message, exc, True):
            raise
    finally:
        if awaitable is None and not watched:
            tasks.leave()
    if awaitable is not None:
        await endpoint.run(message, awaitable, watched)
