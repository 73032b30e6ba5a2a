"""Headers: case-insensitive, multi-valued, read-only copies on both sides of the bus."""

from __future__ import annotations

import pytest

from tinybus import DeliveryOptions, EventBus, Headers, Message


def test_names_are_case_insensitive_and_keep_their_first_spelling() -> None:
    headers = Headers({"Trace-Id": "42", "accept": ["json", "xml"]})
    assert headers["trace-id"] == headers["TRACE-ID"] == "42"
    assert "TRACE-id" in headers
    assert "missing" not in headers
    assert list(headers) == ["Trace-Id", "accept"]
    assert len(headers) == 2
    assert headers == {"Trace-Id": "42", "accept": "json"}  # a Mapping: first values


def test_a_name_can_have_several_values_in_order() -> None:
    headers = Headers([("Accept", "json"), ("x", "1"), ("accept", "xml")])
    assert headers.getall("ACCEPT") == ["json", "xml"]
    assert headers["accept"] == "json"
    assert headers.getall("none") == []
    assert headers.pairs() == [("Accept", "json"), ("Accept", "xml"), ("x", "1")]


def test_merging_replaces_every_value_of_a_name_given_again() -> None:
    base = Headers([("tenant", "a"), ("Tag", "1"), ("tag", "2")])
    merged = base.merged(Headers({"TAG": "3", "new": "x"}))
    assert merged.getall("tag") == ["3"]
    assert merged["tenant"] == "a"
    assert merged["new"] == "x"
    assert base.getall("tag") == ["1", "2"]  # unchanged


def test_headers_are_read_only() -> None:
    headers = Headers({"a": "1"})
    with pytest.raises(TypeError):
        headers["a"] = "2"  # type: ignore[index]


async def test_headers_cross_the_bus_as_copies(bus: EventBus) -> None:
    """The sender changing its dict afterwards, or a receiver, changes nothing the other sees."""
    sent = {"trace-id": "1"}
    seen: list[Message[int]] = []

    def consumer(message: Message[int]) -> int:
        seen.append(message)
        return 0

    bus.consumer("svc", consumer)
    await bus.request("svc", 1, headers=sent)
    sent["trace-id"] = "changed"
    assert seen[0].headers["Trace-ID"] == "1"
    reply = await bus.request(
        "svc",
        2,
        headers={"Tag": ["a", "b"]},
        options=DeliveryOptions(headers={"tag": "x"}),
        full=True,
    )
    assert seen[1].headers.getall("tag") == ["a", "b"]  # the call's headers win, every value
    assert reply.headers == {}
