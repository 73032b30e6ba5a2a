"""The reply Subject, and the exchanges waiting for what comes out of it.

Every answer (a consumer's reply or failure, a conversation's next leg) is pushed, as a
``Reply``, into the bus's ``ReplySubject``. It finds the ``Exchange`` waiting at the reply's
address and resolves it (``outcome`` while the request is being sent, else its future), then
shows the reply to its observers: the relay of ``observe_all()``, while that has subscribers.
An answer nobody waits for any more is late: dropped, or, for a failure, reported on
``bus.errors``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._deadlines import Deadlines
from ._exchange import Exchange, Reply, nobody_awaits
from ._subject import LoopSubject
from .errors import (
    BusClosedError,
    HandlerExecutionError,
    HandlerTimeoutError,
    MessageDroppedError,
)
from .stats import Counters

if TYPE_CHECKING:
    from ._scatter import Gathering

logger = logging.getLogger("tinybus")


class ReplySubject(LoopSubject[Reply]):
    """The reply Subject: a ``LoopSubject`` that resolves, first, the exchange waiting at each
    reply's address (``pending``, by reply address)."""

    def __init__(
        self,
        get_loop: Callable[[], asyncio.AbstractEventLoop],
        counts: Counters,
    ) -> None:
        super().__init__(_on_observer_error)
        self._get_loop = get_loop
        self.clock: Callable[[], float] = time.monotonic  # the loop's (loop_clock), once bound
        self._counts = counts
        self.pending: dict[str, Exchange] = {}
        # Scatter-gather requests, by their one reply address: they take many answers.
        self.gatherings: dict[str, Gathering] = {}
        self.deadlines: Deadlines[Exchange] = Deadlines(get_loop, self._expire)
        self.push: Callable[[Reply], None] = self.on_next  # every answer's way back

    # -- the waiting side ----------------------------------------------------------------

    def open(self, exchange: Exchange) -> None:
        """Wait for the answer at ``exchange.reply_address``."""
        self.pending[exchange.reply_address] = exchange

    async def wait(self, exchange: Exchange) -> Reply:
        """Wait for the answer until ``exchange.deadline``; ``HandlerTimeoutError`` after it.
        Whatever ends the wait, the exchange is closed."""
        outcome = exchange.outcome
        if outcome is not None:  # answered already, while the wait was being set up
            self.close(exchange)
            if outcome.error is not None:
                raise outcome.error
            return outcome
        future: asyncio.Future[Reply] = self._get_loop().create_future()
        exchange.future = future
        self.deadlines.add(exchange)
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(exchange)
            raise
        finally:
            self.close(exchange)

    def close(self, exchange: Exchange) -> None:
        """The requester stopped waiting (it got its outcome, was cancelled or timed out)."""
        if exchange.abandoned:
            return
        exchange.abandoned = True
        if self.pending.get(exchange.reply_address) is exchange:
            del self.pending[exchange.reply_address]
        if exchange.scheduled:
            self.deadlines.release(exchange)
        future = exchange.future
        if future is not None and not future.done():
            # A requester that stops waiting without being cancelled (its coroutine closed)
            # leaves an open future: settle it.
            future.cancel()

    def _expire(self, exchange: Exchange) -> None:
        exchange.abandoned = True
        if self.pending.get(exchange.reply_address) is exchange:
            del self.pending[exchange.reply_address]
        if exchange.task is not None:  # an inline turn: the handler runs in the requester
            exchange.ended_by = HandlerTimeoutError(exchange.address, exchange.timeout)
            exchange.task.cancel()
            return
        future = exchange.future
        if future is not None and not future.done():
            future.set_exception(HandlerTimeoutError(exchange.address, exchange.timeout))

    def _abandon(self, exchange: Exchange) -> None:
        """The requester was cancelled: an outcome that reached its future but not the
        requester itself (cancelled in the same loop iteration) is a late one."""
        outcome = exchange.outcome
        future = exchange.future
        if outcome is None or future is None or future.cancelled():
            return
        future.exception()  # (retrieved: it is reported below, not by asyncio)
        self._count(outcome, -1)  # it did not reach the requester after all
        self._drop_late(outcome)
        if outcome.next_address is not None:
            # A reply that awaits an answer: its sender waits for one that cannot come.
            asking = self.pending.get(outcome.next_address)
            if asking is not None and asking.future is not None and not asking.future.done():
                asking.future.set_exception(nobody_awaits(exchange.reply_address))

    # -- answers pushed in -------------------------------------------------------------------

    def on_next(self, value: Reply) -> None:
        """Resolve the exchange that ``value`` answers (or drop it as late), then show it to
        the observers."""
        reply = value
        exchange = self.pending.get(reply.reply_address)
        future = None if exchange is None else exchange.future
        if exchange is None or exchange.abandoned or (future is not None and future.done()):
            gathering = self.gatherings.get(reply.reply_address) if exchange is None else None
            if gathering is not None and self.clock() < gathering.deadline:
                gathering.take(reply)
                self._count(reply)
            else:
                self._drop_late(reply)
        elif future is not None and self.clock() >= exchange.deadline:
            # Past its deadline, the timer just has not run yet (a busy loop): a timeout
            # never comes late, so this reply is the late one.
            self._expire(exchange)
            self._drop_late(reply)
        else:
            exchange.outcome = reply  # (answered while being sent: the requester reads it)
            error = reply.error
            if future is not None:
                if error is None:
                    future.set_result(reply)
                else:
                    future.set_exception(error)
            if error is None:  # (_count's most common case)
                self._counts.replied += 1
                if reply.source is not None:
                    reply.source.replied += 1
            else:
                self._count(reply)
        if self._observers:
            super().on_next(reply)

    def is_waited(self, reply_address: str) -> bool:
        """Whether someone still waits for an answer at ``reply_address``."""
        exchange = self.pending.get(reply_address)
        return exchange is not None and exchange.waited()

    def take_back(self, reply: Reply) -> None:
        """An outcome caught while its request was sent arrived at or after its deadline (a
        handler that blocked the loop): it is late, and does not count as reaching it."""
        self._count(reply, -1)
        self._drop_late(reply)

    def _drop_late(self, reply: Reply) -> None:
        """An answer nobody waits for: a failure not counted yet is reported (and counted)
        as its consumer's; anything else is dropped."""
        error = reply.error
        source = reply.source
        if error is None or reply.counted:
            logger.debug("dropped a late reply to %s", reply.reply_address)
        elif source is None:  # a requester failed a conversation nobody awaits any more
            logger.debug("dropped a late failure to %s: %r", reply.reply_address, error)
        else:
            cause = error.original_error if isinstance(error, HandlerExecutionError) else error
            source.report(None, cause)

    def _count(self, reply: Reply, step: int = 1) -> None:
        """Count an outcome that reached its requester (drops are counted where they
        happen); ``step=-1`` takes it back."""
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

    # -- the bus closing ---------------------------------------------------------------------

    def fail_all(self) -> None:
        """Fail every waiting exchange with ``BusClosedError`` and cancel the timer."""
        self.deadlines.clear()
        for gathering in list(self.gatherings.values()):
            gathering.close()
        waiting = list(self.pending.values())
        self.pending.clear()
        for exchange in waiting:
            exchange.abandoned = True
            future = exchange.future
            if future is not None and not future.done():
                future.set_exception(closed_before_reply(exchange))
            elif exchange.task is not None:  # an inline turn: ended as its deadline would
                exchange.ended_by = closed_before_reply(exchange)
                exchange.task.cancel()

    def reset(self) -> None:
        """Forget what belonged to a previous, closed event loop."""
        self.pending.clear()
        self.gatherings.clear()
        self.deadlines = Deadlines(self._get_loop, self._expire)


def _on_observer_error(exc: Exception, observer: object, value: object) -> None:
    logger.error("an observer of the reply Subject raised", exc_info=exc)


def closed_before_reply(exchange: Exchange) -> BusClosedError:
    return BusClosedError(
        f"the event bus closed before {exchange.address!r} replied", exchange.address
    )
