"""Producers, as Vert.x has them: an address and default delivery options, bound once.

``bus.sender(address, ...)`` and ``bus.publisher(address, ...)`` return these. Options given
to a call win over the producer's (``DeliveryOptions.overlay``): headers are merged, the call's
over the producer's, and every other option the call gives replaces the producer's.
``producer.options`` may be replaced at any time (a ``DeliveryOptions``); the next call uses
the new ones. ``close()`` ends a producer, as Vert.x's ``MessageProducer.close()``: every later
call raises ``EventBusError``; closing twice does nothing. Closing the bus closes none of its
producers, but their calls then raise ``BusClosedError``, as the bus's own do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import EventBusError
from .headers import HeadersInput
from .options import DeliveryOptions, not_delivery_options

if TYPE_CHECKING:
    from .bus import EventBus


class _Producer:
    __slots__ = ("_bus", "_closed", "_options", "address")

    def __init__(self, bus: EventBus, address: str, options: DeliveryOptions) -> None:
        self._bus = bus
        self.address = address
        self._options = options
        self._closed = False

    @property
    def options(self) -> DeliveryOptions:
        """The producer's default options; assign a ``DeliveryOptions`` to replace them."""
        return self._options

    @options.setter
    def options(self, options: DeliveryOptions) -> None:
        if not isinstance(options, DeliveryOptions):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise not_delivery_options(options)
        self._options = options

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End this producer: every later call raises ``EventBusError`` (closing twice does
        nothing). Messages it sent already are not affected."""
        self._closed = True

    def _for_call(self, call: DeliveryOptions | None) -> DeliveryOptions:
        """The options of one call: the producer's with the call's on top; refused once
        closed."""
        if self._closed:
            raise EventBusError(
                f"this {type(self).__name__.lower()} to {self.address!r} is closed; make "
                f"another with bus.{type(self).__name__.lower()}({self.address!r})"
            )
        return self._options.overlay(call)

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"<{type(self).__name__} to {self.address!r} with {self._options!r}{state}>"


class Sender(_Producer):
    """Sends and requests to one address with default options."""

    __slots__ = ()

    async def send(
        self,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> None:
        await self._bus.send(self.address, body, headers=headers, options=self._for_call(options))

    async def request(
        self,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
        response_type: Any = None,
        full: bool = False,
    ) -> Any:
        """As ``bus.request``: the reply's body, or with ``full=True`` the reply ``Message``."""
        return await self._bus.request(
            self.address,
            body,
            headers=headers,
            timeout=timeout,
            options=self._for_call(options),
            response_type=response_type,
            full=full,
        )


class Publisher(_Producer):
    """Publishes to one address with default options."""

    __slots__ = ()

    async def publish(
        self,
        body: Any,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> int:
        """As ``bus.publish``: the number of registrations the message reached."""
        return await self._bus.publish(
            self.address, body, headers=headers, options=self._for_call(options)
        )
