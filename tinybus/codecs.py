"""Message codecs, as in Vert.x: how a body type crosses a wire, and what local delivery does to it.

A codec has a unique ``name``, ``encode``/``decode`` for a transport between processes, and
``transform`` for delivery in this process (by default a round trip through the bytes, which
makes a copy). ``bus.register_codec(codec, default_for=SomeType)`` makes it the codec of that
type's bodies; ``DeliveryOptions(codec="name")`` picks one for a message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, cast


class MessageCodec[T](ABC):
    """Turns bodies of type ``T`` into bytes and back."""

    name: str

    @abstractmethod
    def encode(self, body: T) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> T: ...

    def transform(self, body: T) -> T:
        """The body a local receiver gets: by default, ``decode(encode(body))``."""
        return self.decode(self.encode(body))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class CodecRegistry:
    """Codecs by name, and the default codec of each body type."""

    def __init__(self) -> None:
        self._by_name: dict[str, MessageCodec[Any]] = {}
        self.defaults: dict[type, MessageCodec[Any]] = {}

    def register(self, codec: MessageCodec[Any], default_for: type | None) -> None:
        name = getattr(codec, "name", None)
        if (
            not isinstance(cast(object, codec), MessageCodec)
            or not isinstance(name, str)
            or not name
        ):
            raise TypeError(f"a codec is a MessageCodec with a non-empty name, got {codec!r}")
        if name in self._by_name:
            raise ValueError(f"a codec named {name!r} is already registered")
        if default_for is not None and default_for in self.defaults:
            raise ValueError(
                f"{default_for.__qualname__} already has a default codec: "
                f"{self.defaults[default_for].name!r}"
            )
        self._by_name[name] = codec
        if default_for is not None:
            self.defaults[default_for] = codec

    def unregister(self, name: str) -> None:
        codec = self._by_name.pop(name, None)
        if codec is None:
            raise ValueError(f"no codec named {name!r} is registered")
        for body_type, default in list(self.defaults.items()):
            if default is codec:
                del self.defaults[body_type]

    def outgoing(self, body: Any, options: Any) -> Any:
        """The body delivered: transformed by the codec ``options`` names, or else by the
        default codec of the body's type, if either exists."""
        name = None if options is None else options.codec
        if name is not None:
            return self.get(name).transform(body)
        if self.defaults:
            body_type: type = type(body)  # pyright: ignore[reportUnknownVariableType]
            codec = self.defaults.get(body_type)
            if codec is not None:
                return codec.transform(body)
        return body

    def get(self, name: str) -> MessageCodec[Any]:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise ValueError(
                f"no codec named {name!r} is registered (registered: {known})"
            ) from None
