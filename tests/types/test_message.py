"""Message, DeliveryOptions and headers."""

from __future__ import annotations

from typing import Any

import pytest

from tinybus import DeliveryOptions, EventBus, Message


def test_message_built_by_hand() -> None:
    message = Message[str](body="x", id="m-1")
    assert message.body == "x"
    assert message.id == "m-1"
    assert message.address == ""
    assert dict(message.headers) == {}
    assert message.reply_address is None


def test_message_create_gives_unique_ids() -> None:
    messages = [Message.create(n, address="a", headers={"h": "v"}) for n in range(1000)]
    assert len({message.id for message in messages}) == 1000
    assert messages[5].body == 5
    assert messages[5].address == "a"
    assert dict(messages[5].headers) == {"h": "v"}


def test_message_repr_shows_envelope_and_body() -> None:
    message = Message.create({"k": 1}, address="a", headers={"h": "v"})
    assert (
        repr(message)
        == f"Message(address='a', id={message.id!r}, headers={{'h': 'v'}}, body={{'k': 1}})"
    )


def test_headers_are_a_read_only_copy() -> None:
    headers = {"trace": "1"}
    message = Message.create(None, headers=headers)
    headers["trace"] = "changed"
    assert message.headers["trace"] == "1"
    with pytest.raises(TypeError):
        message.headers["trace"] = "2"  # type: ignore[index]


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({1: "v"}, "header names must be str, got 1"),
        ({"k": 2}, "header 'k' must have a str value, got 2"),
        ({"k": None}, "header 'k' must have a str value, got None"),
        ([("k", 3)], "header 'k' must have a str value, got 3"),
        ({"k": ["v", 4]}, "header 'k' must have a str value, got 4"),
        ("k=v", "headers must be a mapping"),
        (42, "headers must be a mapping"),
    ],
)
async def test_bad_headers_are_refused_with_a_clear_error(
    bus: EventBus, headers: Any, match: str
) -> None:
    heard: list[Any] = []
    bus.on("evt", heard.append)
    bus.consumer("req", lambda message: None)
    with pytest.raises(TypeError, match=match):
        await bus.publish("evt", 1, headers=headers)
    with pytest.raises(TypeError, match=match):
        await bus.request("req", 1, headers=headers)
    with pytest.raises(TypeError, match=match):
        await bus.send("req", 1, headers=headers)
    with pytest.raises(TypeError, match=match):
        DeliveryOptions(headers=headers)
    assert heard == []


async def test_headers_changed_by_the_sender_after_publish_are_not_seen(bus: EventBus) -> None:
    seen: list[Message[Any]] = []
    bus.consumer("evt", seen.append)
    headers = {"k": "before"}
    await bus.publish("evt", 1, headers=headers)
    headers["k"] = "after"
    assert seen[0].headers["k"] == "before"


def test_delivery_options_defaults_and_validation() -> None:
    options = DeliveryOptions()
    assert options.timeout is None
    assert options.headers is None
    assert options.retry_attempts is None  # not given: no retries
    assert options.copy is None  # not given: shared
    assert DeliveryOptions(timeout=2).timeout == 2.0
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        DeliveryOptions(timeout=0)
    with pytest.raises(ValueError, match="retry_attempts"):
        DeliveryOptions(retry_attempts=-1)
    with pytest.raises(ValueError, match="retry_attempts"):
        DeliveryOptions(retry_attempts=1.5)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        options.timeout = 3  # type: ignore[misc]
