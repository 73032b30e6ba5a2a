"""The front's registering methods: ``consumer``, ``on``, and the ways to list and remove
what is registered. ``EventBus`` inherits them; the work is ``Registry``'s."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, Unpack, overload

from ._address import AddressLike, AnyAddress, to_address
from ._endpoint import Role
from ._registry import Registry
from ._routes import Routes
from .addresses import Address, Event
from .message import Message
from .options import RegistrationOptions
from .registration import Registration

# A handler's first parameter is the message when annotated ``Message[T]``, else the body
# (the rule of ``_validation.read_handler_types``).
type ConsumerHandler = Callable[[Any], Any]
type Listener = Callable[[Any], Any]
type TypedConsumer[Req, Rep] = (
    Callable[[Req], Rep | Awaitable[Rep]] | Callable[[Message[Req]], Rep | Awaitable[Rep]]
)
type TypedListener[B] = Callable[[B], object] | Callable[[Message[B]], object]


class _Omitted(Enum):
    """The default of ``consumer``'s and ``on``'s handler: omitted, they return a decorator
    (so that an explicit ``None`` is refused, not taken for "omitted")."""

    HANDLER = "no handler given"


class Registering:
    """Registering handlers (part of ``EventBus``)."""

    _registry: Registry
    _routes: Routes

    @overload
    def consumer[Req, Rep](
        self, address: Address[Req, Rep], **options: Unpack[RegistrationOptions]
    ) -> Callable[[TypedConsumer[Req, Rep]], TypedConsumer[Req, Rep]]: ...
    @overload
    def consumer[Req, Rep](
        self,
        address: Address[Req, Rep],
        handler: Callable[[Message[Req]], Rep | Awaitable[Rep]],
        **options: Unpack[RegistrationOptions],
    ) -> Registration: ...
    @overload
    def consumer[Req, Rep](
        self,
        address: Address[Req, Rep],
        handler: Callable[[Req], Rep | Awaitable[Rep]],
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

        The handler receives the ``Message`` (annotated ``Message[T]``, or not annotated) or
        the body (annotated with its type); its return value (awaited if awaitable) is the
        reply to a request. It also receives messages published to the address. Bodies and
        replies are validated against its annotations (unless ``validate=False``). See
        ``RegistrationOptions`` for ``pipe``, flow control and ``inline``. A consumer's
        address is exact, never a pattern.
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
        if callable(address) and handler is _Omitted.HANDLER:
            method = "consumer" if role == "consumer" else "on"
            raise TypeError(
                f"@bus.{method} needs the address it registers at: write "
                f'@bus.{method}("address"), with parentheses (got the function {address!r})'
            )
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
        """The listeners of ``address``, in registration order (one registered several times
        is listed once for each registration)."""
        subject = self._routes.find(to_address(address))
        endpoints = [] if subject is None else subject.endpoints()
        return [endpoint.handler for endpoint in endpoints if endpoint.role == "listener"]

    def remove_consumer(self, address: AnyAddress) -> None:
        """Unregister every consumer of ``address`` (nothing happens when there is none)."""
        self._remove(address, lambda endpoint: endpoint.role == "consumer")

    def remove_listener(self, address: AnyAddress, listener: Callable[..., Any]) -> None:
        """Unregister ``listener`` from ``address``: its earliest registration there, when it
        is registered several times, as ``list.remove`` and tinybus 0.2.x do (nothing happens
        when it is not there). ``registration.unregister()`` ends one registration."""
        self._remove(
            address,
            lambda endpoint: endpoint.role == "listener" and endpoint.handler == listener,
            first_only=True,
        )

    def _remove(
        self, address: AnyAddress, chosen: Callable[[Any], bool], first_only: bool = False
    ) -> None:
        subject = self._routes.find(to_address(address))
        for endpoint in [] if subject is None else subject.endpoints():
            if chosen(endpoint):
                self._registry.unregister(endpoint)
                if first_only:
                    return
