"""Buses in real OS processes (``worker.py``) on one NATS server, with this test's bus as a
third process: fan-out, spread, failures, timeouts, conversations, a process killed.

The two workers and their server are started once for the module (a Python process takes
a good part of a second to start); the tests that end a worker start their own."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tinybus import (
    EventBus,
    HandlerExecutionError,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Message,
    MessageValidationError,
    RemoteError,
    ReplyFailedError,
)
from tinybus.nats import NatsTransport

from .conftest import started
from .processes import Worker
from .server import NatsServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAMES = ("one", "two")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[NatsServer]:
    nats_server = await started()
    try:
        yield nats_server
    finally:
        await nats_server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def workers(
    server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Worker]]:
    logs = tmp_path_factory.mktemp("workers")
    running = {name: Worker(name, logs / f"{name}.log") for name in NAMES}
    try:
        await asyncio.gather(*(worker.start(server.url) for worker in running.values()))
        yield running
    finally:
        codes = {name: await worker.stop() for name, worker in running.items()}
    # Each closed its bus and exited cleanly when its stdin closed.
    assert codes == dict.fromkeys(NAMES, 0), {n: w.logged() for n, w in running.items()}


def connect(server: NatsServer, **options: Any) -> EventBus:
    return EventBus(
        transport=NatsTransport(server.url, **options), default_timeout=5.0, close_timeout=0.5
    )


async def heard(bus: EventBus, name: str) -> dict[str, Any]:
    """What worker ``name``'s listeners heard, and how many ``work`` requests it answered:
    a round trip through its connection, after everything it was sent before."""
    return await bus.request(f"{name}.heard", None)


async def test_a_publish_reaches_every_handler_in_every_process_once(
    server: NatsServer, workers: dict[str, Worker]
) -> None:
    async with connect(server) as bus:
        here: list[object] = []
        await bus.on("news.today", here.append).wait_exported()
        before = {name: await heard(bus, name) for name in NAMES}
        await bus.publish("news.today", {"n": 1})
        after = {name: await heard(bus, name) for name in NAMES}
    assert here == [{"n": 1}]
    for name in NAMES:
        new = after[name]["heard"][len(before[name]["heard"]) :]
        assert sorted(map(tuple, new)) == [("pattern", {"n": 1}), ("plain", {"n": 1})], name


async def test_requests_spread_over_the_consumers_of_two_processes(
    server: NatsServer, workers: dict[str, Worker]
) -> None:
    async with connect(server) as bus:
        before = {name: (await heard(bus, name))["work"] for name in NAMES}
        replies = await asyncio.gather(*(bus.request("work", n) for n in range(60)))
        after = {name: (await heard(bus, name))["work"] for name in NAMES}
    assert sorted(reply["body"] for reply in replies) == list(range(60))  # each answered once
    by_worker = Counter(reply["worker"] for reply in replies)
    # NATS picks a queue member at random: both get some (all 60 to one: p = 2**-59).
    assert set(by_worker) == set(NAMES)
    assert {name: after[name] - before[name] for name in NAMES} == dict(by_worker)


async def test_no_consumer_in_any_process_fails_at_once(
    server: NatsServer, workers: dict[str, Worker]
) -> None:
    async with connect(server) as bus:
        # Long before the request's own timeout: the server's "no responders" answers it.
        async with asyncio.timeout(2):
            with pytest.raises(HandlerNotFoundError, match="no responders"):
                await bus.request("nobody.anywhere", 1, timeout=30)
            # A worker's local=True consumer is invisible to other processes.
            with pytest.raises(HandlerNotFoundError, match="'private'"):
                await bus.request("private", 1, timeout=30)
        assert bus.stats().pending_requests == 0


async def test_a_remote_exception_arrives_with_its_type_message_and_traceback(
    server: NatsServer, workers: dict[str, Worker]
) -> None:
    async with connect(server) as bus:
        with pytest.raises(HandlerExecutionError, match="ValueError: no such order: 7") as caught:
            await bus.request("boom", 7)
    remote = caught.value.original_error
    assert isinstance(remote, RemoteError)
    assert (remote.type_name, remote.message) == ("ValueError", "no such order: 7")
    assert "worker.py" in remote.traceback
    assert 'raise ValueError(f"no such order: {message.body}")' in remote.traceback


async def test_a_remote_failure_keeps_its_code_and_a_validation_error_its_details(
    server: NatsServer, workers: dict[str, Worker]
) -> None:
    async with connect(server) as bus:
        with pytest.raises(ReplyFailedError, match="no funds") as failed:
            await bus.request("pay", 10)
        with pytest.raises(MessageValidationError, match="not a valid Order") as invalid:
            await bus.request("orders", {"item": "tea", "quantity": "many"})
        assert await bus.request("orders", {"item": "tea", "quantity": 3}) == 6
    assert (failed.value.code, failed.value.text, failed.value.address) == (402, "no funds", "pay")
    assert invalid.value.expected == "Order"
    assert invalid.value.errors[0]["loc"] == ["quantity"]


async def test_a_timeout_is_the_requesters_and_the_late_reply_is_dropped(
    server: NatsServer, workers: dict[str, Worker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tinybus")
    async with connect(server) as bus:
        with pytest.raises(HandlerTimeoutError):
            await bus.request("slow", "first", timeout=0.3)
        started_in = [name for name in NAMES if f"slow {name} first" in workers[name].lines]
        assert len(started_in) == 1  # it reached one worker, whose handler still runs
        [name] = started_in
        await bus.publish("slow.release", None)
        await heard(bus, name)  # its late reply came before this answer (one connection)
        assert bus.stats().pending_requests == 0
        assert "dropped a late reply" in caplog.text
        # The bus goes on: the released handler answers at once now.
        assert (await bus.request("slow", "second")).startswith("late from ")


async def test_conversations_cross_processes_both_ways(
    server: NatsServer, workers: dict[str, Worker]
) -> None:
    async with connect(server) as bus:
        question = await bus.request("chat", "ada", full=True)
        assert question.body == "password for ada?"
        answer = await question.reply_and_request("s3cret")
        assert answer.body == "welcome"

        async def login(message: Message[str]) -> None:
            challenge = await message.reply_and_request(f"password for {message.body}?")
            challenge.reply("welcome" if challenge.body.endswith("s3cret") else "denied")

        await bus.consumer("here.login", login).wait_exported()
        # A worker asks this process's conversation, from its process, and says how it went.
        assert await bus.request("ask", "here.login") == "password for ada? / welcome"


async def test_a_consumer_process_killed_leaves_nothing_hanging(tmp_path: Path) -> None:
    server = await started()  # its own: the module's workers consume "slow" too
    worker = Worker("doomed", tmp_path / "doomed.log")
    await worker.start(server.url)
    try:
        async with connect(server) as bus:
            waiting = asyncio.ensure_future(bus.request("slow", "lost", timeout=1.0))
            await worker.seen("slow doomed lost")
            worker.kill()
            async with asyncio.timeout(1.0 + 2):  # its deadline, and a margin
                with pytest.raises(HandlerTimeoutError):
                    await waiting
            # Once the server has seen the connection go, "no responders"; until then a
            # request ends by its deadline. None waits longer than that.
            outcomes: list[type[BaseException]] = []
            while HandlerNotFoundError not in outcomes:
                assert len(outcomes) < 20, outcomes
                async with asyncio.timeout(0.5 + 2):
                    with pytest.raises((HandlerNotFoundError, HandlerTimeoutError)) as ended:
                        await bus.request("slow", "after", timeout=0.5)
                outcomes.append(ended.type)
            assert bus.stats().pending_requests == 0
    finally:
        code = await worker.stop()
        await server.stop()
    assert code != 0  # (it was killed)
