"""Addresses: str or str-valued Enum members, one address whichever spelling is used."""

from __future__ import annotations

from enum import Enum, IntEnum, StrEnum
from typing import Any

import pytest

from tinybus import EventBus, Message


class Address(str, Enum):
    CREATE_USER = "create_user"
    USER_CREATED = "user.created"


class Topic(StrEnum):
    TICK = "tick"


class Numbered(IntEnum):
    ONE = 1


class Empty(str, Enum):
    NOTHING = ""


async def test_enum_member_and_its_value_are_one_address(bus: EventBus) -> None:
    bus.consumer(Address.CREATE_USER, lambda message: f"created {message.body}")
    assert await bus.request("create_user", "ada") == "created ada"
    assert await bus.request(Address.CREATE_USER, "bob") == "created bob"
    assert bus.get_consumers() == ["create_user"]


async def test_listener_registered_by_string_hears_enum_publish(bus: EventBus) -> None:
    heard: list[Any] = []
    bus.on("user.created", heard.append)
    bus.on(Topic.TICK, heard.append)
    await bus.publish(Address.USER_CREATED, 1)
    await bus.publish("tick", 2)
    assert heard == [1, 2]
    assert bus.get_listeners(Address.USER_CREATED) == [heard.append]


async def test_message_address_is_the_plain_string(bus: EventBus) -> None:
    seen: list[Message[Any]] = []
    bus.consumer(Address.CREATE_USER, seen.append)
    await bus.send(Address.CREATE_USER, None)
    assert type(seen[0].address) is str
    assert seen[0].address == "create_user"


BAD_ADDRESSES: list[tuple[Any, type[Exception], str]] = [
    ("", ValueError, "non-empty string, got ''"),
    (None, TypeError, "got None of type NoneType"),
    (42, TypeError, "got 42 of type int"),
    (b"bytes", TypeError, "got b'bytes' of type bytes"),
    (Numbered.ONE, TypeError, "value 1"),
    (Empty.NOTHING, TypeError, "non-empty str value"),
]


@pytest.mark.parametrize(("address", "error", "match"), BAD_ADDRESSES)
async def test_bad_addresses_are_refused_by_every_call(
    bus: EventBus, address: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        bus.consumer(address, print)
    with pytest.raises(error, match=match):
        bus.on(address, print)
    with pytest.raises(error, match=match):
        bus.consumer(address)
    with pytest.raises(error, match=match):
        await bus.request(address, 1)
    with pytest.raises(error, match=match):
        await bus.publish(address, 1)
    with pytest.raises(error, match=match):
        await bus.send(address, 1)
    with pytest.raises(error, match=match):
        bus.observe(address)
    assert bus.get_consumers() == []


async def test_typed_addresses_route_like_their_strings(bus: EventBus) -> None:
    from tinybus import Address as TypedAddress
    from tinybus import Event

    get_user = TypedAddress[int, str]("users.get")
    created = Event[str]("users.created")
    heard: list[str] = []
    bus.consumer(get_user, lambda message: f"user {message.body}")
    bus.on(created, heard.append)
    assert await bus.request(get_user, 1) == "user 1"
    assert await bus.request("users.get", 2) == "user 2"
    await bus.publish("users.created", "ada")
    await bus.publish(created, "bob")
    assert heard == ["ada", "bob"]
    assert str(get_user) == "users.get"
    assert "users.get" in repr(get_user)
    assert get_user == TypedAddress[int, str]("users.get")
    assert get_user != created
    with pytest.raises(ValueError, match="non-empty"):
        Event[str]("")
