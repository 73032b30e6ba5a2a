"""``Registration``: the handle returned for every consumer and listener."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from reactivex import abc

from ._validation import HandlerTypes

type Role = Literal["consumer", "listener"]


class Registration:
    """One handler registered at one address, as a consumer or as a listener.

    ``unregister()`` removes it; calling it again does nothing. Messages already being handled
    finish; none reach it afterwards.
    """

    __slots__ = (
        "_registered",
        "_subscription",
        "_types",
        "_unregister",
        "address",
        "handler",
        "role",
    )

    def __init__(
        self,
        address: str,
        handler: Callable[..., Any],
        role: Role,
        unregister: Callable[[Registration], None],
        types: HandlerTypes,
    ) -> None:
        self.address = address
        self.handler = handler
        self.role: Role = role
        self._unregister = unregister
        self._registered = True
        self._types = types
        self._subscription: abc.DisposableBase | None = None

    @property
    def is_registered(self) -> bool:
        return self._registered

    def unregister(self) -> None:
        if self._registered:
            self._registered = False
            self._unregister(self)

    def __repr__(self) -> str:
        state = "registered" if self._registered else "unregistered"
        name = getattr(self.handler, "__qualname__", repr(self.handler))
        return f"<Registration {self.role} {name} at {self.address!r} ({state})>"
