"""``EventBus``: the public face of TinyBus, composing routing, delivery and the reply table."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from enum import Enum
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self, Unpack, cast, overload

import reactivex
from reactivex import Observable, Observer, abc
from reactivex.disposable import Disposable

from ._address import AddressLike, TypedAddress, to_address
from ._deadlines import loop_clock
from ._delivery import Collected, Delivery, Leg
from ._flow import Mailbox
from ._patterns import ensure_concrete, is_pattern
from ._pipeline import Pipeline
from ._replies import Reply, ReplyTable, nobody_awaits
from ._routing import Router
from ._scheduler import BusScheduler
from ._subject import LoopSubject
from ._validation import read_handler_types, validator_for
from .addresses import Address, Event
from .codecs import CodecRegistry, MessageCodec
from .errors import (
    BusClosedError,
    EventBusError,
    HandlerExecutionError,
    HandlerFailure,
    HandlerTimeoutError,
    MessageDroppedError,
    handler_name,
)
from .headers import Headers, HeadersInput
from .message import (
    EMPTY_HEADERS,
    REPLY_PREFIX,
    Envelope,
    Kind,
    Message,
    freeze_headers,
    make_message,
    new_message_id,
    own_copy,
)
from .options import (
    DeliveryOptions,
    RegistrationOptions,
    check_delivery_options,
    check_registration_options,
    check_timeout,
    not_delivery_options,
)
from .producers import Publisher, Sender
from .registration import Registration, Role
from .stats import AddressStats, BusStats, Counters, HandlerStats

logger = logging.getLogger("tinybus")

type ConsumerHandler = Callable[[Message[Any]], Any]
type Listener = Callable[[Any], Any]
type TypedConsumer[Req, Rep] = Callable[[Message[Req]], Rep | Awaitable[Rep]]
type TypedListener[B] = Callable[[B], object]
type AnyAddress = AddressLike | TypedAddress
type Interceptor = Callable[[Envelope], Message[Any] | None]

DEFAULT_TIMEOUT = 30.0
RECENT_FAILURES = 5
DEFAULT_CLOSE_TIMEOUT = 5.0


class _Omitted(Enum):
    """The default of ``consumer``'s and ``on``'s handler: omitted, they return a decorator
    (so that an explicit ``None`` is refused, not taken for "omitted")."""

    HANDLER = "no handler given"


class EventBus:
    """An in-process event bus: request-response, publish-subscribe and point-to-point send.

    The bus can be built anywhere, with or without a running event loop; it binds to the loop
    that first uses it (``async with``, a ``request``, ``publish``, ``send`` or ``drain``) and
    serves that loop only. Use it as ``async with EventBus() as bus:`` or call
    ``await bus.close()``.

    ``default_timeout`` is how long a request waits for its reply unless told otherwise;
    ``close_timeout`` is how long ``close()`` lets running handlers finish before cancelling
    them; ``validate=False`` turns off the validation of bodies and replies against handlers'
    annotations (registrations may turn it back on with ``validate=True``).
    """

    def __init__(
        self,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        validate: bool = True,
    ) -> None:
        self._default_timeout = check_timeout(default_timeout, "default_timeout")
        self._close_timeout = _check_grace(close_timeout)
        if type(validate) is not bool:
            raise TypeError(f"validate must be True or False, got {validate!r}")
        self._validate = validate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._scheduler = BusScheduler(self._bound_loop)
        self._errors: LoopSubject[HandlerFailure] = LoopSubject(self._on_errors_subscriber_error)
        self._router = Router(self._on_observer_error)
        counts = Counters()
        self._replies = ReplyTable(self._bound_loop, self._on_unclaimed_failure, counts)
        self._delivery = Delivery(self._bound_loop, self._report, self._replies, counts)
        self._delivery.converse = self._converse
        self._codecs = CodecRegistry()
        self._pipelines: set[Pipeline] = set()
        self._counts = self._delivery.counts
        self._recent_failures: deque[HandlerFailure] = deque(maxlen=RECENT_FAILURES)
        self._interceptors: list[Interceptor] = []
        # While anyone observes the bus, replies are relayed to them too (``_tap_reply``).
        self._untap_replies: Callable[[], None] | None = None
        self._tap: LoopSubject[Envelope] = LoopSubject(
            self._on_tap_subscriber_error, on_empty=self._end_reply_tap, on_first=self._tap_replies
        )

    # -- the loop ---------------------------------------------------------------------------

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = asyncio.get_running_loop()
            self._bind(loop)
        return loop

    def _running_loop(self, address: str | None) -> asyncio.AbstractEventLoop:
        """The running loop, checked to be the bus's, for a call that starts a delivery."""
        if self._closed:
            raise BusClosedError(address=address)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        return loop

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        previous = self._loop
        if previous is not None and not previous.is_closed():
            raise EventBusError(
                "this EventBus is bound to another event loop, which is still open; "
                "a bus serves the one loop that first used it"
            )
        if previous is not None:
            # The old loop is gone (pytest-asyncio and asyncio.run close theirs), and with it
            # every task, future and timer of it: start afresh on the new one.
            self._delivery.reset()
            self._replies.reset()
            self._scheduler.reset()
            for pipeline in self._pipelines:
                pipeline.stop(ending=False)
        self._loop = loop
        self._delivery.loop = loop
        self._replies.clock = loop_clock(loop)
        # Pipelines registered before there was a loop (or on the old one) start now, and
        # messages left waiting by the old loop are handled on this one.
        for pipeline in list(self._pipelines):
            if not pipeline.started:
                pipeline.start()
        for mailbox in list(self._delivery.mailboxes):
            mailbox.pump()

    @property
    def scheduler(self) -> abc.SchedulerBase:
        """The bus's asyncio scheduler; pass it to ``subscribe`` for time-based Rx operators."""
        return self._scheduler

    @property
    def is_closed(self) -> bool:
        return self._closed

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
        self,
        address: AddressLike,
        handler: ConsumerHandler,
        **options: Unpack[RegistrationOptions],
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
        them (unless ``validate=False``). See ``RegistrationOptions`` for ``pipe`` (which
        carries messages here) and flow control. A consumer's address is exact, never a
        pattern.
        """
        return self._register_or_decorate(address, handler, "consumer", options)

    @overload
    def on[B](
        self, address: Event[B], **options: Unpack[RegistrationOptions]
    ) -> Callable[[TypedListener[B]], TypedListener[B]]: ...
    @overload
    def on[B](
        self,
        address: Event[B],
        listener: TypedListener[B],
        **options: Unpack[RegistrationOptions],
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
        if handler is not _Omitted.HANDLER:  # (an explicit None is refused by _register)
            return self._register(routed, handler, role, options)

        def decorate[F: Callable[..., Any]](function: F) -> F:
            self._register(routed, function, role, options)
            return function

        return decorate

    def _register(
        self,
        address: str,
        handler: Callable[..., Any],
        role: Role,
        raw_options: RegistrationOptions,
    ) -> Registration:
        if not callable(handler):
            raise TypeError(f"a {role} must be callable, got {handler!r}")
        options = check_registration_options(raw_options)
        if role == "consumer" and is_pattern(address):
            raise ValueError(
                f"a consumer's address is exact, got the pattern {address!r}: requests and "
                "sends go to one address; use bus.on() to listen to a pattern"
            )
        if self._closed:
            raise BusClosedError(address=address)
        validate = self._validate if options.validate is None else options.validate
        types = read_handler_types(handler, role, validate)
        registration = Registration(
            address,
            handler,
            role,
            self._unregister,
            types,
            max_concurrency=options.max_concurrency,
            max_buffered=options.max_buffered,
            overflow=options.overflow,
            make_mailbox=self._new_mailbox,
            inline=options.inline,
        )
        pipeline = None
        if options.pipe:
            pipeline = registration._pipeline = Pipeline(  # pyright: ignore[reportPrivateUsage]
                registration,
                options.pipe,
                self._scheduler,
                partial(self._delivery.admit, registration),
                partial(self._report_pipe_failure, registration),
                partial(self._end_registration, registration),
                options.on_error,
            )
        self._router.add(registration, self._delivery.observer(registration))
        if options.max_concurrency is not None:
            registration._mailbox = self._new_mailbox(registration)  # pyright: ignore[reportPrivateUsage]
        if pipeline is not None:
            self._pipelines.add(pipeline)
            if self._on_bound_loop():
                # Operators that fail to subscribe end this registration (reported on
                # bus.errors): reactivex turns their exception into on_error.
                pipeline.start()
        return registration

    def _on_bound_loop(self) -> bool:
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:
            return False

    def _new_mailbox(self, registration: Registration) -> Mailbox:
        mailbox = Mailbox(
            registration,
            self._delivery,
            registration.max_concurrency,
            registration.max_buffered,
            registration.overflow,
        )
        self._delivery.mailboxes.add(mailbox)
        route = self._router.find(registration.address)
        if route is not None:
            route.plain_of = None  # it has a buffer now: not plain, work Route.plain out again
        return mailbox

    def _unregister(self, registration: Registration) -> None:
        self._end_registration(registration, True)

    def _end_registration(self, registration: Registration, discard: bool) -> None:
        """Take ``registration`` off its address; with ``discard``, drop what waits for it,
        else (its pipeline completed) let its buffer drain first."""
        registration._registered = False  # pyright: ignore[reportPrivateUsage]
        self._router.remove(registration)
        pipeline = registration._pipeline  # pyright: ignore[reportPrivateUsage]
        if pipeline is not None:
            pipeline.stop()
            self._pipelines.discard(pipeline)
        mailbox = registration._mailbox  # pyright: ignore[reportPrivateUsage]
        if mailbox is not None:
            if discard or mailbox.paused:
                # (Paused, nobody could ever resume it: what waits is dropped and reported.)
                # (A pipeline completed by close() ends it because the bus closes.)
                reason = "closed" if self._closed and not discard else "unregistered"
                mailbox.discard_all(reason)
            mailbox.pump()  # a pipeline that completed: what waits is still handled first
        registration._ended()  # pyright: ignore[reportPrivateUsage]

    def _report_pipe_failure(self, registration: Registration, exc: BaseException) -> None:
        self._delivery.report_failure(registration, None, exc)

    def get_consumers(self) -> list[str]:
        """The addresses that have at least one consumer."""
        return [address for address, route in self._router.routes.items() if route.consumers]

    def get_listeners(self, address: AnyAddress) -> list[Callable[..., Any]]:
        """The listeners of ``address``, in registration order."""
        route = self._router.find(to_address(address))
        return [] if route is None else [member.handler for member in route.listeners]

    def remove_consumer(self, address: AnyAddress) -> None:
        """Unregister every consumer of ``address`` (nothing happens when there is none)."""
        route = self._router.routes.get(to_address(address))
        if route is not None:
            for registration in list(route.consumers):
                registration.unregister()

    def remove_listener(self, address: AnyAddress, listener: Callable[..., Any]) -> None:
        """Unregister ``listener`` from ``address`` (nothing happens when it is not there)."""
        route = self._router.find(to_address(address))
        if route is not None:
            for registration in list(route.listeners):
                if registration.handler == listener:
                    registration.unregister()

    # -- reactive views ----------------------------------------------------------------------

    def observe(self, address: AnyAddress) -> Observable[Message[Any]]:
        """The stream of messages published to ``address``, as a reactivex Observable.

        Subscribe with ``scheduler=bus.scheduler`` so that time-based operators run on the
        bus's loop. The stream completes when the bus closes.
        """
        routed = to_address(address)
        is_pattern(routed)  # a misplaced '>' is an error here, not at subscription

        def subscribe(
            observer: abc.ObserverBase[Message[Any]], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if self._closed:
                observer.on_completed()
                return Disposable()
            subject = self._router.ensure(routed).subject
            return subject.subscribe(observer, scheduler=scheduler or self._scheduler)

        return reactivex.create(subscribe)

    def observe_all(self) -> Observable[Envelope]:
        """Every message crossing the bus, as ``Envelope(kind, message)``: published, sent and
        requested messages (after interceptors) and replies, for logging, tracing and
        notebooks. Costs nothing while nobody subscribes; completes when the bus closes."""
        return _read_only(self._tap)

    def add_interceptor(self, interceptor: Interceptor) -> Interceptor:
        """Run ``interceptor`` on every published, sent and requested message before it is
        routed (usable as a decorator).

        It is called with an ``Envelope`` and returns ``None`` to let the message through, or a
        replacement (``envelope.message.with_headers({...})``) that handlers then see. To
        reject the message it raises: the sender's call raises that exception, and no handler
        sees the message. Interceptors run in the order they were added, synchronously.
        """
        if not callable(interceptor):
            raise TypeError(f"an interceptor must be callable, got {interceptor!r}")
        self._interceptors.append(interceptor)
        return interceptor

    def remove_interceptor(self, interceptor: Interceptor) -> None:
        """Remove ``interceptor`` (nothing happens when it is not there)."""
        if interceptor in self._interceptors:
            self._interceptors.remove(interceptor)

    def _outbound(self, kind: Kind, message: Message[Any]) -> Message[Any]:
        """``message`` after the interceptors, shown to ``observe_all()`` subscribers."""
        for interceptor in self._interceptors:
            replaced = cast(object, interceptor(Envelope(kind, message)))
            if replaced is None:
                continue
            if not isinstance(replaced, Message):
                raise TypeError(
                    f"interceptor {handler_name(interceptor)} returned "
                    f"{type(replaced).__name__}; it must return a Message or None"
                )
            if (
                replaced.address != message.address
                or replaced.reply_address != message.reply_address
            ):
                raise ValueError(
                    f"interceptor {handler_name(interceptor)} changed the address of a message; "
                    "it may change headers (message.with_headers) but not where it goes"
                )
            message = cast("Message[Any]", replaced)
        if self._tap.subscribers:
            self._tap.on_next(Envelope(kind, message))
        return message

    def _push_reply(self, reply: Reply) -> None:
        self._replies.push(reply)

    def _tap_replies(self) -> None:
        if self._untap_replies is None:
            self._untap_replies = self._replies.relay(Observer(self._tap_reply))

    def _end_reply_tap(self) -> None:
        untap, self._untap_replies = self._untap_replies, None
        if untap is not None:
            untap()

    def _tap_reply(self, reply: Reply) -> None:
        failed = reply.error is not None
        message = make_message(
            reply.error if failed else reply.body, reply.reply_address, EMPTY_HEADERS
        )
        self._tap.on_next(Envelope("failure" if failed else "reply", message))

    @property
    def errors(self) -> Observable[HandlerFailure]:
        """Failures nobody awaits: listeners and other handlers that raised (``HandlerFailure``)."""
        return _read_only(self._errors)

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
        A timed-out or cancelled request does not cancel the handler; its late reply is dropped.

        ``response_type`` validates and converts the reply on the requester's side
        (``MessageValidationError`` when it does not fit), whatever the handler declares.
        ``full=True`` returns the reply ``Message`` (its body, headers and reply address)
        instead of the body alone. Every failure carries ``.kind`` and ``.code``; a consumer's
        ``message.fail(code, text)`` raises ``ReplyFailedError`` here.
        """
        # (A str that names a route is a valid address: routes are made from checked ones.)
        routed: str = (
            address
            if type(address) is str and address in self._router.routes
            else to_address(address)
        )
        # (_running_loop, written out: requests are the other hot path of the bus.)
        if self._closed:
            raise BusClosedError(address=routed)
        if (loop := asyncio.get_running_loop()) is not self._loop:
            self._bind(loop)
        message_headers = (
            EMPTY_HEADERS
            if headers is None and options is None
            else _merge_headers(headers, options)
        )
        copies = False
        if options is not None or self._codecs.defaults:
            body, copies = self._outgoing(body, options)
        if timeout is not None:
            timeout = check_timeout(timeout)
        elif options is not None and options.timeout is not None:
            timeout = options.timeout
        else:
            timeout = self._default_timeout
        retries = 0 if options is None else options.retry_attempts
        replies = self._replies
        while True:  # an attempt: its reply comes while it is sent, or into a future
            if self._closed:
                raise BusClosedError(address=routed)
            message = make_message(body, routed, message_headers, request=True)
            reply_address: str = message.reply_address  # type: ignore[assignment]
            if self._interceptors or self._tap.subscribers:
                message = self._outbound("request", message)
            message._copies = copies  # pyright: ignore[reportPrivateUsage]
            consumer = self._router.pick_consumer(routed, True)
            self._counts.requested += 1
            deadline = replies.clock() + timeout
            outer = replies.watch_inline(reply_address)
            try:
                if consumer._pipeline is None and consumer._mailbox is None:  # pyright: ignore[reportPrivateUsage]
                    # (enter_request's first question, asked here: a call less per request)
                    self._delivery.deliver_request(consumer, message, False)
                else:
                    self._delivery.enter_request(consumer, message)
            finally:
                reply = replies.unwatch_inline(outer, routed, timeout, deadline)
                del outer  # (not kept while the request waits)
            try:
                if reply is not None:  # answered while being sent: no future, no timer
                    if reply.error is not None:
                        raise reply.error
                else:
                    pending = replies.expect(reply_address, routed, timeout, deadline)
                    replies.arm(pending)
                    try:
                        reply = await pending.future
                    except asyncio.CancelledError:
                        replies.abandon(reply_address)
                        raise
                    finally:
                        replies.forget(reply_address)
            except HandlerTimeoutError:
                if retries == 0:
                    raise
                retries -= 1
                logger.debug("request to %r timed out; retrying (%d left)", routed, retries)
                continue
            answer = reply.body
            if response_type is not None:
                answer = _checked_response(routed, answer, response_type)
            if full:
                return self._reply_message(reply, answer)
            return answer

    def _reply_message(
        self, reply: Reply, body: Any, source: Registration | None = None
    ) -> Message[Any]:
        """A reply as a ``Message``; one that awaits an answer can be answered (``reply``,
        ``fail``, ``reply_and_request``), by ``source`` when that side is a consumer's."""
        message = Message(body, address=reply.reply_address, headers=reply.headers)
        next_address = reply.next_address
        if next_address is not None:
            message.reply_address = next_address
            leg = Leg(self._converse, self._push_reply, next_address, source)
            message._responder = leg  # pyright: ignore[reportPrivateUsage]
        return message

    async def _converse(
        self,
        reply_address: str,
        body: Any,
        headers: Mapping[str, str] | None,
        timeout: float | None,
        source: Registration | None,
    ) -> Message[Any]:
        """Answer at ``reply_address`` and wait for the answer to that answer."""
        self._running_loop(reply_address)
        timeout = self._default_timeout if timeout is None else check_timeout(timeout)
        next_address = REPLY_PREFIX + new_message_id()
        deadline = self._replies.clock() + timeout
        pending = self._replies.expect(next_address, reply_address, timeout, deadline)
        self._replies.arm(pending)
        try:
            self._push_reply(
                Reply(reply_address, body, None, source, headers or EMPTY_HEADERS, next_address)
            )
            if not self._replies.last_claimed:
                # Nobody waits at reply_address (it timed out, or was cancelled): nobody will
                # answer, so fail now rather than wait out the timeout, as Vert.x does.
                raise nobody_awaits(reply_address)
            reply = await pending.future
        except asyncio.CancelledError:
            self._replies.abandon(next_address)
            raise
        finally:
            self._replies.forget(next_address)
        return self._reply_message(reply, reply.body, source)

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
        if (
            headers is None
            and options is None
            and not (self._interceptors or self._tap.subscribers or self._codecs.defaults)
        ):
            # The short path (Delivery.start_plain), when the address's handlers allow it. A
            # str that names a route is a valid address (routes are made from checked ones);
            # anything else takes the general path, which checks it.
            router = self._router
            route = router.routes.get(address) if type(address) is str else None
            routed: str = address  # type: ignore[assignment]
            if route is not None and not (router.patterns and router.matching(routed)):
                plain = (
                    route.plain_registrations
                    if route.subject.subscribers is route.plain_of
                    else route.plain()
                )
                if plain is not None:
                    # (_running_loop, written out: this is the hottest path of the bus.)
                    if self._closed:
                        raise BusClosedError(address=routed)
                    loop = asyncio.get_running_loop()
                    if loop is not self._loop:
                        self._bind(loop)
                    self._counts.published += 1
                    route.published += 1
                    delivery = self._delivery
                    started, inline = plain
                    waits: Sequence[asyncio.Future[None]] = ()
                    refusal = message = None
                    if started:
                        unfinished = delivery.start_plain(started, body, routed)
                        if unfinished is not None:
                            waits, refusal, message = unfinished
                    # (Delivery.finish's loop, here to save a coroutine per publish.)
                    for registration in inline:
                        awaitable, message, refused = delivery.call_inline(
                            registration, message, body, routed
                        )
                        if refused is not None and refusal is None:
                            refusal = refused
                        if awaitable is not None:
                            try:
                                await awaitable
                            except BaseException as exc:
                                message = delivery.inline_failed(
                                    inline, registration, exc, waits, message, body, routed
                                )
                    if waits or refusal is not None:
                        await delivery.finish((), waits, refusal, message, body, routed)
                    return
        collected = self._publish_now(address, body, headers, options, can_wait=True)
        if collected is not None:
            await self._delivery.wait(collected)

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
        _raise_refusal(self._publish_now(address, body, headers, options, can_wait=False))

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
        routed, frozen = _checked_from_thread(address, headers, options)
        self._call_threadsafe(
            partial(self.publish_nowait, routed, body, headers=frozen, options=options)
        )

    def _publish_now(
        self,
        address: AnyAddress,
        body: Any,
        headers: HeadersInput | None,
        options: DeliveryOptions | None,
        can_wait: bool,
    ) -> Collected | None:
        routed = to_address(address)
        self._running_loop(routed)
        message_headers = _merge_headers(headers, options)
        copies = False
        if options is not None or self._codecs.defaults:
            body, copies = self._outgoing(body, options)
        self._counts.published += 1
        router = self._router
        route = router.routes.get(routed)
        matched = router.matching(routed) if router.patterns else ()
        intercepted = self._interceptors or self._tap.subscribers
        if route is None and not matched:
            ensure_concrete(routed)  # (a pattern that matches patterns raised in matching())
            if not intercepted:
                return None
        message = make_message(body, routed, message_headers)
        if intercepted:
            message = self._outbound("publish", message)
        message._copies = copies  # pyright: ignore[reportPrivateUsage]
        if not matched:
            if route is None:
                return None
            route.published += 1
            return self._delivery.collect(route.subject.on_next, message, can_wait)
        for pattern_route in matched:
            pattern_route.published += 1
        if route is not None:
            route.published += 1
        subjects = [pattern_route.subject for pattern_route in matched]
        if route is not None:
            subjects.insert(0, route.subject)

        def push(message: Message[Any]) -> None:
            for subject in subjects:
                subject.on_next(message)

        return self._delivery.collect(push, message, can_wait)

    def _call_threadsafe(self, call: Callable[[], None]) -> None:
        loop = self._loop
        if self._closed:
            raise BusClosedError()
        if loop is None or loop.is_closed():
            raise EventBusError(
                "this EventBus has no event loop yet: the *_threadsafe methods need a bus "
                "already used (or entered with async with) on its loop"
            )

        def run() -> None:
            try:
                call()
            except Exception:
                logger.exception("a message from another thread could not be delivered")

        loop.call_soon_threadsafe(run)

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
        collected = self._send_now(address, body, headers, options, can_wait=True)
        if collected is not None:
            await self._delivery.wait(collected)

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
        _raise_refusal(self._send_now(address, body, headers, options, can_wait=False))

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
        routed, frozen = _checked_from_thread(address, headers, options)
        self._call_threadsafe(
            partial(self.send_nowait, routed, body, headers=frozen, options=options)
        )

    def _send_now(
        self,
        address: AnyAddress,
        body: Any,
        headers: HeadersInput | None,
        options: DeliveryOptions | None,
        can_wait: bool,
    ) -> Collected | None:
        routed = to_address(address)
        self._running_loop(routed)
        copies = False
        if options is not None or self._codecs.defaults:
            body, copies = self._outgoing(body, options)
        message = make_message(body, routed, _merge_headers(headers, options))
        if self._interceptors or self._tap.subscribers:
            message = self._outbound("send", message)
        message._copies = copies  # pyright: ignore[reportPrivateUsage]
        registration = self._router.pick_consumer(routed, False)
        self._counts.sent += 1
        return self._delivery.collect(
            partial(self._delivery.enter_event, registration), message, can_wait
        )

    # -- failures ------------------------------------------------------------------------------

    def _report(self, failure: HandlerFailure) -> None:
        logger.error(
            "%s at %r raised %s",
            handler_name(failure.handler),
            failure.address,
            type(failure.exception).__name__,
            exc_info=failure.exception,
        )
        if not isinstance(failure.exception, MessageDroppedError):
            self._counts.failed += 1
        self._recent_failures.append(failure)
        self._errors.on_next(failure)

    def _on_unclaimed_failure(self, reply: Reply) -> None:
        error = reply.error
        assert error is not None
        cause = error.original_error if isinstance(error, HandlerExecutionError) else error
        if reply.source is None:  # a requester failed a conversation nobody awaits any more
            logger.debug("dropped a late failure to %s: %r", reply.reply_address, cause)
        else:
            self._delivery.report_failure(reply.source, None, cause)

    def _on_observer_error(
        self, exc: Exception, observer: abc.ObserverBase[Any], value: Any
    ) -> None:
        if isinstance(value, Message):
            message = cast("Message[Any]", value)
            self._report(HandlerFailure(message.address, observer, exc, message))
        else:
            self._report(HandlerFailure("", observer, exc, None))

    def _on_errors_subscriber_error(self, exc: Exception, observer: object, value: object) -> None:
        logger.error("a subscriber of bus.errors raised; it stays subscribed", exc_info=exc)

    def _on_tap_subscriber_error(self, exc: Exception, observer: object, value: object) -> None:
        logger.error("a subscriber of observe_all() raised; it stays subscribed", exc_info=exc)

    # -- shutting down -------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until the bus is quiet: no handler running, no message waiting in a buffer
        (except behind a paused registration), and no message held by an operator.

        A message is held by an operator while a timer it set off is pending (``debounce``,
        ``delay``, ``timeout``), or until the next tick of a periodic operator of a pipeline it
        entered (``buffer_with_time``, ``sample``); a tick with nothing to deliver is not
        waited for. Operators that wait for more messages rather than for time
        (``buffer_with_count``) hold theirs until then. Work started while draining is waited
        for too. For tests and notebooks; bound it with ``asyncio.timeout`` when a pipeline
        may hold messages for long.
        """
        loop = self._running_loop(None)
        await self._until_quiet(loop, None)

    async def _until_quiet(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> bool:
        """Wait as ``drain()`` does, until ``deadline``; whether the bus got quiet in time."""
        scheduler = self._scheduler
        delivery = self._delivery
        while True:
            # Buffered messages wait behind running handlers (among these tasks), which start
            # them as they finish; those behind the caller itself (an actor draining or
            # closing the bus from its handler) cannot start before it returns. A handler
            # cancelled from outside starts none: they start here (unless close() has begun
            # cancelling handlers: then what waits is dropped, not started).
            if not delivery.closing:
                for mailbox in list(delivery.mailboxes):
                    mailbox.pump()
            waits: list[asyncio.Future[Any]] = list(delivery.others())
            if scheduler.holding():
                waits.append(scheduler.settled())
            if not waits:
                return True
            timeout = None if deadline is None else deadline - loop.time()
            if timeout is not None and timeout <= 0:
                return False
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    async def close(self, timeout: float | None = None) -> None:
        """Close the bus.

        New requests, sends, publishes and registrations raise ``BusClosedError`` from now on,
        and pending requests fail with it at once. Pipelines are completed, so operators
        deliver what they hold (a partial ``buffer_with_time``). Then, for ``timeout`` seconds
        (default: the bus's ``close_timeout``, 5 s), running handlers finish and buffered
        messages are handled, as ``drain()`` waits; what is left is cancelled (handlers,
        timers) or dropped and reported (buffered messages). Address streams,
        ``observe_all()`` and ``bus.errors`` complete. Closing twice is harmless; a second
        caller waits for the first to finish.
        """
        grace = self._close_timeout if timeout is None else _check_grace(timeout)
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self._closed = True
            self._discard_waiting()
            self._finish_close()
            return
        if asyncio.get_running_loop() is not loop:
            raise EventBusError("close() must be awaited on the event loop the bus is bound to")
        self._closed = True
        closing = self._closing = loop.create_future()
        try:
            self._replies.fail_all()
            for pipeline in list(self._pipelines):
                if pipeline.started:
                    pipeline.flush()
            await self._until_quiet(loop, loop.time() + grace)
            self._scheduler.cancel_all()
            for pipeline in list(self._pipelines):
                pipeline.stop()
            self._pipelines.clear()
            self._discard_waiting()
            await self._delivery.cancel_running()
        except BaseException:
            # Cancelled while waiting: the handlers are cancelled but not yet all awaited, so
            # a later close() must do the rest instead of returning at once.
            self._closing = None
            self._delivery.closing = True  # what it cancels now is not a handler's failure
            for task in self._delivery.others():
                if not task.cancelling():  # one cancellation each: let cleanups run
                    task.cancel()
            raise
        else:
            self._replies.fail_all()
            self._finish_close()
        finally:
            closing.set_result(None)

    def _discard_waiting(self) -> None:
        for mailbox in list(self._delivery.mailboxes):
            mailbox.discard_all("closed")
        self._delivery.mailboxes.clear()

    def _finish_close(self) -> None:
        for route in [*self._router.routes.values(), *self._router.patterns.values()]:
            for registration in [*route.consumers, *route.listeners]:
                registration._ended()  # pyright: ignore[reportPrivateUsage]
        self._router.complete()
        self._replies.complete()
        self._tap.on_completed()  # (which does not call on_empty: the relay ends here)
        self._end_reply_tap()
        self._errors.on_completed()

    async def __aenter__(self) -> Self:
        # Bind now, so that the *_threadsafe methods work from the start of the block.
        self._running_loop(None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- codecs and copies -------------------------------------------------------------------

    def register_codec(self, codec: MessageCodec[Any], *, default_for: type | None = None) -> None:
        """Register ``codec`` by its name, and as the codec of ``default_for`` bodies if given.
        A name or a type registered twice is a ``ValueError``."""
        self._codecs.register(codec, default_for)

    def unregister_codec(self, name: str) -> None:
        """Remove the codec named ``name`` (``ValueError`` when there is none)."""
        self._codecs.unregister(name)

    def _outgoing(self, body: Any, options: DeliveryOptions | None) -> tuple[Any, bool]:
        """The body to deliver (through the message's or its type's codec, copied if asked),
        and whether each handler gets a copy of its own."""
        codecs = self._codecs
        codec_name = None
        if options is not None:
            try:
                codec_name = options.codec
            except AttributeError:  # not a DeliveryOptions (send reaches this first)
                raise not_delivery_options(options) from None
        if codec_name is not None:
            body = codecs.get(codec_name).transform(body)
        elif codecs.defaults:
            body_type: type = type(body)  # pyright: ignore[reportUnknownVariableType]
            codec = codecs.defaults.get(body_type)
            if codec is not None:
                body = codec.transform(body)
        copies = options is not None and options.copy
        return (own_copy(body) if copies else body), copies

    # -- producers ---------------------------------------------------------------------------

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
        return Sender(
            self,
            routed,
            (check_delivery_options(options) or DeliveryOptions()).overlay(
                DeliveryOptions(headers=headers, timeout=timeout)
            ),
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
        return Publisher(
            self,
            routed,
            (check_delivery_options(options) or DeliveryOptions()).overlay(
                DeliveryOptions(headers=headers)
            ),
        )

    # -- inspection --------------------------------------------------------------------------

    def stats(self) -> BusStats:
        """Counters for the whole bus since it was built, and for each address (or pattern)
        that has registrations now, with each handler's own counters."""
        addresses: dict[str, AddressStats] = {}
        router = self._router
        for pattern, table in ((False, router.routes), (True, router.patterns)):
            for address, route in table.items():
                handlers = tuple(
                    HandlerStats(
                        handler=handler_name(registration.handler),
                        role=registration.role,
                        piped=registration._pipeline is not None,  # pyright: ignore[reportPrivateUsage]
                        paused=registration.is_paused,
                        delivered=registration.delivered,
                        replied=registration.replied,
                        failed=registration.failed,
                        dropped=registration.dropped,
                        queued=registration.queued,
                    )
                    for registration in [*route.consumers, *route.listeners]
                )
                addresses[address] = AddressStats(
                    address, pattern, route.published, route.sent, route.requested, handlers
                )
        return BusStats(
            totals=replace(self._counts),
            pending_requests=self._replies.pending_count,
            running_handlers=len(self._delivery.tasks),
            scheduled_timers=self._scheduler.timer_count,
            subscriptions=sum(
                len(route.subject.subscribers)
                for table in (router.routes, router.patterns)
                for route in table.values()
            ),
            queued=sum(mailbox.queued for mailbox in self._delivery.mailboxes),
            addresses=addresses,
        )

    @property
    def recent_failures(self) -> list[HandlerFailure]:
        """The last few records put on ``bus.errors``, oldest first."""
        return list(self._recent_failures)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        counts = self._counts
        return (
            f"<EventBus {state}: {len(self._router.routes) + len(self._router.patterns)} "
            f"addresses, {self._replies.pending_count} pending requests, "
            f"{len(self._delivery.tasks)} running handlers; published {counts.published}, "
            f"sent {counts.sent}, requested {counts.requested}, delivered {counts.delivered}, "
            f"replied {counts.replied}, failed {counts.failed}, dropped {counts.dropped}>"
        )

    def _repr_html_(self) -> str:
        from ._display import bus_html  # notebooks only: not on the import path

        state = "closed" if self._closed else "open"
        return bus_html(state, self.stats(), list(self._recent_failures))


def _read_only[T](subject: LoopSubject[T]) -> Observable[T]:
    """``subject`` as an Observable only: subscribers cannot push into it or complete it."""
    return reactivex.create(
        lambda observer, scheduler: subject.subscribe(observer, scheduler=scheduler)
    )


def _raise_refusal(collected: Collected | None) -> None:
    """What a caller that does not wait gets from ``overflow="error"``: the refusal, at once."""
    if collected is not None and collected.refusal is not None:
        raise collected.refusal


def _checked_response(address: str, reply: Any, response_type: Any) -> Any:
    return validator_for(response_type).check(reply, address, "the reply from")


def _check_grace(timeout: object) -> float:
    if (type(timeout) is float or type(timeout) is int) and timeout >= 0:
        return float(timeout)
    raise ValueError(f"close timeout must be a number of seconds >= 0, got {timeout!r}")


def _checked_from_thread(
    address: AnyAddress, headers: HeadersInput | None, options: DeliveryOptions | None
) -> tuple[str, Headers | None]:
    """For the ``*_threadsafe`` methods, in the calling thread (these checks are pure): the
    address, refused if it is not one or is a pattern, and the headers, checked and copied
    (so that the caller may change its dict at once); ``options`` must be a
    ``DeliveryOptions``."""
    routed = to_address(address)
    ensure_concrete(routed)
    check_delivery_options(options)
    return routed, None if headers is None else freeze_headers(headers)


def _merge_headers(headers: HeadersInput | None, options: DeliveryOptions | None) -> Headers:
    base = None
    if options is not None:
        try:
            option_headers = options.headers
        except AttributeError:  # not a DeliveryOptions (a try costs nothing unless it raises)
            raise not_delivery_options(options) from None
        if option_headers is not None:
            base = freeze_headers(option_headers)
    if headers is None:
        return EMPTY_HEADERS if base is None else base
    if base is None:
        return freeze_headers(headers)
    return base.merged(freeze_headers(headers))
