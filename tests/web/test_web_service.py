"""The web-service example (examples/web_service.py), driven through an HTTP client: httpx
on the application's ASGI interface, with its lifespan run as a server would run it."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="needs the web group: uv run --group web pytest tests/web")
pytest.importorskip("httpx", reason="needs the web group: uv run --group web pytest tests/web")

import httpx

from tinybus import EventBus

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "web_service.py"


def _load() -> ModuleType:
    """A fresh copy of the example's module: its own application and state."""
    spec = importlib.util.spec_from_file_location("web_service_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (pydantic resolves the module's annotations through it)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example() -> ModuleType:
    return _load()


@pytest.fixture
async def client(example: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    app: Any = example.app
    async with app.router.lifespan_context(app):  # start-up, then shutdown after the test
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_the_lifespan_opens_the_bus_and_closes_it(example: ModuleType) -> None:
    app: Any = example.app
    async with app.router.lifespan_context(app):
        bus: EventBus = app.state.bus
        assert not bus.is_closed
        assert bus.stats().addresses["users.create"].consumers == 1
    assert bus.is_closed


async def test_an_endpoint_requests_through_the_bus(
    client: httpx.AsyncClient, example: ModuleType
) -> None:
    created = await client.post("/users", json={"name": "ann", "email": "ann@example.com"})
    assert created.status_code == 201
    user = created.json()
    assert user["name"] == "ann"
    found = await client.get(f"/users/{user['id']}")
    assert found.status_code == 200
    assert found.json() == user
    app: Any = example.app
    assert app.state.bus.stats().totals.requested == 2


async def test_an_endpoint_publishes_and_the_listeners_hear_it(
    client: httpx.AsyncClient, example: ModuleType
) -> None:
    created = (await client.post("/users", json={"name": "bob", "email": "b@example.com"})).json()
    await client.get(f"/users/{created['id']}")
    app: Any = example.app
    await app.state.bus.drain(timeout=5)
    assert app.state.audit.seen == ["created bob", f"viewed /users/{created['id']}"]


async def test_the_bus_errors_become_http_statuses(
    client: httpx.AsyncClient, example: ModuleType
) -> None:
    body = {"name": "ann", "email": "ann@example.com"}
    assert (await client.post("/users", json=body)).status_code == 201
    taken = await client.post("/users", json=body)  # the consumer's message.fail(409, ...)
    assert (taken.status_code, taken.json()) == (409, {"detail": "ann@example.com is taken"})
    missing = await client.get("/users/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    invalid = await client.post("/users", json={"name": "no email"})
    assert invalid.status_code == 422  # FastAPI's own validation, before the bus


async def test_a_service_that_does_not_answer_in_time_is_a_gateway_timeout(
    example: ModuleType,
) -> None:
    example.REQUEST_TIMEOUT = 0.05  # pyright: ignore[reportAttributeAccessIssue]
    app: Any = example.app
    async with app.router.lifespan_context(app):
        bus: EventBus = app.state.bus
        stuck = asyncio.Event()

        async def never(message: Any) -> None:
            await stuck.wait()

        bus.consumer("users.get", never)  # takes turns with the user service's
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            path = "/users/00000000-0000-0000-0000-000000000000"
            assert (await client.get(path)).status_code == 404  # the user service's turn
            assert (await client.get(path)).status_code == 504  # the stuck one's
        stuck.set()


async def test_a_closed_bus_is_service_unavailable(
    client: httpx.AsyncClient, example: ModuleType
) -> None:
    app: Any = example.app
    await app.state.bus.close()  # as at shutdown: requests are refused
    refused = await client.get("/users/00000000-0000-0000-0000-000000000000")
    assert refused.status_code == 503
