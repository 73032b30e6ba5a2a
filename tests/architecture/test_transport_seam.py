"""The seam for a transport between processes (``tinybus._transport``), proven with an
in-memory fake that connects several buses in one loop, as processes on a broker would be.

The fake does what a real transport must: it offers the registrations a bus exports, hands
published messages to the other buses' handlers, a send or request to one remote consumer
(when the bus has none of its own), a scatter-gather request to every remote consumer, and
carries answers back to the requester. Messages and answers cross it as copies, as they would
cross a wire.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from tinybus import (
    EventBus,
    HandlerExecutionError,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Message,
)
from tinybus._endpoint import Endpoint
from tinybus._exchange import Reply
from tinybus._patterns import PatternIndex
from tinybus._transport import TransportHost
from tinybus.testing import run_virtual


class Broker:
    """What the processes share: the fakes connected to it."""

    def __init__(self) -> None:
        self.transports: list[FakeTransport] = []

    def transport(self) -> FakeTransport:
        return FakeTransport(self)


class FakeTransport:
    """An in-memory transport: every bus connected to one ``Broker`` is another process."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.host: TransportHost | None = None
        self.exported: list[Endpoint] = []
        self.carried = 0  # messages and answers that crossed
        self._turns = itertools.count()

    async def start(self, host: TransportHost) -> None:
        self.host = host
        self.broker.transports.append(self)

    def closing(self) -> None:
        self.exported.clear()  # (other buses stop reaching this one's consumers)

    async def close(self) -> None:
        self.broker.transports.remove(self)
        self.host = None

    def export(self, endpoint: Endpoint) -> None:
        self.exported.append(endpoint)

    def unexport(self, endpoint: Endpoint) -> None:
        if endpoint in self.exported:  # (not once closing() withdrew everything)
            self.exported.remove(endpoint)

    async def wait_exported(self, endpoint: Endpoint) -> None:
        assert endpoint in self.exported  # (reachable as soon as exported)

    def _others(self) -> list[FakeTransport]:
        return [t for t in self.broker.transports if t is not self and t.host is not None]

    def _reaches(self, address: str, consumers_only: bool) -> bool:
        for endpoint in self.exported:
            if consumers_only and endpoint.role != "consumer":
                continue
            if endpoint.address == address:
                return True
            if not consumers_only:
                index: PatternIndex[None] = PatternIndex()
                if "*" in endpoint.address or ">" in endpoint.address:
                    index.add(endpoint.address, None)
                    if index.match(address):
                        return True
        return False

    def _deliver(self, message: Message[Any], answer: Callable[[Reply], None] | None) -> None:
        assert self.host is not None
        self.host.receive(self._carry(message), answer)

    def _carry(self, message: Message[Any]) -> Message[Any]:
        self.carried += 1
        copy = Message(message.body, address=message.address, headers=message.headers)
        copy.kind = message.kind
        copy.reply_address = message.reply_address
        return copy

    def publish(self, message: Message[Any]) -> None:
        for other in self._others():
            if other._reaches(message.address, consumers_only=False):
                other._deliver(message, None)

    def _consumer(self, address: str) -> FakeTransport | None:
        others = [t for t in self._others() if t._reaches(address, consumers_only=True)]
        return others[next(self._turns) % len(others)] if others else None

    def send(self, message: Message[Any]) -> bool:
        other = self._consumer(message.address)
        if other is None:
            return False
        other._deliver(message, None)
        return True

    def request(self, message: Message[Any], timeout: float) -> bool:
        other = self._consumer(message.address)
        if other is None:
            return False
        other._deliver(message, self._answer_back())
        return True

    def request_all(self, message: Message[Any], timeout: float) -> int | None:
        reached = 0
        for other in self._others():
            if other._reaches(message.address, consumers_only=True):
                assert other.host is not None
                reached += other.host.receive_all(other._carry(message), self._answer_back())
        return reached

    def _answer_back(self) -> Callable[[Reply], None]:
        """Where another bus's answers go: back across the wire, to this (the requester's) bus."""
        host = self.host
        assert host is not None

        def answer(reply: Reply) -> None:
            self.carried += 1
            host.answer(Reply(reply.reply_address, reply.body, reply.error, None, reply.headers))

        return answer


def connected(broker: Broker, **options: Any) -> EventBus:
    return EventBus(transport=broker.transport(), default_timeout=5.0, close_timeout=0.1, **options)


async def test_a_publish_reaches_the_listeners_of_every_bus_exactly_once() -> None:
    broker = Broker()
    heard: list[tuple[str, int]] = []
    async with connected(broker) as one, connected(broker) as two:
        one.on("news", lambda body: heard.append(("one", body)))
        two.on("news", lambda body: heard.append(("two", body)))
        two.on("n*", lambda body: heard.append(("two, by a pattern", body)))
        two.on("news.*", lambda body: heard.append(("never", body)))
        await one.publish("news", 1)
        await two.publish("news", 2)
        await one.drain()
        await two.drain()
    assert sorted(heard) == [("one", 1), ("one", 2), ("two", 1), ("two", 2)]


async def test_a_request_with_no_local_consumer_is_answered_by_another_bus() -> None:
    broker = Broker()
    async with connected(broker) as requester, connected(broker) as responder:

        @responder.consumer("double")
        async def double(message: Message[int]) -> int:
            await asyncio.sleep(0)
            return message.body * 2

        assert await requester.request("double", 21) == 42
        assert responder.stats().addresses["double"].handlers[0].delivered == 1
        assert requester.stats().totals.replied == 1
        assert requester.stats().pending_requests == 0


async def test_a_local_consumer_answers_first() -> None:
    broker = Broker()
    async with connected(broker) as one, connected(broker) as two:
        one.consumer("who", lambda message: "one")
        two.consumer("who", lambda message: "two")
        assert [await one.request("who", None) for _ in range(3)] == ["one"] * 3
        assert [await two.request("who", None) for _ in range(3)] == ["two"] * 3


async def test_a_remote_failure_reaches_the_requester() -> None:
    broker = Broker()
    async with connected(broker) as requester, connected(broker) as responder:

        @responder.consumer("broken")
        def broken(message: Message[int]) -> int:
            raise ValueError("no")

        with pytest.raises(HandlerExecutionError, match="raised ValueError: no"):
            await requester.request("broken", 1)


async def test_a_remote_timeout_is_the_requesters_and_the_late_reply_is_dropped() -> None:
    broker = Broker()
    release = asyncio.Event()
    async with connected(broker) as requester, connected(broker) as responder:

        @responder.consumer("slow")
        async def slow(message: Message[int]) -> int:
            await release.wait()
            return 1

        with pytest.raises(HandlerTimeoutError):
            await requester.request("slow", 1, timeout=0.05)
        release.set()
        await responder.drain()
        assert requester.stats().totals.replied == 0
        assert requester.stats().pending_requests == 0


async def test_nobody_anywhere_is_handler_not_found_at_once() -> None:
    broker = Broker()
    async with connected(broker) as one, connected(broker) as two:
        two.on("only.listeners", lambda body: None)
        with pytest.raises(HandlerNotFoundError):
            await one.request("nobody", 1)
        with pytest.raises(HandlerNotFoundError):
            await one.send("only.listeners", 1)


async def test_a_local_registration_is_not_offered_to_other_buses() -> None:
    broker = Broker()
    heard: list[int] = []
    async with connected(broker) as one, connected(broker) as two:
        two.consumer("private", lambda message: "here", local=True)
        two.on("private.news", heard.append, local=True)
        with pytest.raises(HandlerNotFoundError):
            await one.request("private", None)
        await one.publish("private.news", 1)
        assert heard == []
        assert await two.request("private", None) == "here"


async def test_send_reaches_a_remote_consumer_and_unregistering_withdraws_it() -> None:
    broker = Broker()
    got: list[int] = []
    async with connected(broker) as one, connected(broker) as two:
        registration = two.consumer("jobs", lambda message: got.append(message.body))
        await one.send("jobs", 1)
        await two.drain()
        registration.unregister()
        with pytest.raises(HandlerNotFoundError):
            await one.send("jobs", 2)
    assert got == [1]


async def test_without_a_transport_nothing_leaves_the_bus() -> None:
    broker = Broker()
    async with EventBus() as alone, connected(broker) as other:
        other.consumer("echo", lambda message: message.body)
        with pytest.raises(HandlerNotFoundError):
            await alone.request("echo", 1)


# -- scatter-gather across buses -------------------------------------------------------------


class UncountingTransport(FakeTransport):
    """A transport that cannot count remote consumers (as on NATS, where subscribers are
    anonymous): ``request_all`` says None, and the requester waits out its timeout."""

    def request_all(self, message: Message[Any], timeout: float) -> int | None:
        super().request_all(message, timeout)
        return None


async def test_request_all_gathers_the_consumers_of_every_bus() -> None:
    broker = Broker()
    async with connected(broker) as one, connected(broker) as two, connected(broker) as three:
        one.consumer("census", lambda message: "one")
        two.consumer("census", lambda message: "two, first")
        two.consumer("census", lambda message: "two, second")

        @three.consumer("census")
        def broken(message: Message[Any]) -> str:
            raise ValueError("three cannot count")

        three.consumer("census", lambda message: "never", local=True)
        gathered = await one.request_all("census", None, timeout=5)
    assert gathered.asked == 4
    assert sorted(gathered.replies) == ["one", "two, first", "two, second"]
    [failed] = gathered.failures
    assert isinstance(failed.error, HandlerExecutionError)
    assert "three cannot count" in str(failed.error)
    assert failed.handler is None  # (another process's: no handler to name here)
    assert gathered.missing == 0


async def test_request_all_across_buses_returns_when_every_answer_is_in() -> None:
    broker = Broker()
    async with connected(broker) as requester, connected(broker) as responder:

        @responder.consumer("ping")
        async def pong(message: Message[int]) -> int:
            await asyncio.sleep(0)
            return message.body + 1

        async with asyncio.timeout(1):  # (its own timeout is 30 s)
            gathered = await requester.request_all("ping", 1, timeout=30)
        assert gathered.replies == [2]
        assert requester.stats().pending_requests == 0


async def test_request_all_with_nobody_anywhere_is_empty_at_once() -> None:
    broker = Broker()
    async with connected(broker) as one, connected(broker) as two:
        two.on("census", lambda body: None)  # a listener is no consumer
        async with asyncio.timeout(1):
            gathered = await one.request_all("census", None, timeout=30)
    assert list(gathered) == []
    assert gathered.asked == 0


def test_a_transport_that_cannot_count_makes_request_all_wait_out_its_timeout() -> None:
    async def scenario() -> tuple[list[str], int | None, float]:
        broker = Broker()
        one = EventBus(transport=UncountingTransport(broker), close_timeout=0.1)
        async with one, connected(broker) as two:
            two.consumer("census", lambda message: "two")
            loop = asyncio.get_running_loop()
            start = loop.time()
            gathered = await one.request_all("census", None, timeout=3)
            return gathered.replies, gathered.asked, loop.time() - start

    replies, asked, waited = run_virtual(scenario())
    assert (replies, asked) == (["two"], None)
    assert waited == pytest.approx(3)


async def test_a_stream_is_a_registration_other_buses_publish_to() -> None:
    broker = Broker()
    async with connected(broker) as one, connected(broker) as two:
        async with two.stream("news.*") as news:
            await one.publish("news.today", "hello")
            message = await news.next(timeout=5)
        async with two.stream("news.*", local=True) as private:
            await one.publish("news.today", "not for you")
            await two.publish("news.today", "for you")
            mine = await private.next(timeout=5)
    assert (message.address, message.body) == ("news.today", "hello")
    assert mine.body == "for you"


async def test_a_message_from_another_bus_passes_the_receiving_buss_inbound_interceptors() -> None:
    broker = Broker()
    async with connected(broker) as sender, connected(broker) as receiver:
        stamped: list[tuple[str, str]] = []
        receiver.add_inbound_interceptor(
            lambda envelope: envelope.message.with_headers({"inbound": "receiver"})
        )
        sender.add_inbound_interceptor(
            lambda envelope: envelope.message.with_headers({"inbound": "sender"})
        )

        @receiver.on("news")
        def heard(message: Message[int]) -> None:
            stamped.append(("news", message.headers["inbound"]))

        receiver.consumer("who", lambda message: message.headers["inbound"])
        await sender.publish("news", 1)
        await receiver.drain()
        assert stamped == [("news", "receiver")]
        assert await sender.request("who", None) == "receiver"
