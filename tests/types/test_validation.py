"""Validation at the boundary: handlers' annotations checked and converted with pydantic."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Strict, field_validator

from tinybus import (
    EventBus,
    HandlerExecutionError,
    Message,
    MessageValidationError,
)
from tinybus.testing import FailureLog


class CreateUser(BaseModel):
    name: str
    age: int


class User(BaseModel):
    id: int
    name: str


class Page[T](BaseModel):
    items: list[T]
    total: int


@dataclasses.dataclass
class Point:
    x: float
    y: float


async def test_dict_body_becomes_the_declared_model(bus: EventBus) -> None:
    seen: list[Message[CreateUser]] = []

    @bus.consumer("users.create")
    async def create(message: Message[CreateUser]) -> str:
        seen.append(message)
        return message.body.name

    assert await bus.request("users.create", {"name": "ada", "age": "36"}) == "ada"
    [message] = seen
    assert message.body == CreateUser(name="ada", age=36)
    assert message.address == "users.create"


async def test_body_of_the_declared_type_passes_through_without_a_copy(bus: EventBus) -> None:
    seen: list[Any] = []

    @bus.consumer("users.create")
    def create(message: Message[CreateUser]) -> None:
        seen.append(message.body)

    body = CreateUser(name="ada", age=36)
    await bus.request("users.create", body)
    assert seen[0] is body


async def test_lax_mode_by_default_strict_when_the_annotation_asks(bus: EventBus) -> None:
    bus.consumer("lax", lambda message: message.body)

    def lax(message: Message[int]) -> int:
        return message.body

    def strict(message: Message[Annotated[int, Strict()]]) -> int:
        return message.body

    bus.consumer("lax.int", lax)
    bus.consumer("strict.int", strict)
    assert await bus.request("lax.int", "42") == 42
    with pytest.raises(MessageValidationError):
        await bus.request("strict.int", "42")
    assert await bus.request("strict.int", 42) == 42


async def test_invalid_body_fails_the_request_and_never_reaches_the_handler(
    bus: EventBus,
) -> None:
    calls: list[Any] = []

    @bus.consumer("users.create")
    def create(message: Message[CreateUser]) -> None:
        calls.append(message)

    with pytest.raises(MessageValidationError) as caught:
        await bus.request("users.create", {"name": "ada", "age": "old"})
    error = caught.value
    assert calls == []
    assert error.address == "users.create"
    assert error.expected == "CreateUser"
    assert [detail["loc"] for detail in error.errors] == [("age",)]
    assert str(error) == (
        "the body sent to 'users.create' is not a valid CreateUser: "
        "age: Input should be a valid integer, unable to parse string as an integer"
    )
    assert error.__cause__ is not None


async def test_invalid_body_for_a_listener_goes_to_errors_and_others_still_hear(
    bus: EventBus, failures: FailureLog
) -> None:
    heard: list[Any] = []

    def typed(user: User) -> None:
        heard.append(("typed", user))

    bus.on("users.created", typed)
    bus.on("users.created", lambda body: heard.append(("untyped", body)))
    await bus.publish("users.created", {"id": "not a number", "name": "ada"})
    assert heard == [("untyped", {"id": "not a number", "name": "ada"})]
    [failure] = failures
    assert failure.handler is typed
    assert isinstance(failure.exception, MessageValidationError)
    assert failure.exception.expected == "User"


async def test_listener_receives_the_converted_body(bus: EventBus) -> None:
    heard: list[Any] = []

    @bus.on("users.created")
    async def created(user: User) -> None:
        heard.append(user)

    await bus.publish("users.created", {"id": "7", "name": "ada"})
    assert heard == [User(id=7, name="ada")]


async def test_listener_annotated_with_message_receives_the_whole_message(bus: EventBus) -> None:
    heard: list[Message[Point]] = []

    @bus.on("points")
    def point(message: Message[Point]) -> None:
        heard.append(message)

    await bus.publish("points", {"x": 1, "y": "2.5"}, headers={"unit": "m"})
    [message] = heard
    assert message.body == Point(1.0, 2.5)
    assert message.address == "points"
    assert dict(message.headers) == {"unit": "m"}


async def test_reply_that_does_not_match_the_return_type_fails_the_request(
    bus: EventBus,
) -> None:
    @bus.consumer("users.get")
    def get(message: Message[int]) -> User:
        return "not a user"  # type: ignore[return-value]

    with pytest.raises(HandlerExecutionError) as caught:
        await bus.request("users.get", 1)
    message = str(caught.value)
    assert message.startswith("the handler for 'users.get' returned an invalid type: expected User")
    assert "got str" in message


async def test_reply_that_can_be_converted_is_converted(bus: EventBus) -> None:
    @bus.consumer("users.get")
    async def get(message: Message[int]) -> User:
        return {"id": message.body, "name": "ada"}  # type: ignore[return-value]

    assert await bus.request("users.get", 3) == User(id=3, name="ada")


async def test_unannotated_any_and_object_accept_everything_unchanged(bus: EventBus) -> None:
    def with_any(message: Message[Any]) -> Any:
        return message.body

    def with_object(message: Message[object]) -> object:
        return message.body

    def bare(message: Message):
        return message.body

    bus.consumer("any", with_any)
    bus.consumer("object", with_object)
    bus.consumer("bare", bare)
    bus.consumer("lambda", lambda message: message.body)
    body = {"anything": [1, "two"]}
    for address in ("any", "object", "bare", "lambda"):
        assert await bus.request(address, body) is body


async def test_validate_false_on_a_registration_turns_it_off(bus: EventBus) -> None:
    def create(message: Message[CreateUser]) -> Any:
        return message.body

    bus.consumer("users.create", create, validate=False)
    assert await bus.request("users.create", "not a model") == "not a model"


async def test_validate_false_on_the_bus_and_back_on_per_registration() -> None:
    async with EventBus(validate=False) as bus:

        def create(message: Message[CreateUser]) -> Any:
            return message.body

        def checked(message: Message[CreateUser]) -> Any:
            return message.body

        bus.consumer("off", create)
        bus.consumer("on", checked, validate=True)
        assert await bus.request("off", 1) == 1
        with pytest.raises(MessageValidationError):
            await bus.request("on", 1)


async def test_response_type_validates_on_the_requester_side(bus: EventBus) -> None:
    bus.consumer("users.get", lambda message: {"id": "5", "name": "ada"})
    bus.consumer("users.broken", lambda message: {"id": "five"})
    user = await bus.request("users.get", 5, response_type=User)
    assert user == User(id=5, name="ada")
    with pytest.raises(MessageValidationError) as caught:
        await bus.request("users.broken", 5, response_type=User)
    assert str(caught.value).startswith("the reply from 'users.broken' is not a valid User:")
    assert await bus.request("users.get", 5, response_type=dict[str, str]) == {
        "id": "5",
        "name": "ada",
    }


async def test_pep_695_generic_models(bus: EventBus) -> None:
    @bus.consumer("pages")
    def first_item(message: Message[Page[int]]) -> Page[str]:
        return Page[str](items=[str(message.body.items[0])], total=message.body.total)

    reply = await bus.request("pages", {"items": ["1", 2], "total": 2})
    assert reply == Page[str](items=["1"], total=2)
    with pytest.raises(MessageValidationError, match=r"Page\[int\]"):
        await bus.request("pages", {"items": ["x"], "total": 1})


async def test_optional_union_and_none_bodies(bus: EventBus) -> None:
    def optional(message: Message[int | None]) -> str:
        return repr(message.body)

    def union(message: Message[int | uuid.UUID]) -> str:
        return type(message.body).__name__

    def required(message: Message[int]) -> int:
        return message.body

    def returns_none(message: Message[None]) -> None:
        return None

    bus.consumer("optional", optional)
    bus.consumer("union", union)
    bus.consumer("required", required)
    bus.consumer("none", returns_none)
    assert await bus.request("optional", None) == "None"
    assert await bus.request("optional", "3") == "3"
    assert await bus.request("union", 3) == "int"
    assert await bus.request("union", str(uuid.UUID(int=1))) == "UUID"
    assert await bus.request("none", None) is None
    with pytest.raises(MessageValidationError, match="not a valid int"):
        await bus.request("required", None)
    with pytest.raises(MessageValidationError):
        await bus.request("none", 0)


async def test_dataclass_bodies_are_converted(bus: EventBus) -> None:
    @bus.consumer("points.norm")
    def norm(message: Message[Point]) -> float:
        return (message.body.x**2 + message.body.y**2) ** 0.5

    assert await bus.request("points.norm", {"x": 3, "y": 4}) == 5.0
    assert await bus.request("points.norm", Point(6, 8)) == 10.0


def test_unresolvable_annotation_is_a_clear_error_at_registration() -> None:
    bus = EventBus()

    def handler(message: Message[NotDefinedAnywhere]) -> None:  # noqa: F821  # pyright: ignore[reportUndefinedVariable]
        pass

    with pytest.raises(TypeError, match=r"NotDefinedAnywhere.*validate=False"):
        bus.consumer("x", handler)
    bus.consumer("x", handler, validate=False)
    assert bus.get_consumers() == ["x"]


async def test_bound_methods_and_callable_objects_are_read_too(bus: EventBus) -> None:
    class Service:
        def get(self, message: Message[int]) -> int:
            return message.body * 2

    class Callable:
        def __call__(self, message: Message[int]) -> int:
            return message.body * 3

    bus.consumer("method", Service().get)
    bus.consumer("object", Callable())
    assert await bus.request("method", "2") == 4
    assert await bus.request("object", "2") == 6


class Known(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def known(cls, value: str) -> str:
        return {"ada": "Ada", "Ada": "Ada"}[value]  # KeyError for others: not a ValueError


@pytest.mark.parametrize("asynchronous", [True, False])
async def test_a_reply_validator_raising_any_exception_fails_the_request_at_once(
    bus: EventBus, asynchronous: bool
) -> None:
    async def get_async(message: Message[str]) -> Known:
        return {"name": message.body}  # type: ignore[return-value]

    def get_sync(message: Message[str]) -> Known:
        return {"name": message.body}  # type: ignore[return-value]

    bus.consumer("users.get", get_async if asynchronous else get_sync)
    assert await bus.request("users.get", "ada", timeout=5) == Known(name="Ada")
    with pytest.raises(HandlerExecutionError, match=r"returned an invalid type.*KeyError"):
        await bus.request("users.get", "bob", timeout=5)


async def test_a_body_validator_raising_any_exception_is_a_validation_error(
    bus: EventBus,
) -> None:
    bus.consumer("users.create", lambda message: None)

    def create(message: Message[Known]) -> None:
        pass

    bus.consumer("users.known", create)
    with pytest.raises(MessageValidationError, match="KeyError"):
        await bus.request("users.known", {"name": "bob"}, timeout=5)


async def test_without_validation_a_listener_annotated_message_still_gets_the_message(
    bus: EventBus,
) -> None:
    heard: list[Any] = []

    def whole(message: Message[User]) -> None:
        heard.append(message)

    bus.on("users.created", whole, validate=False)
    await bus.publish("users.created", {"not": "checked"})
    [message] = heard
    assert isinstance(message, Message)
    assert message.body == {"not": "checked"}


# -- one handler rule for consumers and listeners --------------------------------------------


async def test_a_consumer_annotated_with_a_body_type_gets_the_body_validated(
    bus: EventBus,
) -> None:
    """The FastStream way: ``def double(x: int) -> int`` receives the body, converted."""

    @bus.consumer("math.double")
    def double(x: int) -> int:
        return x * 2

    assert await bus.request("math.double", 21) == 42
    assert await bus.request("math.double", "21") == 42  # lax: converted to the annotation
    with pytest.raises(MessageValidationError, match="is not a valid int"):
        await bus.request("math.double", "twenty-one")


@pytest.mark.parametrize("role", ["consumer", "listener"])
async def test_one_rule_decides_what_a_handler_receives(bus: EventBus, role: str) -> None:
    """``Message[T]``: the message; another annotation: the body; none: the role's default
    (a consumer the message, a listener the body). The same for both roles."""
    received: dict[str, Any] = {}

    def takes_message(message: Message[int]) -> None:
        received["Message[int]"] = message

    def takes_body(body: int) -> None:
        received["int"] = body

    def takes_anything(value: Any) -> None:
        received["Any"] = value

    def unannotated(value):
        received["none"] = value

    register = bus.consumer if role == "consumer" else bus.on
    for handler in (takes_message, takes_body, takes_anything, unannotated):
        register(f"rule.{handler.__name__}", handler)
        if role == "consumer":
            await bus.send(f"rule.{handler.__name__}", 7)
        else:
            await bus.publish(f"rule.{handler.__name__}", 7)
    assert isinstance(received["Message[int]"], Message)
    assert received["Message[int]"].body == 7
    assert received["int"] == 7
    assert received["Any"] == 7
    if role == "consumer":
        assert isinstance(received["none"], Message)
    else:
        assert received["none"] == 7
