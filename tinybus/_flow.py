"""Flow control for one registration: a concurrency limit, a bounded buffer, an overflow policy.

A ``Mailbox`` sits between a registration's stream (after its pipeline, if any) and its
handler. It starts at most ``max_concurrency`` handlings at once and keeps the rest in a
buffer of ``max_buffered`` items. When the buffer is full:

- ``"block"``: the item waits outside the buffer, and a caller that can wait (``publish``,
  ``send``) is held until it is let in; a cancelled caller withdraws its item, like a cancelled
  ``asyncio.Queue.put``. Items from callers that cannot wait (``publish_nowait``, timers) also
  wait outside the buffer: they are never lost, and never hold anyone.
- ``"drop_oldest"`` / ``"drop_newest"``: the oldest buffered item, or the new one, is dropped.
- ``"error"``: the new item is refused and its sender gets ``BufferFullError``.

Dropped and refused items are counted, reported, and for a request, fail the requester at
once. ``pause()`` lets items in but starts none, under the same policy; ``fetch(n)`` then lets
up to ``n`` more start (Vert.x's demand), and ``resume()`` ends the pause. Neither starts a
handler inside its caller: the loop starts them, at its next turn. ``resize`` applies a new
``max_buffered`` to what waits already.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .errors import BufferFullError, MessageDroppedError
from .message import Message

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._tasks import Tasks

type Overflow = Literal["block", "drop_oldest", "drop_newest", "error"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("block", "drop_oldest", "drop_newest", "error")
# An item held for room: its sender's waiter and task (None for a sender that cannot wait),
# and how many cancellations that task had pending when it started waiting.
type Blocked = tuple[Any, asyncio.Future[None] | None, asyncio.Task[Any] | None, int]


class Mailbox:
    """One registration's buffer, concurrency limit and overflow policy (see the module)."""

    __slots__ = (
        "_on_done",
        "_pumping",
        "blocked",
        "buffer",
        "demand",
        "dropped",
        "endpoint",
        "limit",
        "max_buffered",
        "overflow",
        "paused",
        "running",
        "tasks",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        tasks: Tasks,
        limit: int | None,
        max_buffered: int,
        overflow: Overflow,
    ) -> None:
        self.endpoint = endpoint
        self.tasks = tasks
        self.limit = limit
        self.max_buffered = max_buffered
        self.overflow: Overflow = overflow
        self.buffer: deque[Any] = deque()
        # Items waiting for room under "block", each with the future its sender awaits.
        self.blocked: deque[Blocked] = deque()
        self.running = 0
        self.dropped = 0
        self.paused = False
        self.demand = 0  # while paused: how many more may start (fetch)
        self._pumping = False
        self._on_done: Callable[[asyncio.Task[Any]], None] = self._finished

    @property
    def queued(self) -> int:
        return len(self.buffer) + len(self.blocked)

    def _flowing(self) -> bool:
        """Whether an item may start now (a slot permitting): not paused, or fetched."""
        return not self.paused or self.demand > 0

    def offer(self, item: Any) -> None:
        if self._flowing() and self._has_slot():
            if not self.buffer and not self.blocked:
                self._start(item)  # (the caller under way waits for it)
                return
            self.pump()  # a slot freed without the buffer moving on: catch up first
        if len(self.buffer) < self.max_buffered:
            self.buffer.append(item)
            if self._flowing() and self._has_slot():
                self.pump()
            return
        overflow = self.overflow
        if overflow == "block":
            waiter = self._hold_caller()
            sender = None if waiter is None else asyncio.current_task()
            entry = (item, waiter, sender, 0 if sender is None else sender.cancelling())
            self.blocked.append(entry)
            if waiter is not None:
                waiter.add_done_callback(lambda _: self._withdraw_if_cancelled(entry))
        elif overflow == "drop_newest":
            self._drop(item)
        elif overflow == "drop_oldest" and self.buffer:
            self._drop(self.buffer.popleft())
            self.buffer.append(item)
        elif overflow == "drop_oldest":
            self._drop(item)  # no buffer (max_buffered=0): the new item is the oldest waiting
        else:
            self.dropped += 1
            self.endpoint.counts.dropped += 1
            self._refuse(item, BufferFullError(self.endpoint))

    def _refuse(self, item: Any, error: BufferFullError) -> None:
        """Under ``overflow="error"``, a full buffer refuses ``item``: its sender gets the
        error (a publish or send raises it last; a requester fails at once)."""
        collecting = self.tasks.collecting
        is_request = type(item) is Message and item.kind == "request"
        if collecting is not None and not is_request:
            if collecting.refusal is None:
                collecting.refusal = error
        else:
            self.endpoint.discard(item, error)

    def _hold_caller(self) -> asyncio.Future[None] | None:
        """A future the caller under way awaits before it returns; None when nobody waits."""
        collecting = self.tasks.collecting
        if collecting is None or not collecting.can_wait:
            return None
        waiter: asyncio.Future[None] = self.tasks.bound_loop().create_future()
        collecting.wait_for(waiter)
        return waiter

    def _withdraw_if_cancelled(self, entry: Blocked) -> None:
        """A held sender was cancelled: its item leaves with it, like a cancelled Queue.put."""
        waiter = entry[1]
        if waiter is None or not waiter.cancelled():
            return
        for index, blocked in enumerate(self.blocked):
            if blocked is entry:
                del self.blocked[index]
                break
        self._retire_if_done()

    def _has_slot(self) -> bool:
        return self.limit is None or self.running < self.limit

    def _drop(self, item: Any) -> None:
        self.dropped += 1
        self.endpoint.counts.dropped += 1
        self.endpoint.discard(item, MessageDroppedError(self.endpoint))

    def _start(self, item: Any) -> None:
        if self.paused:
            self.demand -= 1  # (fetched)
        self.running += 1
        try:
            task = self.endpoint.dispatch(item)
        except BaseException:
            self.running -= 1
            raise
        if task is not None:
            task.add_done_callback(self._on_done)
            return
        self.running -= 1
        # The handler finished at once; what it sent to its own address may be waiting.
        if self.buffer and not self._pumping:
            self.pump()

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.running -= 1
        self.tasks.ended(task)
        if task.cancelled() and (self.tasks.closing or self.tasks.ending):
            # Cancelled by close(): what waits is close()'s to drop and report; or as the
            # loop ends: what waits does so for the next loop. (Cancelled by other code, the
            # handler failed, and the next one starts.)
            return
        self.pump()

    def pump(self) -> None:
        """Start buffered items while there are free slots, and let blocked ones in."""
        if self._pumping:
            return
        self._pumping = True
        tasks = self.tasks
        # What starts now waited for earlier senders: the caller under way does not wait.
        collecting, tasks.collecting = tasks.collecting, None
        try:
            while True:
                self._admit_blocked()
                if not self._flowing() or not self.buffer or not self._has_slot():
                    break
                self._start(self.buffer.popleft())
        except BaseException:  # KeyboardInterrupt or SystemExit out of a handler
            if self.buffer or self.blocked:
                # It goes on first; what waits behind it is not stranded.
                asyncio.get_running_loop().call_soon(self.pump)
            raise
        finally:
            self._pumping = False
            tasks.collecting = collecting
        self._retire_if_done()

    def _admit_blocked(self) -> None:
        while self.blocked and (
            len(self.buffer) < self.max_buffered
            or (not self.buffer and self._flowing() and self._has_slot())
        ):
            item, waiter, sender, cancellations = self.blocked.popleft()
            if waiter is not None:
                if sender is not None and sender.cancelling() > cancellations:
                    waiter.cancel()  # cancelled, though it has not run since: it withdraws
                if waiter.cancelled():
                    continue  # its sender gave up waiting, and took the item back
                waiter.set_result(None)
            self.buffer.append(item)

    def _retire_if_done(self) -> None:
        """An ended registration's mailbox leaves delivery once nothing waits in it."""
        if not self.endpoint.registered and not self.queued:
            self.tasks.mailboxes.discard(self)

    def reset(self) -> None:
        """Forget the handlings and waiting senders of a loop that is gone; keep the items."""
        self.running = 0
        self.blocked = deque((item, None, None, 0) for item, *_ in self.blocked)

    def pause(self) -> None:
        self.paused = True
        self.demand = 0

    def resume(self) -> None:
        self.paused = False
        self.demand = 0
        self._pump_soon()

    def fetch(self, count: int) -> None:
        """While paused, let ``count`` more items start (Vert.x's ``fetch``)."""
        if self.paused:
            self.demand += count
            self._pump_soon()

    def _pump_soon(self) -> None:
        """Start what may start at the loop's next turn, never inside the caller (a handler
        that resumes its own registration does not run itself). Called by the user's code,
        not through a bus call: the bus's loop may have closed since, and what starts belongs
        on the running one."""
        self.tasks.bound_loop().call_soon(self.pump)

    def resize(self, max_buffered: int) -> None:
        """A new ``max_buffered``: what waits beyond it meets the overflow policy now, as a
        new item would (``"block"``: it waits outside the buffer, in order; the drops drop
        the oldest or the newest); under ``"error"`` a buffer holding more is refused
        (``ValueError``), since its items were accepted already."""
        excess = len(self.buffer) - max_buffered
        if excess > 0 and self.overflow == "error":
            raise ValueError(
                f"max_buffered={max_buffered} is less than the {len(self.buffer)} messages "
                f"waiting at {self.endpoint.address!r} under overflow='error', which never drops "
                "a message it accepted: resume() or fetch() to let them be handled first, or "
                "choose a limit of at least that many"
            )
        self.max_buffered = max_buffered
        for _ in range(max(excess, 0)):
            if self.overflow == "block":
                self.blocked.appendleft((self.buffer.pop(), None, None, 0))
            elif self.overflow == "drop_oldest":
                self._drop(self.buffer.popleft())
            else:
                self._drop(self.buffer.pop())
        if excess < 0 and self.blocked:
            self._pump_soon()  # room for what waits outside

    def discard_all(self, reason: str) -> None:
        """Drop every waiting item (the registration is ending), releasing blocked senders."""
        items = list(self.buffer)
        self.buffer.clear()
        for item, waiter, *_ in self.blocked:
            if waiter is not None and waiter.cancelled():
                continue
            if waiter is not None and not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(None)
            items.append(item)
        self.blocked.clear()
        for item in items:
            self.dropped += 1
            self.endpoint.counts.dropped += 1
            self.endpoint.discard(item, MessageDroppedError(self.endpoint, reason))
        self._retire_if_done()
