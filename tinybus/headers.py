"""``Headers``: a message's headers, read-only, case-insensitive and multi-valued, as in Vert.x's
``MultiMap``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import cast

# What a caller may give as headers: a mapping (a value may be several values) or pairs.
type HeadersInput = (
    Mapping[str, str] | Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]]
)


class Headers(Mapping[str, str]):
    """Header names to values, for reading: ``headers["Trace-Id"]`` finds ``trace-id`` too, and
    gives its first value; ``headers.getall(name)`` gives them all. Names keep the case they were
    first given in. Build one from a mapping (a value may be a list or tuple of values) or from
    ``(name, value)`` pairs; names and values must be ``str``.

    The bus copies the headers of every message it sends, so a sender changing its own dict
    afterwards, or a receiver, cannot change what the other side sees.
    """

    __slots__ = ("_names", "_values")

    def __init__(self, headers: object = ()) -> None:
        self._values: dict[str, list[str]] = {}  # lower-cased name -> values, in order
        self._names: dict[str, str] = {}  # lower-cased name -> name as first given
        for name, value in _pairs(headers):
            key = name.lower()
            if key not in self._values:
                self._values[key] = []
                self._names[key] = name
            self._values[key].append(value)

    def __getitem__(self, name: str) -> str:
        if type(name) is not str:
            raise KeyError(name)
        return self._values[name.lower()][0]

    def __contains__(self, name: object) -> bool:
        return type(name) is str and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._values)

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` (any case), in the order given; ``[]`` when there is none."""
        return list(self._values.get(name.lower(), ()))

    def pairs(self) -> list[tuple[str, str]]:
        """Every ``(name, value)``, repeated names included."""
        return [
            (self._names[key], value) for key, values in self._values.items() for value in values
        ]

    def merged(self, other: Headers) -> Headers:
        """These headers with ``other``'s added; a name ``other`` has replaces all of ours."""
        if not other:
            return self
        if not self:
            return other
        return Headers([pair for pair in self.pairs() if pair[0] not in other] + other.pairs())

    def __repr__(self) -> str:
        return f"Headers({self.pairs()!r})"


def _pairs(headers: object) -> Iterator[tuple[str, str]]:
    if isinstance(headers, Headers):
        yield from headers.pairs()
        return
    if isinstance(headers, Mapping):
        items: Iterable[tuple[object, object]] = cast("Mapping[object, object]", headers).items()
    elif isinstance(headers, list | tuple):
        items = _checked_pairs(cast("Iterable[object]", headers))
    else:
        raise TypeError(
            "headers must be a mapping of str to str (or to a list of str), or (name, value) "
            f"pairs; got {type(headers).__name__}: {headers!r}"
        )
    for name, value in items:
        if type(name) is not str:
            raise TypeError(f"header names must be str, got {name!r} of type {type(name).__name__}")
        values = cast("list[object]", value) if isinstance(value, list | tuple) else [value]
        for one in values:
            if type(one) is not str:
                raise TypeError(
                    f"header {name!r} must have a str value, got {one!r} of type "
                    f"{type(one).__name__}"
                )
            yield name, one


def _checked_pairs(items: Iterable[object]) -> Iterator[tuple[object, object]]:
    """``items``, each checked to be a ``(name, value)`` tuple (a 2-character str would
    otherwise unpack as one)."""
    for item in items:
        if isinstance(item, tuple) and len(cast("tuple[object, ...]", item)) == 2:
            yield cast("tuple[object, object]", item)
        else:
            shown = cast(object, item)
            raise TypeError(
                "header pairs must be (name, value) tuples, got "
                f"{shown!r} of type {type(shown).__name__}"
            )
