"""Calls from other threads: checked in the calling thread, run on the bus's loop."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._address import AddressLike, TypedAddress, to_address
from ._loop import LoopBinding
from ._patterns import ensure_concrete
from .errors import BusClosedError, EventBusError
from .headers import Headers, HeadersInput
from .message import freeze_headers
from .options import DeliveryOptions, check_delivery_options

logger = logging.getLogger("tinybus")


def checked_from_thread(
    address: AddressLike | TypedAddress,
    headers: HeadersInput | None,
    options: DeliveryOptions | None,
) -> tuple[str, Headers | None]:
    """In the calling thread (these checks are pure): the address, refused if it is not one
    or is a pattern, and the headers, checked and copied (so that the caller may change its
    dict at once); ``options`` must be a ``DeliveryOptions``."""
    routed = to_address(address)
    ensure_concrete(routed)
    check_delivery_options(options)
    return routed, None if headers is None else freeze_headers(headers)


def call_threadsafe(binding: LoopBinding, call: Callable[[], object]) -> None:
    """Run ``call`` on the bus's loop, as soon as the loop gets to it; what it raises there is
    logged on ``tinybus``. Refused (``BusClosedError``) once the bus is closed or its loop
    has begun to end with the bus open: a call accepted here always runs."""

    def run() -> None:
        try:
            call()
        except Exception:
            logger.exception("a message from another thread could not be delivered")

    with binding.lock:
        loop = binding.loop
        if binding.closed:
            raise BusClosedError()
        if binding.ending:
            raise BusClosedError("the event loop of this bus is ending; close the bus before it")
        if loop is None or loop.is_closed():
            raise EventBusError(
                "this EventBus has no event loop yet: the *_threadsafe methods need a bus "
                "already used (or entered with async with) on its loop"
            )
        loop.call_soon_threadsafe(run)
