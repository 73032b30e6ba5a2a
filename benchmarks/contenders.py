"""The contenders of each scenario, each set up the way its own documentation shows.

Calls, publishers and tallies are described in ``harness.py``, which also holds the two
baselines (a direct ``await handler(x)`` and the hand-written bus): ``legacy_worker.py``
measures them with the same code in tinybus 0.2.1's process.

Every call site is a lambda, the direct baseline's too, so that every contender pays the same
layer of indirection. Listeners all do the same work, ``tally.hit()``; they are coroutine
functions everywhere except on the bare reactivex Subject, whose observers are synchronous by
design (see ``rx_publisher``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, Literal

import aiopubsub
import blinker
import bubus
import pyee.asyncio
import reactivex.subject
from handrolled import QueueBus
from harness import (
    DIRECT,
    HANDROLLED,
    Call,
    Publisher,
    Reply,
    Tally,
    async_listeners,
    baseline_requests,
    direct_publisher,
    even,
    handrolled_publisher,
)
from pydantic import BaseModel
from reactivex import operators as ops

from tinybus import EventBus, Message

TINYBUS = "TinyBus"
TINYBUS_INLINE = "TinyBus inline"
TINYBUS021 = "tinybus 0.2.1"
PYEE = "pyee"
BLINKER = "blinker"
BUBUS = "bubus"
AIOPUBSUB = "aiopubsub"
RX = "reactivex Subject"
CONTENDERS = (
    DIRECT,
    HANDROLLED,
    TINYBUS,
    TINYBUS_INLINE,
    TINYBUS021,
    PYEE,
    BLINKER,
    BUBUS,
    AIOPUBSUB,
    RX,
)
BASELINES = (DIRECT, HANDROLLED)
# Measured in a process of their own (legacy.py), not built here.
ELSEWHERE = (TINYBUS021,)

type Body = Literal["plain", "model", "dict"]

NO_REPLIES = "no request/response: events have no reply"
NO_OPERATORS = "no stream operators"
NO_PATTERNS = "no wildcard subscriptions"
NO_VALIDATION = "no body validation"
NO_OBSERVE = "no stream of an address's messages next to its listeners (TinyBus's observe())"
INLINE_ELSEWHERE = "the inline consumer is measured in (1i) and (2i)"


# -- request/response ------------------------------------------------------------------------


async def tinybus_returns(message: Message[int]) -> int:
    return message.body


async def tinybus_awaits(message: Message[int]) -> int:
    await asyncio.sleep(0)
    return message.body


async def blinker_returns(sender: object, body: int) -> int:
    return body


async def blinker_awaits(sender: object, body: int) -> int:
    await asyncio.sleep(0)
    return body


class BubusRequest(bubus.BaseEvent[int]):
    body: int


async def bubus_returns(event: BubusRequest) -> int:
    return event.body


async def bubus_awaits(event: BubusRequest) -> int:
    await asyncio.sleep(0)
    return event.body


async def request_contenders(
    stack: AsyncExitStack, reply: Reply, inline: bool = False
) -> dict[str, Call]:
    """Request/response; the handler returns at once or awaits ``asyncio.sleep(0)`` once.
    With ``inline``, TinyBus inline (a consumer registered ``inline=True``) is there too, and
    bubus is not (its handlers never run in the requester's task)."""
    returns = reply == "returns"
    made = baseline_requests(stack, reply)

    # The README's consumer: typed, so TinyBus checks the body (an int: its exact-type fast path).
    bus = await stack.enter_async_context(EventBus())
    handler = tinybus_returns if returns else tinybus_awaits
    bus.consumer("bench.request", handler)
    made[TINYBUS] = lambda n: bus.request("bench.request", n)
    if inline:
        # The same consumer, run in the requester's task (README, "Inline handlers").
        bus.consumer("bench.inline", handler, inline=True)
        made[TINYBUS_INLINE] = lambda n: bus.request("bench.inline", n)

    # blinker has no request/response as such, but send_async returns the receivers' return
    # values, as [(receiver, value)]: with one receiver, that is the reply (no timeout).
    signal = blinker.Namespace().signal("bench.request")
    signal.connect(blinker_returns if returns else blinker_awaits)
    made[BLINKER] = lambda n: signal.send_async(body=n)

    if not inline:
        # bubus's documented request/response: dispatch an event, await its first result.
        bubus_bus = bubus.EventBus()
        stack.push_async_callback(bubus_bus.stop, clear=True)
        bubus_bus.on(BubusRequest, bubus_returns if returns else bubus_awaits)
        made[BUBUS] = lambda n: bubus_bus.dispatch(BubusRequest(body=n)).event_result()
    return made


# -- validated bodies ------------------------------------------------------------------------


class Order(BaseModel):
    id: int
    item: str
    quantity: int


ORDER = Order(id=1, item="tea", quantity=2)
ORDER_DICT = ORDER.model_dump()


async def tinybus_plain(message: Message[Any]) -> int:
    return message.body.quantity


async def tinybus_validated(message: Message[Order]) -> int:
    return message.body.quantity


class BubusPlain(bubus.BaseEvent[int]):
    body: Any


class BubusOrder(bubus.BaseEvent[int]):
    order: Order


async def bubus_plain(event: BubusPlain) -> int:
    return event.body.quantity


async def bubus_order(event: BubusOrder) -> int:
    return event.order.quantity


async def validation_contenders(stack: AsyncExitStack, body: Body) -> dict[str, Call]:
    """A request carrying an ``Order``: unvalidated (``plain``), or validated against the model
    given an instance (``model``) or a dict (``dict``). The baselines validate by hand with
    ``Order.model_validate``, as one would without a bus that does it."""
    value: Any = ORDER_DICT if body == "dict" else ORDER

    async def handler(order: Order) -> int:
        return order.quantity

    async def validating_handler(order: Any) -> int:
        return Order.model_validate(order).quantity

    handrolled = QueueBus()
    stack.push_async_callback(handrolled.close)
    handrolled.consumer("bench.order", handler if body == "plain" else validating_handler)

    bus = await stack.enter_async_context(EventBus())
    bus.consumer("bench.order", tinybus_plain if body == "plain" else tinybus_validated)

    bubus_bus = bubus.EventBus()
    stack.push_async_callback(bubus_bus.stop, clear=True)
    bubus_bus.on(BubusPlain, bubus_plain)
    bubus_bus.on(BubusOrder, bubus_order)

    plain = body == "plain"

    def direct(n: int) -> Awaitable[int]:
        return handler(value if plain else Order.model_validate(value))

    def bubus_call(n: int) -> Awaitable[int | None]:
        event = BubusPlain(body=value) if plain else BubusOrder(order=value)
        return bubus_bus.dispatch(event).event_result()

    return {
        DIRECT: direct,
        HANDROLLED: lambda n: handrolled.request("bench.order", value),
        TINYBUS: lambda n: bus.request("bench.order", value),
        BUBUS: bubus_call,
    }


# -- publish ---------------------------------------------------------------------------------


async def publish_contenders(
    stack: AsyncExitStack,
    listeners: int = 1,
    filtered: bool = False,
    patterns: int = 0,
    observed: bool = False,
) -> dict[str, Publisher]:
    """Publish to ``listeners`` listeners of one address; with ``filtered``, through a filter
    that lets even bodies pass; with ``patterns``, that many pattern listeners that never
    match are registered too; with ``observed``, TinyBus's address has an ``observe()``
    subscriber too (the baselines publish as without). Contenders that lack the feature are
    left out."""
    made: dict[str, Publisher] = {}
    for name, make in PUBLISHERS.items():
        if (
            (filtered and name not in FILTERING)
            or (patterns and name not in PATTERNS)
            or (observed and name not in OBSERVING)
        ):
            continue
        tally = Tally()
        if observed and name in (TINYBUS, TINYBUS_INLINE):
            made[name] = await make(stack, tally, listeners, filtered, patterns, observed=True)
        else:
            made[name] = await make(stack, tally, listeners, filtered, patterns)
    return made


async def tinybus_publisher(
    stack: AsyncExitStack,
    tally: Tally,
    listeners: int,
    filtered: bool,
    patterns: int,
    inline: bool = False,
    observed: bool = False,
) -> Publisher:
    bus = await stack.enter_async_context(EventBus())
    pipe = [ops.filter(even)] if filtered else None
    for listener in async_listeners(tally, listeners):
        bus.on("event", listener, pipe=pipe, inline=inline)
    for index, listener in enumerate(async_listeners(tally, patterns)):
        bus.on(f"other.{index}.*", listener)
    if observed:
        bus.observe("event").subscribe(lambda message: None)
    # publish returns once every listener it reached has finished: nothing left to settle.
    return Publisher(lambda n: bus.publish("event", n), True, tally)


async def pyee_publisher(
    stack: AsyncExitStack, tally: Tally, listeners: int, filtered: bool, patterns: int
) -> Publisher:
    emitter = pyee.asyncio.AsyncIOEventEmitter()
    for listener in async_listeners(tally, listeners):
        emitter.on("event", listener)
    # emit schedules each coroutine listener as a task and returns at once.
    return Publisher(lambda n: emitter.emit("event", n), False, tally, emitter.wait_for_complete)


async def blinker_publisher(
    stack: AsyncExitStack, tally: Tally, listeners: int, filtered: bool, patterns: int
) -> Publisher:
    signal = blinker.Namespace().signal("event")
    receivers: list[Callable[..., Awaitable[None]]] = []

    def make(index: int) -> Callable[..., Awaitable[None]]:
        async def receiver(sender: object, body: int) -> None:
            tally.hit()

        receiver.__name__ = f"receiver_{index}"
        return receiver

    for index in range(listeners):
        receivers.append(make(index))
        signal.connect(receivers[-1])  # weakly, blinker's default: ``receivers`` keeps them
    # send_async awaits every receiver in turn.
    publisher = Publisher(lambda n: signal.send_async(body=n), True, tally)
    stack.callback(receivers.clear)
    return publisher


class BubusPublished(bubus.BaseEvent[None]):
    body: int


async def bubus_publisher(
    stack: AsyncExitStack, tally: Tally, listeners: int, filtered: bool, patterns: int
) -> Publisher:
    bus = bubus.EventBus()
    stack.push_async_callback(bus.stop, clear=True)

    def make(index: int) -> Callable[[BubusPublished], Awaitable[None]]:
        async def handler(event: BubusPublished) -> None:
            tally.hit()

        handler.__name__ = handler.__qualname__ = f"handler_{index}"
        return handler

    for index in range(listeners):
        bus.on(BubusPublished, make(index))
    # bubus refuses more than 100 pending events (and queues 50): its documented way to
    # publish is to await the dispatched event, which waits for every handler.
    return Publisher(lambda n: bus.dispatch(BubusPublished(body=n)), True, tally)


async def aiopubsub_publisher(
    stack: AsyncExitStack, tally: Tally, listeners: int, filtered: bool, patterns: int
) -> Publisher:
    hub = aiopubsub.Hub()
    publisher = aiopubsub.Publisher(hub, prefix=aiopubsub.Key("bench"))
    key = aiopubsub.Key("event")
    subscribers: list[aiopubsub.Subscriber] = []

    def subscribe(subscription: aiopubsub.Key, listener: Callable[[int], Awaitable[None]]) -> None:
        async def callback(key: aiopubsub.Key, message: int) -> None:
            await listener(message)

        subscriber = aiopubsub.Subscriber(hub, f"subscriber{len(subscribers)}")
        subscriber.add_async_listener(subscription, callback)
        subscribers.append(subscriber)

    for listener in async_listeners(tally, listeners):
        subscribe(aiopubsub.Key("bench", "event"), listener)
    for index, listener in enumerate(async_listeners(tally, patterns)):
        subscribe(aiopubsub.Key("bench", "other", str(index), "*"), listener)

    async def stop() -> None:
        for subscriber in subscribers:
            await subscriber.remove_all_listeners()

    stack.push_async_callback(stop)
    # publish puts the message in each subscriber's queue; a task per subscriber consumes it.
    # aiopubsub has no way to wait until they are done, so the listeners' tally says when.
    return Publisher(lambda n: publisher.publish(key, n), False, tally, tally.reached)


async def rx_publisher(
    stack: AsyncExitStack, tally: Tally, listeners: int, filtered: bool, patterns: int
) -> Publisher:
    # A bare reactivex Subject pushes synchronously to observers that are plain functions; it
    # has no notion of coroutines (running one would take a task per value, a workaround), so
    # its listeners are synchronous: what it measures is Rx delivery with no await at all.
    subject: reactivex.subject.Subject[int] = reactivex.subject.Subject()
    source = subject.pipe(ops.filter(even)) if filtered else subject

    def make() -> Callable[[int], None]:
        def on_next(body: int) -> None:
            tally.hit()

        return on_next

    for _ in range(listeners):
        source.subscribe(on_next=make())
    stack.callback(subject.dispose)
    return Publisher(lambda n: subject.on_next(n), False, tally)


PUBLISHERS = {
    DIRECT: direct_publisher,
    HANDROLLED: handrolled_publisher,
    TINYBUS: tinybus_publisher,
    TINYBUS_INLINE: partial(tinybus_publisher, inline=True),
    PYEE: pyee_publisher,
    BLINKER: blinker_publisher,
    BUBUS: bubus_publisher,
    AIOPUBSUB: aiopubsub_publisher,
    RX: rx_publisher,
}
FILTERING = (DIRECT, HANDROLLED, TINYBUS, TINYBUS_INLINE, RX)
PATTERNS = (DIRECT, HANDROLLED, TINYBUS, TINYBUS_INLINE, AIOPUBSUB)
OBSERVING = (DIRECT, HANDROLLED, TINYBUS, TINYBUS_INLINE)
