"""The test kit, ``tinybus.testing``: its pytest plugin (run in a pytest of its own with
``pytester``), the recorder and the failure log."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from reactivex import operators as ops

from tinybus import EventBus, Message
from tinybus.testing import FailureLog, Recorder, UnexaminedFailures, run_virtual

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


# -- the plugin -----------------------------------------------------------------------------


def test_the_plugin_is_registered_by_its_entry_point_and_inert_unless_used(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(
        """
        import asyncio

        def test_plain():
            assert 1 + 1 == 2

        async def test_async_without_the_kit():
            await asyncio.sleep(0)
        """
    )
    result = suite.runpytest("--fixtures")
    result.stdout.fnmatch_lines(["*fixtures defined from tinybus.testing.plugin*"])
    result = suite.runpytest()
    result.assert_outcomes(passed=2)


def test_a_failure_never_looked_at_fails_the_test(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        async def test_forgets_a_failure(bus):
            def broken(body):
                raise ValueError("nobody saw this")

            bus.on("news", broken)
            await bus.publish("news", 1)
        """
    )
    result = suite.runpytest()
    result.assert_outcomes(passed=1, errors=1)  # (the teardown's verdict)
    result.stdout.fnmatch_lines(
        [
            "*UnexaminedFailures: 1 failure(s) reported on bus.errors were never looked at*",
            "*nobody saw this*",
        ]
    )


def test_a_failure_looked_at_passes_and_the_bus_is_closed_after(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        import pytest

        seen = []

        async def test_expects_its_failure(bus, bus_failures):
            seen.append(bus)

            def broken(body):
                raise ValueError("expected")

            bus.on("news", broken)
            await bus.publish("news", 1)
            bus_failures.expect(ValueError, match="expected")

        async def test_reads_the_whole_log(bus, bus_failures):
            bus.on("news", lambda body: 1 / 0)
            await bus.publish("news", 1)
            assert [type(f.exception) for f in bus_failures] == [ZeroDivisionError]

        def test_the_first_bus_was_closed():
            assert seen[0].is_closed
        """
    )
    suite.runpytest().assert_outcomes(passed=3)


def test_a_failure_after_the_last_look_still_fails(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        async def test_looks_too_early(bus, bus_failures):
            bus.on("news", lambda body: 1 / 0)
            assert list(bus_failures) == []
            await bus.publish("news", 1)
        """
    )
    result = suite.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ZeroDivisionError*"])


def test_options_come_from_an_overridable_fixture_and_the_plugin_can_be_turned_off(
    suite: pytest.Pytester,
) -> None:
    suite.makeconftest(
        """
        import pytest

        @pytest.fixture
        def tinybus_options():
            return {"default_timeout": 0.25}
        """
    )
    suite.makepyfile(
        """
        async def test_options(bus):
            assert bus.default_timeout == 0.25
        """
    )
    suite.runpytest().assert_outcomes(passed=1)
    result = suite.runpytest("-p", "no:tinybus")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'bus' not found*"])


def test_the_record_fixture_records_on_the_bus_fixture(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        async def test_records(bus, record):
            orders = record("orders.*")
            await bus.publish("orders.created", {"id": 1})
            await bus.publish("users.created", {"id": 2})
            message = await orders.nth(0, timeout=1)
            assert message.address == "orders.created"
            assert orders.bodies == [{"id": 1}]
        """
    )
    suite.runpytest().assert_outcomes(passed=1)


# -- the recorder ----------------------------------------------------------------------------


async def test_a_recorder_keeps_bodies_headers_and_order_of_every_kind(bus: EventBus) -> None:
    bus.consumer("jobs", lambda message: "done")
    with Recorder(bus, "jobs") as jobs:
        await bus.publish("jobs", 1, headers={"n": "1"})
        await bus.send("jobs", 2)
        assert await bus.request("jobs", 3) == "done"
    await bus.publish("jobs", 4)  # stopped: not recorded
    assert jobs.bodies == [1, 2, 3]
    assert [message.kind for message in jobs.messages] == ["publish", "send", "request"]
    assert jobs.headers[0]["n"] == "1"
    assert len(jobs) == 3
    assert bus.stats().addresses["jobs"].handlers[0].delivered == 4  # it took no turn


async def test_a_recorder_waits_for_the_nth_and_a_matching_message(bus: EventBus) -> None:
    recorder = Recorder(bus, "ticks", kinds=["publish"])

    async def tick() -> None:
        for n in range(5):
            await asyncio.sleep(0)
            await bus.publish("ticks", n)

    ticking = asyncio.create_task(tick())
    third = await recorder.nth(2, timeout=1)
    big = await recorder.matching(lambda message: message.body > 3, timeout=1)
    first_two = await recorder.count(2, timeout=1)
    await ticking
    assert (third.body, big.body) == (2, 4)
    assert [message.body for message in first_two] == [0, 1]
    recorder.stop()


def test_a_recorder_times_out_on_the_loops_clock_saying_what_it_got() -> None:
    async def scenario() -> tuple[str, float]:
        async with EventBus() as bus:
            recorder = Recorder(bus, "ticks")
            await bus.publish("ticks", "only one")
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(TimeoutError) as caught:
                await recorder.nth(1, timeout=30)
            return str(caught.value), loop.time() - start

    text, waited = run_virtual(scenario())
    assert waited == pytest.approx(30)
    assert text == (
        "waited 30 s for message #1 (counting from 0) at 'ticks'; recorded 1: ['only one']"
    )


async def test_a_recorder_refuses_what_it_cannot_do(bus: EventBus) -> None:
    with pytest.raises(ValueError, match="kinds are among"):
        Recorder(bus, "x", kinds=["reply"])
    recorder = Recorder(bus, "x")
    with pytest.raises(ValueError, match="index must be an int >= 0"):
        await recorder.nth(-1)
    assert repr(recorder) == "<Recorder of 'x': 0 recorded>"


def test_a_recorder_on_the_virtual_clock_sees_a_debounce_settle() -> None:
    async def scenario() -> tuple[list[object], float]:
        async with EventBus() as bus:
            bus.on(
                "typed", lambda body: bus.publish_nowait("search", body), pipe=[ops.debounce(0.5)]
            )
            searches = Recorder(bus, "search")
            for text in ("t", "ti", "tin"):
                await bus.publish("typed", text)
            loop = asyncio.get_running_loop()
            start = loop.time()
            await searches.nth(0)
            return searches.bodies, loop.time() - start

    bodies, waited = run_virtual(scenario())
    assert bodies == ["tin"]
    assert waited == pytest.approx(0.5)


# -- the failure log -------------------------------------------------------------------------


async def test_the_log_knows_what_was_looked_at() -> None:
    async with EventBus() as bus:
        log = FailureLog(bus)

        @bus.on("news")
        def broken(message: Message[int]) -> None:
            raise ValueError(f"bad {message.body}")

        await bus.publish("news", 1)
        await bus.publish("news", 2)
        assert log.expect(ValueError, match="bad 2").message.body == 2  # type: ignore[union-attr]
        with pytest.raises(UnexaminedFailures, match="bad 1"):
            log.check()
        with pytest.raises(AssertionError, match="no failure KeyError was reported"):
            log.expect(KeyError)
        assert len(log) == 2  # reading the whole log looks at all of it
        log.check()
        log.clear()
        assert log == []
        assert repr(log) == "<FailureLog: 0 recorded, 0 not looked at>"


def test_the_log_waits_for_failures_on_the_loops_clock() -> None:
    async def scenario() -> tuple[list[str], str, float]:
        async with EventBus() as bus:
            log = FailureLog(bus)

            @bus.on("news")
            async def broken(body: int) -> None:
                await asyncio.sleep(2)
                raise ValueError(f"late {body}")

            await bus.publish("news", 1)  # (returns after the handler failed, 2 s later)
            loop = asyncio.get_running_loop()
            start = loop.time()
            got = [str(record.exception) for record in await log.wait(1)]
            log.check()  # what wait returned was looked at
            with pytest.raises(TimeoutError) as caught:
                await log.wait(2, timeout=10)
            return got, str(caught.value), loop.time() - start

    got, text, waited = run_virtual(scenario())
    assert got == ["late 1"]
    assert text.startswith("waited 10 s for 2 failure(s) on bus.errors; got 1:")
    assert waited == pytest.approx(10)


# -- the docs page's two versions of one test ---------------------------------------------


def test_the_docs_test_runs_the_same_without_and_with_the_kit(suite: pytest.Pytester) -> None:
    page = (Path(__file__).parents[2] / "docs" / "testing.md").read_text()
    blocks = re.findall(r"^```py\n(.*?)^```$", page, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2
    suite.makepyfile(test_without_the_kit=blocks[0], test_with_the_kit=blocks[1])
    result = suite.runpytest("-s")
    result.assert_outcomes(passed=2)
    assert result.stdout.str().count("audit 1") == 2
