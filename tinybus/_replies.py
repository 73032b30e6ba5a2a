"""The correlated reply stream: replies pushed by handlers, resolved into requesters' futures.

A request registers a ``PendingRequest`` under its reply address. Handlers' outcomes are
pushed (``ReplyTable.push``) into ``stream`` (a ``LoopSubject``), whose subscriber, the table,
looks the reply address up in a dict and settles the future; while the table is the stream's
only subscriber, ``push`` hands it the reply directly, and while ``observe_all()`` has
subscribers a relay subscribed first shows them every reply. That is the whole per-request
cost: no operator chain per request, and no timer at all for a reply that arrives while the
request is being made.

A request whose handler has not replied by the end of the call waits in ``Deadlines``: one
timer per distinct timeout, not one per request (see ``_deadlines``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from reactivex import abc

from ._deadlines import Deadlines, Lane
from ._subject import LoopSubject
from .errors import (
    BusClosedError,
    HandlerNotFoundError,
    HandlerTimeoutError,
    MessageDroppedError,
)
from .message import EMPTY_HEADERS
from .registration import Registration
from .stats import Counters

logger = logging.getLogger("tinybus")


def nobody_awaits(reply_address: str) -> HandlerNotFoundError:
    """The error of an answer sent where nobody waits any more, which no answer can follow."""
    return HandlerNotFoundError(
        reply_address,
        "nobody awaits this answer any more (the other side stopped waiting), so no answer "
        "to it can come",
    )


class Reply:
    """A handler's outcome on its way back: a body, or the error the requester gets."""

    __slots__ = ("body", "counted", "error", "headers", "next_address", "reply_address", "source")

    def __init__(
        self,
        reply_address: str,
        body: Any,
        error: BaseException | None,
        source: Registration | None,
        headers: Mapping[str, str] = EMPTY_HEADERS,
        next_address: str | None = None,
    ) -> None:
        self.reply_address = reply_address
        self.body = body
        self.error = error
        self.source = source  # the consumer, or None for a requester answering a reply
        self.headers = headers
        self.next_address = next_address  # where an answer to this reply goes, if awaited
        self.counted = False  # a failure counted already (reported on bus.errors too)


class PendingRequest:
    __slots__ = ("address", "deadline", "future", "lane", "outcome", "reply_address", "timeout")

    def __init__(
        self,
        reply_address: str,
        address: str,
        future: asyncio.Future[Any],
        timeout: float,
        deadline: float,
    ) -> None:
        self.reply_address = reply_address
        self.address = address
        self.future = future
        self.timeout = timeout
        self.deadline = deadline
        self.lane: Lane[PendingRequest] | None = None  # its place in ``Deadlines``
        self.outcome: Reply | None = None  # the reply its future was settled with


class ReplyTable(abc.ObserverBase[Reply]):
    """Pending requests by reply address; the one observer of the reply stream."""

    def __init__(
        self,
        get_loop: Callable[[], asyncio.AbstractEventLoop],
        on_unclaimed_failure: Callable[[Reply], None],
        counts: Counters,
    ) -> None:
        self._counts = counts
        self._get_loop = get_loop
        self._on_unclaimed_failure = on_unclaimed_failure
        self._pending: dict[str, PendingRequest] = {}
        self._deadlines = Deadlines[PendingRequest](get_loop, self._expire)
        self._inline_address: str | None = None
        self.last_claimed = False  # whether the last reply pushed found its requester
        self._inline_reply: Reply | None = None
        self.clock: Callable[[], float] = time.monotonic  # the loop's (``loop_clock``), once bound
        self.stream: LoopSubject[Reply] = LoopSubject(self._on_resolver_error)
        self.stream.attach(self)
        # Where a reply is pushed: into the stream, or straight to this table while it is the
        # stream's only observer (the Subject would only loop over it, at a call per reply).
        self.push: Callable[[Reply], None] = self.on_next

    def relay(self, observer: abc.ObserverBase[Reply]) -> Callable[[], None]:
        """Show every reply to ``observer`` before this table settles it; what ends that."""
        attached = self.stream.attach(observer, first=True)
        self.push = self.stream.on_next

        def detach() -> None:
            attached.dispose()
            if all(subscriber is self for subscriber in self.stream.subscribers):
                self.push = self.on_next  # (also once the stream completed: nobody else)

        return detach

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def expect(
        self, reply_address: str, address: str, timeout: float, deadline: float
    ) -> PendingRequest:
        """Wait for the reply at ``reply_address`` until ``deadline`` (on the loop's clock)."""
        future = asyncio.get_running_loop().create_future()
        pending = PendingRequest(reply_address, address, future, timeout, deadline)
        self._pending[reply_address] = pending
        return pending

    def arm(self, pending: PendingRequest) -> None:
        """Make sure ``pending`` fails with a timeout at its deadline, unless settled first."""
        self._deadlines.add(pending)

    def _expire(self, pending: PendingRequest) -> None:
        if self._pending.get(pending.reply_address) is pending:
            del self._pending[pending.reply_address]
        self._time_out(pending)

    def _time_out(self, pending: PendingRequest) -> None:
        if not pending.future.done():
            pending.future.set_exception(HandlerTimeoutError(pending.address, pending.timeout))

    def forget(self, reply_address: str) -> None:
        """The requester stopped waiting (it got its outcome, or was cancelled)."""
        pending = self._pending.pop(reply_address, None)
        if pending is None:
            return
        self._deadlines.release(pending)
        # A requester that stops waiting without being cancelled (its coroutine closed) leaves
        # an open future: settle it so no timer is armed for it later.
        pending.future.cancel()

    def is_waiting(self, reply_address: str) -> bool:
        """Whether a requester still waits for a reply at ``reply_address``."""
        if reply_address == self._inline_address:
            return True
        pending = self._pending.get(reply_address)
        return pending is not None and not pending.future.done()

    def watch_inline(self, reply_address: str) -> tuple[str | None, Reply | None]:
        """Catch the reply to ``reply_address`` if it comes while the request is being sent,
        before a future is made for it. Returns what ``unwatch_inline`` restores (handlers
        request from inside their first step, so watches nest)."""
        outer = (self._inline_address, self._inline_reply)
        self._inline_address = reply_address
        self._inline_reply = None
        return outer

    def unwatch_inline(
        self, outer: tuple[str | None, Reply | None], address: str, timeout: float, deadline: float
    ) -> Reply | None:
        """The reply caught since ``watch_inline``, if any; one that came at or after the
        deadline (a handler that blocked the loop) is late, as in ``on_next``: its requester
        gets a ``HandlerTimeoutError`` instead."""
        caught = self._inline_reply
        self._inline_address, self._inline_reply = outer
        if caught is None:
            return None
        if self.clock() >= deadline:
            self._count(caught, -1)  # (counted by on_next) it does not reach the requester
            self._drop_late(caught)
            timed_out = HandlerTimeoutError(address, timeout)
            return Reply(caught.reply_address, None, timed_out, caught.source)
        return caught

    def abandon(self, reply_address: str) -> None:
        """The requester was cancelled: an outcome that reached its future but not the
        requester itself (cancelled in the same loop iteration) is a late one."""
        pending = self._pending.get(reply_address)
        if pending is None or pending.outcome is None or pending.future.cancelled():
            return
        pending.future.exception()  # (retrieved: it is reported below, not by asyncio)
        outcome = pending.outcome
        self._count(outcome, -1)  # it did not reach the requester after all
        self._drop_late(outcome)
        if outcome.next_address is not None:
            # A reply that awaits an answer: its sender waits for one that cannot come.
            asking = self._pending.get(outcome.next_address)
            if asking is not None and not asking.future.done():
                asking.future.set_exception(nobody_awaits(reply_address))

    def on_error(self, error: Exception) -> None:
        """The reply stream never errors."""

    def on_completed(self) -> None:
        """The bus closed; pending requests were failed already."""

    def on_next(self, value: Reply) -> None:
        """Settle the future of the request ``value`` answers."""
        reply = value
        self.last_claimed = True
        error = reply.error
        if reply.reply_address == self._inline_address and self._inline_reply is None:
            self._inline_reply = reply  # answered while being sent: see watch_inline
        else:
            # (Left in the table until its requester forgets it: see ``abandon``.)
            pending = self._pending.get(reply.reply_address)
            if pending is not None and self.clock() >= pending.deadline:
                # Past its deadline, the timer just has not run yet (a busy loop): a timeout
                # never comes late, so this reply is the late one.
                self._time_out(pending)
            if pending is None or pending.future.done():
                self.last_claimed = False
                # The requester timed out, was cancelled, or the bus closed: the reply is late.
                self._drop_late(reply)
                return
            pending.outcome = reply
            if error is None:
                pending.future.set_result(reply)
            else:
                pending.future.set_exception(error)
        # Claimed: it reaches its requester, and is counted here (``_count``, its most common
        # case without the call).
        if error is None:
            self._counts.replied += 1
            if reply.source is not None:
                reply.source.replied += 1
        else:
            self._count(reply)

    def _drop_late(self, reply: Reply) -> None:
        if reply.error is not None and not reply.counted:  # (counted: reported already)
            self._on_unclaimed_failure(reply)  # (reported, and counted, as a failure)
        else:
            logger.debug("dropped a late reply to %s", reply.reply_address)

    def _count(self, reply: Reply, step: int = 1) -> None:
        """Count an outcome that reached its requester (drops are the mailbox's to count);
        ``step=-1`` takes it back."""
        error = reply.error
        source = reply.source
        if error is None:
            self._counts.replied += step
            if source is not None:
                source.replied += step
        elif not (reply.counted or isinstance(error, MessageDroppedError)):
            self._counts.failed += step
            if source is not None:
                source.failed += step

    def _on_resolver_error(self, exc: Exception, observer: object, value: object) -> None:
        logger.error("resolving a reply failed", exc_info=exc)

    def fail_all(self) -> None:
        """Fail every pending request with ``BusClosedError`` and cancel every timer."""
        self._deadlines.clear()
        pending_requests = list(self._pending.values())
        self._pending.clear()
        for pending in pending_requests:
            if not pending.future.done():
                pending.future.set_exception(
                    BusClosedError(
                        f"the event bus closed before {pending.address!r} replied",
                        pending.address,
                    )
                )

    def reset(self) -> None:
        """Forget state that belonged to a previous, closed event loop."""
        self._pending.clear()
        self._deadlines = Deadlines[PendingRequest](self._get_loop, self._expire)
        self._inline_address = self._inline_reply = None

    def complete(self) -> None:
        self.stream.on_completed()
