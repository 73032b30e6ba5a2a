"""The contenders of each scenario, each set up the way its own documentation shows.

A request contender is a ``Call``: ``call(n)`` returns the awaitable of one request with body
``n`` (n >= 1: bubus's ``event_result`` treats a falsy reply as no reply). A publish
contender is a ``Publisher``: ``publish(n)`` publishes one event (awaited when the library's
publish is a coroutine), ``settle()`` waits, the library's own way, until every listener has
handled every event, and every listener counts what it handled on a ``Tally``, so the harness
can check that a measurement really ended after the last listener's work.

Every call site is a lambda, the direct baseline's too, so that every contender pays the same
layer of indirection. Listeners all do the same work, ``tally.hit()``; they are coroutine
functions everywhere except on the bare reactivex Subject, whose observers are synchronous by
design (see ``rx_publisher``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import aiopubsub
import blinker
import bubus
import pyee.asyncio
import reactivex.subject
from handrolled import QueueBus
from pydantic import BaseModel
from reactivex import operators as ops

from tinybus import EventBus, Message

DIRECT = "direct await"
HANDROLLED = "hand-written bus"
TINYBUS = "TinyBus"
TINYBUS_INLINE = "TinyBus inline"
PYEE = "pyee"
BLINKER = "blinker"
BUBUS = "bubus"
AIOPUBSUB = "aiopubsub"
RX = "reactivex Subject"
CONTENDERS = (DIRECT, HANDROLLED, TINYBUS, TINYBUS_INLINE, PYEE, BLINKER, BUBUS, AIOPUBSUB, RX)
BASELINES = (DIRECT, HANDROLLED)

type Call = Callable[[int], Awaitable[object]]
type Reply = Literal["returns", "awaits"]
type Body = Literal["plain", "model", "dict"]

NO_REPLIES = "no request/response: events have no reply"
NO_OPERATORS = "no stream operators"
NO_PATTERNS = "no wildcard subscriptions"
NO_VALIDATION = "no body validation"
NOT_INLINE = "requests are never inline"


class Tally:
    """Counts what listeners handled; ``reached()`` waits until the armed target is met."""

    __slots__ = ("_waiter", "count", "target")

    def __init__(self) -> None:
        self.count = 0
        self.target = -1
        self._waiter: asyncio.Future[None] | None = None

    def hit(self) -> None:
        self.count += 1
        if self.count == self.target and self._waiter is not None:
            self._waiter.set_result(None)

    def arm(self, target: int) -> None:
        self.count, self.target, self._waiter = 0, target, None

    async def reached(self) -> None:
        if self.count < self.target:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


@dataclass
class Publisher:
    publish: Callable[[int], Any]
    is_async: bool
    tally: Tally
    settle: Callable[[], Awaitable[object]] | None = None


def even(n: int) -> bool:
    return n % 2 == 0


def async_listeners(tally: Tally, count: int) -> list[Callable[[int], Awaitable[None]]]:
    """``count`` distinct listener functions (some libraries deduplicate by identity, bubus
    warns about equal names)."""

    def make(index: int) -> Callable[[int], Awaitable[None]]:
        async def listener(body: int) -> None:
            tally.hit()

        listener.__name__ = listener.__qualname__ = f"listener_{index}"
        return listener

    return [make(index) for index in range(count)]


# -- request/response ------------------------------------------------------------------------


async def direct_returns(n: int) -> int:
    return n


async def direct_awaits(n: int) -> int:
    await asyncio.sleep(0)
    return n


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


async def request_contenders(stack: AsyncExitStack, reply: Reply) -> dict[str, Call]:
    """Request/response; the handler returns at once or awaits ``asyncio.sleep(0)`` once."""
    returns = reply == "returns"
    direct = direct_returns if returns else direct_awaits

    handrolled = QueueBus()
    stack.push_async_callback(handrolled.close)
    handrolled.consumer("bench.request", direct)

    # The README's consumer: typed, so TinyBus checks the body (an int: its exact-type fast path).
    bus = await stack.enter_async_context(EventBus())
    bus.consumer("bench.request", tinybus_returns if returns else tinybus_awaits)

    # blinker has no request/response as such, but send_async returns the receivers' return
    # values, as [(receiver, value)]: with one receiver, that is the reply (no timeout).
    signal = blinker.Namespace().signal("bench.request")
    signal.connect(blinker_returns if returns else blinker_awaits)

    # bubus's documented request/response: dispatch an event, await its first result.
    bubus_bus = bubus.EventBus()
    stack.push_async_callback(bubus_bus.stop, clear=True)
    bubus_bus.on(BubusRequest, bubus_returns if returns else bubus_awaits)

    return {
        DIRECT: lambda n: direct(n),
        HANDROLLED: lambda n: handrolled.request("bench.request", n),
        TINYBUS: lambda n: bus.request("bench.request", n),
        BLINKER: lambda n: signal.send_async(body=n),
        BUBUS: lambda n: bubus_bus.dispatch(BubusRequest(body=n)).event_result(),
    }


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
    stack: AsyncExitStack, listeners: int = 1, filtered: bool = False, patterns: int = 0
) -> dict[str, Publisher]:
    """Publish to ``listeners`` listeners of one address; with ``filtered``, through a filter
    that lets even bodies pass; with ``patterns``, that many pattern listeners that never
    match are registered too. Contenders that lack the feature are left out."""
    made: dict[str, Publisher] = {}
    for name, make in PUBLISHERS.items():
        if (filtered and name not in FILTERING) or (patterns and name not in PATTERNS):
            continue
        tally = Tally()
        made[name] = await make(stack, tally, listeners, filtered, patterns)
    return made


async def direct_publisher(
    stack: AsyncExitStack, tally: Tally, listeners: int, filtered: bool, patterns: int
) -> Publisher:
    handlers = async_listeners(tally, listeners)
    if filtered:
        (listener,) = handlers

        async def publish_filtered(n: int) -> None:
            if even(n):
                await listener(n)

        return Publisher(lambda n: publish_filtered(n), True, tally)
    if listeners == 1:
        (listener,) = handlers
        return Publisher(lambda n: listener(n), True, tally)

    async def publish_all(n: int) -> None:
        for handler in handlers:
            await handler(n)

    return Publisher(lambda n: publish_all(n), True, tally)


async def handrolled_publisher(
    stack: AsyncExitStack, tally: Tally, listeners: int, filtered: bool, patterns: int
) -> Publisher:
    # It has no patterns: with ``patterns`` it stands for the same publish without them.
    bus = QueueBus()
    stack.push_async_callback(bus.close)
    handlers = async_listeners(tally, listeners)
    if filtered:
        (listener,) = handlers

        async def filtering(body: int) -> None:  # the filter one writes by hand
            if even(body):
                await listener(body)

        handlers = [filtering]
    for handler in handlers:
        bus.on("event", handler)
    return Publisher(lambda n: bus.publish("event", n), False, tally, bus.drain)


async def tinybus_publisher(
    stack: AsyncExitStack,
    tally: Tally,
    listeners: int,
    filtered: bool,
    patterns: int,
    inline: bool = False,
) -> Publisher:
    bus = await stack.enter_async_context(EventBus())
    pipe = [ops.filter(even)] if filtered else None
    for listener in async_listeners(tally, listeners):
        bus.on("event", listener, pipe=pipe, inline=inline)
    for index, listener in enumerate(async_listeners(tally, patterns)):
        bus.on(f"other.{index}.*", listener)
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
