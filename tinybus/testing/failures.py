"""``FailureLog``: the failures a bus reported on ``bus.errors``, and which a test looked at."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Sequence
from typing import overload

from reactivex import abc

from ..bus import EventBus
from ..errors import HandlerFailure


class UnexaminedFailures(AssertionError):
    """A bus reported failures on ``bus.errors`` that the test never looked at."""


class FailureLog(Sequence[HandlerFailure]):
    """Every record ``bus`` puts on ``bus.errors`` from now on: handlers that raised with
    nobody awaiting them, and messages dropped (``failure.dropped``).

    A record counts as looked at once the test reads it: reading the log as a whole (``len``,
    iterating, indexing, comparing it with a list) marks every record in it so far;
    ``expect(...)`` marks the one it finds. ``unexamined`` lists the others; ``check()``
    raises ``UnexaminedFailures`` when there are any (the ``bus`` fixture calls it after
    closing the bus).
    """

    def __init__(self, bus: EventBus) -> None:
        self.records: list[HandlerFailure] = []
        self._looked_at: set[int] = set()
        self._waits: list[tuple[int, asyncio.Future[None]]] = []
        self._subscription: abc.DisposableBase = bus.errors.subscribe(self._reported)

    def _reported(self, record: HandlerFailure) -> None:
        self.records.append(record)
        for count, waiter in self._waits:
            if len(self.records) >= count and not waiter.done():
                waiter.set_result(None)

    async def wait(self, count: int = 1, timeout: float = 5.0) -> list[HandlerFailure]:
        """The first ``count`` records, once that many were reported, looked at;
        ``TimeoutError`` after ``timeout`` seconds (on the loop's clock)."""
        if len(self.records) < count:
            entry = (count, asyncio.get_running_loop().create_future())
            self._waits.append(entry)
            try:
                async with asyncio.timeout(timeout):
                    await entry[1]
            except TimeoutError:
                raise TimeoutError(
                    f"waited {timeout} s for {count} failure(s) on bus.errors; got "
                    f"{len(self.records)}: {_listed(self.records) or 'none'}"
                ) from None
            finally:
                self._waits.remove(entry)
        self._looked_at.update(range(count))
        return self.records[:count]

    # -- reading marks as looked at --------------------------------------------------------

    def _read_all(self) -> list[HandlerFailure]:
        self._looked_at.update(range(len(self.records)))
        return self.records

    @overload
    def __getitem__(self, index: int) -> HandlerFailure: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[HandlerFailure]: ...
    def __getitem__(self, index: int | slice) -> HandlerFailure | Sequence[HandlerFailure]:
        return self._read_all()[index]

    def __len__(self) -> int:
        return len(self._read_all())

    def __iter__(self) -> Iterator[HandlerFailure]:
        return iter(list(self._read_all()))

    def __eq__(self, other: object) -> bool:
        return self._read_all() == other

    __hash__ = None  # type: ignore[assignment]  # (a mutable sequence)

    def expect(
        self, exception: type[BaseException] = BaseException, match: str | None = None
    ) -> HandlerFailure:
        """The first record not looked at yet whose exception is an ``exception`` and whose
        text (``str(record.exception)``) matches the regular expression ``match``; it is
        marked as looked at. ``AssertionError`` listing the records when there is none."""
        for index, record in enumerate(self.records):
            if index in self._looked_at or not isinstance(record.exception, exception):
                continue
            if match is None or re.search(match, str(record.exception)):
                self._looked_at.add(index)
                return record
        wanted = exception.__name__ + ("" if match is None else f" matching {match!r}")
        raise AssertionError(
            f"no failure {wanted} was reported on bus.errors (not looked at yet: "
            f"{_listed(self.unexamined) or 'none'})"
        )

    def clear(self) -> None:
        """Forget the records so far, as looked at."""
        self.records.clear()
        self._looked_at.clear()

    # -- what nobody read --------------------------------------------------------------------

    @property
    def unexamined(self) -> list[HandlerFailure]:
        """The records the test never looked at (reading this marks nothing)."""
        return [record for index, record in enumerate(self.records) if index not in self._looked_at]

    def check(self) -> None:
        """``UnexaminedFailures`` when a record was never looked at."""
        unexamined = self.unexamined
        if unexamined:
            raise UnexaminedFailures(
                f"{len(unexamined)} failure(s) reported on bus.errors were never looked at: "
                f"{_listed(unexamined)}. A failure nobody awaits is a bug until a test says it "
                "is expected: read it with the bus_failures fixture (bus_failures.expect("
                "ValueError), or assert on the list)"
            )

    def stop(self) -> None:
        """Stop recording (the records stay)."""
        self._subscription.dispose()

    def __repr__(self) -> str:
        return f"<FailureLog: {len(self.records)} recorded, {len(self.unexamined)} not looked at>"


def _listed(records: list[HandlerFailure]) -> str:
    return "; ".join(f"{record} ({record.exception!r})" for record in records)
