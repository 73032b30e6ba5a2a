"""The bus's reactivex scheduler: an AsyncIOScheduler that finds its loop when first used."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reactivex.scheduler.eventloop import AsyncIOScheduler
from reactivex.scheduler.periodicscheduler import PeriodicScheduler


class BusScheduler(AsyncIOScheduler):
    """An ``AsyncIOScheduler`` on the bus's loop, usable before that loop exists.

    A bus is often built at import time, with registrations (and their Rx pipelines) made by
    decorators, before any loop runs. Timers scheduled through this scheduler go to the loop
    the bus is bound to when they are scheduled, so they always run on the loop thread:
    reactivex never falls back to its thread-based timeout scheduler.
    """

    def __init__(self, get_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        PeriodicScheduler.__init__(self)
        self._get_loop = get_loop

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self._get_loop()
