"""A message's way in: made, shown to the taps, counted, pushed into its address's Subject.

Publish, send and request take the same way. ``Dispatch.make`` builds the message (headers
merged, the codec's transform applied, copies asked for) and runs the interceptors; then the
message is counted and pushed into the Subject of its address (and, when published, into the
Subject of every pattern it matches). What the Subject's observers set off that the caller
awaits is collected as it happens (``Tasks.collecting``), and ``Dispatch.finish`` awaits it:
the inline handlers' turns, in order, then the handlers' tasks and the room waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from ._endpoint import Endpoint
from ._patterns import ensure_concrete
from ._routes import AddressSubject, Routes
from ._taps import Taps
from ._tasks import Collected, Tasks
from ._transport import Transport
from .codecs import CodecRegistry
from .errors import HandlerNotFoundError
from .headers import Headers, HeadersInput
from .instrumentation import Instrumentation
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
        # Told of every message made here and of its sender's end (tinybus.instrumentation).
        self.instrumentation: Instrumentation | None = None
        # A collection its caller did not need, kept for the next (most find nothing to await).
        self._spare: Collected | None = None
        # How many registrations the last published message reached here (read by the
        # publisher right after the push, before it awaits anything).
        self.reached = 0

    def make(
        self,
        kind: Kind,
        address: str,
        body: Any,
        headers: HeadersInput | None,
        options: DeliveryOptions | None,
    ) -> Message[Any]:
        """The message, as its handlers will see it (after the interceptors)."""
        if options is None:
            if self.codecs.active:
                body = self.codecs.outgoing(body, None)
            message = make_message(
                body, address, EMPTY_HEADERS if headers is None else freeze_headers(headers), kind
            )
        else:
            message_headers = merge_headers(headers, options)
            body = self.codecs.outgoing(body, options)
            if options.copy:  # the sender's object stays out of the bus
                body = own_copy(body)
            message = make_message(body, address, message_headers, kind)
            message.copies = options.copy is True
        if self.taps.active:
            message = self.taps.outbound(kind, message)
        if self.instrumentation is not None:
            message = self.instrumentation.outgoing(message)
        return message

    # -- pushing -------------------------------------------------------------------------

    def publish(
        self,
        address: str,
        body: Any,
        headers: HeadersInput | None,
        options: DeliveryOptions | None,
        can_wait: bool,
    ) -> Collected | None:
        """Publish to every handler of ``address`` and of the patterns it matches, here and,
        through the transport, in other processes; what the caller must await, if anything."""
        message = self.make("publish", address, body, headers, options)
        try:
            if self.transport is not None:  # first: a message it cannot carry goes nowhere
                self.transport.publish(message)
            collected = self._push(message, can_wait)
        except BaseException as error:
            self.done(message, error)
            raise
        if self.instrumentation is not None:
            self.instrumentation.done(message, None)
        return collected

    def send(
        self,
        address: str,
        body: Any,
        headers: HeadersInput | None,
        options: DeliveryOptions | None,
        can_wait: bool,
    ) -> Collected | None:
        """Send to one consumer of ``address`` (through the transport when it has none
        here); ``HandlerNotFoundError`` when there is none anywhere."""
        message = self.make("send", address, body, headers, options)
        try:
            if self.routes.consumers_of(address) is not None:
                collected = self._push(message, can_wait)
            elif self.transport is None or not self.transport.send(message):
                raise HandlerNotFoundError(address)
            else:
                collected = None
        except BaseException as error:
            self.done(message, error)
            raise
        if self.instrumentation is not None:
            self.instrumentation.done(message, None)
        return collected

    def done(self, message: Message[Any], error: BaseException | None) -> None:
        """The sender is done with ``message`` (``error``: what it got instead)."""
        if self.instrumentation is not None:
            self.instrumentation.done(message, error)

    def request(
        self, subject: AddressSubject, message: Message[Any], consumer: Endpoint | None = None
    ) -> bool:
        """Push a request to one consumer of ``subject``: the one whose turn it is, or
        ``consumer`` (scatter-gather); whether it reached one. Its answer comes through the
        reply Subject (a requester awaits that, not what the handler set off)."""
        self.counts.requested += 1
        subject.requested += 1
        tasks = self.tasks
        outer, tasks.collecting = tasks.collecting, None
        try:
            if consumer is None:
                subject.on_next(message)
                return True
            return subject.on_next_to(consumer, message)
        finally:
            tasks.collecting = outer

    def deliver(self, message: Message[Any]) -> None:
        """Push a message from another process; nobody here awaits what it sets off."""
        self._push(message, None)

    def from_afar(self, subject: AddressSubject, message: Message[Any]) -> bool:
        """Push a message from another process into ``subject`` (for a published one, the
        route it came in by), never to a registration made ``local=True``; nobody here
        awaits what it sets off. False when it reached no consumer."""
        counts = self.counts
        kind = message.kind
        if kind == "publish":
            counts.published += 1
            subject.published += 1
        elif kind == "send":
            counts.sent += 1
            subject.sent += 1
        else:
            counts.requested += 1
            subject.requested += 1
        tasks = self.tasks
        outer, tasks.collecting = tasks.collecting, None
        try:
            return subject.on_next_from_afar(message)
        finally:
            tasks.collecting = outer

    def _push(self, message: Message[Any], can_wait: bool | None) -> Collected | None:
        """Count a published or sent message and push it into its Subjects, collecting what it
        sets off for a caller that awaits it (``can_wait``; None: nobody awaits it); what
        that caller must await, if anything."""
        collected = None
        if can_wait is not None:
            collected = self._spare or Collected()
            self._spare = None
            collected.can_wait = can_wait
        tasks = self.tasks
        outer, tasks.collecting = tasks.collecting, collected
        if can_wait is False:  # a *_nowait caller's: no handler runs in its stack
            tasks.later += 1
        try:
            if message.kind == "publish":
                self._published(message)
            else:
                subject = self.routes.consumers_of(message.address)
                if subject is not None:
                    self.counts.sent += 1
                    subject.sent += 1
                    subject.on_next(message)
        finally:
            tasks.collecting = outer
            if can_wait is False:
                tasks.later -= 1
        if collected is None:
            return None
        if collected.waits is None and collected.turns is None and collected.refusal is None:
            self._spare = collected  # nothing to await: kept for the next
            return None
        collected.message = message
        return collected

    def _published(self, message: Message[Any]) -> None:
        address = message.address
        routes = self.routes
        subject = routes.routes.get(address)
        if routes.patterns:
            matched = routes.matching(address)
        elif subject is None:
            ensure_concrete(address)  # (nobody hears it; a pattern is refused)
            matched = ()
        else:
            matched = ()
        self.counts.published += 1
        reached = 0
        if subject is not None:
            subject.published += 1
            reached = subject.consumers + subject.listeners
            subject.on_next(message)
        for pattern in matched:
            pattern.published += 1
            reached += pattern.listeners
            pattern.on_next(message)
        self.reached = reached

    # -- what the caller awaits ------------------------------------------------------------

    async def finish(self, collected: Collected) -> None:
        """Run the inline handlers' turns one after another in the caller's task, then wait
        for the handlers started in tasks and the room waited for; then raise the first
        refusal. Cancelling the caller does not cancel the handlers its message reached."""
        message = collected.message
        assert message is not None
        turns = collected.turns or ()
        for index, endpoint in enumerate(turns):
            try:
                if endpoint.mailbox is not None and endpoint.registered and not self.tasks.closing:
                    # Paused since (maybe by the turn before it, for this very message): it
                    # enters the buffer, and the caller waits there for the handling it
                    # started, or for room, before the next turn.
                    entered = self._collect(endpoint.mailbox.offer, message)
                    collected.refusal = collected.refusal or entered.refusal
                    await _wait(entered.waits)
                    continue
                awaitable = endpoint.turn(message)
                if awaitable is not None:
                    try:
                        await awaitable
                    except BaseException as exc:
                        if endpoint.raised(message, exc, False):
                            raise
            except asyncio.CancelledError:
                # The caller's: the later inline handlers still get the message, in tasks.
                for later in turns[index + 1 :]:
                    if later.registered:
                        later.enter(message)
                _withdraw(collected.waits)
                raise
        if collected.waits:
            await _wait(collected.waits)
        if collected.refusal is not None:
            raise collected.refusal

    def _collect(self, push: Callable[[Message[Any]], None], message: Message[Any]) -> Collected:
        tasks = self.tasks
        collected = Collected()
        outer, tasks.collecting = tasks.collecting, collected
        try:
            push(message)
        finally:
            tasks.collecting = outer
        return collected


async def _wait(waits: Sequence[asyncio.Future[Any]] | None) -> None:
    """Wait for ``waits`` with ``asyncio.wait``, not ``await task``: cancelling the caller
    must not cancel the handlers its message reached (they belong to the bus); it withdraws
    its items still waiting for room."""
    if waits:
        try:
            await asyncio.wait(waits)
        except asyncio.CancelledError:
            _withdraw(waits)
            raise


def _withdraw(waits: Sequence[asyncio.Future[Any]] | None) -> None:
    """A cancelled caller withdraws its items still waiting for room."""
    for waiter in waits or ():
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
