"""Delivery: running a handler for a message and getting its outcome where it belongs.

A handler is called directly. A plain function's result (or exception) is handled at once;
an awaitable result runs in a task started eagerly (``asyncio.eager_task_factory``), so a
coroutine that finishes without suspending costs no trip through the event loop. Outcomes go:

- for a request, into the reply stream (``Reply``), value or ``HandlerExecutionError``;
- for a published or sent message, nowhere on success; a failure is reported as a
  ``HandlerFailure`` (log and ``bus.errors``).

Every task started here is tracked until it finishes, so ``close()`` can wait for it and then
cancel it. ``collect`` records the tasks that one publish or send started, which is what that
call awaits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from types import CoroutineType
from typing import Any

from pydantic import ValidationError
from reactivex import abc

from ._replies import Reply
from ._validation import validation_summary
from .errors import HandlerExecutionError, HandlerFailure, MessageValidationError
from .message import Message, copy_with_body
from .registration import Registration

# Eager starts nest: a handler that requests another address starts that handler inside its
# own first step. Past this depth tasks start the ordinary way, so a chain of handlers that
# request each other (or themselves) never grows the stack without bound.
MAX_EAGER_DEPTH = 16


def is_awaitable(value: object) -> bool:
    return type(value) is CoroutineType or (value is not None and hasattr(value, "__await__"))


def handler_argument(registration: Registration, message: Message[Any]) -> Any:
    """What the handler is called with: the body or the message, validated if it declares a
    type. Raises ``MessageValidationError`` for a body that is not valid."""
    types = registration._types  # pyright: ignore[reportPrivateUsage]
    body = message.body
    if types.accepts is not None:
        try:
            body = types.accepts(body)
        except ValidationError as exc:
            raise MessageValidationError(
                message.address,
                types.accepts.expected,
                exc.errors(include_url=False),
                validation_summary(exc),
            ) from exc
        except Exception as exc:  # a validator of the model raised something else
            raise MessageValidationError(
                message.address, types.accepts.expected, [], f"{type(exc).__name__}: {exc}"
            ) from exc
        if not types.wants_message:
            return body
        return message if body is message.body else copy_with_body(message, body)
    return message if types.wants_message else body


def checked_reply(
    registration: Registration, reply_address: str, address: str, result: Any
) -> Reply:
    """The reply for ``result``, converted to the declared return type, or the failure saying
    the handler returned an invalid type."""
    returns = registration._types.returns  # pyright: ignore[reportPrivateUsage]
    if returns is not None:
        try:
            result = returns(result)
        except Exception as exc:  # ValidationError, or whatever a model's validator raised
            summary = (
                validation_summary(exc)
                if isinstance(exc, ValidationError)
                else f"{type(exc).__name__}: {exc}"
            )
            error = HandlerExecutionError(
                address,
                exc,
                f"the handler for {address!r} returned an invalid type: expected "
                f"{returns.expected}, got {type(result).__name__}: {summary}",
            )
            return Reply(reply_address, None, error, registration)
    return Reply(reply_address, result, None, registration)


def _cancelled_from_outside() -> bool:
    """Whether the current task is being cancelled, as opposed to its coroutine raising a
    CancelledError of its own (e.g. from awaiting a future someone else cancelled)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class EventObserver(abc.ObserverBase[Message[Any]]):
    """Subscribes a registration to its address's subject: each message becomes a delivery."""

    __slots__ = ("_delivery", "_registration")

    def __init__(self, delivery: Delivery, registration: Registration) -> None:
        self._delivery = delivery
        self._registration = registration

    def on_next(self, value: Message[Any]) -> None:
        self._delivery.deliver_event(self._registration, value)

    def on_error(self, error: Exception) -> None:
        """Address subjects never error; nothing to do."""

    def on_completed(self) -> None:
        """The bus closed; the registration ends with it."""


class Delivery:
    def __init__(
        self,
        get_loop: Callable[[], asyncio.AbstractEventLoop],
        report: Callable[[HandlerFailure], None],
        push_reply: Callable[[Reply], None],
    ) -> None:
        self._get_loop = get_loop
        self._report = report
        self._push_reply = push_reply
        self.tasks: set[asyncio.Task[None]] = set()
        self._collecting: list[asyncio.Task[None]] | None = None
        self._depth = 0

    def observer(self, registration: Registration) -> EventObserver:
        return EventObserver(self, registration)

    # -- starting handlers -------------------------------------------------------------

    def _start(self, coro: Coroutine[Any, Any, None], collect: bool) -> None:
        loop = self._get_loop()
        if self._depth < MAX_EAGER_DEPTH:
            self._depth += 1
            try:
                task = asyncio.Task(coro, loop=loop, eager_start=True)
            finally:
                self._depth -= 1
            if task.done():
                return
        else:
            # Deliberately not loop.create_task: an eager task factory installed on the loop
            # would start it eagerly again, and the depth would have no bound.
            task = asyncio.Task(coro, loop=loop)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if collect and self._collecting is not None:
            self._collecting.append(task)

    def collect(
        self, push: Callable[[Message[Any]], None], message: Message[Any]
    ) -> list[asyncio.Task[None]]:
        """Run ``push(message)`` and return the tasks it started that are still running."""
        outer = self._collecting
        started: list[asyncio.Task[None]] = []
        self._collecting = started
        try:
            push(message)
        finally:
            self._collecting = outer
        return started

    @staticmethod
    async def wait(tasks: list[asyncio.Task[None]]) -> None:
        # asyncio.wait, not ``await task``: cancelling the publisher must not cancel the
        # handlers its message reached; they belong to the bus.
        await asyncio.wait(tasks)

    # -- published and sent messages -----------------------------------------------------

    def deliver_event(self, registration: Registration, message: Message[Any]) -> None:
        try:
            result = registration.handler(handler_argument(registration, message))
        except Exception as exc:
            self.report_failure(registration, message, exc)
            return
        if is_awaitable(result):
            self._start(self._finish_event(result, registration, message), collect=True)

    async def _finish_event(
        self, result: Awaitable[Any], registration: Registration, message: Message[Any]
    ) -> None:
        try:
            await result
        except asyncio.CancelledError as exc:
            if not _cancelled_from_outside():
                self.report_failure(registration, message, exc)
            raise
        except Exception as exc:
            self.report_failure(registration, message, exc)

    def report_failure(
        self, registration: Registration, message: Message[Any] | None, exc: BaseException
    ) -> None:
        self._report(HandlerFailure(registration.address, registration.handler, exc, message))

    # -- requests --------------------------------------------------------------------------

    def deliver_request(self, registration: Registration, message: Message[Any]) -> None:
        reply_address: str = message.reply_address  # type: ignore[assignment]
        try:
            result = registration.handler(handler_argument(registration, message))
        except MessageValidationError as exc:
            self._push_reply(Reply(reply_address, None, exc, registration))
            return
        except Exception as exc:
            self._push_reply(
                Reply(
                    reply_address, None, HandlerExecutionError(message.address, exc), registration
                )
            )
            return
        if is_awaitable(result):
            self._start(self._finish_request(result, registration, message), collect=False)
        else:
            self._push_reply(checked_reply(registration, reply_address, message.address, result))

    async def _finish_request(
        self, result: Awaitable[Any], registration: Registration, message: Message[Any]
    ) -> None:
        reply_address: str = message.reply_address  # type: ignore[assignment]
        try:
            body = await result
        except GeneratorExit:
            raise  # the coroutine is being closed: nobody to reply to
        except BaseException as exc:
            # A cancelled handler still owes its requester an outcome (unless close() is what
            # cancelled it: the requester has its BusClosedError already). The cancellation,
            # like KeyboardInterrupt and SystemExit, then propagates.
            if not (isinstance(exc, asyncio.CancelledError) and _cancelled_from_outside()):
                error = HandlerExecutionError(message.address, exc)
                self._push_reply(Reply(reply_address, None, error, registration))
            if not isinstance(exc, Exception):
                raise
        else:
            self._push_reply(checked_reply(registration, reply_address, message.address, body))

    # -- shutdown --------------------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Let running handlers finish for ``grace`` seconds, then cancel and await the rest.

        A handler that is itself closing the bus is neither waited for nor cancelled.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        closer = asyncio.current_task()

        def others() -> set[asyncio.Task[None]]:
            return {task for task in self.tasks if task is not closer}

        try:
            while running := others():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait(running, timeout=remaining)
        finally:
            for task in others():
                task.cancel()
        while running := others():
            await asyncio.wait(running)

    def reset(self) -> None:
        self.tasks.clear()
        self._collecting = None
        self._depth = 0
