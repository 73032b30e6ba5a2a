"""Producers, as Vert.x has them: an address and default delivery options, bound once.

``bus.sender(address, ...)`` and ``bus.publisher(address, ...)`` return these. Options given
to a call win over the producer's (``DeliveryOptions.overlay``): headers are merged, the call's
over the producer's, and every other option the call sets replaces the producer's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .headers import HeadersInput
from .options import DeliveryOptions

if TYPE_CHECKING:
    from .bus import EventBus


class _Producer:
    __slots__ = ("_bus", "address", "options")

    def __init__(self, bus: EventBus, address: str, options: DeliveryOptions) -> None:
        self._bus = bus
        self.address = address
        self.options = options

    def _options(self, call: DeliveryOptions | None) -> DeliveryOptions:
        return self.options.overlay(call)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} to {self.address!r} with {self.options!r}>"


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
        await self._bus.send(self.address, body, headers=headers, options=self._options(options))

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
            options=self._options(options),
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
    ) -> None:
        await self._bus.publish(self.address, body, headers=headers, options=self._options(options))
