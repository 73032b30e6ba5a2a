"""The front's ways to watch the bus: ``observe``, ``observe_all``, interceptors and
``errors``. ``EventBus`` inherits them."""

from __future__ import annotations

from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from ._address import AnyAddress, to_address
from ._failures import Failures
from ._loop import LoopBinding
from ._patterns import is_pattern
from ._routes import Routes
from ._subject import LoopSubject
from ._taps import Interceptor, Taps
from .errors import HandlerFailure
from .message import Envelope, Message


class Watching:
    """Watching the bus (part of ``EventBus``)."""

    _loop: LoopBinding
    _routes: Routes
    _taps: Taps
    _failures: Failures

    def observe(self, address: AnyAddress) -> Observable[Message[Any]]:
        """The stream of messages published to ``address``, as a reactivex Observable: its
        Subject's. Subscribe with ``scheduler=bus.scheduler`` so that time-based operators
        run on the bus's loop. The stream completes when the bus closes."""
        routed = to_address(address)
        is_pattern(routed)  # a misplaced '>' is an error here, not at subscription

        def subscribe(
            observer: abc.ObserverBase[Message[Any]], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if self._loop.closed:
                observer.on_completed()
                return Disposable()
            subject = self._routes.ensure(routed)
            subject.attach(observer)
            return Disposable(lambda: subject.detach(observer))

        return reactivex.create(subscribe)

    def observe_all(self) -> Observable[Envelope]:
        """Every message crossing the bus, as ``Envelope(kind, message)``: published, sent and
        requested messages (after interceptors) and replies, for logging, tracing and
        notebooks. Costs nothing while nobody subscribes; completes when the bus closes."""
        return _read_only(self._taps.subject)

    def add_interceptor(self, interceptor: Interceptor) -> Interceptor:
        """Run ``interceptor`` on every published, sent and requested message before it is
        routed (usable as a decorator).

        It is called with an ``Envelope`` and returns ``None`` to let the message through, or a
        replacement (``envelope.message.with_headers({...})``) that handlers then see. To
        reject the message it raises: the sender's call raises that exception, and no handler
        sees the message. Interceptors run in the order they were added, synchronously.
        """
        self._taps.add(interceptor)
        return interceptor

    def remove_interceptor(self, interceptor: Interceptor) -> None:
        """Remove ``interceptor`` (nothing happens when it is not there)."""
        self._taps.remove(interceptor)

    @property
    def errors(self) -> Observable[HandlerFailure]:
        """Failures nobody awaits: listeners and other handlers that raised (``HandlerFailure``),
        and messages dropped before their handler got them."""
        return _read_only(self._failures.errors)


def _read_only[T](subject: LoopSubject[T]) -> Observable[T]:
    """``subject`` as an Observable only: subscribers cannot push into it or complete it."""
    return reactivex.create(
        lambda observer, scheduler: subject.subscribe(observer, scheduler=scheduler)
    )
