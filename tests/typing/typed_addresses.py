"""Checked by pyright (strict) in CI, never run: what type checkers infer for typed addresses.

Each line that must be a type error carries ``# pyright: ignore[...]``; pyright reports an
unnecessary ignore as an error, so the check fails if one of these errors disappears.
"""

from __future__ import annotations

import uuid
from typing import Any, assert_type

from pydantic import BaseModel

from tinybus import Address, Event, EventBus, Message, Registration


class User(BaseModel):
    id: uuid.UUID
    name: str


class Users:
    """A namespace of addresses, as a str Enum would be."""

    GET = Address[uuid.UUID, User | None]("users.get")
    CREATED = Event[User]("users.created")


COUNT = Address[None, int]("users.count")


async def requests(bus: EventBus, uid: uuid.UUID) -> None:
    assert_type(await bus.request(Users.GET, uid), User | None)
    assert_type(await bus.request(COUNT, None), int)
    assert_type(await bus.request("users.get", uid), Any)
    assert_type(await bus.request("users.get", uid, response_type=User), User)
    await bus.request(Users.GET, "not a uuid")  # pyright: ignore[reportCallIssue, reportArgumentType]
    await bus.send(Users.GET, uid)
    await bus.send(Users.GET, 42)  # pyright: ignore[reportCallIssue, reportArgumentType]


async def events(bus: EventBus, user: User) -> None:
    await bus.publish(Users.CREATED, user)
    await bus.publish(Users.CREATED, "not a user")  # pyright: ignore[reportCallIssue, reportArgumentType]
    await bus.publish("users.created", "anything goes on a plain string")


def registrations(bus: EventBus) -> None:
    @bus.consumer(Users.GET)
    async def get(message: Message[uuid.UUID]) -> User | None:
        return None

    @bus.consumer(Users.GET)  # pyright: ignore[reportArgumentType]
    async def wrong_body(message: Message[str]) -> User | None:
        return None

    @bus.consumer(Users.GET)  # pyright: ignore[reportArgumentType]
    async def wrong_reply(message: Message[uuid.UUID]) -> str:
        return ""

    def count(message: Message[None]) -> int:
        return 0

    assert_type(bus.consumer(COUNT, count), Registration)

    @bus.consumer(COUNT)  # the FastStream way: the body itself, validated
    async def count_body(body: None) -> int:
        return 0

    @bus.consumer(Users.GET)  # pyright: ignore[reportArgumentType]
    async def wrong_body_type(body: str) -> User | None:
        return None

    @bus.on(Users.CREATED)
    async def created(user: User) -> None:
        pass

    @bus.on(Users.CREATED)
    async def created_message(message: Message[User]) -> None:
        pass

    @bus.on(Users.CREATED)  # pyright: ignore[reportArgumentType]
    def wrong_listener(user: int) -> None:
        pass

    @bus.consumer("plain")
    async def plain(message: Message[int]) -> int:
        return message.body

    assert_type(plain, Any)  # pyright: ignore[reportAssertTypeFailure]
    _ = (get, wrong_body, wrong_reply, count_body, wrong_body_type, created, created_message)
    _ = wrong_listener


def messages() -> None:
    message = Message.create(3)
    assert_type(message, Message[int])
    assert_type(message.body, int)
    assert_type(Message[str](body="x", id="1").body, str)
