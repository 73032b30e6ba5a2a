"""A message's way in: made, shown to the taps, counted, pushed into its address's Subject.

Publish, send and request take the same way. ``Dispatch.make`` builds the message (headers
merged, the codec's transform applied, copies asked for) and runs the interceptors; then the
message is pushed into the Subject of its address (and, when published, into the Subject of
every pattern it matches). Whatever the Subject's observers set off that the caller awaits
is collected as it happens (``Tasks.collecting``), and ``Dispatch.finish`` awaits it: the
inline handlers' turns, in order, then the handlers' tasks and the room waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ._patterns import ensure_concrete
from ._routes import AddressSubject, Routes
from ._taps import Taps
from ._tasks import Collected, Tasks
from ._transport import Transport
from .codecs import CodecRegistry
from .errors import HandlerNotFoundError
from .headers import Headers, HeadersInput
from .message import EMPTY_HEADERS, Kind, Message, freeze_headers, make_message, own_copy
from .options import DeliveryOptions, not_delivery_options
from .stats import Counters


class Dispatch:
    """Makes messages and pushes them into the Subjects of their addresses."""

    def __init__(
        self,
        routes: Routes,
        tasks: Tasks,
        taps: Taps,
        codecs: CodecRegistry,
        counts: Counters,
        transport: Transport | None,
    ) -> None:
        self.routes = routes
        self.tasks = tasks
        self.taps = taps
        self.codecs = codecs
        self.counts = counts
        self.transport = transport

    def make(
        self,
        kind: Kind,
        address: str,
        body: Any,
        headers: HeadersInput | None,
        options: DeliveryOptions | None,
    ) -> Message[Any]:
        """The message, as its handlers will see it (after the interceptors)."""
        copies = False
        if options is None:
            message_headers = EMPTY_HEADERS if headers is None else freeze_headers(headers)
            if self.codecs.defaults:
                body = self.codecs.outgoing(body, None)
        else:
            message_headers = merge_headers(headers, options)
            body = self.codecs.outgoing(body, options)
            copies = options.copy
            if copies:  # the sender's object stays out of the bus
                body = own_copy(body)
        message = make_message(body, address, message_headers, kind)
        if copies:
            message.copies = True
        if self.taps.active:
            message = self.taps.outbound(kind, message)
        return message

    # -- pushing -------------------------------------------------------------------------

    def publish(self, message: Message[Any], can_wait: bool) -> Collected | None:
        """Push ``message`` to every handler of its address and of the patterns it matches,
        here and, through the transport, in other processes; what the caller must await."""
        collected = self._push(message, Collected(can_wait, message))
        if self.transport is not None:
            self.transport.publish(message)
        return collected if collected else None

    def send(self, message: Message[Any], can_wait: bool) -> Collected | None:
        """Push ``message`` to one consumer of its address (or hand it to the transport when
        it has none here); ``HandlerNotFoundError`` when there is none anywhere."""
        if self.routes.consumers_of(message.address) is None:
            if self.transport is None or not self.transport.send(message):
                raise HandlerNotFoundError(message.address)
            return None
        collected = self._push(message, Collected(can_wait, message))
        return collected if collected else None

    def deliver(self, message: Message[Any]) -> None:
        """Push a message from another process; nobody here awaits what it sets off."""
        self._push(message, None)

    def _push(self, message: Message[Any], collected: Collected | None) -> Collected | None:
        """Count ``message`` and push it into its Subjects, collecting what it sets off."""
        address = message.address
        routes = self.routes
        tasks = self.tasks
        outer, tasks.collecting = tasks.collecting, collected
        try:
            if message.kind == "publish":
                self.counts.published += 1
                subject = routes.routes.get(address)
                matched = routes.matching(address)
                if subject is None and not matched:
                    ensure_concrete(address)  # (a pattern matching patterns raised already)
                if subject is not None:
                    subject.published += 1
                    subject.on_next(message)
                for pattern in matched:
                    pattern.published += 1
                    pattern.on_next(message)
            else:
                subject = routes.consumers_of(address)
                if subject is not None:
                    self.counts.sent += 1
                    subject.sent += 1
                    subject.on_next(message)
        finally:
            tasks.collecting = outer
        return collected

    def request(self, subject: AddressSubject, message: Message[Any]) -> None:
        """Push a request to one consumer of ``subject``; its answer comes through the reply
        Subject (a requester awaits that, not what the handler set off)."""
        self.counts.requested += 1
        subject.requested += 1
        tasks = self.tasks
        outer, tasks.collecting = tasks.collecting, None
        try:
            subject.on_next(message)
        finally:
            tasks.collecting = outer

    # -- what the caller awaits ------------------------------------------------------------

    async def finish(self, collected: Collected) -> None:
        """Run the inline handlers' turns one after another in the caller's task, then wait
        for the handlers started in tasks and the room waited for; then raise the first
        refusal. Cancelling the caller does not cancel the handlers its message reached."""
        message = collected.message
        waits = collected.waits
        refusal = collected.refusal
        turns = collected.turns
        for index, endpoint in enumerate(turns):
            try:
                if endpoint.mailbox is not None and endpoint.registered and not self.tasks.closing:
                    # Paused since (maybe by the turn before it, for this very message): it
                    # enters the buffer, and the caller waits there for the handling it
                    # started, or for room, before the next turn.
                    entered = self._collect_offer(endpoint.mailbox.offer, message)
                    refusal = refusal or entered.refusal
                    if entered.waits:
                        try:
                            await asyncio.wait(entered.waits)
                        except asyncio.CancelledError:
                            _withdraw(entered.waits)
                            raise
                    continue
                awaitable = endpoint.turn(message)
                if awaitable is not None:
                    await endpoint.run(message, awaitable, own_task=False)
            except asyncio.CancelledError:
                # The caller's: the later inline handlers still get the message, in tasks.
                for later in turns[index + 1 :]:
                    if later.registered:
                        later.enter(message)
                _withdraw(waits)
                raise
        if waits:
            try:
                # asyncio.wait, not ``await task``: cancelling the caller must not cancel the
                # handlers its message reached; they belong to the bus.
                await asyncio.wait(waits)
            except asyncio.CancelledError:
                _withdraw(waits)
                raise
        if refusal is not None:
            raise refusal

    def _collect_offer(self, offer: Any, message: Message[Any]) -> Collected:
        tasks = self.tasks
        collected = Collected(True, message)
        outer, tasks.collecting = tasks.collecting, collected
        try:
            offer(message)
        finally:
            tasks.collecting = outer
        return collected


def _withdraw(waits: Sequence[asyncio.Future[Any]]) -> None:
    """A cancelled caller withdraws its items still waiting for room."""
    for waiter in waits:
        if not isinstance(waiter, asyncio.Task):
            waiter.cancel()


def raise_refusal(collected: Collected | None) -> None:
    """What a caller that does not wait gets from ``overflow="error"``: the refusal, at once."""
    if collected is not None and collected.refusal is not None:
        raise collected.refusal


def merge_headers(headers: HeadersInput | None, options: DeliveryOptions) -> Headers:
    try:
        option_headers = options.headers
    except AttributeError:  # not a DeliveryOptions
        raise not_delivery_options(options) from None
    base = None if option_headers is None else freeze_headers(option_headers)
    if headers is None:
        return EMPTY_HEADERS if base is None else base
    if base is None:
        return freeze_headers(headers)
    return base.merged(freeze_headers(headers))

