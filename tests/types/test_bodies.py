"""Bodies: shared by default, copied on request; codecs by name and by type."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from tinybus import DeliveryOptions, EventBus, Message, MessageCodec


class Point(BaseModel):
    model_config = ConfigDict(frozen=True)
    x: int
    y: int


async def test_bodies_are_shared_by_default(bus: EventBus) -> None:
    """One object for the sender and every handler: the cheap default, as documented."""
    body = {"items": [1]}
    seen: list[Any] = []
    bus.on("evt", lambda received: seen.append(received))
    bus.on("evt", lambda received: seen.append(received))
    await bus.publish("evt", body)
    assert seen[0] is body
    assert seen[1] is body


async def test_copy_gives_every_handler_its_own_body(bus: EventBus) -> None:
    body = {"items": [1]}
    seen: list[Any] = []

    def mutate(received: dict[str, list[int]]) -> None:
        received["items"].append(2)
        seen.append(received)

    def inspect(message: Message[dict[str, list[int]]]) -> None:
        seen.append(message.body)

    bus.on("evt", mutate)
    bus.on("evt", inspect)
    await bus.publish("evt", body, options=DeliveryOptions(copy=True))
    assert body == {"items": [1]}  # the sender's object is untouched
    assert seen[0] == {"items": [1, 2]}
    assert seen[1] == {"items": [1]}  # the second handler does not see the first's change
    assert seen[0] is not seen[1]


async def test_copy_applies_to_requests_sends_and_piped_listeners(bus: EventBus) -> None:
    body = [1]
    seen: list[Any] = []

    def consumer(message: Message[list[int]]) -> list[int]:
        message.body.append(2)
        return message.body

    bus.consumer("svc", consumer)
    bus.on("evt", seen.append, pipe=[])
    copy = DeliveryOptions(copy=True)
    assert await bus.request("svc", body, options=copy) == [1, 2]
    await bus.send("svc", body, options=copy)
    await bus.publish("evt", body, options=copy)
    assert body == [1]
    assert seen == [[1]]
    assert seen[0] is not body


async def test_a_frozen_model_is_never_copied(bus: EventBus) -> None:
    point = Point(x=1, y=2)
    seen: list[Point] = []
    bus.on("evt", seen.append)
    await bus.publish("evt", point, options=DeliveryOptions(copy=True))
    assert seen[0] is point


class JsonCodec(MessageCodec[dict[str, Any]]):
    name = "json"

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, body: dict[str, Any]) -> bytes:
        self.encoded += 1
        return json.dumps(body).encode()

    def decode(self, data: bytes) -> dict[str, Any]:
        return json.loads(data)


async def test_a_codec_by_name_transforms_the_body(bus: EventBus) -> None:
    codec = JsonCodec()
    bus.register_codec(codec)
    seen: list[Any] = []
    bus.on("evt", seen.append)
    body = {"n": (1, 2)}  # a tuple becomes a list through JSON
    await bus.publish("evt", body, options=DeliveryOptions(codec="json"))
    await bus.publish("evt", body)  # no codec named, none by default: shared as is
    assert seen == [{"n": [1, 2]}, body]
    assert seen[1] is body
    assert codec.encoded == 1


async def test_a_default_codec_applies_to_its_type(bus: EventBus) -> None:
    codec = JsonCodec()
    bus.register_codec(codec, default_for=dict)
    bus.consumer("svc", lambda message: message.body)
    assert await bus.request("svc", {"n": (1,)}) == {"n": [1]}
    assert await bus.request("svc", [1]) == [1]  # not a dict: untouched
    bus.unregister_codec("json")
    assert await bus.request("svc", {"n": (1,)}) == {"n": (1,)}


async def test_codec_mistakes_are_clear_errors_at_the_call(bus: EventBus) -> None:
    bus.register_codec(JsonCodec(), default_for=dict)
    with pytest.raises(ValueError, match="already registered"):
        bus.register_codec(JsonCodec())
    other = JsonCodec()
    other.name = "json2"
    with pytest.raises(ValueError, match="already has a default codec: 'json'"):
        bus.register_codec(other, default_for=dict)
    with pytest.raises(ValueError, match="no codec named 'xml' is registered"):
        await bus.publish("evt", 1, options=DeliveryOptions(codec="xml"))
    with pytest.raises(ValueError, match="no codec named 'xml'"):
        bus.unregister_codec("xml")
    with pytest.raises(TypeError, match="a codec is a MessageCodec"):
        bus.register_codec(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="copy must be True, False or None"):
        DeliveryOptions(copy="yes")  # type: ignore[arg-type]
