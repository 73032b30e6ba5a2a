"""``EventBus``: the public face of TinyBus, composing routing, delivery and the reply table."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from types import TracebackType
from typing import Any, Self, cast, overload

import reactivex
from pydantic import ValidationError
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from ._address import AddressLike, TypedAddress, to_address
from ._delivery import Delivery
from ._replies import REPLY_PREFIX, Reply, ReplyTable
from ._routing import Router
from ._scheduler import BusScheduler
from ._subject import LoopSubject
from ._validation import read_handler_types, validation_summary, validator_for
from .addresses import Address, Event
from .errors import (
    BusClosedError,
    EventBusError,
    HandlerExecutionError,
    HandlerFailure,
    HandlerTimeoutError,
    MessageValidationError,
    handler_name,
)
from .message import EMPTY_HEADERS, Message, freeze_headers, make_message
from .options import DeliveryOptions, check_timeout
from .registration import Registration, Role

logger = logging.getLogger("tinybus")

type ConsumerHandler = Callable[[Message[Any]], Any]
type Listener = Callable[[Any], Any]
type TypedConsumer[Req, Rep] = Callable[[Message[Req]], Rep | Awaitable[Rep]]
type TypedListener[B] = Callable[[B], object]
type AnyAddress = AddressLike | TypedAddress

DEFAULT_TIMEOUT = 30.0
DEFAULT_CLOSE_TIMEOUT = 5.0


class EventBus:
    """An in-process event bus: request-response, publish-subscribe and point-to-point send.

    The bus can be built anywhere, with or without a running event loop; it binds to the loop
    that first uses it (a ``request``, ``publish``, ``send`` or ``close``) and serves that loop
    only. Use it as ``async with EventBus() as bus:`` or call ``await bus.close()``.

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
        self._validate = validate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._scheduler = BusScheduler(self._bound_loop)
        self._errors: LoopSubject[HandlerFailure] = LoopSubject(self._on_errors_subscriber_error)
        self._router = Router(self._on_observer_error)
        self._replies = ReplyTable(self._bound_loop, self._on_unclaimed_failure, self._scheduler)
        self._delivery = Delivery(self._bound_loop, self._report, self._replies.push)

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
            # every task and future of it: start afresh on the new one.
            self._delivery.reset()
            self._replies.reset()
        self._loop = loop

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
        self, address: Address[Req, Rep], *, validate: bool | None = None
    ) -> Callable[[TypedConsumer[Req, Rep]], TypedConsumer[Req, Rep]]: ...
    @overload
    def consumer[Req, Rep](
        self,
        address: Address[Req, Rep],
        handler: TypedConsumer[Req, Rep],
        *,
        validate: bool | None = None,
    ) -> Registration: ...
    @overload
    def consumer[H: ConsumerHandler](
        self, address: AddressLike, *, validate: bool | None = None
    ) -> Callable[[H], H]: ...
    @overload
    def consumer(
        self, address: AddressLike, handler: ConsumerHandler, *, validate: bool | None = None
    ) -> Registration: ...
    def consumer(
        self,
        address: AnyAddress,
        handler: ConsumerHandler | None = None,
        *,
        validate: bool | None = None,
    ) -> Any:
        """Register ``handler`` as a consumer of ``address``; as a decorator when ``handler`` is
        omitted (the function is returned unchanged).

        The handler receives the ``Message``; its return value (awaited if awaitable) is the
        reply to a request. It also receives messages published to the address. When it
        annotates ``Message[T]`` and a return type, bodies and replies are validated against
        them (unless ``validate=False``).
        """
        return self._register_or_decorate(address, handler, "consumer", validate)

    @overload
    def on[B](
        self, address: Event[B], *, validate: bool | None = None
    ) -> Callable[[TypedListener[B]], TypedListener[B]]: ...
    @overload
    def on[B](
        self, address: Event[B], listener: TypedListener[B], *, validate: bool | None = None
    ) -> Registration: ...
    @overload
    def on[L: Listener](
        self, address: AddressLike, *, validate: bool | None = None
    ) -> Callable[[L], L]: ...
    @overload
    def on(
        self, address: AddressLike, listener: Listener, *, validate: bool | None = None
    ) -> Registration: ...
    def on(
        self,
        address: AnyAddress,
        listener: Listener | None = None,
        *,
        validate: bool | None = None,
    ) -> Any:
        """Register ``listener`` for messages published to ``address``; as a decorator when
        ``listener`` is omitted. The listener receives the message body, validated against its
        parameter's annotation; annotated ``Message[T]``, it receives the whole message."""
        return self._register_or_decorate(address, listener, "listener", validate)

    def _register_or_decorate(
        self,
        address: AnyAddress,
        handler: Callable[..., Any] | None,
        role: Role,
        validate: bool | None,
    ) -> Any:
        routed = to_address(address)
        if handler is not None:
            return self._register(routed, handler, role, validate)

        def decorate[F: Callable[..., Any]](function: F) -> F:
            self._register(routed, function, role, validate)
            return function

        return decorate

    def _register(
        self, address: str, handler: Callable[..., Any], role: Role, validate: bool | None
    ) -> Registration:
        if not callable(handler):
            raise TypeError(f"a {role} must be callable, got {handler!r}")
        if self._closed:
            raise BusClosedError(address=address)
        types = read_handler_types(handler, role, self._validate if validate is None else validate)
        registration = Registration(address, handler, role, self._router.remove, types)
        self._router.add(registration, self._delivery.observer(registration), self._scheduler)
        return registration

    def get_consumers(self) -> list[str]:
        """The addresses that have at least one consumer."""
        return [address for address, route in self._router.routes.items() if route.consumers]

    def get_listeners(self, address: AnyAddress) -> list[Callable[..., Any]]:
        """The listeners of ``address``, in registration order."""
        route = self._router.routes.get(to_address(address))
        return [] if route is None else [member.handler for member in route.listeners]

    def remove_consumer(self, address: AnyAddress) -> None:
        """Unregister every consumer of ``address`` (nothing happens when there is none)."""
        route = self._router.routes.get(to_address(address))
        if route is not None:
            for registration in list(route.consumers):
                registration.unregister()

    def remove_listener(self, address: AnyAddress, listener: Callable[..., Any]) -> None:
        """Unregister ``listener`` from ``address`` (nothing happens when it is not there)."""
        route = self._router.routes.get(to_address(address))
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

        def subscribe(
            observer: abc.ObserverBase[Message[Any]], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if self._closed:
                observer.on_completed()
                return Disposable()
            subject = self._router.ensure(routed).subject
            return subject.subscribe(observer, scheduler=scheduler or self._scheduler)

        return reactivex.create(subscribe)

    @property
    def errors(self) -> Observable[HandlerFailure]:
        """Failures nobody awaits: listeners and other handlers that raised (``HandlerFailure``)."""
        return self._errors

    # -- sending -----------------------------------------------------------------------------

    @overload
    async def request[Req, Rep](
        self,
        address: Address[Req, Rep],
        body: Req,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
    ) -> Rep: ...
    @overload
    async def request[R](
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: type[R],
    ) -> R: ...
    @overload
    async def request(
        self,
        address: AddressLike,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: Any = None,
    ) -> Any: ...
    async def request(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: Any = None,
    ) -> Any:
        """Deliver ``body`` to one consumer of ``address`` (round-robin) and return its reply.

        Raises ``HandlerNotFoundError`` at once when the address has no consumer,
        ``HandlerExecutionError`` when the handler raises, ``HandlerTimeoutError`` when no reply
        comes within ``timeout`` seconds, and ``BusClosedError`` when the bus is or gets closed.
        A timed-out or cancelled request does not cancel the handler; its late reply is dropped.

        ``response_type`` validates and converts the reply on the requester's side
        (``MessageValidationError`` when it does not fit), whatever the handler declares.
        """
        routed = to_address(address)
        loop = self._running_loop(routed)
        message_headers = _merge_headers(headers, options)
        if timeout is not None:
            timeout = check_timeout(timeout)
        elif options is not None and options.timeout is not None:
            timeout = options.timeout
        else:
            timeout = self._default_timeout
        retries = 0 if options is None else options.retry_attempts
        while True:
            try:
                reply = await self._request_once(loop, routed, body, message_headers, timeout)
            except HandlerTimeoutError:
                if retries == 0:
                    raise
                retries -= 1
                logger.debug("request to %r timed out; retrying (%d left)", routed, retries)
            else:
                return (
                    reply
                    if response_type is None
                    else _checked_response(routed, reply, response_type)
                )

    async def _request_once(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        body: Any,
        headers: Mapping[str, str],
        timeout: float,
    ) -> Any:
        if self._closed:
            raise BusClosedError(address=address)
        registration = self._router.pick_consumer(address)
        message = make_message(body, address, headers, None)
        reply_address = message.reply_address = REPLY_PREFIX + message.id
        pending = self._replies.expect(reply_address, address, timeout, loop)
        future = pending.future
        try:
            self._delivery.deliver_request(registration, message)
            if not future.done():
                self._replies.arm(pending)
            return await future
        finally:
            self._replies.forget(reply_address)

    @overload
    async def publish[B](
        self,
        address: Event[B],
        body: B,
        *,
        headers: Mapping[str, str] | None = None,
        options: DeliveryOptions | None = None,
    ) -> None: ...
    @overload
    async def publish(
        self,
        address: AddressLike,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        options: DeliveryOptions | None = None,
    ) -> None: ...
    async def publish(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        """Deliver ``body`` to every listener and consumer of ``address``.

        Returns once every handler the message reached has finished with it. Handler failures
        never reach the publisher: they go to the log and ``bus.errors``.
        """
        routed = to_address(address)
        self._running_loop(routed)
        message_headers = _merge_headers(headers, options)
        route = self._router.routes.get(routed)
        if route is None:
            return
        message = make_message(body, routed, message_headers, None)
        started = self._delivery.collect(route.subject.on_next, message)
        if started:
            await self._delivery.wait(started)

    @overload
    async def send[Req](
        self,
        address: Address[Req, Any],
        body: Req,
        *,
        headers: Mapping[str, str] | None = None,
        options: DeliveryOptions | None = None,
    ) -> None: ...
    @overload
    async def send(
        self,
        address: AddressLike,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        options: DeliveryOptions | None = None,
    ) -> None: ...
    async def send(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        """Deliver ``body`` to one consumer of ``address`` (round-robin), expecting no reply.

        Returns once that consumer has finished with it; its return value is discarded and a
        failure goes to the log and ``bus.errors``. ``HandlerNotFoundError`` when there is none.
        """
        routed = to_address(address)
        self._running_loop(routed)
        message_headers = _merge_headers(headers, options)
        registration = self._router.pick_consumer(routed)
        message = make_message(body, routed, message_headers, None)
        started = self._delivery.collect(
            partial(self._delivery.deliver_event, registration), message
        )
        if started:
            await self._delivery.wait(started)

    # -- failures ------------------------------------------------------------------------------

    def _report(self, failure: HandlerFailure) -> None:
        logger.error(
            "%s at %r raised %s",
            handler_name(failure.handler),
            failure.address,
            type(failure.exception).__name__,
            exc_info=failure.exception,
        )
        self._errors.on_next(failure)

    def _on_unclaimed_failure(self, reply: Reply) -> None:
        error = reply.error
        assert error is not None
        cause = error.original_error if isinstance(error, HandlerExecutionError) else error
        self._delivery.report_failure(reply.source, None, cause)

    def _on_observer_error(
        self, exc: Exception, observer: abc.ObserverBase[Any], value: Any
    ) -> None:
        if isinstance(value, Message):
            message = cast(Message[Any], value)
            self._report(HandlerFailure(message.address, observer, exc, message))
        else:
            self._report(HandlerFailure("", observer, exc, None))

    def _on_errors_subscriber_error(self, exc: Exception, observer: object, value: object) -> None:
        logger.error("a subscriber of bus.errors raised; it stays subscribed", exc_info=exc)

    # -- shutting down -------------------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Close the bus.

        New requests, sends, publishes and registrations raise ``BusClosedError`` from now on,
        and pending requests fail with it at once. Handlers still running get ``timeout``
        seconds (default: the bus's ``close_timeout``, 5 s) to finish, then are cancelled and
        awaited. Address streams and ``bus.errors`` complete. Closing twice is harmless; a
        second caller waits for the first to finish.
        """
        grace = self._close_timeout if timeout is None else _check_grace(timeout)
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self._closed = True
            self._finish_close()
            return
        if asyncio.get_running_loop() is not loop:
            raise EventBusError("close() must be awaited on the event loop the bus is bound to")
        self._closed = True
        closing = self._closing = loop.create_future()
        try:
            self._replies.fail_all()
            await self._delivery.shutdown(grace)
        except BaseException:
            # Cancelled while waiting: the handlers are cancelled but not yet awaited, so a
            # later close() must do the rest instead of returning at once.
            self._closing = None
            raise
        else:
            self._replies.fail_all()
            self._finish_close()
        finally:
            closing.set_result(None)

    def _finish_close(self) -> None:
        self._router.complete()
        self._replies.complete()
        self._errors.on_completed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<EventBus {state}: {len(self._router.routes)} addresses, "
            f"{self._replies.pending_count} pending requests, "
            f"{len(self._delivery.tasks)} running handlers>"
        )


def _checked_response(address: str, reply: Any, response_type: Any) -> Any:
    validator = validator_for(response_type)
    try:
        return validator(reply)
    except ValidationError as exc:
        raise MessageValidationError(
            address,
            validator.expected,
            exc.errors(include_url=False),
            validation_summary(exc),
            what="the reply from",
        ) from exc


def _check_grace(timeout: object) -> float:
    if (type(timeout) is float or type(timeout) is int) and timeout >= 0:
        return float(timeout)
    raise ValueError(f"close timeout must be a number of seconds >= 0, got {timeout!r}")


def _merge_headers(
    headers: Mapping[str, str] | None, options: DeliveryOptions | None
) -> Mapping[str, str]:
    base = None if options is None else options.headers
    if headers is None:
        return EMPTY_HEADERS if base is None else base
    if base is None:
        return freeze_headers(headers)
    return freeze_headers({**base, **freeze_headers(headers)})
