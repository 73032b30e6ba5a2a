"""``MessageStream``: an address (or pattern) consumed with ``async for``, as
``bus.stream(...)`` returns it.

A stream is a listener registration like any other: its messages come out of the address's
Subject, through its ``pipe=`` operators, into its mailbox (``max_buffered``, ``overflow``),
and its handler is the hand-over to the loop. The rule that makes a slow loop body count
exactly as a slow listener does: the mailbox takes one message at a time (``max_concurrency=1``)
and stays paused while the loop body runs; asking for the next message resumes it. So what
arrives meanwhile waits in the buffer under the registration's overflow policy, and is
counted (``queued``, ``dropped``) on the registration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from ._flow import Overflow
from ._pipeline import Operator
from .errors import BusClosedError, EventBusError
from .message import Message
from .options import RegistrationOptions
from .registration import Registration

# register(hand_over, options) -> the stream's registration, made by the bus (``bus.on``).
type Register = Callable[[Callable[[Message[Any]], None], RegistrationOptions], Registration]


class MessageStream[T]:
    """The messages published to one address or pattern, for ``async for``; use it as
    ``async with bus.stream(address) as messages: async for message in messages: ...``.

    The registration is made when the block is entered and ends when it exits, so nothing
    stays subscribed. The loop ends (``StopAsyncIteration``) when the registration ends:
    the block exits, ``registration.unregister()`` is called, or the bus closes. A message
    handed to the loop before the end is still yielded; messages still waiting in the buffer
    then are dropped and reported on ``bus.errors``, as for any registration that ends.
    """

    __slots__ = (
        "_address",
        "_body_type",
        "_closed",
        "_ended",
        "_item",
        "_once",
        "_options",
        "_register",
        "_registration",
        "_waiter",
    )

    def __init__(
        self,
        address: str,
        register: Register,
        options: RegistrationOptions,
        closed: Callable[[], bool],
        once: bool = False,
        body_type: Any = None,
    ) -> None:
        self._address = address
        self._body_type = body_type  # bodies validated (and converted) to it, if given
        self._once = once  # ends after its first message (``bus.next``)
        self._closed = closed  # whether the bus is closed
        self._register = register
        self._options = options
        self._registration: Registration | None = None
        self._item: Message[T] | None = None  # handed over, not yet taken by the loop
        self._waiter: asyncio.Future[None] | None = None  # the loop waiting for a message
        self._ended = False

    @property
    def address(self) -> str:
        return self._address

    @property
    def registration(self) -> Registration:
        """The stream's registration (``queued``, ``dropped``, ``delivered``, ``unregister``);
        ``RuntimeError`` before the ``async with`` block is entered."""
        if self._registration is None:
            raise RuntimeError(_NOT_ENTERED)
        return self._registration

    async def __aenter__(self) -> Self:
        if self._registration is not None:
            raise RuntimeError("a stream is entered once; make another with bus.stream()")

        def hand_over(message: Message[Any]) -> None:
            self._hand_over(message)

        hand_over.__qualname__ = hand_over.__name__ = "bus.stream"  # (named in failures)
        if self._body_type is not None:
            # Validated at the boundary as a handler's annotation is: a body that does not fit
            # is the stream's failure (on bus.errors), and the loop never sees it.
            hand_over.__annotations__ = {"message": Message[self._body_type], "return": None}

        registration = self._registration = self._register(hand_over, self._options)
        registration.on_unregistered(self._end)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._registration is not None:
            self._registration.unregister()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message[T]:
        registration = self._registration
        if registration is None:
            raise RuntimeError(_NOT_ENTERED)
        while True:
            item = self._item
            if item is not None:
                self._item = None
                return item
            if self._ended:
                raise StopAsyncIteration
            # The loop body finished with the last message: the next may start (and may be
            # handed over at once, from the buffer).
            registration.resume()
            if self._item is None and not self._ended:
                waiter = self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None

    async def next(self, timeout: float | None = None) -> Message[T]:
        """The next message; ``TimeoutError`` when none comes within ``timeout`` seconds
        (``None``: wait as long as it takes), ``EventBusError`` when the stream ended first
        (``BusClosedError`` when the bus closed)."""
        try:
            async with asyncio.timeout(timeout):
                return await anext(self)
        except StopAsyncIteration:
            raise self._ended_error() from None

    def _ended_error(self) -> EventBusError:
        if self._closed():
            return BusClosedError(address=self._address)
        return EventBusError(f"the stream of {self._address!r} ended before a message came")

    # -- the registration's side -----------------------------------------------------------

    def _hand_over(self, message: Message[Any]) -> None:
        """The stream's handler: the message waits for the loop, and the mailbox starts no
        other until the loop asks for the next."""
        self._item = message
        registration = self._registration
        if registration is not None:
            if self._once:
                registration.unregister()  # (nothing waits behind the one it takes)
            else:
                registration.pause()
        self._wake()

    def _end(self, _: Registration) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open" if self._registration else "not entered"
        return f"<MessageStream of {self._address!r} ({state})>"


_NOT_ENTERED = (
    "iterate a stream inside its block: async with bus.stream(address) as messages: "
    "async for message in messages: ..."
)


def stream_options(
    max_buffered: int,
    overflow: Overflow,
    pipe: Sequence[Operator] | None,
    local: bool,
) -> RegistrationOptions:
    """The registration options of a stream: one message at a time, through its buffer."""
    return {
        "max_concurrency": 1,
        "max_buffered": max_buffered,
        "overflow": overflow,
        "pipe": pipe,
        "local": local,
    }
