"""The front's sending methods: ``request``, ``publish`` and ``send``, with the ``*_nowait``
and ``*_threadsafe`` forms. ``EventBus`` inherits them; they check the address and the loop,
and hand the message to ``Dispatch`` (or ``Requests``)."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Literal, overload

from ._address import AddressLike, AnyAddress, to_address
from ._dispatch import Dispatch, raise_refusal
from ._loop import LoopBinding
from ._requests import Requests
from ._routes import Routes
from ._scatter import Scatter
from ._threads import call_threadsafe, checked_from_thread
from .addresses import Address, Event
from .gather import Gathered
from .headers import HeadersInput
from .message import Message
from .options import DeliveryOptions, check_delivery_options, check_timeout


class Sending:
    """Sending messages (part of ``EventBus``)."""

    _loop: LoopBinding
    _routes: Routes
    _dispatch: Dispatch
    _requests: Requests
    _scatter: Scatter
    _default_timeout: float

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
        seconds = self._timeout(timeout, options)
        return await self._requests.request(
            routed, body, headers, seconds, options, response_type, full
        )

    @overload
    async def request_all[Req, Rep](
        self,
        address: Address[Req, Rep],
        body: Req,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
    ) -> Gathered[Rep]: ...
    @overload
    async def request_all[R](
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: type[R],
    ) -> Gathered[R]: ...
    @overload
    async def request_all(
        self,
        address: AddressLike,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: Any = None,
    ) -> Gathered[Any]: ...
    async def request_all(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: Any = None,
    ) -> Gathered[Any]:
        """Scatter-gather: deliver ``body`` to every consumer of ``address`` (here, and in
        other processes through the bus's transport) and return every outcome that arrived
        within ``timeout`` seconds, in arrival order: a ``Replied`` or a ``Failed`` per
        consumer. It never raises for a consumer's failure; consumers that did not answer in
        time are left out (``Gathered.missing`` counts them).

        It returns as soon as every consumer reached has answered, or at the timeout (default
        as for ``request``); when a transport cannot count the consumers of other processes,
        always at the timeout. No consumer anywhere is not an error: the result is empty
        (``asked == 0``), at once. ``BusClosedError`` when the bus is or gets closed.
        ``response_type`` checks each reply (a reply that does not fit is a ``Failed``).
        Inline consumers run in tasks here, so that all are asked at once; a retry is never
        made (``retry_attempts`` is ignored).
        """
        routed = self._routed(address)
        seconds = self._timeout(timeout, options)
        return await self._scatter.request_all(
            routed, body, headers, seconds, options, response_type
        )

    def _timeout(self, timeout: float | None, options: DeliveryOptions | None) -> float:
        """A request's timeout: the argument, else the options', else the bus's default."""
        if timeout is not None:
            return check_timeout(timeout)
        if options is None:
            return self._default_timeout
        given = check_delivery_options(options)
        return self._default_timeout if given.timeout is None else given.timeout  # type: ignore[union-attr]

    @overload
    async def publish[B](
        self,
        address: Event[B],
        body: B,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> int: ...
    @overload
    async def publish(
        self,
        address: AddressLike,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> int: ...
    async def publish(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> int:
        """Deliver ``body`` to every listener and consumer of ``address``.

        Returns, once every handler the message reached has finished with it, the number of
        registrations it reached in this process (those of ``address`` and of the patterns
        it matches; ``observe()`` subscribers are not registrations): ``0`` tells that nobody
        here heard it. Handler failures never reach the publisher: they go to the log and
        ``bus.errors``.
        """
        routed = self._routed(address)
        dispatch = self._dispatch
        collected = dispatch.publish(routed, body, headers, options, True)
        reached = dispatch.reached
        if collected is not None:
            await dispatch.finish(collected)
        return reached

    def publish_nowait(
        self,
        address: AnyAddress,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> int:
        """``publish`` for synchronous code on the bus's loop: deliver now, wait for nothing;
        the number of registrations the message reached, as ``publish`` returns.

        Handlers that do not finish at once keep running as tasks the bus owns (``drain()``
        and ``close()`` wait for them). Under ``overflow="block"`` a full buffer keeps the
        message waiting for room instead of holding the caller; under ``"error"`` this raises
        ``BufferFullError``.
        """
        routed = self._routed(address)
        dispatch = self._dispatch
        raise_refusal(dispatch.publish(routed, body, headers, options, False))
        return dispatch.reached

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
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "no event loop is running here: call this from code running on the bus's loop "
                "(inside asyncio.run(...)), or from another thread use publish_threadsafe() or "
                "send_threadsafe()"
            ) from None
        if loop.closed or running is not loop.loop:
            loop.check(routed)
        return routed
