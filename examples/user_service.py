"""The user service: a consumer that creates users, one that reads them, and an event.

Run it with ``uv run examples/user_service.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from enum import Enum

from pydantic import BaseModel

from tinybus import EventBus, Message


class Topic(str, Enum):
    CREATE_USER = "users.create"
    GET_USER = "users.get"
    USER_CREATED = "users.created"


class CreateUser(BaseModel):
    name: str
    email: str


class User(BaseModel):
    id: uuid.UUID
    name: str
    email: str


class UserService:
    """An actor owning its state; the rest of the application reaches it only over the bus."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.users: dict[uuid.UUID, User] = {}
        bus.consumer(Topic.CREATE_USER, self.create)
        bus.consumer(Topic.GET_USER, self.get)

    async def create(self, message: Message[CreateUser]) -> User:
        user = User(id=uuid.uuid4(), **message.body.model_dump())
        self.users[user.id] = user
        await self.bus.publish(Topic.USER_CREATED, user)
        return user

    async def get(self, message: Message[uuid.UUID]) -> User | None:
        return self.users.get(message.body)


async def main() -> None:
    async with EventBus() as bus:
        UserService(bus)

        @bus.on(Topic.USER_CREATED)
        async def announce(user: User) -> None:
            print(f"User created: {user.name}")

        created: User = await bus.request(
            Topic.CREATE_USER, CreateUser(name="john", email="john@example.com")
        )
        fetched: User | None = await bus.request(Topic.GET_USER, created.id)
        assert fetched is not None
        print(f"Retrieved user: {fetched.name}")


if __name__ == "__main__":
    asyncio.run(main())
