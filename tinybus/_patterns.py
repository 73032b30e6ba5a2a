"""Address patterns, the NATS convention: ``*`` matches one dot-separated segment, ``>`` (last
segment only) matches one or more trailing segments.

Patterns are kept in a trie by segment, and the patterns that match a concrete address are
cached, so publishing to an address costs one dict look-up however many unrelated patterns
exist. Any change to the set of patterns clears the cache; so does reaching ``CACHE_LIMIT``
addresses, which bounds its memory when addresses carry ids (``user.42``).
"""

from __future__ import annotations

SINGLE = "*"
TRAILING = ">"
CACHE_LIMIT = 4096


def is_pattern(address: str) -> bool:
    """Whether ``address`` is a pattern; raises ``ValueError`` for a misplaced ``>``."""
    if SINGLE not in address and TRAILING not in address:
        return False
    segments = address.split(".")
    wild = False
    for index, segment in enumerate(segments):
        if segment == TRAILING:
            if index != len(segments) - 1:
                raise ValueError(f"'>' must be the last segment of a pattern, got {address!r}")
            wild = True
        elif segment == SINGLE:
            wild = True
    return wild


def ensure_concrete(address: str) -> None:
    """Refuse a pattern where a message is sent: messages go to concrete addresses."""
    if is_pattern(address):
        raise ValueError(f"messages go to concrete addresses, not to the pattern {address!r}")


class _Node[V]:
    __slots__ = ("children", "trailing", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.value: tuple[str, V] | None = None  # the pattern that ends here
        self.trailing: tuple[str, V] | None = None  # the pattern that ends here with '>'


class PatternIndex[V]:
    """Values stored by pattern; ``match(address)`` returns those whose pattern matches."""

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._count = 0
        self._order: dict[str, int] = {}  # pattern -> when it was added
        self._added = 0
        self._cache: dict[str, tuple[V, ...]] = {}

    def __len__(self) -> int:
        return self._count

    @property
    def cached(self) -> int:
        """How many addresses have their matches cached."""
        return len(self._cache)

    def add(self, pattern: str, value: V) -> None:
        self._added += 1
        self._order[pattern] = self._added
        *head, last = pattern.split(".")
        node = self._root
        for segment in head:
            node = node.children.setdefault(segment, _Node())
        if last == TRAILING:
            node.trailing = (pattern, value)
        else:
            node.children.setdefault(last, _Node()).value = (pattern, value)
        self._count += 1
        self._cache.clear()

    def remove(self, pattern: str) -> None:
        self._order.pop(pattern, None)
        *head, last = pattern.split(".")
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for segment in head:
            child = node.children.get(segment)
            if child is None:
                return
            path.append((node, segment))
            node = child
        if last == TRAILING:
            if node.trailing is None:
                return
            node.trailing = None
        else:
            leaf = node.children.get(last)
            if leaf is None or leaf.value is None:
                return
            leaf.value = None
            path.append((node, last))
        self._count -= 1
        self._cache.clear()
        for parent, segment in reversed(path):  # prune the branches left empty
            child = parent.children[segment]
            if child.children or child.value is not None or child.trailing is not None:
                break
            del parent.children[segment]

    def match(self, address: str) -> tuple[V, ...]:
        found = self._cache.get(address)
        if found is None:
            ensure_concrete(address)
            matches: list[tuple[str, V]] = []
            _collect(self._root, address.split("."), 0, matches)
            order = self._order
            found = tuple(value for _, value in sorted(matches, key=lambda m: order[m[0]]))
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[address] = found
        return found


def _collect[V](node: _Node[V], segments: list[str], index: int, into: list[tuple[str, V]]) -> None:
    if node.trailing is not None and index < len(segments):
        into.append(node.trailing)
    if index == len(segments):
        if node.value is not None:
            into.append(node.value)
        return
    segment = segments[index]
    exact = node.children.get(segment)
    if exact is not None:
        _collect(exact, segments, index + 1, into)
    if segment != SINGLE:
        single = node.children.get(SINGLE)
        if single is not None:
            _collect(single, segments, index + 1, into)
