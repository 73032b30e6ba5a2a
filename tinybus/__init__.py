"""TinyBus: an async-first, in-process event bus inspired by the Vert.x event bus."""

from .bus import EventBus
from .errors import (
    BusClosedError,
    EventBusError,
    HandlerAlreadyRegisteredError,
    HandlerExecutionError,
    HandlerFailure,
    HandlerNotFoundError,
    HandlerTimeoutError,
)
from .message import Message
from .options import DeliveryOptions
from .registration import Registration

__all__ = [
    "BusClosedError",
    "DeliveryOptions",
    "EventBus",
    "EventBusError",
    "HandlerAlreadyRegisteredError",
    "HandlerExecutionError",
    "HandlerFailure",
    "HandlerNotFoundError",
    "HandlerTimeoutError",
    "Message",
    "Registration",
]

__version__ = "0.3.0"
