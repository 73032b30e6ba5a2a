"""Which event loop a bus serves: the first one that uses it, and a new one once that closed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .errors import BusClosedError, EventBusError


class LoopBinding:
    """The bus's loop and whether the bus is closed.

    A bus can be built anywhere, with or without a running loop; it binds to the loop that
    first uses it and serves that loop only. Once that loop has closed (``asyncio.run`` and
    pytest-asyncio close theirs), the next use binds it to the running one, afresh:
    ``on_bind(loop, previous)`` lets the bus's parts forget what belonged to the old loop.
    """

    def __init__(
        self, on_bind: Callable[[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop | None], None]
    ) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._on_bind = on_bind

    def get(self) -> asyncio.AbstractEventLoop:
        """The bus's loop, running or not; bound to the running one if it has none (or its
        own has closed)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            loop = asyncio.get_running_loop()
            self.bind(loop)
        return loop

    def check(self, address: str | None) -> asyncio.AbstractEventLoop:
        """The running loop, for a call that delivers: the bus must be open, and bound to it."""
        if self.closed:
            raise BusClosedError(address=address)
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self.bind(loop)
        return loop

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        previous = self.loop
        if previous is not None and not previous.is_closed():
            raise EventBusError(
                "this EventBus is bound to another event loop, which is still open; "
                "a bus serves the one loop that first used it"
            )
        self.loop = loop
        self._on_bind(loop, previous)

    def running_here(self) -> bool:
        """Whether the bus's loop is the one running in this thread now."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return False
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:
            return False
