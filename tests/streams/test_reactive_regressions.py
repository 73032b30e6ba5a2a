"""Regressions found by review of the reactive features: actors that send to themselves,
moving to a new loop, pipelines that end or fail, drain and close from inside handlers."""

import asyncio

import pytest
from reactivex import operators as ops

from tinybus import EventBus


async def _drains(bus: EventBus, within: float = 0.5) -> bool:
    try:
        async with asyncio.timeout(within):
            await bus.drain()
        return True
    except TimeoutError:
        return False


def test_actor_that_publishes_to_itself_synchronously_is_not_wedged():
    async def main():
        bus = EventBus(close_timeout=0.1)
        seen = []

        def actor(n):
            seen.append(n)
            if n > 0:
                bus.publish_nowait("a", n - 1)

        bus.on("a", actor, max_concurrency=1)
        await bus.publish("a", 2)
        assert await _drains(bus)
        assert seen == [2, 1, 0]
        await bus.close()

    asyncio.run(main())


def test_buffered_messages_are_handled_after_moving_to_a_new_loop():
    bus = EventBus(close_timeout=0.1)
    seen = []

    phase = [1]

    async def slow(n):
        seen.append(n)
        if phase[0] == 1:
            await asyncio.sleep(10)

    bus.on("a", slow, max_concurrency=1)

    async def first():
        for n in range(3):
            bus.publish_nowait("a", n)
        await asyncio.sleep(0)

    async def second():
        await bus.publish("a", 99)
        ok = await _drains(bus)
        await bus.close()
        return ok

    asyncio.run(first())
    phase[0] = 2
    assert asyncio.run(second())
    assert 99 in seen


def test_close_releases_senders_of_an_ended_paused_registration():
    async def main():
        bus = EventBus(close_timeout=0.1)
        dropped = []
        bus.errors.subscribe(lambda f: dropped.append(f))
        reg = bus.on("r", lambda v: None, pipe=[ops.take(3)], max_buffered=1)
        reg.pause()
        await bus.publish("r", 1)
        blocked = [asyncio.create_task(bus.publish("r", v)) for v in (2, 3)]
        await asyncio.sleep(0.01)
        await bus.close()
        _, pending = await asyncio.wait(blocked, timeout=0.5)
        assert not pending
        assert len(dropped) == 3

    asyncio.run(main())


def test_drain_from_an_actor_handler_with_a_queued_message_returns():
    async def main():
        bus = EventBus(close_timeout=0.1)
        result = []

        async def actor(n):
            if n == 0:
                await asyncio.sleep(0)
                result.append(await _drains(bus))

        bus.on("a", actor, max_concurrency=1)
        bus.publish_nowait("a", 0)
        bus.publish_nowait("a", 1)
        await asyncio.sleep(0.7)
        await bus.close()
        assert result == [True]

    asyncio.run(main())


def test_piped_registration_made_while_the_loop_is_not_running_receives():
    loop = asyncio.new_event_loop()
    try:
        bus = EventBus()
        loop.run_until_complete(bus.publish("warmup", None))
        got = []
        bus.on("t", got.append, pipe=[ops.map(lambda c: c * 2)])
        loop.run_until_complete(bus.publish("t", 1))
        loop.run_until_complete(bus.close())
        assert got == [2]
    finally:
        loop.close()


def test_a_pipe_that_fails_to_build_leaves_no_registration_behind():
    async def main():
        async with EventBus() as bus:
            with pytest.raises(TypeError, match="pipe must hold reactivex operators"):
                # ops.map, not ops.map(function): pyright flags it; at run time, a clear error
                bus.on("x", print, pipe=[ops.map])  # pyright: ignore[reportCallIssue, reportArgumentType]
            assert bus.get_listeners("x") == []
            assert bus.stats().addresses == {}

    asyncio.run(main())


def test_drain_returns_after_a_timeout_operator_fired():
    async def main():
        async with EventBus(close_timeout=0.1) as bus:
            bus.on("hb", lambda v: None, pipe=[ops.timeout(0.05)])
            await bus.publish("hb", 1)
            assert await _drains(bus, 1.0)

    asyncio.run(main())


def test_cancelling_a_publisher_does_not_withdraw_a_listeners_request():
    async def main():
        async with EventBus(close_timeout=0.1) as bus:

            async def svc(message):
                await asyncio.sleep(0.05)
                return "ok"

            bus.consumer("svc", svc, max_concurrency=1, max_buffered=0)
            bus.publish_nowait("svc", "occupy")
            outcome = []

            async def listener(_):
                try:
                    outcome.append(await bus.request("svc", "x", timeout=0.5))
                except Exception as exc:
                    outcome.append(type(exc).__name__)

            bus.on("evt", listener)
            pub = asyncio.create_task(bus.publish("evt", None))
            await asyncio.sleep(0.01)
            pub.cancel()
            await asyncio.sleep(0.3)
            assert outcome == ["ok"]

    asyncio.run(main())


def test_sync_handler_raising_cancelled_error_does_not_leak_a_slot():
    async def main():
        bus = EventBus(close_timeout=0.1)
        got = []
        failures = []
        bus.errors.subscribe(failures.append)

        def handler(n):
            if n == 0:
                f = asyncio.get_running_loop().create_future()
                f.cancel()
                f.result()
            got.append(n)

        bus.on("a", handler, max_concurrency=1)
        await bus.publish("a", 0)  # the handler's CancelledError is its failure, not ours
        assert [type(f.exception) for f in failures] == [asyncio.CancelledError]
        await bus.publish("a", 1)
        assert await _drains(bus)
        assert got == [1]
        await bus.close()

    asyncio.run(main())


def test_close_on_a_new_loop_reports_what_was_buffered():
    bus = EventBus()
    reasons = []
    bus.errors.subscribe(lambda f: reasons.append(getattr(f.exception, "reason", None)))
    reg = bus.on("rows", print)
    reg.pause()

    async def first():
        await bus.publish("rows", 1)

    asyncio.run(first())
    asyncio.run(bus.close())
    assert reasons == ["closed"]
