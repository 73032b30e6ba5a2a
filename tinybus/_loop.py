"""Which event loop a bus serves: the first one that uses it, and a new one once that closed.

A bus left open when its loop ends (``asyncio.run`` returning, a pytest-asyncio test ending)
is told so, through the loop's hook for async generators: the loop closes every async
generator still open (``loop.shutdown_asyncgens()``, which ``asyncio.run`` and
``asyncio.Runner`` call) before it closes, and the bus keeps one open while it is bound. Then
(``on_end``) calls from other threads are refused from now on, those accepted already run,
and handlers still running are cancelled and reported, so that nothing accepted vanishes
with the loop unreported; messages waiting in buffers wait for the next loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable

from .errors import BusClosedError, EventBusError


class LoopBinding:
    """The bus's loop and whether the bus is closed.

    A bus can be built anywhere, with or without a running loop; it binds to the loop that
    first uses it and serves that loop only. Once that loop has closed (``asyncio.run`` and
    pytest-asyncio close theirs), the next use binds it to the running one, afresh:
    ``on_bind(loop, previous)`` lets the bus's parts forget what belonged to the old loop.
    """

    def __init__(
        self,
        on_bind: Callable[[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop | None], None],
        on_end: Callable[[], Awaitable[None]],
    ) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.ending = False  # the loop is ending with the bus open (see the module)
        self._on_bind = on_bind
        self._on_end = on_end
        self._watch: AsyncGenerator[None] | None = None
        self._token = object()  # the current watch's: an older one ends doing nothing
        # Calls from other threads check the bus and schedule under it, so that none is
        # accepted once the loop has started ending.
        self.lock = threading.Lock()

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
        self.ending = False
        self.unwatch()  # (the old loop closed without closing it)
        self._on_bind(loop, previous)
        self._start_watch()

    def _start_watch(self) -> None:
        """Keep an async generator open on the loop: the loop closes it as it ends."""
        self._token = token = object()
        watch = self._watched(token)
        try:
            watch.asend(None).send(None)  # its first step: the loop's hook takes note of it
        except StopIteration:
            self._watch = watch

    async def _watched(self, token: object) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            if token is self._token and not self.closed:
                with self.lock:
                    self.ending = True
                await self._on_end()

    def unwatch(self) -> None:
        """The bus closed (or moved to another loop): it need not be told when the loop ends.
        The watch ends at once, in this call, doing nothing."""
        watch, self._watch = self._watch, None
        self._token = object()
        if watch is not None:
            with contextlib.suppress(StopIteration):
                watch.aclose().send(None)

    def running_here(self) -> bool:
        """Whether the bus's loop is the one running in this thread now."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return False
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:
            return False
