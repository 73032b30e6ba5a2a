"""``EventBus``: the public front. It checks arguments and hands each call to the part whose
job it is (see ``docs/architecture.md``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import Enum
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self, Unpack, overload

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from ._address import AddressLike, TypedAddress, to_address
from ._deadlines import loop_clock
from ._dispatch import Dispatch, raise_refusal
from ._endpoint import Role
from ._failures import Failures
from ._inspect import bus_repr, bus_stats
from ._loop import LoopBinding
from ._patterns import ensure_concrete, is_pattern
from ._registry import Registry
from ._remote import Remote
from ._replies import ReplySubject
from ._requests import Requests
from ._routes import Routes
from ._scheduler import BusScheduler
from ._shutdown import Shutdown
from ._subject import LoopSubject
from ._taps import Interceptor, Taps
from ._tasks import Tasks
from ._threads import call_threadsafe, checked_from_thread
from ._transport import Transport
from .addresses import Address, Event
from .codecs import CodecRegistry, MessageCodec
from .errors import HandlerFailure
from .headers import HeadersInput
from .message import Envelope, Message
from .options import DeliveryOptions, RegistrationOptions, check_delivery_options, check_timeout
from .producers import Publisher, Sender
from .registration import Registration
from .stats import BusStats, Counters

type ConsumerHandler = Callable[[Message[Any]], Any]
type Listener = Callable[[Any], Any]
type TypedConsumer[Req, Rep] = Callable[[Message[Req]], Rep | Awaitable[Rep]]
type TypedListener[B] = Callable[[B], object]
type AnyAddress = AddressLike | TypedAddress

DEFAULT_TIMEOUT = 30.0
DEFAULT_CLOSE_TIMEOUT = 5.0


class _Omitted(Enum):
    """The default of ``consumer``'s and ``on``'s handler: omitted, they return a decorator
    (so that an explicit ``None`` is refused, not taken for "omitted")."""

    HANDLER = "no handler given"


class EventBus:
    """An event bus: request-response, publish-subscribe and point-to-point send.

    The bus can be built anywhere, with or without a running event loop; it binds to the loop
    that first uses it and serves that loop only. Use it as ``async with EventBus() as bus:``
    or call ``await bus.close()``.

    ``default_timeout`` is how long a request waits for its reply unless told otherwise;
    ``close_timeout`` is how long ``close()`` lets running handlers finish before cancelling
    them; ``validate=False`` turns off the validation of bodies and replies against handlers'
    annotations (registrations may turn it back on with ``validate=True``). ``transport``
    connects the bus to the buses of other processes (entered with ``async with``).
    """

    def __init__(
        self,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        validate: bool = True,
        transport: Transport | None = None,
    ) -> None:
        self._default_timeout = check_timeout(default_timeout, "default_timeout")
        self._close_timeout = _check_grace(close_timeout)
        if type(validate) is not bool:
            raise TypeError(f"validate must be True or False, got {validate!r}")
        self._transport = transport
        self._loop = loop = LoopBinding(self._on_bind)
        self._counts = counts = Counters()
        self._failures = failures = Failures(counts)
        self._scheduler = scheduler = BusScheduler(loop.get)
        self._tasks = tasks = Tasks(loop.get)
        self._routes = routes = Routes(failures.on_observer_error)
        self._replies = replies = ReplySubject(loop.get, counts)
        self._taps = taps = Taps(replies)
        self._codecs = CodecRegistry()
        self._dispatch = Dispatch(routes, tasks, taps, self._codecs, counts, transport)
        self._registry = Registry(loop, routes, tasks, failures, scheduler, validate, transport)
        self._requests = Requests(
            loop, routes, self._dispatch, replies, self._default_timeout, transport
        )
        self._shutdown = Shutdown(
            loop, tasks, replies, self._registry, routes, scheduler, taps, failures, transport
        )
        self._remote = Remote(loop, routes, self._dispatch, replies, self._requests)

    def _on_bind(self, loop: asyncio.AbstractEventLoop, previous: object) -> None:
        if previous is not None:
            # The old loop is gone (pytest-asyncio and asyncio.run close theirs), and with it
            # every task, future and timer of it: start afresh on the new one.
            self._tasks.reset()
            self._replies.reset()
            self._scheduler.reset()
        self._tasks.loop = loop
        self._replies.clock = loop_clock(loop)
        self._registry.bind(fresh=previous is not None)

    @property
    def scheduler(self) -> abc.SchedulerBase:
        """The bus's asyncio scheduler; pass it to ``subscribe`` for time-based Rx operators."""
        return self._scheduler

    @property
    def is_closed(self) -> bool:
        return self._loop.closed

    @property
    def default_timeout(self) -> float:
        return self._default_timeout

    # -- registering -----------------------------------------------------------------------

    @overload
    def consumer[Req, Rep](
        self, address: Address[Req, Rep], **options: Unpack[RegistrationOptions]
    ) -> Callable[[TypedConsumer[Req, Rep]], TypedConsumer[Req, Rep]]: ...
    @overload
    def consumer[Req, Rep](
        self,
        address: Address[Req, Rep],
        handler: TypedConsumer[Req, Rep],
        **options: Unpack[RegistrationOptions],
    ) -> Registration: ...
    @overload
    def consumer[H: ConsumerHandler](
        self, address: AddressLike, **options: Unpack[RegistrationOptions]
    ) -> Callable[[H], H]: ...
    @overload
    def consumer(
        self, address: AddressLike, handler: ConsumerHandler, **options: Unpack[RegistrationOptions]
    ) -> Registration: ...
    def consumer(
        self,
        address: AnyAddress,
        handler: ConsumerHandler | _Omitted = _Omitted.HANDLER,
        **options: Unpack[RegistrationOptions],
    ) -> Any:
        """Register ``handler`` as a consumer of ``address``; as a decorator when ``handler`` is
        omitted (the function is returned unchanged).

        The handler receives the ``Message``; its return value (awaited if awaitable) is the
        reply to a request. It also receives messages published to the address. When it
        annotates ``Message[T]`` and a return type, bodies and replies are validated against
        them (unless ``validate=False``). See ``RegistrationOptions`` for ``pipe``, flow
        control and ``inline``. A consumer's address is exact, never a pattern.
        """
        return self._register_or_decorate(address, handler, "consumer", options)

    @overload
    def on[B](
        self, address: Event[B], **options: Unpack[RegistrationOptions]
    ) -> Callable[[TypedListener[B]], TypedListener[B]]: ...
    @overload
    def on[B](
        self, address: Event[B], listener: TypedListener[B], **options: Unpack[RegistrationOptions]
    ) -> Registration: ...
    @overload
    def on[L: Listener](
        self, address: AddressLike, **options: Unpack[RegistrationOptions]
    ) -> Callable[[L], L]: ...
    @overload
    def on(
        self, address: AddressLike, listener: Listener, **options: Unpack[RegistrationOptions]
    ) -> Registration: ...
    def on(
        self,
        address: AnyAddress,
        listener: Listener | _Omitted = _Omitted.HANDLER,
        **options: Unpack[RegistrationOptions],
    ) -> Any:
        """Register ``listener`` for messages published to ``address``, or to every address
        matching a pattern (``user.*``: one segment, ``user.>``: one or more); as a decorator
        when ``listener`` is omitted.

        The listener receives the message body, validated against its parameter's annotation;
        annotated ``Message[T]``, it receives the whole message. With ``pipe=[...]``, the
        bodies (or messages) flow through those reactivex operators first, and the listener
        receives what comes out. See ``RegistrationOptions`` for flow control.
        """
        return self._register_or_decorate(address, listener, "listener", options)

    def _register_or_decorate(
        self,
        address: AnyAddress,
        handler: Callable[..., Any] | _Omitted,
        role: Role,
        options: RegistrationOptions,
    ) -> Any:
        routed = to_address(address)
        if handler is not _Omitted.HANDLER:  # (an explicit None is refused by register)
            return self._registry.register(routed, handler, role, options)

        def decorate[F: Callable[..., Any]](function: F) -> F:
            self._registry.register(routed, function, role, options)
            return function

        return decorate

    def get_consumers(self) -> list[str]:
        """The addresses that have at least one consumer."""
        return [address for address, subject in self._routes.routes.items() if subject.consumers]

    def get_listeners(self, address: AnyAddress) -> list[Callable[..., Any]]:
        """The listeners of ``address``, in registration order."""
        subject = self._routes.find(to_address(address))
        endpoints = [] if subject is None else subject.endpoints()
        return [endpoint.handler for endpoint in endpoints if endpoint.role == "listener"]

    def remove_consumer(self, address: AnyAddress) -> None:
        """Unregister every consumer of ``address`` (nothing happens when there is none)."""
        self._remove(address, lambda endpoint: endpoint.role == "consumer")

    def remove_listener(self, address: AnyAddress, listener: Callable[..., Any]) -> None:
        """Unregister ``listener`` from ``address`` (nothing happens when it is not there)."""
        self._remove(
            address, lambda endpoint: endpoint.role == "listener" and endpoint.handler == listener
        )

    def _remove(self, address: AnyAddress, chosen: Callable[[Any], bool]) -> None:
        subject = self._routes.find(to_address(address))
        for endpoint in [] if subject is None else subject.endpoints():
            if chosen(endpoint):
                self._registry.unregister(endpoint)

    # -- reactive views ----------------------------------------------------------------------

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

    # -- sending -----------------------------------------------------------------------------

    @overload
    async def request[Req, Rep](
        self,
        address: Address[Req, Rep],
        body: Req,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        full: Literal[False] = False,
    ) -> Rep: ...
    @overload
    async def request[R](
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: type[R],
        full: Literal[False] = False,
    ) -> R: ...
    @overload
    async def request(
        self,
        address: AddressLike,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: Any = None,
        full: Literal[False] = False,
    ) -> Any: ...
    @overload
    async def request(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: Any = None,
        full: Literal[True],
    ) -> Message[Any]: ...
    @overload
    async def request(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: Any = None,
        full: bool,
    ) -> Any: ...
    async def request(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: Any = None,
        full: bool = False,
    ) -> Any:
        """Deliver ``body`` to one consumer of ``address`` (round-robin) and return its reply.

        Raises ``HandlerNotFoundError`` at once when the address has no consumer,
        ``HandlerExecutionError`` when the handler raises, ``HandlerTimeoutError`` when no reply
        comes within ``timeout`` seconds, and ``BusClosedError`` when the bus is or gets closed.
        A timed-out or cancelled request does not cancel the handler (unless it is ``inline``:
        then it runs in the requester's task, like a function call); its late reply is dropped.

        ``response_type`` validates and converts the reply on the requester's side
        (``MessageValidationError`` when it does not fit), whatever the handler declares.
        ``full=True`` returns the reply ``Message`` (its body, headers and reply address)
        instead of the body alone. Every failure carries ``.kind`` and ``.code``; a consumer's
        ``message.fail(code, text)`` raises ``ReplyFailedError`` here.
        """
        routed = self._routed(address)
        if timeout is not None:
            seconds = check_timeout(timeout)
        else:
            given = check_delivery_options(options)
            given_timeout = None if given is None else given.timeout
            seconds = self._default_timeout if given_timeout is None else given_timeout
        return await self._requests.request(
            routed, body, headers, seconds, options, response_type, full
        )

    @overload
    async def publish[B](
        self,
        address: Event[B],
        body: B,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None: ...
    @overload
    async def publish(
        self,
        address: AddressLike,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None: ...
    async def publish(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        """Deliver ``body`` to every listener and consumer of ``address``.

        Returns once every handler the message reached has finished with it. Handler failures
        never reach the publisher: they go to the log and ``bus.errors``.
        """
        routed = self._routed(address)
        collected = self._dispatch.publish(routed, body, headers, options, True)
        if collected is not None:
            await self._dispatch.finish(collected)

    def publish_nowait(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        """``publish`` for synchronous code on the bus's loop: deliver now, wait for nothing.

        Handlers that do not finish at once keep running as tasks the bus owns (``drain()``
        and ``close()`` wait for them). Under ``overflow="block"`` a full buffer keeps the
        message waiting for room instead of holding the caller; under ``"error"`` this raises
        ``BufferFullError``.
        """
        routed = self._routed(address)
        raise_refusal(self._dispatch.publish(routed, body, headers, options, False))

    def publish_threadsafe(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        """``publish_nowait`` from any thread: the message is published on the bus's loop, as
        soon as the loop gets to it. Errors there (the bus closed meanwhile, a full buffer under
        ``overflow="error"``) are logged to the ``tinybus`` logger; a bad address, headers or
        options raise here, in the calling thread."""
        routed, frozen = checked_from_thread(address, headers, options)
        call = partial(self.publish_nowait, routed, body, headers=frozen, options=options)
        call_threadsafe(self._loop, call)

    @overload
    async def send[Req](
        self,
        address: Address[Req, Any],
        body: Req,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None: ...
    @overload
    async def send(
        self,
        address: AddressLike,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None: ...
    async def send(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        """Deliver ``body`` to one consumer of ``address`` (round-robin), expecting no reply.

        Returns once that consumer has finished with it; its return value is discarded and a
        failure goes to the log and ``bus.errors``. ``HandlerNotFoundError`` when there is none.
        """
        routed = self._routed(address)
        collected = self._dispatch.send(routed, body, headers, options, True)
        if collected is not None:
            await self._dispatch.finish(collected)

    def send_nowait(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        """``send`` for synchronous code on the bus's loop, as ``publish_nowait`` is for
        ``publish``; ``HandlerNotFoundError`` at once when there is no consumer."""
        routed = self._routed(address)
        raise_refusal(self._dispatch.send(routed, body, headers, options, False))

    def send_threadsafe(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        """``send_nowait`` from any thread, as ``publish_threadsafe`` is for publishing; a
        missing consumer is logged; a bad address, headers or options raise here."""
        routed, frozen = checked_from_thread(address, headers, options)
        call = partial(self.send_nowait, routed, body, headers=frozen, options=options)
        call_threadsafe(self._loop, call)

    def _routed(self, address: AnyAddress) -> str:
        """The address to route on, for a call that delivers now: checked (a str that names
        an address in use was checked when that was made), with the bus open and bound to the
        running loop."""
        routed = (
            address
            if type(address) is str and address in self._routes.routes
            else to_address(address)
        )
        loop = self._loop
        if loop.closed or asyncio.get_running_loop() is not loop.loop:
            loop.check(routed)
        return routed

    # -- shutting down -------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until the bus is quiet: no handler running, no message waiting in a buffer
        (except behind a paused registration), and no message held by an operator.

        A message is held by an operator while a timer it set off is pending (``debounce``,
        ``delay``, ``timeout``), or until the next tick of a periodic operator of a pipeline it
        entered (``buffer_with_time``, ``sample``); a tick with nothing to deliver is not
        waited for. Operators that wait for more messages rather than for time
        (``buffer_with_count``) hold theirs until then. Work started while draining is waited
        for too. Handlers that drain the bus they run on do not wait for each other. For tests
        and notebooks; bound it with ``asyncio.timeout`` when a pipeline may hold messages.
        """
        await self._shutdown.drain()

    async def close(self, timeout: float | None = None) -> None:
        """Close the bus.

        New requests, sends, publishes and registrations raise ``BusClosedError`` from now on,
        and pending requests fail with it at once. Pipelines are completed, so operators
        deliver what they hold (a partial ``buffer_with_time``). Then, for ``timeout`` seconds
        (default: the bus's ``close_timeout``, 5 s), running handlers finish and buffered
        messages are handled, as ``drain()`` waits; what is left is cancelled (handlers,
        timers) or dropped and reported (buffered messages), and cancelled handlers get
        ``timeout`` seconds (at least one) more to stop. Address streams, ``observe_all()`` and
        ``bus.errors`` complete. Closing twice is harmless; a second caller waits for the first.
        """
        grace = self._close_timeout if timeout is None else _check_grace(timeout)
        await self._shutdown.close(grace, lambda: None)

    async def __aenter__(self) -> Self:
        # Bind now, so that the *_threadsafe methods work from the start of the block.
        self._loop.check(None)
        if self._transport is not None:
            await self._transport.start(self._remote)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- codecs, producers, inspection ---------------------------------------------------------

    def register_codec(self, codec: MessageCodec[Any], *, default_for: type | None = None) -> None:
        """Register ``codec`` by its name, and as the codec of ``default_for`` bodies if given.
        A name or a type registered twice is a ``ValueError``."""
        self._codecs.register(codec, default_for)

    def unregister_codec(self, name: str) -> None:
        """Remove the codec named ``name`` (``ValueError`` when there is none)."""
        self._codecs.unregister(name)

    def sender(
        self,
        address: AnyAddress,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
    ) -> Sender:
        """A producer that sends and requests to ``address`` with these default options
        (``headers`` over ``options.headers``, ``timeout`` over ``options.timeout``)."""
        routed = to_address(address)
        ensure_concrete(routed)
        defaults = check_delivery_options(options) or DeliveryOptions()
        return Sender(
            self, routed, defaults.overlay(DeliveryOptions(headers=headers, timeout=timeout))
        )

    def publisher(
        self,
        address: AnyAddress,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> Publisher:
        """A producer that publishes to ``address`` with these default options."""
        routed = to_address(address)
        ensure_concrete(routed)
        defaults = check_delivery_options(options) or DeliveryOptions()
        return Publisher(self, routed, defaults.overlay(DeliveryOptions(headers=headers)))

    def stats(self) -> BusStats:
        """Counters for the whole bus since it was built, and for each address (or pattern)
        that has registrations now, with each handler's own counters."""
        return bus_stats(self._routes, self._counts, self._replies, self._tasks, self._scheduler)

    @property
    def recent_failures(self) -> list[HandlerFailure]:
        """The last few records put on ``bus.errors``, oldest first."""
        return list(self._failures.recent)

    def __repr__(self) -> str:
        return bus_repr(self._loop.closed, self._routes, self._counts, self._replies, self._tasks)

    def _repr_html_(self) -> str:
        from ._display import bus_html  # notebooks only: not on the import path

        state = "closed" if self._loop.closed else "open"
        return bus_html(state, self.stats(), list(self._failures.recent))


def _read_only[T](subject: LoopSubject[T]) -> Observable[T]:
    """``subject`` as an Observable only: subscribers cannot push into it or complete it."""
    return reactivex.create(
        lambda observer, scheduler: subject.subscribe(observer, scheduler=scheduler)
    )


def _check_grace(timeout: object) -> float:
    if (type(timeout) is float or type(timeout) is int) and timeout >= 0:
        return float(timeout)
    raise ValueError(f"close timeout must be a number of seconds >= 0, got {timeout!r}")
