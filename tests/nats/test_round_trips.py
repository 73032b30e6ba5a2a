"""Property-based round trips through a real server: every legal TinyBus address reaches
its consumer on another bus as it was sent (or, when its subject would be too long, is
refused before anything is sent, as documented), and any headers (repeated, differing in
case, named like NATS's own ``Status``, any characters in names and values) arrive exactly,
both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinybus import MAX_ADDRESS_LENGTH, EventBus, Headers, Message, MessageEncodingError

from .conftest import Connect

# One server and two buses serve every example of a test (each example registers and
# unregisters its own consumer), so hypothesis is told the fixtures are not reset between
# examples.
ROUND_TRIPS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PREFIX = "tinybus.c."  # the consumers' subjects
MAX_SUBJECT_BYTES = 2048  # docs/nats.md, "Addresses"

# Characters that stay as they are in a subject, and those that escaping must carry: NATS's
# separators and wildcards, whitespace, the escape character itself, controls, non-ASCII,
# lone surrogates (a Python str may hold them).
PLAIN = "abcXYZ019_-"
SPECIAL = ".*>~ \t\r\n\x00\x7f/\\$%ü日\U0001f600\ud800"
address_text = st.text(alphabet=st.sampled_from(PLAIN + SPECIAL), min_size=1, max_size=40)
segment = st.one_of(
    st.text(alphabet=st.sampled_from(PLAIN), max_size=8),
    st.text(max_size=8),  # anything, empty included
)
segmented = st.lists(segment, min_size=1, max_size=6).map(".".join).filter(bool)
long_address = st.text(min_size=1, max_size=MAX_ADDRESS_LENGTH)


@pytest.fixture
async def buses(connect: Connect) -> AsyncIterator[tuple[EventBus, EventBus]]:
    """A requester and a responder, each with its own connection."""
    async with connect() as requester, connect() as responder:
        yield requester, responder


def is_pattern(address: str) -> bool:
    """(``*`` or ``>`` as a whole segment: a pattern, which nobody sends to.)"""
    return any(part in ("*", ">") for part in address.split("."))


def escaped_length(address: str) -> int:
    """The subject's length by the documented rule: an ASCII letter, digit, ``_`` or ``-``
    is one byte, any other character three per UTF-8 byte, an empty segment one."""
    total = len(PREFIX) + address.count(".")
    for part in address.split("."):
        if not part:
            total += 1
        for char in part:
            plain = char.isascii() and (char.isalnum() or char in "_-")
            total += 1 if plain else 3 * len(char.encode("utf-8", "surrogatepass"))
    return total


@ROUND_TRIPS
@given(address=st.one_of(address_text, segmented, long_address).filter(lambda a: not is_pattern(a)))
async def test_every_legal_address_reaches_its_consumer_exactly(
    buses: tuple[EventBus, EventBus], address: str
) -> None:
    requester, responder = buses
    arrived: list[str] = []

    def note(message: Message[None]) -> int:
        arrived.append(message.address)
        return len(arrived)

    if escaped_length(address) > MAX_SUBJECT_BYTES:
        with pytest.raises(MessageEncodingError, match="use a shorter address"):
            responder.consumer(address, note)
        assert address not in responder.stats().addresses
        return
    registration = responder.consumer(address, note)
    await registration.wait_exported()
    try:
        assert await requester.request(address, None) == 1
    finally:
        registration.unregister()
    assert arrived == [address]


header_name = st.one_of(
    st.sampled_from(["Status", "status", "STATUS", "Tb-Kind", "Tb-Headers", "traceparent"]),
    st.text(min_size=0, max_size=12),
)
header_value = st.one_of(
    st.sampled_from(["503", "", " padded ", "a\r\nb", "x:y"]), st.text(max_size=30)
)
header_pairs = st.lists(st.tuples(header_name, header_value), max_size=8)


@ROUND_TRIPS
@given(sent=header_pairs, answered=header_pairs)
async def test_any_headers_arrive_exactly_both_ways(
    buses: tuple[EventBus, EventBus], sent: list[tuple[str, str]], answered: list[tuple[str, str]]
) -> None:
    requester, responder = buses
    seen: list[Headers] = []

    def echo(message: Message[Any]) -> None:
        seen.append(message.headers)
        message.reply(message.body, headers=answered)

    registration = responder.consumer("headers", echo)
    await registration.wait_exported()
    try:
        reply = await requester.request("headers", "body", headers=sent, full=True)
    finally:
        registration.unregister()
    # As a local message's: names keep the case they first came in, every value in order.
    assert seen[0].pairs() == Headers(sent).pairs()
    assert reply.headers.pairs() == Headers(answered).pairs()
    assert reply.body == "body"  # (a header never passed for the server's "no responders")
