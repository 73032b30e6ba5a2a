"""Hostile and bad input at every entry point: each is refused at the call with an error of the
right type whose message names the problem, and the bus keeps working afterwards.

What is *accepted* on purpose (pinned below, so that a change is a decision):

- an address is any non-empty ``str`` (or str subclass, or str-valued Enum member) of at most
  ``MAX_ADDRESS_LENGTH`` characters (code points, not bytes), taken verbatim: whitespace,
  control characters, empty segments (``a..b``) and any unicode are allowed, nothing is
  stripped or normalised (``"é"`` and ``"e\\u0301"`` are two addresses), and ``*`` or ``>``
  inside a longer segment (``a.b*``, ``a>b``) are literal characters, not wildcards;
- header names and values are exactly ``str`` (a str subclass is refused), any content,
  any number of them; ``{"name": []}`` adds no header.

Tests marked ``xfail(strict=True, reason="DEFECT: ...")`` assert the behaviour the bus should
have and does not have yet.
"""

import asyncio
import inspect
import itertools
import logging
import math
import re
import sys
import uuid
from collections.abc import Callable
from enum import Enum, IntEnum
from functools import partial
from typing import Annotated, Any, Literal, cast

import pytest
from pydantic import BaseModel, Strict

from tests.conftest import on_uvloop
from tinybus import (
    MAX_ADDRESS_LENGTH,
    Address,
    DeliveryOptions,
    Event,
    EventBus,
    HandlerAlreadyRegisteredError,
    HandlerExecutionError,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Headers,
    Message,
    MessageValidationError,
)
from tinybus.testing import FailureLog

type Call = Callable[[Any, Any], object]
type Errors = type[Exception] | tuple[type[Exception], ...]

# A value of the wrong type for a numeric or choice option: TinyBus raises ValueError for these
# (tests/types/test_options.py pins max_concurrency=1.5), although TypeError is the usual Python
# answer; either is accepted here, so that neither choice is locked in.
WRONG_TYPE = (TypeError, ValueError)


class Point(BaseModel):
    x: int
    y: int


class S(str):
    """A str subclass that is not an Enum."""


class Numbered(IntEnum):
    ONE = 1


class NoneValued(Enum):
    NOTHING = None


class BytesValued(Enum):
    RAW = b"raw"


class EmptyStr(str, Enum):
    EMPTY = ""


class LongStr(str, Enum):
    LONG = "l" * (MAX_ADDRESS_LENGTH + 1)
    LIMIT = "l" * MAX_ADDRESS_LENGTH


def _noop(_: object) -> None:
    pass


async def outcome(result: object) -> object:
    """The result of an entry point, awaited if it is awaitable."""
    if inspect.isawaitable(result):
        return await result
    return result


async def refusals(
    calls: dict[str, Call], bus: EventBus, arg: object, error: Errors, says: str
) -> list[str]:
    """Every entry point of ``calls`` that does not refuse ``arg`` with ``error`` whose message
    matches ``says``, and what it did instead."""
    problems: list[str] = []
    for name, call in calls.items():
        try:
            await outcome(call(bus, arg))
        except error as exc:
            if not re.search(says, str(exc)):
                problems.append(f"{name}: unclear message {str(exc)!r}")
        except Exception as exc:
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{name}: accepted {arg!r:.60}")
    return problems


_probes = itertools.count()


async def assert_bus_works(bus: EventBus) -> None:
    """A fresh consumer answers a request and a fresh listener hears a publish; nothing is
    left pending."""
    address = f"probe.{next(_probes)}"
    heard: list[int] = []
    consumer = bus.consumer(address, lambda message: message.body + 1)
    listener = bus.on(address, heard.append)
    assert await bus.request(address, 41) == 42
    await bus.publish(address, 7)
    assert heard == [7]
    consumer.unregister()
    listener.unregister()
    assert not bus.is_closed
    assert bus.stats().pending_requests == 0


def assert_quiet(bus: EventBus) -> None:
    stats = bus.stats()
    assert (
        stats.subscriptions,
        stats.pending_requests,
        stats.running_handlers,
        stats.scheduled_timers,
        stats.queued,
    ) == (0, 0, 0, 0, 0)
    assert stats.addresses == {}


# How many frames a chain of handlers may add to the stack, whatever its length: well below
# the interpreter's recursion limit (1000). Measured: about 115 for a chain of 1,000 requests.
STACK_BOUND = 300


def frames() -> int:
    """How deep the caller's stack is, in frames."""
    frame = sys._getframe(1)
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


# -- addresses ----------------------------------------------------------------------------

ADDRESS_CALLS: dict[str, Call] = {
    "request": lambda bus, a: bus.request(a, 1),
    "publish": lambda bus, a: bus.publish(a, 1),
    "send": lambda bus, a: bus.send(a, 1),
    "publish_nowait": lambda bus, a: bus.publish_nowait(a, 1),
    "send_nowait": lambda bus, a: bus.send_nowait(a, 1),
    "consumer": lambda bus, a: bus.consumer(a, _noop),
    "@consumer": lambda bus, a: bus.consumer(a),
    "on": lambda bus, a: bus.on(a, _noop),
    "@on": lambda bus, a: bus.on(a),
    "observe": lambda bus, a: bus.observe(a),
    "sender": lambda bus, a: bus.sender(a),
    "publisher": lambda bus, a: bus.publisher(a),
    "Address": lambda bus, a: Address[int, int](a),
    "Event": lambda bus, a: Event[int](a),
    "remove_consumer": lambda bus, a: bus.remove_consumer(a),
    "remove_listener": lambda bus, a: bus.remove_listener(a, _noop),
}
THREADSAFE_CALLS: dict[str, Call] = {
    "publish_threadsafe": lambda bus, a: bus.publish_threadsafe(a, 1),
    "send_threadsafe": lambda bus, a: bus.send_threadsafe(a, 1),
}

TOO_LONG = f"at most {MAX_ADDRESS_LENGTH} characters, got one of {MAX_ADDRESS_LENGTH + 1}"
NOT_AN_ADDRESS = "an address must be a str or a str-valued Enum member"
BAD_ADDRESSES: list[Any] = [
    pytest.param("", ValueError, "non-empty string, got ''", id="empty"),
    pytest.param("a" * (MAX_ADDRESS_LENGTH + 1), ValueError, TOO_LONG, id="too-long"),
    pytest.param("😀" * (MAX_ADDRESS_LENGTH + 1), ValueError, TOO_LONG, id="too-long-emoji"),
    pytest.param("x" * 10**6, ValueError, "got one of 1000000", id="a-megabyte"),
    pytest.param(S(""), ValueError, "non-empty string", id="empty-str-subclass"),
    pytest.param(S("a" * (MAX_ADDRESS_LENGTH + 1)), ValueError, TOO_LONG, id="long-subclass"),
    pytest.param(LongStr.LONG, ValueError, TOO_LONG, id="too-long-enum"),
    pytest.param(None, TypeError, f"{NOT_AN_ADDRESS}, got None of type NoneType", id="None"),
    pytest.param(42, TypeError, "got 42 of type int", id="int"),
    pytest.param(4.2, TypeError, "got 4.2 of type float", id="float"),
    pytest.param(b"a.b", TypeError, "got b'a.b' of type bytes", id="bytes"),
    pytest.param(object(), TypeError, "got <object object at .*> of type object", id="object"),
    pytest.param(["a"], TypeError, r"got \['a'\] of type list", id="list"),
    pytest.param(Numbered.ONE, TypeError, "non-empty str value.*with value 1", id="int-enum"),
    pytest.param(NoneValued.NOTHING, TypeError, "str value.*value None", id="None-enum"),
    pytest.param(BytesValued.RAW, TypeError, "str value.*value b'raw'", id="bytes-enum"),
    pytest.param(EmptyStr.EMPTY, TypeError, "non-empty str value", id="empty-enum"),
]


@pytest.mark.parametrize(("address", "error", "says"), BAD_ADDRESSES)
async def test_bad_address_is_refused_by_every_entry_point(
    bus: EventBus, address: Any, error: Errors, says: str
) -> None:
    assert await refusals(ADDRESS_CALLS, bus, address, error, says) == []
    assert bus.get_consumers() == []
    await assert_bus_works(bus)


@pytest.mark.parametrize(
    ("argument", "error", "says"),
    [
        pytest.param(None, TypeError, NOT_AN_ADDRESS, id="None-address"),
        pytest.param("", ValueError, "non-empty string", id="empty-address"),
        pytest.param("a" * (MAX_ADDRESS_LENGTH + 1), ValueError, TOO_LONG, id="long-address"),
        pytest.param("a.*", ValueError, "concrete addresses", id="pattern"),
    ],
)
async def test_threadsafe_calls_refuse_a_bad_address_at_the_call(
    bus: EventBus, argument: Any, error: Errors, says: str
) -> None:
    problems = await refusals(THREADSAFE_CALLS, bus, argument, error, says)
    await bus.drain()
    assert problems == []


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("a" * MAX_ADDRESS_LENGTH, id="at-the-limit"),
        pytest.param("😀" * MAX_ADDRESS_LENGTH, id="emoji-at-the-limit"),
        pytest.param(S("s" * MAX_ADDRESS_LENGTH), id="subclass-at-the-limit"),
        pytest.param(LongStr.LIMIT, id="enum-at-the-limit"),
        pytest.param(S("plain"), id="str-subclass"),
        pytest.param(" ", id="space"),
        pytest.param(" padded ", id="padded"),
        pytest.param("tab\there", id="tab"),
        pytest.param("line\nbreak", id="newline"),
        pytest.param("nul\x00byte", id="nul"),
        pytest.param("bell\x07\x1b[31m", id="control-and-escape"),
        pytest.param("a..b", id="empty-segment"),
        pytest.param(".lead", id="leading-dot"),
        pytest.param("trail.", id="trailing-dot"),
        pytest.param("a.b*", id="star-inside-segment"),
        pytest.param("a>b.c", id="gt-inside-segment"),
        pytest.param("é.\u200b.日本", id="unicode-zero-width"),
        pytest.param("\ud800", id="lone-surrogate"),
    ],
)
async def test_unusual_but_valid_addresses_route_verbatim(bus: EventBus, address: str) -> None:
    plain = str.__str__(address)
    heard: list[Message[Any]] = []
    bus.consumer(address, lambda message: message.address)
    observed: list[Message[Any]] = []
    bus.observe(address).subscribe(observed.append)

    def whole(message: Message[Any]) -> None:
        heard.append(message)

    bus.on(address, whole)
    reply = await bus.request(plain, None)
    assert type(reply) is str
    assert reply == plain
    await bus.publish(address, 1)
    assert [type(m.address) for m in heard] == [str]
    assert [m.address for m in heard + observed] == [plain, plain]
    assert await bus.request(Address[None, str](address), None) == plain
    assert bus.sender(address).address == plain
    await assert_bus_works(bus)


@pytest.mark.parametrize(
    ("one", "other"),
    [("a", " a"), ("a", "a "), ("A", "a"), ("é", "e\u0301"), ("a.b", "a..b"), ("x", "x\x00")],
)
async def test_addresses_are_not_normalised(bus: EventBus, one: str, other: str) -> None:
    bus.consumer(one, lambda message: "one")
    assert await bus.request(one, None) == "one"
    with pytest.raises(HandlerNotFoundError, match="no consumer is registered at address"):
        await bus.request(other, None)


PATTERNS = ["a.*", "a.>", "*", ">", "*.b", "a.*.c", "*.*.>"]
MISPLACED = ["a.>.b", ">.a", "a.>.>", ">.>"]
EXACT_ONLY = "concrete addresses|address is exact|must be the last segment"


@pytest.mark.parametrize("address", PATTERNS + MISPLACED)
async def test_patterns_are_refused_where_an_exact_address_is_required(
    bus: EventBus, address: str
) -> None:
    refusing = {name: ADDRESS_CALLS[name] for name in ("consumer", "publish", "publish_nowait")}
    refusing["@consumer(...)(handler)"] = lambda bus, a: bus.consumer(a)(_noop)
    assert await refusals(refusing, bus, address, ValueError, EXACT_ONLY) == []
    await assert_bus_works(bus)


@pytest.mark.parametrize("address", MISPLACED)
async def test_a_misplaced_gt_is_refused_by_listeners_and_observers_too(
    bus: EventBus, address: str
) -> None:
    calls = {name: ADDRESS_CALLS[name] for name in ("on", "observe")}
    calls["@on(...)(listener)"] = lambda bus, a: bus.on(a)(_noop)
    says = "'>' must be the last segment of a pattern"
    assert await refusals(calls, bus, address, ValueError, says) == []
    await assert_bus_works(bus)


@pytest.mark.parametrize("address", PATTERNS)
async def test_listeners_observers_and_typed_addresses_accept_patterns(
    bus: EventBus, address: str
) -> None:
    bus.on(address, _noop)
    bus.observe(address).subscribe(_noop)
    assert Event[int](address).value == address
    assert Address[int, int](address).value == address
    bus.remove_listener(address, _noop)
    assert bus.get_listeners(address) == []


@pytest.mark.parametrize("address", ["a.*", ">", "a.>.b"])
async def test_requests_sends_and_producers_refuse_patterns(bus: EventBus, address: str) -> None:
    calls = {
        name: ADDRESS_CALLS[name]
        for name in ("request", "send", "send_nowait", "sender", "publisher")
    }
    assert await refusals(calls, bus, address, ValueError, EXACT_ONLY) == []


# -- headers ------------------------------------------------------------------------------


async def _reply_with_headers(bus: Any, headers: Any) -> object:
    def answer(message: Message[Any]) -> None:
        message.reply("ok", headers=headers)

    registration = bus.consumer("headers.reply", answer)
    try:
        await bus.request("headers.reply", None)
    except HandlerExecutionError as error:
        raise error.original_error from None
    finally:
        registration.unregister()
    return None


HEADER_CALLS: dict[str, Call] = {
    "request": lambda bus, h: bus.request("hdr", 1, headers=h),
    "publish": lambda bus, h: bus.publish("hdr", 1, headers=h),
    "send": lambda bus, h: bus.send("hdr", 1, headers=h),
    "publish_nowait": lambda bus, h: bus.publish_nowait("hdr", 1, headers=h),
    "send_nowait": lambda bus, h: bus.send_nowait("hdr", 1, headers=h),
    "sender": lambda bus, h: bus.sender("hdr", headers=h),
    "publisher": lambda bus, h: bus.publisher("hdr", headers=h),
    "sender.request": lambda bus, h: bus.sender("hdr").request(1, headers=h),
    "DeliveryOptions": lambda bus, h: DeliveryOptions(headers=h),
    "Message": lambda bus, h: Message(1, headers=h),
    "Message.with_headers": lambda bus, h: Message(1).with_headers(h),
    "Headers": lambda bus, h: Headers(h),
    "message.reply": _reply_with_headers,
}

NOT_HEADERS = r"headers must be a mapping of str to str \(or to a list of str\), or \(name, value\)"
BAD_HEADERS: list[Any] = [
    pytest.param({1: "a"}, "header names must be str, got 1 of type int", id="int-name"),
    pytest.param({None: "a"}, "names must be str, got None of type NoneType", id="None-name"),
    pytest.param({b"n": "a"}, "names must be str, got b'n' of type bytes", id="bytes-name"),
    pytest.param({("a",): "a"}, r"names must be str, got \('a',\) of type tuple", id="tuple-name"),
    pytest.param({S("n"): "a"}, "names must be str, got 'n' of type S", id="str-subclass-name"),
    pytest.param({"n": 1}, "header 'n' must have a str value, got 1 of type int", id="int-value"),
    pytest.param({"n": None}, "'n' must have a str value, got None", id="None-value"),
    pytest.param({"n": b"v"}, "'n' must have a str value, got b'v' of type bytes", id="bytes"),
    pytest.param({"n": 1.5}, "'n' must have a str value, got 1.5 of type float", id="float"),
    pytest.param({"n": {"a": "b"}}, r"'n' must have a str value, got \{'a': 'b'\}", id="dict"),
    pytest.param({"n": ["v", ["w"]]}, r"'n' must have a str value, got \['w'\]", id="nested"),
    pytest.param({"n": ["v", 2]}, "'n' must have a str value, got 2 of type int", id="int-item"),
    pytest.param({"n": {"v"}}, r"'n' must have a str value, got \{'v'\} of type set", id="set"),
    pytest.param({"n": S("v")}, "'n' must have a str value, got 'v' of type S", id="subclass"),
    pytest.param([("n", 1)], "header 'n' must have a str value, got 1", id="pair-int-value"),
    pytest.param([(1, "v")], "header names must be str, got 1", id="pair-int-name"),
    pytest.param(5, f"{NOT_HEADERS} pairs; got int: 5", id="int"),
    pytest.param("n=v", f"{NOT_HEADERS} pairs; got str: 'n=v'", id="str"),
    pytest.param(b"n=v", f"{NOT_HEADERS} pairs; got bytes", id="bytes-headers"),
    pytest.param({"n", "v"}, f"{NOT_HEADERS} pairs; got set", id="set-headers"),
    pytest.param(iter([("n", "v")]), f"{NOT_HEADERS} pairs; got list_iterator", id="iterator"),
    pytest.param(object(), f"{NOT_HEADERS} pairs; got object", id="object"),
]


@pytest.mark.parametrize(("headers", "says"), BAD_HEADERS)
async def test_bad_headers_are_refused_by_every_entry_point(
    bus: EventBus, failures: FailureLog, headers: Any, says: str
) -> None:
    bus.consumer("hdr", _noop)
    assert await refusals(HEADER_CALLS, bus, headers, TypeError, says) == []
    assert bus.stats().totals.delivered == 1  # only message.reply's own request got through
    assert failures == []
    await assert_bus_works(bus)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(["ab", "cd"], id="str-items"),
        pytest.param([1], id="int-item"),
        pytest.param([("n", "v", "w")], id="triple"),
        pytest.param([("n",)], id="single"),
        pytest.param([None], id="None-item"),
    ],
)
async def test_malformed_header_pairs_are_refused_clearly(bus: EventBus, headers: Any) -> None:
    bus.consumer("hdr", _noop)
    says = r"header pairs must be \(name, value\)"
    assert await refusals(HEADER_CALLS, bus, headers, TypeError, says) == []


@pytest.mark.parametrize(("headers", "says"), BAD_HEADERS[:2] + BAD_HEADERS[5:6])
async def test_threadsafe_calls_refuse_bad_headers_at_the_call(
    bus: EventBus, headers: Any, says: str
) -> None:
    calls: dict[str, Call] = {
        "publish_threadsafe": lambda bus, h: bus.publish_threadsafe("hdr", 1, headers=h),
        "send_threadsafe": lambda bus, h: bus.send_threadsafe("hdr", 1, headers=h),
    }
    problems = await refusals(calls, bus, headers, TypeError, says)
    await bus.drain()
    assert problems == []


@pytest.mark.parametrize(
    ("headers", "count", "values"),
    [
        pytest.param({f"h{i}": str(i) for i in range(10_000)}, 10_000, 10_000, id="10k-names"),
        pytest.param({"many": [str(i) for i in range(10_000)]}, 1, 10_000, id="10k-values"),
        pytest.param([(f"H{'h' * (i % 2)}", "v") for i in range(10_000)], 2, 10_000, id="pairs"),
        pytest.param([("X-Case", "1"), ("x-case", "2"), ("X-CASE", "3")], 1, 3, id="cases"),
        pytest.param({"big": "v" * 10**6}, 1, 1, id="a-megabyte-value"),
        pytest.param({"": "empty name", "a\r\nInjected": "x\r\ny"}, 2, 2, id="any-content"),
        pytest.param({"gone": []}, 0, 0, id="no-values"),
    ],
)
async def test_huge_and_odd_header_sets_work(
    bus: EventBus, headers: Any, count: int, values: int
) -> None:
    seen: list[Headers] = []

    def echo(message: Message[Any]) -> int:
        seen.append(message.headers)
        return len(message.headers.pairs())

    def whole(message: Message[Any]) -> None:
        seen.append(message.headers)

    bus.consumer("hdr", echo)
    bus.on("hdr", whole)
    assert await bus.request("hdr", 1, headers=headers) == values
    await bus.publish("hdr", 1, headers=headers)  # the consumer and the listener
    await bus.sender("hdr", headers=headers).send(1)
    assert [len(h) for h in seen] == [count] * 4
    if isinstance(headers, dict) and count:
        name, value = next(iter(cast(dict[str, Any], headers).items()))
        first = value[0] if isinstance(value, list) else value
        assert seen[0][name.upper()] == first
    await assert_bus_works(bus)


# -- bodies that fail validation ----------------------------------------------------------

BAD_BODIES: list[Any] = [
    pytest.param(Point, None, "Point", id="model-None"),
    pytest.param(Point, {"x": "a", "y": 1}, "Point", id="model-bad-field"),
    pytest.param(Point, {}, "Point", id="model-missing-fields"),
    pytest.param(Point, "x=1,y=2", "Point", id="model-str"),
    pytest.param(int, "abc", "int", id="int-str"),
    pytest.param(int, None, "int", id="int-None"),
    pytest.param(int, 1.5, "int", id="int-fraction"),
    pytest.param(list[int], ["a"], "list[int]", id="list-item"),
    pytest.param(dict[str, int], {"k": "v"}, "dict[str, int]", id="dict-value"),
    pytest.param(Annotated[int, Strict()], "1", "Annotated", id="strict-int"),
    pytest.param(uuid.UUID, "not-a-uuid", "UUID", id="uuid"),
    pytest.param(Literal["a", "b"], "c", "Literal", id="literal"),
    pytest.param(tuple[int, int], (1, 2, 3), "tuple[int, int]", id="tuple-length"),
]


def annotated(function: Callable[..., Any], parameter: Any, returns: Any = None) -> None:
    """Give ``function`` the annotations a decorator-free handler would declare."""
    first = next(iter(inspect.signature(function).parameters))
    function.__annotations__ = {first: parameter, "return": returns}


@pytest.mark.parametrize(("declared", "body", "expected"), BAD_BODIES)
async def test_invalid_bodies_fail_requesters_and_reach_bus_errors(
    bus: EventBus, failures: FailureLog, declared: Any, body: Any, expected: str
) -> None:
    handled: list[object] = []

    def consume(message: Message[Any]) -> None:
        handled.append(message.body)

    def listen(value: Any) -> None:
        handled.append(value)

    annotated(consume, cast(Any, Message)[declared])
    annotated(listen, declared)
    bus.consumer("bodies", consume)
    bus.on("bodies", listen)
    plain: list[object] = []
    bus.on("bodies", plain.append)

    with pytest.raises(MessageValidationError) as caught:
        await bus.request("bodies", body)
    error = caught.value
    assert str(error).startswith(f"the body sent to 'bodies' is not a valid {expected}")
    assert error.address == "bodies"
    assert error.errors
    assert failures == []

    await bus.send("bodies", body)  # nobody awaits: the failure goes to bus.errors
    await bus.publish("bodies", body)  # the consumer and the typed listener fail, not plain
    assert handled == []
    assert plain == [body]
    assert [(f.address, type(f.exception)) for f in failures] == [
        ("bodies", MessageValidationError)
    ] * 3
    assert {f.handler for f in failures} == {consume, listen}
    await assert_bus_works(bus)


async def test_invalid_replies_fail_the_request_clearly(bus: EventBus) -> None:
    def returns_bad(message: Message[int]) -> int:
        return cast(Any, "not a number")

    async def returns_bad_async(message: Message[int]) -> Point:
        await asyncio.sleep(0)
        return cast(Any, {"x": 1})

    def replies_bad(message: Message[int]) -> int:
        message.reply("not a number")
        return 1

    bus.consumer("bad.return", returns_bad)
    bus.consumer("bad.async", returns_bad_async)
    bus.consumer("bad.explicit", replies_bad)
    bus.consumer("untyped", lambda message: message.body)
    for address, expected in [
        ("bad.return", "int, got str"),
        ("bad.async", "Point, got dict: y: Field required"),
        ("bad.explicit", "int, got str"),
    ]:
        with pytest.raises(
            HandlerExecutionError, match=f"returned an invalid type: expected {expected}"
        ):
            await bus.request(address, 1)
    with pytest.raises(MessageValidationError, match="the reply from 'untyped' is not a valid int"):
        await bus.request("untyped", "abc", response_type=int)
    with pytest.raises(MessageValidationError, match="not a valid Point"):
        await bus.sender("untyped").request({"x": 1}, response_type=Point)
    await assert_bus_works(bus)


# -- options ------------------------------------------------------------------------------

BAD_DELIVERY_OPTIONS: list[Any] = [
    pytest.param({"timeout": -1}, ValueError, "timeout must be a positive number.*got -1"),
    pytest.param({"timeout": 0}, ValueError, "timeout must be a positive number.*got 0"),
    pytest.param({"timeout": math.nan}, ValueError, "positive number of seconds, got nan"),
    pytest.param({"timeout": -math.inf}, ValueError, "positive number of seconds, got -inf"),
    pytest.param({"timeout": "1"}, TypeError, "got '1' of type str"),
    pytest.param({"timeout": True}, TypeError, "got True of type bool"),
    pytest.param({"timeout": 1j}, TypeError, "got 1j of type complex"),
    pytest.param({"retry_attempts": -1}, ValueError, "retry_attempts must be an int >= 0"),
    pytest.param({"retry_attempts": 1.5}, WRONG_TYPE, "retry_attempts must be an int >= 0"),
    pytest.param({"retry_attempts": "2"}, WRONG_TYPE, "retry_attempts must be an int >= 0"),
    pytest.param({"retry_attempts": True}, WRONG_TYPE, "retry_attempts must be an int >= 0"),
    pytest.param({"copy": "yes"}, TypeError, "copy must be True, False or None, got 'yes'"),
    pytest.param({"copy": 1}, TypeError, "copy must be True, False or None, got 1"),
    pytest.param({"codec": ""}, TypeError, "codec must be the name of a registered codec"),
    pytest.param({"codec": 5}, TypeError, "codec must be the name of a registered codec"),
    pytest.param({"headers": 5}, TypeError, "headers must be a mapping"),
]


@pytest.mark.parametrize(("options", "error", "says"), BAD_DELIVERY_OPTIONS)
async def test_bad_delivery_options_are_refused_when_built(
    bus: EventBus, options: dict[str, Any], error: Errors, says: str
) -> None:
    with pytest.raises(error, match=says):
        DeliveryOptions(**options)
    if "timeout" in options:
        timeout = options["timeout"]
        calls: dict[str, Call] = {
            "request": lambda bus, t: bus.request("svc", 1, timeout=t),
            "sender": lambda bus, t: bus.sender("svc", timeout=t),
            "sender.request": lambda bus, t: bus.sender("svc").request(1, timeout=t),
            "EventBus": lambda bus, t: EventBus(default_timeout=t),
        }
        bus.consumer("svc", _noop)
        assert await refusals(calls, bus, timeout, error, says) == []
    await assert_bus_works(bus)


async def test_edge_timeouts_that_are_accepted(bus: EventBus) -> None:
    bus.consumer("svc", lambda message: message.body)
    assert await bus.request("svc", 1, timeout=math.inf) == 1
    # Timeouts are exact: even a handler that answers at once takes longer than a nanosecond,
    # on a loop whose clock can tell (not uvloop's: it reads milliseconds, per iteration).
    if not on_uvloop():
        with pytest.raises(HandlerTimeoutError):
            await bus.request("svc", 2, timeout=1e-9)
    assert await bus.request("svc", 3, options=DeliveryOptions(retry_attempts=10**100)) == 3
    with pytest.raises(ValueError, match="no codec named 'nope' is registered"):
        await bus.request("svc", 1, options=DeliveryOptions(codec="nope"))
    with pytest.raises(ValueError, match="no codec named 'nope' is registered"):
        await bus.publish("svc", 1, options=DeliveryOptions(codec="nope"))
    await assert_bus_works(bus)


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"close_timeout": -1}, ValueError, "close timeout must be a number of seconds >= 0"),
        ({"close_timeout": math.nan}, ValueError, "close timeout must be .* got nan"),
        ({"close_timeout": "1"}, WRONG_TYPE, "close timeout must be .* got '1'"),
        ({"default_timeout": 0}, ValueError, "default_timeout must be a positive number"),
        ({"default_timeout": math.nan}, ValueError, "default_timeout must be .* got nan"),
        ({"default_timeout": None}, TypeError, "default_timeout must be .* got None"),
    ],
)
async def test_bad_bus_settings_are_refused(
    bus: EventBus, kwargs: dict[str, Any], error: Errors, says: str
) -> None:
    with pytest.raises(error, match=says):
        EventBus(**kwargs)
    if "close_timeout" in kwargs:
        with pytest.raises(error, match=says):
            await bus.close(timeout=kwargs["close_timeout"])
    await assert_bus_works(bus)  # a refused close() leaves the bus open


def test_bus_validate_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="validate must be True or False"):
        EventBus(validate=cast(Any, "no"))


@pytest.mark.parametrize("options", [{"timeout": 1}, 5, "fast"])
async def test_options_must_be_delivery_options(bus: EventBus, options: Any) -> None:
    calls: dict[str, Call] = {
        "request": lambda bus, o: bus.request("svc", 1, options=o),
        "publish": lambda bus, o: bus.publish("svc", 1, options=o),
        "send": lambda bus, o: bus.send("svc", 1, options=o),
        "publish_nowait": lambda bus, o: bus.publish_nowait("svc", 1, options=o),
        "send_nowait": lambda bus, o: bus.send_nowait("svc", 1, options=o),
        "sender": lambda bus, o: bus.sender("svc", options=o),
        "publisher": lambda bus, o: bus.publisher("svc", options=o),
    }
    bus.consumer("svc", _noop)
    says = "options must be a DeliveryOptions"
    assert await refusals(calls, bus, options, TypeError, says) == []


BAD_REGISTRATION_OPTIONS: list[Any] = [
    ({"max_concurrency": 0}, ValueError, "max_concurrency must be an int >= 1 or None, got 0"),
    ({"max_concurrency": -1}, ValueError, "max_concurrency must be an int >= 1 or None"),
    ({"max_concurrency": "2"}, WRONG_TYPE, "max_concurrency must be an int >= 1 or None"),
    ({"max_concurrency": True}, WRONG_TYPE, "max_concurrency must be .* got True"),
    ({"max_concurrency": math.nan}, WRONG_TYPE, "max_concurrency must be .* got nan"),
    ({"max_concurrency": math.inf}, WRONG_TYPE, "max_concurrency must be .* got inf"),
    ({"max_buffered": -1}, ValueError, "max_buffered must be an int >= 0, got -1"),
    ({"max_buffered": "10"}, WRONG_TYPE, "max_buffered must be an int >= 0"),
    ({"max_buffered": math.inf}, WRONG_TYPE, "max_buffered must be an int >= 0, got inf"),
    ({"max_buffered": None}, WRONG_TYPE, "max_buffered must be an int >= 0, got None"),
    ({"overflow": "explode"}, ValueError, "overflow must be one of .*'block'.* got 'explode'"),
    ({"overflow": None}, WRONG_TYPE, "overflow must be one of .* got None"),
    ({"overflow": ["block"]}, WRONG_TYPE, "overflow must be one of"),
    ({"overflow": "BLOCK"}, ValueError, "overflow must be one of"),
    ({"on_error": "ignore"}, ValueError, "on_error must be 'resubscribe' or 'unregister'"),
    ({"on_error": None}, WRONG_TYPE, "on_error must be .* got None"),
    ({"validate": 1}, TypeError, "validate must be True, False or None, got 1"),
    ({"validate": "no"}, TypeError, "validate must be True, False or None"),
    ({"pipe": 5}, TypeError, "pipe must be a list of reactivex operators, got 5"),
    ({"pipe": "map"}, TypeError, "pipe must be a list of reactivex operators"),
    ({"pipe": [None]}, TypeError, "pipe must hold reactivex operators, got None"),
    ({"timeout": 1}, TypeError, r"unknown registration option\(s\) \['timeout'\]"),
    ({"max_concurency": 1}, TypeError, r"unknown registration option\(s\) \['max_concurency'\]"),
]


@pytest.mark.parametrize(("options", "error", "says"), BAD_REGISTRATION_OPTIONS)
async def test_bad_registration_options_are_refused_and_register_nothing(
    bus: EventBus, options: dict[str, Any], error: Errors, says: str
) -> None:
    calls: dict[str, Call] = {
        "consumer": lambda bus, o: bus.consumer("svc", _noop, **o),
        "@consumer": lambda bus, o: bus.consumer("svc", **o)(_noop),
        "on": lambda bus, o: bus.on("evt", _noop, **o),
        "@on": lambda bus, o: bus.on("evt", **o)(_noop),
        "on-pattern": lambda bus, o: bus.on("evt.*", _noop, **o),
    }
    assert await refusals(calls, bus, options, error, says) == []
    assert bus.get_consumers() == []
    assert bus.get_listeners("evt") == bus.get_listeners("evt.*") == []
    assert bus.stats().subscriptions == 0
    await assert_bus_works(bus)


# -- recursion and re-entrancy ------------------------------------------------------------


@pytest.mark.parametrize("shape", ["self", "mutual"])
async def test_nested_requests_do_not_grow_the_stack(
    bus: EventBus, failures: FailureLog, shape: str
) -> None:
    """1,000 nested requests: each handler requests the next and awaits its reply."""
    deepest = 0
    target = "count.a" if shape == "self" else "count.b"

    async def count_a(message: Message[int]) -> int:
        nonlocal deepest
        deepest = max(deepest, frames())
        if message.body == 0:
            return 0
        return await bus.request(target, message.body - 1) + 1

    def count_b(message: Message[int]) -> object:  # a plain function returning an awaitable
        nonlocal deepest
        deepest = max(deepest, frames())
        if message.body == 0:
            return 0
        return bus.request("count.a", message.body - 1)

    bus.consumer("count.a", count_a)
    bus.consumer("count.b", count_b)
    deepest_at: dict[int, int] = {}
    for depth in (50, 200, 1000):
        deepest = 0
        expected = depth if shape == "self" else depth - depth // 2
        assert await bus.request("count.a", depth) == expected
        deepest_at[depth] = deepest
    base = frames()
    assert deepest_at[1000] <= deepest_at[50] + 8, deepest_at
    assert deepest_at[1000] - base < STACK_BOUND, (base, deepest_at)
    assert failures == []
    await bus.drain()
    await assert_bus_works(bus)


@pytest.mark.parametrize("shape", ["self", "mutual"])
async def test_endless_request_recursion_is_bounded_by_timeouts(
    bus: EventBus, failures: FailureLog, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Handlers that request forever: the requester times out, nothing overflows the stack,
    and once they stop the bus is quiet again."""
    caplog.set_level(logging.CRITICAL, logger="tinybus")  # a thousand late timeouts are logged
    stop = False
    calls = 0
    deepest = 0

    def relay_to(target: str) -> Callable[[Message[int]], Any]:
        async def relay(message: Message[int]) -> int:
            nonlocal calls, deepest
            calls += 1
            deepest = max(deepest, frames())
            if stop:
                return 0
            return await bus.request(target, message.body + 1, timeout=0.05) + 1

        return relay

    bus.consumer("loop.a", relay_to("loop.a" if shape == "self" else "loop.b"))
    bus.consumer("loop.b", relay_to("loop.a"))
    with pytest.raises(HandlerTimeoutError, match=r"'loop\.a' timed out after 0\.05 s"):
        await bus.request("loop.a", 0, timeout=0.05)
    stop = True
    async with asyncio.timeout(5):
        await bus.drain()
    assert calls > 16  # deeper than the eagerly nested levels (far deeper, unless the loop is slow)
    assert deepest - frames() < STACK_BOUND
    assert {type(f.exception) for f in failures} <= {HandlerTimeoutError}  # late, not lost
    stats = bus.stats()
    assert (stats.pending_requests, stats.running_handlers, stats.scheduled_timers) == (0, 0, 0)
    await assert_bus_works(bus)


async def test_reentrant_recursive_publish_terminates_and_delivers_everything(
    bus: EventBus, failures: FailureLog
) -> None:
    """An async listener publishing to its own address from inside itself, 1,000 deep."""
    seen: list[int] = []
    deepest = 0

    async def countdown(n: int) -> None:
        nonlocal deepest
        deepest = max(deepest, frames())
        seen.append(n)
        if n > 0:
            await bus.publish("countdown", n - 1)

    bus.on("countdown", countdown)
    recorded: list[int] = []
    bus.on("countdown", recorded.append)
    await bus.publish("countdown", 1000)
    assert seen == list(range(1000, -1, -1))  # each published while handling the one before
    assert sorted(recorded) == list(range(1001))  # everyone got every message, once
    assert deepest - frames() < STACK_BOUND
    assert failures == []
    await bus.drain()
    await assert_bus_works(bus)


@pytest.mark.parametrize("asynchronous", [True, False])
async def test_listener_republishing_many_times_terminates_in_publish_order(
    bus: EventBus, failures: FailureLog, asynchronous: bool
) -> None:
    recorded: list[object] = []

    async def fan_out_async(body: object) -> None:
        if body == "go":
            for n in range(1000):
                await bus.publish("fan", n)

    def fan_out(body: object) -> None:
        if body == "go":
            for n in range(1000):
                bus.publish_nowait("fan", n)

    bus.on("fan", fan_out_async if asynchronous else fan_out)
    bus.on("fan", recorded.append)
    await bus.publish("fan", "go")
    await bus.drain()
    assert [n for n in recorded if n != "go"] == list(range(1000))
    assert recorded.count("go") == 1
    assert failures == []
    await assert_bus_works(bus)


@pytest.mark.parametrize("via", ["publish_nowait", "send_nowait"])
async def test_short_synchronous_chains_through_nowait_deliver_everything(
    bus: EventBus, failures: FailureLog, via: str
) -> None:
    seen = await _synchronous_chain(bus, via, 20)
    assert seen == list(range(20, -1, -1))
    assert failures == []
    await assert_bus_works(bus)


@pytest.mark.parametrize("via", ["publish_nowait", "send_nowait"])
async def test_long_synchronous_chains_through_nowait_do_not_recurse(
    bus: EventBus, failures: FailureLog, via: str
) -> None:
    """A plain-function handler that publishes (or sends) to its own address with
    ``*_nowait`` does not recurse (Vert.x ``testSelfSendDoesNotTrampoline``): each handler is
    called at the loop's next turn, never in its caller's stack, so a chain of 10,000 levels,
    far past the interpreter's recursion limit, ends in order without a RecursionError, and
    the bus keeps working."""
    assert sys.getrecursionlimit() < 10_000
    seen = await _synchronous_chain(bus, via, 10_000)
    assert seen == list(range(10_000, -1, -1))
    assert failures == []
    stats = bus.stats()
    assert (
        stats.pending_requests,
        stats.running_handlers,
        stats.scheduled_timers,
        stats.queued,
    ) == (0, 0, 0, 0)
    getattr(bus, via)("chain", 0)  # a later message is delivered, at the next turn
    assert seen[-2:] == [1, 0]
    await bus.drain()
    assert seen[-2:] == [0, 0]
    await assert_bus_works(bus)


async def _synchronous_chain(bus: EventBus, via: str, length: int) -> list[int]:
    seen: list[int] = []

    def relay(item: Any) -> None:
        n: int = item.body if isinstance(item, Message) else item
        seen.append(n)
        if n > 0:
            getattr(bus, via)("chain", n - 1)

    if via == "send_nowait":
        bus.consumer("chain", relay)
    else:
        bus.on("chain", relay)
    getattr(bus, via)("chain", length)
    await bus.drain()
    return seen


# -- thousands of registrations, churning ---------------------------------------------------


async def test_thousands_of_listeners_unregistered_while_events_flow(
    bus: EventBus, failures: FailureLog
) -> None:
    """5,000 listeners on an address and four patterns matching it; half leave while 8 events
    are published: from inside their own handler, from a listener before them, and from
    another task."""
    events = 8
    got: dict[str, list[int]] = {}
    registrations: dict[str, Any] = {}

    def recorder(name: str) -> Callable[[int], None]:
        def record(n: int) -> None:
            got[name].append(n)

        return record

    def async_recorder(name: str) -> Callable[[int], Any]:
        async def record(n: int) -> None:
            await asyncio.sleep(0)
            got[name].append(n)

        return record

    def leaving(name: str, asynchronous: bool) -> Callable[[int], Any]:
        def leave(n: int) -> None:
            got[name].append(n)
            registrations[name].unregister()

        async def leave_async(n: int) -> None:
            await asyncio.sleep(0)
            got[name].append(n)
            registrations[name].unregister()

        return leave_async if asynchronous else leave

    def recorder_that_leaves(name: str) -> Callable[[int], Any]:
        return leaving(name, False)

    def async_recorder_that_leaves(name: str) -> Callable[[int], Any]:
        return leaving(name, True)

    killed = [f"killed.{i}" for i in range(100)]  # by the killer, at the event 3

    def killer(n: int) -> None:
        if n == 3:
            for name in killed:
                registrations[name].unregister()

    groups: dict[str, tuple[Callable[[str], Callable[[int], Any]], int]] = {
        "keep": (recorder, 1000),
        "keep.async": (async_recorder, 300),
        "keep.more": (recorder, 1200),
        "self": (recorder_that_leaves, 1000),
        "self.async": (async_recorder_that_leaves, 400),
        "by.task": (recorder, 1000),
        "killed": (recorder, 100),
    }
    # The address and four patterns matching it (a route each); the killer is the first
    # handler of the first route.
    routes = ["load.x", "load.*", "load.>", "*.x", ">"]
    registrations["killer"] = bus.on("load.x", killer)
    for group, (make, count) in groups.items():
        for i in range(count):
            name = f"{group}.{i}"
            got[name] = []
            registrations[name] = bus.on(routes[i % len(routes)], make(name))
    assert len(got) == 5000
    assert bus.stats().subscriptions == 5001

    async def publisher() -> None:
        for n in range(events):
            await bus.publish("load.x", n)

    async def remover() -> None:
        leavers = [name for name in got if name.startswith("by.task.")]
        for start in range(0, len(leavers), 50):
            for name in leavers[start : start + 50]:
                if start % 100:
                    registrations[name].unregister()
                else:
                    registration = registrations[name]
                    bus.remove_listener(registration.address, registration.handler)
            await asyncio.sleep(0)  # let the publisher go on between batches

    await asyncio.gather(publisher(), remover())
    await bus.drain()

    everything = list(range(events))
    for name, received in got.items():
        if name.startswith("keep"):
            assert received == everything, name
        elif name.startswith("self"):
            assert received == [0], name
        elif name.startswith("killed"):
            assert received == [0, 1, 2], name
        else:
            assert received == everything[: len(received)], name
    assert any(len(received) < events for name, received in got.items() if "by.task" in name)
    assert failures == []
    stats = bus.stats()
    assert stats.subscriptions == 1 + 1000 + 300 + 1200
    assert stats.addresses["load.x"].published == events

    for registration in registrations.values():
        registration.unregister()
    await bus.drain()
    assert_quiet(bus)
    await assert_bus_works(bus)


async def test_consumers_unregistered_while_requests_flow(
    bus: EventBus, failures: FailureLog
) -> None:
    """200 consumers, 150 of which leave (themselves after one answer, or by another task)
    while 10 rounds of 50 concurrent requests flow: every request is answered."""
    registrations: list[Any] = []
    answered_by: list[int] = []

    def consumer(index: int) -> Callable[[Message[int]], Any]:
        async def answer(message: Message[int]) -> int:
            await asyncio.sleep(0)
            answered_by.append(index)
            if 50 <= index < 100:
                registrations[index].unregister()  # leaves after its first answer
            return message.body * 2

        return answer

    for index in range(200):
        registrations.append(bus.consumer("work", consumer(index)))

    async def requester() -> list[int]:
        results: list[int] = []
        for start in range(0, 500, 50):
            results += await asyncio.gather(
                *(bus.request("work", n) for n in range(start, start + 50))
            )
        return results

    async def remover() -> None:
        for index in range(100, 200):
            if index % 2:
                registrations[index].unregister()
            else:
                bus.remove_consumer("work") if index == 198 else registrations[index].unregister()
            await asyncio.sleep(0)  # let the requester go on

    results, _ = await asyncio.gather(requester(), remover())
    assert results == [n * 2 for n in range(500)]
    assert len(answered_by) == 500
    assert all(answered_by.count(index) <= 1 for index in range(50, 100))
    assert failures == []
    assert bus.get_consumers() == []  # remove_consumer took the last 50 too
    await bus.drain()
    assert_quiet(bus)
    await assert_bus_works(bus)


class CountingHandler:
    """A listener that counts how often the bus compares it with another handler."""

    comparisons = 0

    def __call__(self, body: object) -> None:
        pass

    def __eq__(self, other: object) -> bool:
        CountingHandler.comparisons += 1
        return self is other

    def __hash__(self) -> int:
        return id(self)


def test_registering_many_listeners_at_one_address_is_not_quadratic() -> None:
    bus = EventBus()
    CountingHandler.comparisons = 0
    for _ in range(400):
        bus.on("crowded", CountingHandler())
    assert CountingHandler.comparisons < 10 * 400  # was 400 * 399 / 2


class UnhashableHandler:
    """A listener that cannot be hashed: the duplicate check falls back to comparing."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, key: int) -> None:
        self.key = key

    def __call__(self, body: object) -> None:
        pass

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnhashableHandler) and other.key == self.key


def test_unhashable_consumers_are_still_checked_for_duplicates() -> None:
    bus = EventBus()
    one = bus.consumer("mixed", UnhashableHandler(1))
    noop = bus.consumer("mixed", _noop)
    with pytest.raises(HandlerAlreadyRegisteredError):
        bus.consumer("mixed", UnhashableHandler(1))  # equal, not identical
    with pytest.raises(HandlerAlreadyRegisteredError):
        bus.consumer("mixed", _noop)  # hashable, among unhashable ones
    bus.consumer("mixed", UnhashableHandler(2))
    one.unregister()
    noop.unregister()
    bus.consumer("mixed", UnhashableHandler(1))
    bus.consumer("mixed", _noop)
    # Past INDEX_FROM consumers, duplicates are found through the index, unhashable or not.
    for number in range(3, 12):
        bus.consumer("mixed", UnhashableHandler(number))
    with pytest.raises(HandlerAlreadyRegisteredError):
        bus.consumer("mixed", UnhashableHandler(5))
    with pytest.raises(HandlerAlreadyRegisteredError):
        bus.consumer("mixed", _noop)
    # Listeners may repeat, unhashable ones too.
    bus.on("mixed", UnhashableHandler(1))
    bus.on("mixed", UnhashableHandler(1))
    assert len(bus.get_listeners("mixed")) == 2


# -- handlers -----------------------------------------------------------------------------


NOT_CALLABLE: list[Any] = [5, "handler", b"handler", object(), [print], {"call": print}]


@pytest.mark.parametrize("handler", NOT_CALLABLE, ids=lambda h: type(h).__name__)
async def test_non_callables_are_refused(bus: EventBus, handler: Any) -> None:
    calls: dict[str, Call] = {
        "consumer": lambda bus, h: bus.consumer("h", h),
        "@consumer": lambda bus, h: bus.consumer("h")(h),
        "on": lambda bus, h: bus.on("h", h),
        "@on": lambda bus, h: bus.on("h")(h),
        "on-pattern": lambda bus, h: bus.on("h.*", h),
    }
    says = r"a (consumer|listener) must be callable, got "
    assert await refusals(calls, bus, handler, TypeError, says) == []
    assert bus.stats().subscriptions == 0
    await assert_bus_works(bus)


async def test_a_coroutine_object_is_not_a_handler(bus: EventBus) -> None:
    async def handler(body: object) -> None:
        pass

    coroutine = handler(1)
    try:
        with pytest.raises(TypeError, match="a listener must be callable, got <coroutine"):
            bus.on("h", cast(Any, coroutine))
    finally:
        coroutine.close()
    await assert_bus_works(bus)


@pytest.mark.parametrize("role", ["consumer", "on"])
async def test_an_explicit_none_handler_is_refused(bus: EventBus, role: str) -> None:
    with pytest.raises(TypeError, match="must be callable, got None"):
        getattr(bus, role)("h", None)


async def _agen_handler(body: object) -> Any:
    yield body


def _gen_handler(body: object) -> Any:
    yield body


def _no_parameter() -> None:
    pass


def _two_parameters(first: object, second: object) -> None:
    pass


def _keyword_only(*, body: object) -> None:
    pass


@pytest.mark.parametrize("handler", [_agen_handler, _gen_handler])
@pytest.mark.parametrize("role", ["consumer", "on"])
async def test_generator_functions_are_refused(bus: EventBus, role: str, handler: Any) -> None:
    with pytest.raises(TypeError, match="generator"):
        getattr(bus, role)("h", handler)


@pytest.mark.parametrize("handler", [_no_parameter, _two_parameters, _keyword_only])
@pytest.mark.parametrize("role", ["consumer", "on"])
async def test_handlers_that_cannot_take_one_argument_are_refused(
    bus: EventBus, role: str, handler: Any
) -> None:
    with pytest.raises(TypeError, match="one positional argument"):
        getattr(bus, role)("h", handler)


class Service:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def handle(self, message: Message[int]) -> int:
        return message.body * self.factor

    async def handle_async(self, message: Message[int]) -> int:
        await asyncio.sleep(0)
        return message.body * self.factor

    @staticmethod
    def static(message: Message[int]) -> int:
        return message.body * 5

    @classmethod
    def klass(cls, message: Message[int]) -> int:
        return message.body * 7

    def __call__(self, message: Message[int]) -> int:
        return message.body * self.factor


class AsyncCallable:
    async def __call__(self, message: Message[int]) -> int:
        return message.body * 11


def _times(factor: int, message: Message[int]) -> int:
    return message.body * factor


@pytest.mark.parametrize(
    ("handler", "factor"),
    [
        pytest.param(lambda message: int(message.body) * 2, 2, id="lambda"),
        pytest.param(Service(3).handle, 3, id="bound-method"),
        pytest.param(Service(4).handle_async, 4, id="async-bound-method"),
        pytest.param(Service.static, 5, id="staticmethod"),
        pytest.param(Service.klass, 7, id="classmethod"),
        pytest.param(Service(6), 6, id="callable-object"),
        pytest.param(AsyncCallable(), 11, id="async-callable-object"),
        pytest.param(partial(_times, 13), 13, id="partial"),
    ],
)
async def test_every_kind_of_callable_works(bus: EventBus, handler: Any, factor: int) -> None:
    bus.consumer("kinds", handler)
    assert await bus.request("kinds", 2) == 2 * factor
    assert await bus.request("kinds", "3") == 3 * factor  # its annotation converts
    heard: list[int] = []
    bus.on("kinds", lambda body: heard.append(body))
    await bus.publish("kinds", 1)
    assert heard == [1]


async def test_the_same_consumer_twice_is_refused_and_a_listener_may_repeat(bus: EventBus) -> None:
    service = Service(2)

    def listener(body: object) -> None:
        pass

    bus.consumer("twice", service.handle)
    bus.on("twice", listener)
    with pytest.raises(
        HandlerAlreadyRegisteredError, match=r"Service\.handle is already registered at address"
    ):
        bus.consumer("twice", service.handle)  # a new bound-method object, equal to the first
    bus.on("twice", listener)  # a listener may repeat: a second registration
    bus.on("twice")(listener)
    assert bus.get_listeners("twice") == [listener, listener, listener]

    # Allowed: another role, another address, another instance's method, after unregistering.
    bus.on("twice", service.handle, validate=False)
    bus.on("elsewhere", listener)
    bus.consumer("twice", Service(3).handle)
    assert sorted(await asyncio.gather(bus.request("twice", 1), bus.request("twice", 1))) == [2, 3]
    bus.remove_listener("twice", listener)  # one registration of the three
    bus.on("twice", listener)
    assert len(bus.get_listeners("twice")) == 4  # three of listener, and service.handle
    bus.remove_listener("twice", service.handle)  # found by equality, not identity
    assert bus.get_listeners("twice") == [listener] * 3
    bus.remove_listener("twice", cast(Any, 5))  # not there: nothing happens
    await assert_bus_works(bus)


# -- the first hour's rough edges --------------------------------------------------------------


def test_nowait_calls_outside_a_running_loop_say_what_to_do_instead() -> None:
    bus = EventBus()
    for call in (bus.publish_nowait, bus.send_nowait):
        with pytest.raises(RuntimeError, match=r"asyncio\.run.*_threadsafe"):
            call("a", 1)


@pytest.mark.parametrize("method", ["on", "consumer"])
def test_a_decorator_without_parentheses_says_how_to_write_it(method: str) -> None:
    bus = EventBus()
    register = getattr(bus, method)
    with pytest.raises(TypeError, match=rf'@bus\.{method}\("address"\), with parentheses'):

        @register
        def handler(body: int) -> None: ...


@pytest.mark.parametrize("method", ["on", "consumer"])
def test_a_handler_without_a_parameter_is_told_so(method: str) -> None:
    bus = EventBus()

    def no_parameter() -> None: ...

    with pytest.raises(TypeError, match=r"takes no parameter"):
        getattr(bus, method)("a", no_parameter)


async def test_a_chosen_drop_is_logged_as_a_drop_at_warning(
    bus: EventBus, caplog: pytest.LogCaptureFixture, failures: FailureLog
) -> None:
    """Flow control chose it: logged at WARNING, with its reason and policy, and its record
    on ``bus.errors`` says it was dropped, not raised."""
    registration = bus.on("slow", lambda body: None, max_buffered=0, overflow="drop_newest")
    registration.pause()
    with caplog.at_level(logging.WARNING, logger="tinybus"):
        await bus.publish("slow", 1)
    [record] = failures
    assert record.dropped
    assert str(record).startswith("dropped at 'slow':")
    [logged] = [r for r in caplog.records if r.name == "tinybus"]
    assert logged.levelno == logging.WARNING
    assert "overflow='drop_newest'" in logged.getMessage()
    assert "raised" not in logged.getMessage()


def test_plot_marbles_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from tinybus import notebook

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    notebook._displayable_figure.cache_clear()
    recording = notebook.Recording("x", 0.0)
    with pytest.raises(ModuleNotFoundError, match=r"--extra notebook"):
        notebook.plot_marbles(recording)
    notebook._displayable_figure.cache_clear()
