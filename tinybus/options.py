"""Options: ``DeliveryOptions`` for one message (timeout, headers, retries) and
``RegistrationOptions`` for one handler (validation, pipeline, flow control)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypedDict, cast, get_args

from ._flow import OVERFLOW_POLICIES, Overflow
from ._pipeline import OnPipeError, Operator
from .headers import HeadersInput
from .message import freeze_headers

DEFAULT_MAX_BUFFERED = 1000


def check_timeout(timeout: object, what: str = "timeout") -> float:
    """Return ``timeout`` as seconds, refusing anything but a positive number.

    ``math.inf`` is accepted and means "wait for as long as it takes".
    """
    if type(timeout) is float or type(timeout) is int:
        if timeout > 0:
            try:
                return float(timeout)
            except OverflowError:  # an int beyond any float
                raise ValueError(
                    f"{what} is too large to be a number of seconds (an int of "
                    f"{int(timeout).bit_length()} bits); use math.inf to wait for as long as "
                    "it takes"
                ) from None
        raise ValueError(f"{what} must be a positive number of seconds, got {timeout!r}")
    raise TypeError(
        f"{what} must be a positive number of seconds, got {timeout!r} of type "
        f"{type(timeout).__name__}"
    )


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """Options for one delivery, accepted as ``options=`` by request, publish and send.

    - ``timeout``: seconds a request waits for its reply; ``None`` means the bus's
      ``default_timeout`` (30 s unless the bus was built with another).
    - ``headers``: headers added to the message; headers passed to the call itself are
      merged over these.
    - ``retry_attempts``: how many more times a request is sent when an attempt times out
      (``None``: not given, which means none). Each attempt has the full timeout. Publish
      and send, which wait for no reply, ignore it.
    - ``copy``: ``True`` gives every handler its own deep copy of the body (and keeps the
      sender's object out of the bus), instead of sharing one object; frozen pydantic models
      are never copied. ``None``: not given, which means shared.
    - ``codec``: the name of a registered codec whose ``transform`` makes the body delivered
      (instead of the default codec of the body's type, if any).

    Every field left ``None`` is "not given": ``overlay`` keeps what is under it, so a call
    can turn a producer's option off (``retry_attempts=0``, ``copy=False``) by giving it.
    Keyword arguments given to the call itself win over these.
    """

    timeout: float | None = None
    headers: HeadersInput | None = None  # a Headers copy once built
    retry_attempts: int | None = None
    copy: bool | None = None
    codec: str | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None:
            object.__setattr__(self, "timeout", check_timeout(self.timeout))
        if self.copy is not None and type(self.copy) is not bool:
            raise TypeError(f"copy must be True, False or None, got {self.copy!r}")
        if self.codec is not None and (type(self.codec) is not str or not self.codec):
            raise TypeError(f"codec must be the name of a registered codec, got {self.codec!r}")
        if self.retry_attempts is not None and (
            type(self.retry_attempts) is not int or self.retry_attempts < 0
        ):
            raise ValueError(
                f"retry_attempts must be an int >= 0 or None, got {self.retry_attempts!r}"
            )
        if self.headers is not None:
            object.__setattr__(self, "headers", freeze_headers(self.headers))

    def overlay(self, other: DeliveryOptions | None) -> DeliveryOptions:
        """These options with ``other``'s on top: its headers merged over these (a name it has
        replaces all of ours), and each of its other fields that is given (not ``None``),
        falsy or not, replacing ours."""
        if other is None:
            return self
        if not isinstance(other, DeliveryOptions):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise not_delivery_options(other)
        headers = self.headers
        if other.headers is not None:
            headers = freeze_headers(headers).merged(freeze_headers(other.headers))
        return replace(
            self,
            headers=headers,
            timeout=self.timeout if other.timeout is None else other.timeout,
            retry_attempts=(
                self.retry_attempts if other.retry_attempts is None else other.retry_attempts
            ),
            copy=self.copy if other.copy is None else other.copy,
            codec=self.codec if other.codec is None else other.codec,
        )


def not_delivery_options(options: object) -> TypeError:
    """The error for an ``options=`` that is not a ``DeliveryOptions``."""
    return TypeError(f"options must be a DeliveryOptions, got {type(options).__name__}")


def check_delivery_options(options: object) -> DeliveryOptions | None:
    """``options`` when it is ``None`` or a ``DeliveryOptions``; ``TypeError`` otherwise."""
    if options is None or isinstance(options, DeliveryOptions):
        return options
    raise not_delivery_options(options)


class RegistrationOptions(TypedDict, total=False):
    """Keyword options of ``bus.on`` and ``bus.consumer``.

    - ``validate``: validate what the handler is given (and a consumer's reply) against its
      annotations; ``None`` (the default) follows the bus.
    - ``pipe``: reactivex operators applied, in order, to the stream before the handler.
    - ``on_error``: what a failure inside ``pipe`` does after being reported:
      ``"resubscribe"`` (the default) or ``"unregister"``.
    - ``max_concurrency``: how many messages the handler handles at once (1: one at a time,
      in order); ``None`` (the default) means no limit.
    - ``max_buffered``: how many messages may wait for the handler (1000 by default).
    - ``overflow``: what happens to a message when the buffer is full: ``"block"`` (the
      default), ``"drop_oldest"``, ``"drop_newest"`` or ``"error"``.
    - ``inline``: ``True`` runs the handler's coroutine inside the awaiting ``publish``,
      ``send`` or ``request``, like a function call, instead of in a task of its own
      (docs: Events, "Inline handlers"). Pipelines and buffered messages are not affected.
    - ``local``: ``True`` keeps the registration out of reach of other processes when the
      bus has a transport (Vert.x's ``localConsumer``); without one it changes nothing.
    """

    validate: bool | None
    pipe: Sequence[Operator] | None
    on_error: OnPipeError
    max_concurrency: int | None
    max_buffered: int
    overflow: Overflow
    inline: bool
    local: bool


@dataclass(frozen=True, slots=True)
class CheckedOptions:
    validate: bool | None
    pipe: tuple[Operator, ...]
    on_error: OnPipeError
    max_concurrency: int | None
    max_buffered: int
    overflow: Overflow
    inline: bool
    local: bool


def check_registration_options(options: Mapping[str, Any]) -> CheckedOptions:
    """``options`` checked, with defaults filled in; a clear error for anything wrong."""
    unknown = set(options) - set(RegistrationOptions.__annotations__)
    if unknown:
        raise TypeError(
            f"unknown registration option(s) {sorted(unknown)}; "
            f"expected any of {sorted(RegistrationOptions.__annotations__)}"
        )
    validate = options.get("validate")
    if validate is not None and type(validate) is not bool:
        raise TypeError(f"validate must be True, False or None, got {validate!r}")
    pipe: object = options.get("pipe") or ()
    if isinstance(pipe, str | bytes) or not isinstance(pipe, Sequence):
        raise TypeError(f"pipe must be a list of reactivex operators, got {pipe!r}")
    operators = tuple(cast("Sequence[object]", pipe))
    for operator in operators:
        if not callable(operator):
            raise TypeError(f"pipe must hold reactivex operators, got {operator!r}")
    on_error = options.get("on_error", "resubscribe")
    if on_error not in get_args(OnPipeError.__value__):
        raise ValueError(f"on_error must be 'resubscribe' or 'unregister', got {on_error!r}")
    max_concurrency = options.get("max_concurrency")
    if max_concurrency is not None and (type(max_concurrency) is not int or max_concurrency < 1):
        raise ValueError(f"max_concurrency must be an int >= 1 or None, got {max_concurrency!r}")
    max_buffered = options.get("max_buffered", DEFAULT_MAX_BUFFERED)
    if type(max_buffered) is not int or max_buffered < 0:
        raise ValueError(f"max_buffered must be an int >= 0, got {max_buffered!r}")
    overflow = options.get("overflow", "block")
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {list(OVERFLOW_POLICIES)}, got {overflow!r}")
    inline = options.get("inline", False)
    if type(inline) is not bool:
        raise TypeError(f"inline must be True or False, got {inline!r}")
    local = options.get("local", False)
    if type(local) is not bool:
        raise TypeError(f"local must be True or False, got {local!r}")
    return CheckedOptions(
        validate,
        cast("tuple[Operator, ...]", operators),
        on_error,
        max_concurrency,
        max_buffered,
        overflow,
        inline,
        local,
    )
