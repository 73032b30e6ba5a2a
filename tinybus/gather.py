"""What ``bus.request_all(...)`` returns: one outcome per consumer that answered in time.

``Gathered[R]`` is a sequence of outcomes in the order they arrived, each a ``Replied[R]``
(the reply's body and headers) or a ``Failed`` (the error a ``request`` to that consumer would
have raised), with ``asked``: how many consumers the request reached (``None`` when a
transport cannot count those of other processes). Consumers that had not answered by the
timeout are not in it: ``missing`` counts them when ``asked`` is known.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from .errors import EventBusError
from .headers import Headers


@dataclass(frozen=True, slots=True)
class Replied[R]:
    """A consumer's reply: its body (checked against ``response_type`` if given) and headers.
    ``handler`` names the consumer's handler; ``None`` for one in another process."""

    body: R
    headers: Headers
    handler: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """A consumer that failed: ``error`` is what ``request`` would have raised for it
    (``HandlerExecutionError``, ``ReplyFailedError``, ``MessageValidationError``,
    ``MessageDroppedError``...). ``handler`` as for ``Replied``."""

    error: EventBusError
    handler: str | None = None


type Outcome[R] = Replied[R] | Failed


class Gathered[R](Sequence[Outcome[R]]):
    """The outcomes of a scatter-gather request, in the order they arrived."""

    __slots__ = ("_outcomes", "asked")

    def __init__(self, outcomes: Sequence[Outcome[R]], asked: int | None) -> None:
        self._outcomes = tuple(outcomes)
        self.asked = asked
        """How many consumers the request reached: here, and in other processes as the
        transport counted them (``None``: it could not, so the wait lasted the timeout)."""

    @overload
    def __getitem__(self, index: int) -> Outcome[R]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Outcome[R]]: ...
    def __getitem__(self, index: int | slice) -> Outcome[R] | Sequence[Outcome[R]]:
        return self._outcomes[index]

    def __len__(self) -> int:
        return len(self._outcomes)

    def __iter__(self) -> Iterator[Outcome[R]]:
        return iter(self._outcomes)

    @property
    def replies(self) -> list[R]:
        """The bodies of the replies, in the order they arrived."""
        return [outcome.body for outcome in self._outcomes if isinstance(outcome, Replied)]

    @property
    def failures(self) -> list[Failed]:
        return [outcome for outcome in self._outcomes if isinstance(outcome, Failed)]

    @property
    def missing(self) -> int | None:
        """How many consumers reached did not answer by the timeout (``None``: unknown)."""
        return None if self.asked is None else self.asked - len(self._outcomes)

    def __repr__(self) -> str:
        asked = "an unknown number" if self.asked is None else self.asked
        return (
            f"<Gathered {len(self.replies)} replies, {len(self.failures)} failures "
            f"from {asked} asked>"
        )
