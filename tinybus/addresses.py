"""Typed addresses: an address that tells type checkers what it carries.

``GET_USER = Address[uuid.UUID, User | None]("users.get")`` makes
``await bus.request(GET_USER, uid)`` return ``User | None`` for a type checker, refuses a body
that is not a ``UUID``, and checks the signature of ``@bus.consumer(GET_USER)`` handlers.
``USER_CREATED = Event[User]("users.created")`` does the same for ``publish`` and ``on``.
At run time a typed address routes exactly like its string.
"""

from __future__ import annotations

from ._address import TypedAddress


class Address[RequestT, ReplyT](TypedAddress):
    """A request-response address: consumers take ``Message[RequestT]`` and reply ``ReplyT``."""

    __slots__ = ()

    # Declared, never set: mutable attributes make the type parameters invariant, so that a
    # type checker cannot widen ``RequestT`` to admit a body of another type.
    _request_type: RequestT | None
    _reply_type: ReplyT | None


class Event[BodyT](TypedAddress):
    """A publish-subscribe address: listeners take a ``BodyT``."""

    __slots__ = ()

    _body_type: BodyT | None  # declared, never set: keeps BodyT invariant
