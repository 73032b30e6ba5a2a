"""TinyBus: an async-first, in-process event bus inspired by the Vert.x event bus."""

from ._address import MAX_ADDRESS_LENGTH
from .addresses import Address, Event
from .bus import EventBus
from .codecs import MessageCodec
from .errors import (
    BufferFullError,
    BusClosedError,
    EventBusError,
    FailureKind,
    HandlerAlreadyRegisteredError,
    HandlerExecutionError,
    HandlerFailure,
    HandlerNotFoundError,
    HandlerTimeoutError,
    MessageDroppedError,
    MessageEncodingError,
    MessageRejectedError,
    MessageValidationError,
    RemoteError,
    ReplyFailedError,
)
from .gather import Failed, Gathered, Outcome, Replied
from .headers import Headers
from .instrumentation import Instrumentation
from .iteration import MessageStream
from .message import DROP, Drop, Envelope, Message
from .options import DeliveryOptions, RegistrationOptions
from .producers import Publisher, Sender
from .registration import Registration
from .stats import AddressStats, BusStats, Counters, HandlerStats

__all__ = [
    "DROP",
    "MAX_ADDRESS_LENGTH",
    "Address",
    "AddressStats",
    "BufferFullError",
    "BusClosedError",
    "BusStats",
    "Counters",
    "DeliveryOptions",
    "Drop",
    "Envelope",
    "Event",
    "EventBus",
    "EventBusError",
    "Failed",
    "FailureKind",
    "Gathered",
    "HandlerAlreadyRegisteredError",
    "HandlerExecutionError",
    "HandlerFailure",
    "HandlerNotFoundError",
    "HandlerStats",
    "HandlerTimeoutError",
    "Headers",
    "Instrumentation",
    "Message",
    "MessageCodec",
    "MessageDroppedError",
    "MessageEncodingError",
    "MessageRejectedError",
    "MessageStream",
    "MessageValidationError",
    "Outcome",
    "Publisher",
    "Registration",
    "RegistrationOptions",
    "RemoteError",
    "Replied",
    "ReplyFailedError",
    "Sender",
]

__version__ = "0.3.0"
