"""The front's ways to watch the bus: ``stream``, ``next``, ``observe``, ``observe_all``,
interceptors and ``errors``. ``EventBus`` inherits them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from ._address import AddressLike, AnyAddress, to_address
from ._answers import Answers
from ._failures import Failures
from ._flow import Overflow
from ._inbound import InboundInterceptor
from ._loop import LoopBinding
from ._patterns import is_pattern
from ._pipeline import Operator
from ._registry import Registry
from ._routes import Routes
from ._subject import LoopSubject
from ._taps import Interceptor, Taps
from .addresses import Event
from .errors import HandlerFailure
from .iteration import MessageStream, stream_options
from .message import Envelope, Message
from .options import RegistrationOptions, check_registration_options, check_timeout

# A stream's buffer unless told otherwise: room for bursts, bounded so that a stalled loop
# holds its publishers back rather than memory growing.
DEFAULT_STREAM_BUFFER = 100


class Watching:
    """Watching the bus (part of ``EventBus``)."""

    _loop: LoopBinding
    _routes: Routes
    _taps: Taps
    _answers: Answers
    _failures: Failures
    _registry: Registry
    _default_timeout: float

    @overload
    def stream[B](
        self,
        address: AnyAddress,
        *,
        max_buffered: int = DEFAULT_STREAM_BUFFER,
        overflow: Overflow = "block",
        pipe: Sequence[Operator] | None = None,
        local: bool = False,
        body_type: type[B],
    ) -> MessageStream[B]: ...
    @overload
    def stream[B](
        self,
        address: Event[B],
        *,
        max_buffered: int = DEFAULT_STREAM_BUFFER,
        overflow: Overflow = "block",
        pipe: Sequence[Operator] | None = None,
        local: bool = False,
        body_type: None = None,
    ) -> MessageStream[B]: ...
    @overload
    def stream(
        self,
        address: AddressLike,
        *,
        max_buffered: int = DEFAULT_STREAM_BUFFER,
        overflow: Overflow = "block",
        pipe: Sequence[Operator] | None = None,
        local: bool = False,
        body_type: None = None,
    ) -> MessageStream[Any]: ...
    def stream(
        self,
        address: AnyAddress,
        *,
        max_buffered: int = DEFAULT_STREAM_BUFFER,
        overflow: Overflow = "block",
        pipe: Sequence[Operator] | None = None,
        local: bool = False,
        body_type: Any = None,
    ) -> MessageStream[Any]:
        """The messages published to ``address`` (or to every address matching a pattern), for
        ``async with bus.stream(address) as messages: async for message in messages: ...``.

        The stream is a listener registration, made when the block is entered and ended when
        it exits: messages wait in its buffer of ``max_buffered`` while the loop body runs,
        under its ``overflow`` policy (``"block"`` holds publishers back; the drop policies
        count and report drops), after its ``pipe`` operators (over messages); ``local=True``
        keeps it out of reach of other processes, as for ``bus.on``. With ``body_type``, bodies
        are validated and converted to it, as a listener's annotated ``Message[T]`` is: one
        that does not fit is reported on ``bus.errors`` and never reaches the loop. The loop
        ends when the block exits, the registration is unregistered or the bus closes.
        """
        options = stream_options(max_buffered, overflow, pipe, local)
        return self._stream(address, options, False, body_type)

    def _stream(
        self, address: AnyAddress, options: RegistrationOptions, once: bool, body_type: Any
    ) -> MessageStream[Any]:
        routed = to_address(address)
        if body_type is not None:
            options["validate"] = True  # (asked for by name, whatever the bus's default)
        check_registration_options(options)  # (wrong options fail here, not at the block)
        registry = self._registry
        loop = self._loop
        return MessageStream(
            routed,
            lambda hand_over, checked: registry.register(routed, hand_over, "listener", checked),
            options,
            lambda: loop.closed,
            once,
            body_type,
        )

    @overload
    async def next[B](
        self,
        address: AnyAddress,
        *,
        timeout: float | None = None,
        pipe: Sequence[Operator] | None = None,
        body_type: type[B],
    ) -> Message[B]: ...
    @overload
    async def next[B](
        self,
        address: Event[B],
        *,
        timeout: float | None = None,
        pipe: Sequence[Operator] | None = None,
        body_type: None = None,
    ) -> Message[B]: ...
    @overload
    async def next(
        self,
        address: AddressLike,
        *,
        timeout: float | None = None,
        pipe: Sequence[Operator] | None = None,
        body_type: None = None,
    ) -> Message[Any]: ...
    async def next(
        self,
        address: AnyAddress,
        *,
        timeout: float | None = None,
        pipe: Sequence[Operator] | None = None,
        body_type: Any = None,
    ) -> Message[Any]:
        """The next message published to ``address`` (or a pattern) from now on, that gets
        through ``pipe`` if given (``pipe=[ops.filter(...)]``: the next that matches).

        ``TimeoutError`` when none comes within ``timeout`` seconds (default: the bus's
        ``default_timeout``), ``BusClosedError`` when the bus closes first. ``body_type``
        validates and converts bodies as for ``stream``. It listens from
        the moment it is awaited: for a message your own code is about to cause, open a
        ``stream`` first and call its ``next()`` after causing it.
        """
        seconds = self._default_timeout if timeout is None else check_timeout(timeout)
        options = stream_options(0, "block", pipe, False)
        async with self._stream(address, options, True, body_type) as one:
            return await one.next(seconds)

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

        Answers go through them too, at the consumer, before the requester gets them (as
        Vert.x's outbound interceptors see replies): ``Envelope("reply", ...)``, whose headers
        it may stamp or body replace, and ``Envelope("failure", ...)``, whose body is the error
        the requester gets, which it may see but not change. Raising on a reply fails the
        request (``HandlerExecutionError`` wrapping it; for an explicit ``message.reply`` or
        ``fail``, that call raises it and the request stays unanswered); raising on a failure
        the handler caused is logged, and the failure goes on unchanged.
        """
        self._taps.add(interceptor)
        self._answers.refresh()
        return interceptor

    def remove_interceptor(self, interceptor: Interceptor) -> None:
        """Remove ``interceptor`` (nothing happens when it is not there)."""
        self._taps.remove(interceptor)
        self._answers.refresh()

    def add_inbound_interceptor(self, interceptor: InboundInterceptor) -> InboundInterceptor:
        """Run ``interceptor`` on every message just before a handler gets it (usable as a
        decorator): after routing, once per registration it reaches, on this bus, whichever
        bus or process sent it (Vert.x ``addInboundInterceptor``).

        It is called with an ``Envelope`` (kind ``"publish"``, ``"send"`` or ``"request"``)
        and returns ``None`` to let the message through, a replacement to the same address
        (``envelope.message.with_headers({...})``) that this handler then sees, or
        ``tinybus.DROP`` to drop it for this registration. A dropped request fails its
        requester at once with ``MessageDroppedError`` (``reason == "intercepted"``, naming
        the interceptor); another dropped message is reported on ``bus.errors``; both count
        in ``stats().dropped``. An interceptor that raises drops the message the same way,
        with what it raised as the error's ``__cause__``. They run in the order they were
        added, synchronously, before the bus's instrumentation traces the handler.
        """
        self._registry.inbound.add(interceptor)
        return interceptor

    def remove_inbound_interceptor(self, interceptor: InboundInterceptor) -> None:
        """Remove ``interceptor`` (nothing happens when it is not there)."""
        self._registry.inbound.remove(interceptor)

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
