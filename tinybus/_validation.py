"""Validation at the boundary: what a handler's annotations promise, checked with pydantic.

A handler's signature is read once, at registration (``inspect.signature`` with the string
annotations evaluated, so ``from __future__ import annotations``, PEP 695 generics and
``X | None`` all work), and turned into ``Validator``s built on pydantic ``TypeAdapter``s.
Nothing is inspected per message, and pydantic is imported only when a first type needs it.
A body whose type is exactly the declared class passes
through untouched, without a call into pydantic; anything else is validated in pydantic's
lax mode (a dict becomes the model, ``"42"`` an ``int``), or strict mode where the annotation
asks for it (``Annotated[int, pydantic.Strict()]``).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine
from types import NoneType
from typing import Any, TypeVar, get_args, get_origin

from .errors import MessageValidationError, handler_name
from .message import Message

if typing.TYPE_CHECKING:
    from pydantic import TypeAdapter, ValidationError

_UNCHECKED: tuple[object, ...] = (Any, object, inspect.Parameter.empty)


class Validator:
    """Checks and converts values against one declared type."""

    __slots__ = ("_adapter", "exact", "expected")

    def __init__(self, annotation: Any) -> None:
        from pydantic import TypeAdapter  # (the first type checked imports pydantic)

        self._adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        self.expected = type_name(annotation)
        # A plain class (not a generic alias, union or Annotated) allows the no-copy fast path.
        self.exact: type | None = (
            annotation
            if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias)
            else None
        )

    def __call__(self, value: Any) -> Any:
        if type(value) is self.exact:
            return value
        return self._adapter.validate_python(value)

    def check(self, value: Any, address: str, what: str) -> Any:
        """``value`` validated, or ``MessageValidationError`` naming ``what`` was invalid
        (e.g. "the body sent to") at ``address``."""
        if type(value) is self.exact:
            return value
        try:
            return self._adapter.validate_python(value)
        except Exception as exc:  # ValidationError, or whatever a model's validator raised
            raise MessageValidationError(
                address, self.expected, _details(exc), failure_summary(exc), what=what
            ) from exc


class HandlerTypes:
    """What a handler accepts and returns, as read from its annotations."""

    __slots__ = ("accepts", "returns", "wants_message")

    def __init__(
        self, accepts: Validator | None, returns: Validator | None, wants_message: bool
    ) -> None:
        self.accepts = accepts
        self.returns = returns
        self.wants_message = wants_message


# What handlers that declare no type have: shared, immutable in use.
_UNTYPED = {flag: HandlerTypes(None, None, flag) for flag in (False, True)}


def read_handler_types(handler: Callable[..., Any], role: str, validate: bool) -> HandlerTypes:
    """Read ``handler``'s annotations, by one rule for consumers and listeners alike: a first
    parameter annotated ``Message[T]`` receives the message (its body validated as ``T``);
    any other annotation receives the body, validated and converted to it; an unannotated
    handler gets its role's default: a consumer the message, a listener the body.

    ``TypeError`` for a handler that could never handle a message: a generator function, or
    one that cannot be called with one positional argument."""
    _refuse_generator(handler, role)
    parameter, returned = _signature_types(handler, role, evaluate=validate)
    is_message = _is_message_annotation(parameter)
    unannotated = parameter is inspect.Parameter.empty
    wants_message = is_message or (unannotated and role == "consumer")
    if not validate:
        return _UNTYPED[wants_message]
    body_type: Any = (get_args(parameter) or (Any,))[0] if is_message else parameter
    accepts = None if _unchecked(body_type) else validator_for(body_type)
    returns = None
    reply_type = _awaited(returned)
    # ``-> None`` declares no reply type: such a consumer answers with message.reply(...).
    if role == "consumer" and not _unchecked(reply_type) and reply_type not in (None, NoneType):
        returns = validator_for(reply_type)
    if accepts is None and returns is None:
        return _UNTYPED[wants_message]
    return HandlerTypes(accepts, returns, wants_message)


def _refuse_generator(handler: Callable[..., Any], role: str) -> None:
    """Refuse a (async) generator function, or an object whose ``__call__`` is one: calling
    it only makes a generator, and none of its body would ever run."""
    # (inspect unwraps methods and partials; type(handler).__call__ is a callable object's.)
    for candidate in (handler, type(handler).__call__):
        if inspect.isasyncgenfunction(candidate):
            kind = "an async generator function"
        elif inspect.isgeneratorfunction(candidate):
            kind = "a generator function"
        else:
            continue
        if candidate is not handler:
            kind = f"a callable object whose __call__ is {kind}"
        raise TypeError(
            f"{handler_name(handler)} is {kind} and cannot be a {role}: calling it only makes "
            "a generator, so none of its body would run; make it a plain or async function"
        )


def _signature_types(handler: Callable[..., Any], role: str, evaluate: bool) -> tuple[Any, Any]:
    """The first positional parameter's annotation and the return annotation. Unless
    ``evaluate``, string annotations (``from __future__ import annotations``) stay strings.
    ``TypeError`` when the handler cannot be called with one positional argument."""
    try:
        signature = inspect.signature(handler, eval_str=evaluate)
    except (ValueError, TypeError):
        return inspect.Parameter.empty, inspect.Signature.empty  # builtins without signature
    except NameError as exc:
        raise TypeError(
            f"cannot read the annotations of {handler!r}: {exc}; define the types it names at "
            "module level, or register it with validate=False"
        ) from exc
    try:
        signature.bind(None)
    except TypeError as exc:
        given = "the message or its body"
        problem = "takes no parameter" if not signature.parameters else f"does not take one: {exc}"
        raise TypeError(
            f"{handler_name(handler)} cannot be a {role}: the bus calls it with one positional "
            f"argument ({given}), and its signature {signature} {problem}"
        ) from None
    parameters = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    parameter = parameters[0].annotation if parameters else inspect.Parameter.empty
    return parameter, signature.return_annotation


def _is_message_annotation(annotation: Any) -> bool:
    if isinstance(annotation, str):  # not evaluated (validate=False)
        return annotation == "Message" or annotation.startswith("Message[")
    return annotation is Message or get_origin(annotation) is Message


def _unchecked(annotation: Any) -> bool:
    return (
        annotation in _UNCHECKED
        or annotation is inspect.Signature.empty
        or isinstance(annotation, TypeVar)
    )


def _awaited(annotation: Any) -> Any:
    """``Awaitable[R]`` or ``Coroutine[..., R]`` declared by a plain function means ``R``."""
    if get_origin(annotation) in (Awaitable, Coroutine, typing.Awaitable, typing.Coroutine):
        args = get_args(annotation)
        return args[-1] if args else Any
    return annotation


def type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _details(exc: Exception) -> list[Any]:
    from pydantic import ValidationError

    return exc.errors(include_url=False) if isinstance(exc, ValidationError) else []


def failure_summary(exc: BaseException) -> str:
    """Why a value failed validation, in one line: pydantic's errors, or the exception a
    validator raised (which may not even be printable)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return validation_summary(exc)
    try:
        detail = str(exc)
    except Exception:
        detail = "(its message could not be printed)"
    return f"{type(exc).__name__}: {detail}"


def validation_summary(error: ValidationError) -> str:
    """pydantic's errors in one line: ``loc: msg`` for each."""
    parts: list[str] = []
    for detail in error.errors(include_url=False):
        location = ".".join(str(part) for part in detail["loc"])
        parts.append(f"{location}: {detail['msg']}" if location else detail["msg"])
    return "; ".join(parts)


ADAPTER_CACHE_LIMIT = 1024
_adapters: dict[Any, Validator] = {}


def validator_for(annotation: Any) -> Validator:
    """A ``Validator`` for ``annotation``, cached: building a pydantic ``TypeAdapter`` costs far
    more than a registration otherwise does. The cache is bounded, for types made on the fly."""
    try:
        return _adapters[annotation]
    except KeyError:
        if len(_adapters) >= ADAPTER_CACHE_LIMIT:
            _adapters.clear()
        validator = _adapters[annotation] = Validator(annotation)
        return validator
    except TypeError:  # unhashable annotation
        return Validator(annotation)
