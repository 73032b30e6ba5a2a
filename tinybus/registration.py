"""``Registration``: the handle returned for every consumer and listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from reactivex import abc

from ._flow import Overflow
from ._validation import HandlerTypes

if TYPE_CHECKING:
    from ._flow import Mailbox
    from ._pipeline import Pipeline

type Role = Literal["consumer", "listener"]

logger = logging.getLogger("tinybus")


def _call_ended(callback: Callable[[Registration], object], registration: Registration) -> None:
    try:
        callback(registration)
    except Exception:
        logger.exception("an on_unregistered callback of %r raised", registration)


class Registration:
    """One handler registered at one address (or pattern), as a consumer or as a listener.

    ``unregister()`` removes it; calling it again does nothing. Messages already being handled
    finish; messages waiting in its buffer are dropped (their requesters fail at once with
    ``MessageDroppedError``), and none reach it afterwards.

    ``pause()`` stops handling: messages wait in the buffer, under the registration's overflow
    policy, until ``resume()``. ``queued`` is how many wait now and ``dropped`` how many were
    dropped or refused so far.
    """

    __slots__ = (
        "_ended_callbacks",
        "_inline",
        "_mailbox",
        "_make_mailbox",
        "_pipeline",
        "_registered",
        "_subscription",
        "_takes_messages",
        "_types",
        "_unregister",
        "address",
        "delivered",
        "failed",
        "handler",
        "max_buffered",
        "max_concurrency",
        "overflow",
        "replied",
        "role",
    )

    def __init__(
        self,
        address: str,
        handler: Callable[..., Any],
        role: Role,
        unregister: Callable[[Registration], None],
        types: HandlerTypes,
        *,
        max_concurrency: int | None = None,
        max_buffered: int = 1000,
        overflow: Overflow = "block",
        make_mailbox: Callable[[Registration], Mailbox],
        inline: bool = False,
    ) -> None:
        self.address = address
        self.handler = handler
        self.role: Role = role
        self.max_concurrency = max_concurrency
        self.max_buffered = max_buffered
        self.overflow: Overflow = overflow
        self._unregister = unregister
        self._registered = True
        # Counters for bus.stats(): handler calls, successful replies, failures.
        self.delivered = self.replied = self.failed = 0
        self._types = types
        # What enters the pipeline, and what a handler without a pipeline is handed: the
        # whole message for consumers and for listeners that annotate Message[T].
        self._takes_messages = role == "consumer" or types.wants_message
        self._subscription: abc.DisposableBase | None = None
        self._pipeline: Pipeline | None = None
        self._make_mailbox = make_mailbox
        self._mailbox: Mailbox | None = None
        self._ended_callbacks: list[Callable[[Registration], object]] = []
        # Awaited inside the publish or send that reached it, not started as a task.
        self._inline = inline

    @property
    def is_registered(self) -> bool:
        return self._registered

    @property
    def is_paused(self) -> bool:
        return self._mailbox is not None and self._mailbox.paused

    @property
    def queued(self) -> int:
        return 0 if self._mailbox is None else self._mailbox.queued

    @property
    def dropped(self) -> int:
        return 0 if self._mailbox is None else self._mailbox.dropped

    def pause(self) -> None:
        """Stop handling messages; they wait in the buffer until ``resume()``. Does nothing
        once unregistered."""
        if not self._registered:
            return
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = self._make_mailbox(self)
        mailbox.pause()

    def resume(self) -> None:
        """Handle the waiting messages (in order, within ``max_concurrency``) and the next."""
        if self._mailbox is not None:
            self._mailbox.resume()

    def unregister(self) -> None:
        if self._registered:
            self._registered = False
            self._unregister(self)

    def on_unregistered(self, callback: Callable[[Registration], object]) -> None:
        """Call ``callback(registration)`` once, when this registration ends: unregistered,
        its pipeline completed or failed for good, or the bus closed. Called at once if it
        has ended already."""
        if self._registered:
            self._ended_callbacks.append(callback)
        else:
            _call_ended(callback, self)

    async def wait_unregistered(self) -> None:
        """Return once this registration has ended (see ``on_unregistered``)."""
        if not self._registered:
            return
        ended = asyncio.get_running_loop().create_future()
        self._ended_callbacks.append(lambda _: None if ended.done() else ended.set_result(None))
        await ended

    def _ended(self) -> None:
        """The bus took this registration off its address: tell those who asked."""
        self._registered = False
        callbacks, self._ended_callbacks = self._ended_callbacks, []
        for callback in callbacks:
            _call_ended(callback, self)

    def __repr__(self) -> str:
        state = "registered" if self._registered else "unregistered"
        if self.is_paused:
            state += ", paused"
        name = getattr(self.handler, "__qualname__", repr(self.handler))
        return f"<Registration {self.role} {name} at {self.address!r} ({state})>"
