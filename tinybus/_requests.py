"""Requests: one consumer's answer, through the reply Subject, within a timeout.

Each attempt makes the message and its ``Exchange``, files the exchange under the message's
reply address, and pushes the message into its address's Subject (or hands it to the
transport, when no consumer here has the address). The consumer's answer comes back through
the reply Subject into the exchange: while the message is still being pushed, for a handler
that answers without suspending (no future and no timer are made then), else into a future
the requester awaits until the deadline. An inline consumer's handler runs in the
requester's own task instead: the deadline cancels it there, as ``asyncio.timeout`` would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ._answers import Answers
from ._dispatch import Dispatch
from ._exchange import Exchange, Reply, nobody_awaits
from ._loop import LoopBinding
from ._replies import ReplySubject, closed_before_reply
from ._routes import Routes
from ._transport import Transport
from ._validation import validator_for
from .errors import (
    BusClosedError,
    HandlerNotFoundError,
    HandlerTimeoutError,
    MessageDroppedError,
)
from .headers import HeadersInput
from .message import EMPTY_HEADERS, REPLY_PREFIX, Message, new_message_id
from .options import DeliveryOptions, check_delivery_options, check_timeout

logger = logging.getLogger("tinybus")


class Requests:
    """The requests of one bus, and the conversations that follow their replies."""

    def __init__(
        self,
        binding: LoopBinding,
        routes: Routes,
        dispatch: Dispatch,
        replies: ReplySubject,
        default_timeout: float,
        transport: Transport | None,
        answers: Answers,
    ) -> None:
        self.answers = answers  # every answer's way out
        self.binding = binding
        self.routes = routes
        self.dispatch = dispatch
        self.replies = replies
        self.default_timeout = default_timeout
        self.transport = transport

    async def request(
        self,
        address: str,
        body: Any,
        headers: HeadersInput | None,
        timeout: float,
        options: DeliveryOptions | None,
        response_type: Any,
        full: bool,
    ) -> Any:
        """Each attempt (``retry_attempts`` makes more after a timeout) asks one consumer."""
        retries = (0 if options is None else options.retry_attempts) or 0
        replies = self.replies
        while True:
            if self.binding.closed:
                raise BusClosedError(address=address)
            message = self.dispatch.make("request", address, body, headers, options)
            reply_address: str = message.reply_address  # type: ignore[assignment]
            exchange = message.responder = Exchange(reply_address, address, replies.push, self)
            subject = self.routes.routes.get(address)
            if subject is None or subject.turn is None:  # (no consumer: refuses a pattern)
                subject = self.routes.consumers_of(address)
            replies.pending[reply_address] = exchange  # (ReplySubject.open)
            exchange.timeout = timeout
            exchange.deadline = replies.clock() + timeout  # read before any handler runs
            try:
                if subject is not None:
                    self.dispatch.request(subject, message)
                elif self.transport is None or not self.transport.request(message, timeout):
                    raise HandlerNotFoundError(address)
                reply = exchange.outcome
                if reply is not None:  # answered while being sent: no future, no timer
                    if replies.clock() >= exchange.deadline:
                        reply = self._late(exchange, reply)
                elif exchange.turn is not None:
                    reply = await self._turn(exchange, message)
                else:
                    reply = await replies.wait(exchange)
                if reply.error is not None:
                    raise reply.error
            except BaseException as error:
                self.dispatch.done(message, error)
                if retries == 0 or not isinstance(error, HandlerTimeoutError):
                    raise
                retries -= 1
                logger.debug("request to %r timed out; retrying (%d left)", address, retries)
                continue
            finally:
                if not exchange.abandoned:
                    replies.close(exchange)
            if self.dispatch.instrumentation is not None:
                self.dispatch.instrumentation.done(message, None)
            answer = reply.body
            if response_type is not None:
                answer = validator_for(response_type).check(answer, address, "the reply from")
            if full:
                return self.reply_message(reply, answer)
            return answer

    def _late(self, exchange: Exchange, reply: Reply) -> Reply:
        """An answer given while its request was being made, at or after the deadline (a
        handler that blocked the loop), is late: the requester times out instead."""
        self.replies.take_back(reply)
        timed_out = HandlerTimeoutError(exchange.address, exchange.timeout)
        return Reply(exchange.reply_address, None, timed_out, reply.source)

    async def _turn(self, exchange: Exchange, message: Message[Any]) -> Reply:
        """Run an inline consumer's handler in this task, until its deadline."""
        endpoint = exchange.turn
        assert endpoint is not None
        exchange.turn = None
        if not endpoint.registered:  # unregistered since it was chosen
            endpoint.counts.dropped += 1
            endpoint.discard(message, MessageDroppedError(endpoint, "unregistered"))
        else:
            awaitable = endpoint.turn(message)
            if awaitable is not None:
                task = asyncio.current_task()
                assert task is not None
                exchange.task = task
                self.replies.deadlines.add(exchange)
                try:
                    value = await awaitable
                except BaseException as exc:
                    if endpoint.raised(message, exc, False):
                        if isinstance(exc, asyncio.CancelledError):
                            # The bus's cancellation (its deadline, or close()) becomes the
                            # requester's outcome; any other stays a cancellation. An answer
                            # given before it never reached the requester.
                            self._undelivered(exchange)
                            if exchange.ended_by is not None and task.uncancel() == 0:
                                raise exchange.ended_by from None
                        raise
                else:
                    if exchange.ended_by is not None:
                        # The handler caught the bus's cancellation and returned: the
                        # deadline (or close()) still ended the request.
                        self._undelivered(exchange)
                        task.uncancel()
                        raise exchange.ended_by
                    endpoint.settle(message, value)
                finally:
                    exchange.task = None
        reply = exchange.outcome
        self.replies.close(exchange)
        if reply is None:  # the bus closed while the handler ran
            return Reply(exchange.reply_address, None, closed_before_reply(exchange), None)
        if self.replies.clock() >= exchange.deadline:
            return self._late(exchange, reply)
        return reply

    def _undelivered(self, exchange: Exchange) -> None:
        """The outcome given to ``exchange`` does not reach its requester after all."""
        outcome, exchange.outcome = exchange.outcome, None
        if outcome is not None:
            self.replies.take_back(outcome)

    # -- conversations ---------------------------------------------------------------------

    def reply_message(self, reply: Reply, body: Any, source: Any = None) -> Message[Any]:
        """A reply as a ``Message``; one that awaits an answer can be answered (``reply``,
        ``fail``, ``reply_and_request``), by ``source`` when that side is a consumer's."""
        message = Message(body, address=reply.reply_address, headers=reply.headers)
        message.kind = "reply"
        next_address = reply.next_address
        if next_address is not None:
            message.reply_address = next_address
            message.responder = Exchange.of_leg(
                next_address,
                reply.reply_address,
                reply.answer_sink or self.replies.push,
                self,
                source,
            )
        return message

    async def converse(
        self,
        answering: Exchange,
        body: object,
        headers: Mapping[str, str] | None,
        options: DeliveryOptions | None,
        timeout: float | None,
    ) -> Message[Any]:
        """Answer ``answering`` with ``body`` and wait for the answer to that answer."""
        reply_address = answering.reply_address
        self.binding.check(reply_address)
        if timeout is None and options is not None:
            timeout = check_delivery_options(options).timeout  # type: ignore[union-attr]
        timeout = self.default_timeout if timeout is None else check_timeout(timeout)
        replies = self.replies
        if answering.sink == replies.push and not replies.is_waited(reply_address):
            # Nobody waits at reply_address (it timed out, or was cancelled): nobody will
            # answer, so fail now rather than wait out the timeout, as Vert.x does.
            raise nobody_awaits(reply_address)
        next_address = REPLY_PREFIX + new_message_id()
        waiting = Exchange.of_leg(next_address, reply_address, replies.push, self, answering.source)
        replies.open(waiting)
        waiting.timeout = timeout
        waiting.deadline = replies.clock() + timeout
        try:
            answer = Reply(
                reply_address, body, None, answering.source, headers or EMPTY_HEADERS, next_address
            )
            try:
                answering.send(answer, options)
            except BaseException:
                answering.answered = False  # (not answered: what shaping raised is the caller's)
                raise
            reply = await replies.wait(waiting)
        finally:
            replies.close(waiting)
        return self.reply_message(reply, reply.body, answering.source)
