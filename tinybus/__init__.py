"""TinyBus: an async-first, in-process event bus inspired by the Vert.x event bus."""

from .addresses import Address, Event
from .bus import EventBus
from .errors import (
    BusClosedError,
    EventBusError,
    HandlerAlreadyRegisteredError,
    HandlerExecutionError,
    HandlerFailure,
    HandlerNotFoundError,
    HandlerTimeoutError,
    MessageValidationError,
)
from .message import Message
from .options import DeliveryOptions
from .registration import Registration

__all__ = [
    "Address",
    "BusClosedError",
    "DeliveryOptions",
    "Event",
    "EventBus",
    "EventBusError",
    "HandlerAlreadyRegisteredError",
    "HandlerExecutionError",
    "HandlerFailure",
    "HandlerNotFoundError",
    "HandlerTimeoutError",
    "Message",
    "MessageValidationError",
    "Registration",
]

__version__ = "0.3.0"
