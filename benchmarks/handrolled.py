"""The bus one would write by hand with asyncio: the baseline the peers are compared against.

Every listener and every consumer owns an ``asyncio.Queue`` that one task consumes, in order;
``publish`` puts the body in the queue of every listener of the address and returns at once.
A request puts ``(id, body)`` in its consumer's queue and awaits a future kept in a dict under
that id, with ``asyncio.timeout`` armed; the consumer's task resolves the future with the reply.
It is compact, but not a straw man: no per-message allocations beyond the queue item, the future
and the timeout, and no locks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

type Listener = Callable[[Any], Awaitable[object]]


class QueueBus:
    def __init__(self) -> None:
        self._listeners: defaultdict[str, list[asyncio.Queue[Any]]] = defaultdict(list)
        self._consumers: dict[str, asyncio.Queue[tuple[int, Any]]] = {}
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []

    def on(self, address: str, listener: Listener) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._listeners[address].append(queue)
        self._tasks.append(asyncio.create_task(self._listen(queue, listener)))

    def consumer(self, address: str, handler: Listener) -> None:
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self._consumers[address] = queue
        self._tasks.append(asyncio.create_task(self._serve(queue, handler)))

    def publish(self, address: str, body: Any) -> None:
        for queue in self._listeners.get(address, ()):
            queue.put_nowait(body)

    async def request(self, address: str, body: Any, timeout: float = 30.0) -> Any:
        request_id = next(self._ids)
        future = self._replies[request_id] = asyncio.get_running_loop().create_future()
        try:
            self._consumers[address].put_nowait((request_id, body))
            async with asyncio.timeout(timeout):
                return await future
        finally:
            del self._replies[request_id]

    async def drain(self) -> None:
        """Wait until every listener has handled everything published so far."""
        for queues in self._listeners.values():
            for queue in queues:
                await queue.join()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _listen(self, queue: asyncio.Queue[Any], listener: Listener) -> None:
        while True:
            body = await queue.get()
            try:
                await listener(body)
            except Exception:
                logger.exception("listener %r failed", listener)
            finally:
                queue.task_done()

    async def _serve(self, queue: asyncio.Queue[tuple[int, Any]], handler: Listener) -> None:
        while True:
            request_id, body = await queue.get()
            try:
                reply = await handler(body)
            except Exception as error:
                future = self._replies.get(request_id)
                if future is not None and not future.done():
                    future.set_exception(error)
            else:
                future = self._replies.get(request_id)
                if future is not None and not future.done():
                    future.set_result(reply)
