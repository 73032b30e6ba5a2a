"""Message codecs, as in Vert.x: how a body type crosses a wire, and what local delivery does to it.

A codec has a unique ``name``, ``encode``/``decode`` for a transport between processes, and
``transform`` for delivery in this process (by default a round trip through the bytes, which
makes a copy). ``bus.register_codec(codec, default_for=SomeType)`` makes it the codec of that
type's bodies (and of its subclasses' that have none of their own); ``DeliveryOptions(codec=
"name")`` picks one for a message or a reply; ``bus.codec_selector(fn)`` names one for bodies
that have no default codec, as Vert.x's ``codecSelector``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, cast

type CodecSelector = Callable[[Any], str | None]


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
    """Codecs by name, the default codec of each body type, and the selector.

    Which codec a body goes through, requests, sends, publishes and replies alike: the one its
    ``DeliveryOptions`` names; else the default codec of its type or, failing that, of the
    nearest base class in its MRO that has one; else the one the selector names (``None``:
    none); else none, and the body is delivered as it is.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, MessageCodec[Any]] = {}
        self.defaults: dict[type, MessageCodec[Any]] = {}
        self.selector: CodecSelector | None = None
        # The codec each body type resolved to along its MRO (None: no default), until a
        # default codec is registered or unregistered.
        self._resolved: dict[type, MessageCodec[Any] | None] = {}
        self.active = False  # whether any body may go through a codec without being named

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
        if default_for is not None and not isinstance(default_for, type):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"default_for must be a class, got {default_for!r}")
        if default_for is not None and default_for in self.defaults:
            raise ValueError(
                f"{default_for.__qualname__} already has a default codec: "
                f"{self.defaults[default_for].name!r}"
            )
        self._by_name[name] = codec
        if default_for is not None:
            self.defaults[default_for] = codec
        self._changed()

    def unregister(self, name: str) -> None:
        codec = self._by_name.pop(name, None)
        if codec is None:
            raise ValueError(f"no codec named {name!r} is registered")
        for body_type, default in list(self.defaults.items()):
            if default is codec:
                del self.defaults[body_type]
        self._changed()

    def select(self, selector: CodecSelector | None) -> None:
        if selector is not None and not callable(selector):
            raise TypeError(
                f"a codec selector is a function of the body returning a codec's name or "
                f"None, got {selector!r}"
            )
        self.selector = selector
        self._changed()

    def _changed(self) -> None:
        self._resolved.clear()
        self.active = bool(self.defaults) or self.selector is not None

    def outgoing(self, body: Any, options: Any) -> Any:
        """The body delivered: transformed by the codec chosen for it (see the class), if any."""
        name = None if options is None else options.codec
        if name is not None:
            return self.get(name).transform(body)
        if not self.active:
            return body
        codec = self.chosen(body)
        return body if codec is None else codec.transform(body)

    def chosen(self, body: Any) -> MessageCodec[Any] | None:
        """The codec a body not given one by name goes through (see the class), if any: a
        transport encodes with it too."""
        if not self.active:
            return None
        codec = self._default_of(type(body))  # pyright: ignore[reportUnknownArgumentType]
        if codec is None and self.selector is not None:
            selected = self.selector(body)
            if selected is not None:
                if type(selected) is not str:
                    raise TypeError(
                        f"the codec selector returned {selected!r} for a "
                        f"{type(body).__name__} body; it must return a codec's name or None"
                    )
                codec = self.get(selected)
        return codec

    def _default_of(self, body_type: type) -> MessageCodec[Any] | None:
        try:
            return self._resolved[body_type]
        except KeyError:
            pass
        codec = None
        if self.defaults:
            for base in body_type.__mro__:
                codec = self.defaults.get(base)
                if codec is not None:
                    break
        self._resolved[body_type] = codec
        return codec

    def get(self, name: str) -> MessageCodec[Any]:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise ValueError(
                f"no codec named {name!r} is registered (registered: {known})"
            ) from None
