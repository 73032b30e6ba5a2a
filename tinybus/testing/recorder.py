"""``Recorder``: what reaches an address, kept in order, with awaitable helpers for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from reactivex import abc

from .._address import AnyAddress, to_address
from .._patterns import PatternIndex, is_pattern
from ..bus import EventBus
from ..headers import Headers
from ..message import Envelope, Message

DEFAULT_WAIT = 5.0
KINDS = ("publish", "send", "request")

# A wait: what it checks each time a message is recorded (its answer, or None to go on).
type Check = Callable[[], Message[Any] | list[Message[Any]] | None]


class Recorder:
    """Records every message sent to ``address`` (or to an address matching a pattern):
    published, sent and requested ones (``kinds``), as the bus's ``observe_all()`` sees them
    (after interceptors), in order, from now until ``stop()`` or the bus closes.

    It only watches: it takes no turn among consumers, has no buffer and changes no counter.
    ``messages``, ``bodies`` and ``headers`` are what was recorded so far; ``await nth(i)``,
    ``await matching(predicate)`` and ``await count(n)`` wait for what is still to come, at
    most ``timeout`` seconds (on the loop's clock), then raise ``TimeoutError`` saying what
    was recorded. Use it as a context manager, or call ``stop()``.
    """

    def __init__(self, bus: EventBus, address: AnyAddress, *, kinds: Iterable[str] = KINDS) -> None:
        self.address = routed = to_address(address)
        self.kinds = frozenset(kinds)
        unknown = self.kinds - set(KINDS)
        if unknown:
            raise ValueError(f"kinds are among {list(KINDS)}, got {sorted(unknown)}")
        self.messages: list[Message[Any]] = []
        self._pattern: PatternIndex[bool] | None = None
        if is_pattern(routed):
            self._pattern = PatternIndex()
            self._pattern.add(routed, True)
        self._waits: list[tuple[Check, asyncio.Future[Any]]] = []
        self._subscription: abc.DisposableBase | None = bus.observe_all().subscribe(self._seen)

    # -- what was recorded -------------------------------------------------------------------

    @property
    def bodies(self) -> list[Any]:
        return [message.body for message in self.messages]

    @property
    def headers(self) -> list[Headers]:
        return [message.headers for message in self.messages]

    def __len__(self) -> int:
        return len(self.messages)

    # -- waiting for what is to come ---------------------------------------------------------

    async def nth(self, index: int, timeout: float = DEFAULT_WAIT) -> Message[Any]:
        """The message at ``index`` (0: the first recorded), once it has come."""
        if type(index) is not int or index < 0:
            raise ValueError(f"index must be an int >= 0 (0 is the first), got {index!r}")

        def check() -> Message[Any] | None:
            return self.messages[index] if len(self.messages) > index else None

        return await self._wait(check, timeout, f"message #{index} (counting from 0)")

    async def matching(
        self, predicate: Callable[[Message[Any]], object], timeout: float = DEFAULT_WAIT
    ) -> Message[Any]:
        """The first message recorded (so far, or still to come) for which ``predicate`` is
        true."""
        checked = 0

        def check() -> Message[Any] | None:
            nonlocal checked
            while checked < len(self.messages):
                message = self.messages[checked]
                checked += 1
                if predicate(message):
                    return message
            return None

        name = getattr(predicate, "__qualname__", repr(predicate))
        return await self._wait(check, timeout, f"a message matching {name}")

    async def count(self, n: int, timeout: float = DEFAULT_WAIT) -> list[Message[Any]]:
        """The first ``n`` messages, once that many have come."""

        def check() -> list[Message[Any]] | None:
            return self.messages[:n] if len(self.messages) >= n else None

        return await self._wait(check, timeout, f"{n} messages")

    async def _wait(self, check: Check, timeout: float, what: str) -> Any:
        found = check()
        if found is not None:
            return found
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (check, waiter)
        self._waits.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise TimeoutError(
                f"waited {timeout} s for {what} at {self.address!r}; recorded "
                f"{len(self.messages)}: {self.bodies!r}"
            ) from None
        finally:
            if entry in self._waits:
                self._waits.remove(entry)

    # -- recording ---------------------------------------------------------------------------

    def _seen(self, envelope: Envelope) -> None:
        if envelope.kind not in self.kinds:
            return
        address = envelope.message.address
        if address != self.address and (self._pattern is None or not self._pattern.match(address)):
            return
        self.messages.append(envelope.message)
        for check, waiter in list(self._waits):
            if waiter.done():
                continue
            found = check()
            if found is not None:
                waiter.set_result(found)

    def stop(self) -> None:
        """Stop recording (what was recorded stays)."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Recorder of {self.address!r}: {len(self.messages)} recorded>"
