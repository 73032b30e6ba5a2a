"""The exceptions TinyBus raises: one base class, one subclass per way a delivery can fail."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import Message


class FailureKind(StrEnum):
    """Why a request failed, as Vert.x's ``ReplyFailure`` says it."""

    NO_HANDLERS = "NO_HANDLERS"  # no consumer at the address
    TIMEOUT = "TIMEOUT"  # no reply in time
    RECIPIENT_FAILURE = "RECIPIENT_FAILURE"  # the consumer failed, or failed the request
    ERROR = "ERROR"  # anything else: the bus closed, the message was dropped or invalid


class EventBusError(Exception):
    """Base of every error raised by TinyBus.

    ``address`` names the address involved, when there is one. ``kind`` and ``code`` carry
    what Vert.x's ``ReplyException`` carries: a ``FailureKind``, and a code that is -1 unless
    a consumer gave one to ``message.fail(code, text)``.
    """

    address: str | None = None
    kind: FailureKind = FailureKind.ERROR
    code: int = -1


class HandlerNotFoundError(EventBusError):
    """``request`` or ``send`` found no consumer registered at the address."""

    kind = FailureKind.NO_HANDLERS

    def __init__(self, address: str, detail: str | None = None) -> None:
        super().__init__(detail or f"no consumer is registered at address {address!r}")
        self.address = address


class RemoteError(Exception):
    """An exception raised in another process, as it crossed the wire: the ``original_error``
    of a ``HandlerExecutionError`` whose consumer ran elsewhere. ``type_name`` is the remote
    exception's class name, ``traceback`` its formatted traceback (as text)."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        return self.message


class MessageEncodingError(EventBusError):
    """A message cannot leave for other processes as it is: its body cannot be encoded, it
    is larger than the server accepts, or its address cannot be made a subject. Raised to
    the sender before anything is sent."""

    def __init__(self, address: str, detail: str) -> None:
        super().__init__(f"the message to {address!r} cannot be sent to other processes: {detail}")
        self.address = address


class HandlerAlreadyRegisteredError(EventBusError):
    """The same function is already registered as a consumer of the address (listeners may
    repeat: each registration is its own)."""

    def __init__(self, address: str, handler: object) -> None:
        super().__init__(f"{handler_name(handler)} is already registered at address {address!r}")
        self.address = address
        self.handler = handler


class HandlerExecutionError(EventBusError):
    """The consumer that handled a request raised instead of replying.

    ``original_error`` (also ``__cause__``) is the handler's exception.
    """

    kind = FailureKind.RECIPIENT_FAILURE

    def __init__(
        self, address: str, original_error: BaseException, description: str | None = None
    ) -> None:
        if description is None:
            kind = type(original_error).__name__
            try:
                detail = str(original_error)
            except Exception as exc:  # an exception that cannot print itself still fails
                detail = f"(its message could not be printed: {type(exc).__name__})"
            description = (
                f"the handler for {address!r} raised {kind}: {detail}"
                if detail
                else f"the handler for {address!r} raised {kind}"
            )
        super().__init__(description)
        self.address = address
        self.original_error = original_error
        self.__cause__ = original_error


class MessageValidationError(EventBusError):
    """A body (or a reply, for ``response_type``) is not of the type declared for it.

    ``expected`` names the declared type, ``errors`` is pydantic's list of error details, and
    ``__cause__`` is pydantic's ``ValidationError``.
    """

    def __init__(
        self,
        address: str,
        expected: str,
        errors: list[Any],
        summary: str,
        what: str = "the body sent to",
    ) -> None:
        super().__init__(f"{what} {address!r} is not a valid {expected}: {summary}")
        self.address = address
        self.expected = expected
        self.errors = errors


class HandlerTimeoutError(EventBusError, TimeoutError):
    """No reply arrived within the request's timeout."""

    kind = FailureKind.TIMEOUT

    def __init__(self, address: str, timeout: float) -> None:
        super().__init__(
            f"the request to {address!r} timed out after {timeout:g} s without a reply"
        )
        self.address = address
        self.timeout = timeout


class BusClosedError(EventBusError):
    """The bus is closed: it accepts no new messages, and pending requests end with this."""

    def __init__(self, detail: str = "the event bus is closed", address: str | None = None) -> None:
        super().__init__(detail)
        self.address = address


class MessageDroppedError(EventBusError):
    """A message was discarded before its handler got it.

    ``reason`` says why: ``"overflow"`` (a ``drop_oldest``/``drop_newest`` buffer was full),
    ``"unregistered"`` (its registration ended while it waited), ``"closed"`` (the bus closed
    while it waited) or ``"intercepted"`` (the inbound interceptor ``interceptor`` dropped it).
    A requester whose request is dropped gets this at once; a dropped published or sent
    message is reported on ``bus.errors``.
    """

    def __init__(
        self, registration: Any, reason: str = "overflow", interceptor: object = None
    ) -> None:
        overflow = getattr(registration, "overflow", None)
        what = {
            "overflow": f"its buffer was full (overflow={overflow!r})",
            "unregistered": "it was unregistered",
            "closed": "the bus closed",
            "intercepted": f"the inbound interceptor {handler_name(interceptor)} dropped it "
            "(it returned DROP, or raised: then this error's __cause__ is what it raised); "
            "bus.remove_inbound_interceptor() removes it",
        }.get(reason, reason)
        super().__init__(
            f"a message to {registration.address!r} was dropped before "
            f"{handler_name(registration.handler)} handled it: {what}"
        )
        self.address = registration.address
        self.reason = reason
        self.interceptor = interceptor


class BufferFullError(MessageDroppedError):
    """A registration with ``overflow="error"`` had a full buffer: its sender gets this."""

    def __init__(self, registration: Any) -> None:
        EventBusError.__init__(
            self,
            f"{handler_name(registration.handler)} at {registration.address!r} has "
            f"{registration.max_buffered} messages waiting already (overflow='error')",
        )
        self.address = registration.address
        self.reason = "overflow"


class ReplyFailedError(EventBusError):
    """The consumer failed the request on purpose, with ``message.fail(code, text)``."""

    kind = FailureKind.RECIPIENT_FAILURE

    def __init__(self, address: str, code: int, text: str) -> None:
        super().__init__(f"the consumer at {address!r} failed the request ({code}): {text}")
        self.address = address
        self.code = code
        self.text = text


class MessageRejectedError(EventBusError):
    """A consumer's ``pipe`` did not let a request through, so no handler will reply."""

    def __init__(self, address: str, handler: object) -> None:
        super().__init__(
            f"the request to {address!r} was filtered out by the pipe of {handler_name(handler)}"
        )
        self.address = address


def handler_name(handler: Any) -> str:
    """A readable name for a handler in messages and logs."""
    name = getattr(handler, "__qualname__", None) or getattr(handler, "__name__", None)
    if isinstance(name, str):
        return name
    return repr(handler)


@dataclass(frozen=True, slots=True)
class HandlerFailure:
    """A record on ``bus.errors``: a handler failed and nobody was waiting for its outcome.

    That is a listener (or a consumer reached by ``publish`` or ``send``) that raised, an
    ``observe`` subscriber that raised, or a consumer that raised after its requester had
    stopped waiting. ``message`` is the message being handled, when there is one.
    """

    address: str
    handler: Any
    exception: BaseException
    message: Message[Any] | None = None

    @property
    def dropped(self) -> bool:
        """Whether the message was dropped before the handler got it (``MessageDroppedError``:
        flow control, or the registration's or the bus's end chose so), not a failure of
        the handler."""
        return isinstance(self.exception, MessageDroppedError)

    def __str__(self) -> str:
        name = handler_name(self.handler)
        if self.dropped:
            return f"dropped at {self.address!r}: {self.exception}"
        return f"{name} at {self.address!r} raised {type(self.exception).__name__}"
