"""A registration's operator pipeline: ``pipe=[...]`` between its address and its handler.

Each piped registration owns a source ``LoopSubject``. Messages reaching the registration are
pushed into it (the body, or the whole ``Message`` for consumers and for listeners that
annotate ``Message[T]``), flow through the operators, and what comes out is handed on, to the
mailbox or straight to the handler. The pipeline is subscribed with the bus's scheduler, so
time-based operators use loop timers, and only once the bus has a loop: a registration made at
import time starts its pipeline when the bus binds to its loop.

When the operators fail (a ``map`` whose function raises), the failure is reported and the
pipeline is subscribed again, with fresh operator state, so later messages still arrive; with
``on_error="unregister"`` the registration ends instead. A pipeline that completes (``take``)
ends its registration; one that fails while being subscribed ends it too, as a new
subscription would only fail again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

from reactivex import Observable, abc

from ._scheduler import BusScheduler
from ._subject import LoopSubject
from .errors import MessageRejectedError
from .message import Message

type OnPipeError = Literal["resubscribe", "unregister"]
type Operator = Callable[[Observable[Any]], Observable[Any]]


class _Outlet(abc.ObserverBase[Any]):
    """Where the operators' output arrives. An operator given a scheduler of its own (a
    thread's, say ``ops.delay(1, scheduler=TimeoutScheduler())``) emits on another thread:
    what it emits is handed back to the bus's loop, where handlers run."""

    __slots__ = ("_pipeline",)

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def on_next(self, value: Any) -> None:
        pipeline = self._pipeline
        if pipeline.on_loop(pipeline.emit, value):
            pipeline.emit(value)

    def on_error(self, error: Exception) -> None:
        pipeline = self._pipeline
        if pipeline.on_loop(pipeline.fail, error):
            pipeline.fail(error)

    def on_completed(self) -> None:
        pipeline = self._pipeline
        if pipeline.on_loop(pipeline.complete):
            pipeline.complete()


class Pipeline:
    """A registration's operators, subscribed over a source Subject of its own."""

    def __init__(
        self,
        handler: object,
        operators: Sequence[Operator],
        scheduler: BusScheduler,
        admit: Callable[[Any], None],
        report: Callable[[BaseException], None],
        end: Callable[[bool], None],
        on_error: OnPipeError,
    ) -> None:
        self.handler = handler  # (named when a request does not come out)
        self._scheduler = scheduler
        self._admit = admit
        self._report = report
        self._end = end  # end(discard): the registration ends; discard what it has queued?
        self._on_error: OnPipeError = on_error
        self._source: LoopSubject[Any] = LoopSubject(self._on_operator_error)
        stream = cast(object, self._source.pipe(*operators))
        if not isinstance(stream, Observable):
            raise TypeError(
                "pipe must hold reactivex operators, each taking an Observable and returning "
                f"one, such as ops.map(function); together they made {stream!r}"
            )
        self._stream: Observable[Any] = cast("Observable[Any]", stream)
        self._subscription: abc.DisposableBase | None = None
        self._subscribing = False
        self._ended = False
        # The reply address of the request being pushed, until the pipeline lets it out.
        self._awaiting: str | None = None
        self._error: BaseException | None = None
        # When a message last entered or moved inside this pipeline (see _scheduler).
        self.moved_at = -1

    @property
    def started(self) -> bool:
        return self._subscription is not None

    def start(self) -> None:
        """Subscribe the operators (again): fresh operator state, on the bus's scheduler."""
        if self._ended:
            return
        scheduler = self._scheduler
        outer = scheduler.subscribing(self)
        self._subscribing = True
        try:
            self._subscription = self._stream.subscribe(_Outlet(self), scheduler=scheduler)
        finally:
            self._subscribing = False
            scheduler.leave(outer)

    def push(self, value: Any) -> None:
        if self._subscription is None and not self._ended:
            self.start()  # registered while the bus's loop was not running
        scheduler = self._scheduler
        outer = scheduler.enter(self)
        try:
            self._source.on_next(value)
        finally:
            scheduler.leave(outer)

    def push_request(self, message: Message[Any]) -> BaseException | None:
        """Push a request; the error for its requester if the pipeline did not let it out."""
        self._awaiting = message.reply_address
        self._error = None
        try:
            self.push(message)
        finally:
            passed = self._awaiting is None
            self._awaiting = None
        if passed:
            return None
        error, self._error = self._error, None
        if error is not None:
            return error
        return MessageRejectedError(message.address, self.handler)

    def on_loop(self, then: Callable[..., None], *args: Any) -> bool:
        """Whether this runs on the bus's loop; if not, ``then(*args)`` is called there."""
        loop = self._scheduler.loop()
        try:
            if asyncio.get_running_loop() is loop:
                return True
        except RuntimeError:  # another thread's: no loop runs there
            pass
        loop.call_soon_threadsafe(then, *args)
        return False

    def emit(self, value: Any) -> None:
        awaiting = self._awaiting
        if (
            awaiting is not None
            and isinstance(value, Message)
            and cast("Message[Any]", value).reply_address == awaiting
        ):
            self._awaiting = None
        self._admit(value)

    def fail(self, error: Exception) -> None:
        self._error = error
        self._report(error)
        self._subscription = None
        if self._subscribing or self._on_error == "unregister":
            self._ended = True
            self._end(True)
        else:
            self.start()

    def complete(self) -> None:
        self._subscription = None
        if not self._ended:
            self._ended = True
            self._end(False)

    def flush(self) -> None:
        """Complete the source: operators deliver what they hold (``buffer_with_time``'s
        partial buffer, ``debounce``'s last value), then the pipeline completes."""
        scheduler = self._scheduler
        outer = scheduler.subscribing(self)  # completion timers (delay's, sample's) chain anew
        try:
            self._source.on_completed()
        finally:
            scheduler.leave(outer)
        scheduler.moves += 1
        self.moved_at = scheduler.moves  # ... and each chain is waited for once

    def stop(self, ending: bool = True) -> None:
        """Dispose of the operators, cancelling their timers; ``ending=False`` lets a later
        ``start()`` subscribe them again (the bus moved to a new loop)."""
        self._ended = ending
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.dispose()

    def _on_operator_error(self, exc: Exception, observer: object, value: object) -> None:
        # An exception escaping the operators themselves (not one they turned into on_error).
        self._error = exc
        self._report(exc)
