"""Typed addresses: an address that tells type checkers what it carries.

``GET_USER = Address[uuid.UUID, User | None]("users.get")`` makes
``await bus.request(GET_USER, uid)`` return ``User | None`` for a type checker, refuses a body
that is not a ``UUID``, and checks the signature of ``@bus.consumer(GET_USER)`` handlers.
``USER_CREATED = Event[User]("users.created")`` does the same for ``publish`` and ``on``.
At run time a typed address routes exactly like its string.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ._address import TypedAddress

# Invariant on purpose, hence classic TypeVars rather than PEP 695 syntax (whose inferred
# variance would let a type checker widen the request type until any body fits).
RequestT = TypeVar("RequestT")
ReplyT = TypeVar("ReplyT")
BodyT = TypeVar("BodyT")


class Address(TypedAddress, Generic[RequestT, ReplyT]):  # noqa: UP046
    """A request-response address: consumers take ``Message[RequestT]`` and reply ``ReplyT``."""

    __slots__ = ()


class Event(TypedAddress, Generic[BodyT]):  # noqa: UP046
    """A publish-subscribe address: listeners take a ``BodyT``."""

    __slots__ = ()
