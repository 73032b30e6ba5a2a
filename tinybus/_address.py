"""Turning what callers pass as an address into the one string the bus routes on."""

from __future__ import annotations

from enum import Enum

MAX_ADDRESS_LENGTH = 1024
"""The longest address, in characters. Addresses are names, not payloads: one this long is
almost surely a body passed in the wrong place, and routing and pattern caches keep them."""

type AddressLike = str | Enum
"""A ``str``, or an ``Enum`` member whose value is a ``str`` (``class A(str, Enum)``)."""


class TypedAddress:
    """Base of ``Address`` and ``Event``: a routing string that also carries types."""

    __slots__ = ("__orig_class__", "value")

    def __init__(self, value: AddressLike) -> None:
        self.value = to_address(value)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        generic = getattr(self, "__orig_class__", None)
        return f"{generic or type(self).__name__}({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TypedAddress)
            and type(other) is type(self)
            and other.value == self.value
        )

    def __hash__(self) -> int:
        return hash(self.value)


def to_address(address: object) -> str:
    """Return the routing string for ``address``, refusing anything that is not one.

    An Enum member and its value are one address: ``A.CREATE`` routes like ``"create"``.
    """
    if type(address) is str:
        if address and len(address) <= MAX_ADDRESS_LENGTH:
            return address
        return _refuse(address)
    if isinstance(address, TypedAddress):
        return address.value
    if isinstance(address, Enum):
        value: object = address.value
        if isinstance(value, str) and value:
            return to_address(str.__str__(value))
        raise TypeError(
            f"an Enum address must have a non-empty str value, got {address!r} with value {value!r}"
        )
    if isinstance(address, str):
        # A str subclass that is not an Enum routes as its plain string value.
        return to_address(str.__str__(address))
    raise TypeError(
        f"an address must be a str or a str-valued Enum member, got {address!r} "
        f"of type {type(address).__name__}"
    )


def _refuse(address: str) -> str:
    if not address:
        raise ValueError("an address must be a non-empty string, got ''")
    raise ValueError(
        f"an address must be at most {MAX_ADDRESS_LENGTH} characters, got one of "
        f"{len(address)} starting {address[:40]!r}"
    )


type AnyAddress = AddressLike | TypedAddress
"""What every call that takes an address accepts."""
