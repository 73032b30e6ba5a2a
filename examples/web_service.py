"""A web service in front of the bus: FastAPI endpoints that request and publish through it.

The application's lifespan opens the bus, starts the services that live on it, and closes it
(letting running handlers finish) when the server stops. An endpoint never calls a service
directly: it requests (and waits for the answer) or publishes (and returns at once), and the
bus's errors become HTTP statuses in one place.

Run it with ``uv run --group web uvicorn examples.web_service:app`` (uvicorn is not in the
group: add it, or use any ASGI server); ``tests/web`` drives it through httpx.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tinybus import (
    BusClosedError,
    EventBus,
    HandlerExecutionError,
    HandlerNotFoundError,
    HandlerTimeoutError,
    Message,
    ReplyFailedError,
)


class CreateUser(BaseModel):
    name: str
    email: str


class User(BaseModel):
    id: uuid.UUID
    name: str
    email: str


class UserService:
    """An actor owning its users; the web layer reaches it only over the bus."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.users: dict[uuid.UUID, User] = {}
        bus.consumer("users.create", self.create)
        bus.consumer("users.get", self.get)

    async def create(self, message: Message[CreateUser]) -> User | None:
        new = message.body
        if any(user.email == new.email for user in self.users.values()):
            message.fail(409, f"{new.email} is taken")  # the requester's ReplyFailedError
            return None
        user = User(id=uuid.uuid4(), **new.model_dump())
        self.users[user.id] = user
        await self.bus.publish("users.created", user)
        return user

    async def get(self, user_id: uuid.UUID) -> User | None:
        return self.users.get(user_id)


class Audit:
    """A listener: what the endpoints publish, and what the services announce."""

    def __init__(self, bus: EventBus) -> None:
        self.seen: list[str] = []
        bus.on("users.created", self.created)
        bus.on("page.viewed", self.viewed)

    def created(self, user: User) -> None:
        self.seen.append(f"created {user.name}")

    def viewed(self, path: str) -> None:
        self.seen.append(f"viewed {path}")


# How long an endpoint waits for a service's answer before answering 504.
REQUEST_TIMEOUT = 5.0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The bus lives as long as the application: opened at start-up, closed at shutdown.
    async with EventBus(default_timeout=REQUEST_TIMEOUT) as bus:
        app.state.bus = bus
        app.state.users = UserService(bus)
        app.state.audit = Audit(bus)
        yield


app = FastAPI(lifespan=lifespan)


def get_bus(request: Request) -> EventBus:
    return request.app.state.bus


Bus = Annotated[EventBus, Depends(get_bus)]


@app.post("/users", status_code=201)
async def create_user(new: CreateUser, bus: Bus) -> User:
    return await bus.request("users.create", new, response_type=User)


@app.get("/users/{user_id}")
async def get_user(user_id: uuid.UUID, bus: Bus) -> User:
    await bus.publish("page.viewed", f"/users/{user_id}")
    user: User | None = await bus.request("users.get", user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"no user {user_id}")
    return user


# The bus's errors, as HTTP: what a requester can get, in one place.


@app.exception_handler(ReplyFailedError)
async def replied_with_failure(request: Request, error: ReplyFailedError) -> JSONResponse:
    status = error.code if 400 <= error.code < 600 else 502
    return JSONResponse({"detail": error.text}, status_code=status)


@app.exception_handler(HandlerTimeoutError)
async def timed_out(request: Request, error: HandlerTimeoutError) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=504)


@app.exception_handler(HandlerNotFoundError)
@app.exception_handler(BusClosedError)
async def unavailable(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=503)


@app.exception_handler(HandlerExecutionError)
async def service_failed(request: Request, error: HandlerExecutionError) -> JSONResponse:
    # A service's bug: logged by the server, not shown to the client.
    return JSONResponse({"detail": "internal error"}, status_code=500)
