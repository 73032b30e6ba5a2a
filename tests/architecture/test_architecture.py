"""The shape of the bus, as ``docs/architecture.md`` describes it.

Every message takes one way: pushed into its address's Subject, whatever its kind and
whatever its handlers are (plain, coroutine, inline, piped, buffered); every answer is pushed
into the reply Subject. The core is laid out as the architecture says: small private modules,
no import cycle at run time, no reaching into other modules' private attributes.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from reactivex import operators as ops

import tinybus
from tinybus import EventBus, Message
from tinybus._replies import ReplySubject
from tinybus._routes import AddressSubject
from tinybus._subject import LoopSubject

PACKAGE = Path(tinybus.__file__).parent


class Pushes:
    """Counts what is pushed into address Subjects (by address) and the reply Subject."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.addresses: Counter[tuple[str, str]] = Counter()
        self.replies = 0
        address_on_next = AddressSubject.on_next
        reply_on_next = ReplySubject.on_next

        def counted_address(subject: AddressSubject, message: Message[Any]) -> None:
            self.addresses[(subject.address, message.kind)] += 1
            address_on_next(subject, message)

        def counted_reply(subject: ReplySubject, reply: Any) -> None:
            self.replies += 1
            reply_on_next(subject, reply)

        monkeypatch.setattr(AddressSubject, "on_next", counted_address)
        monkeypatch.setattr(ReplySubject, "on_next", counted_reply)


async def _returns(message: Message[int]) -> int:
    return message.body


async def _awaits(message: Message[int]) -> int:
    await asyncio.sleep(0)
    return message.body


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"inline": True},
        {"max_concurrency": 1},
        {"pipe": [ops.filter(lambda message: True)]},
    ],
    ids=["task", "inline", "buffered", "piped"],
)
@pytest.mark.parametrize("handler", [_returns, _awaits, lambda message: message.body])
async def test_every_message_goes_through_its_subject_and_every_answer_through_the_reply_subject(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], handler: Any
) -> None:
    pushes = Pushes(monkeypatch)
    async with EventBus() as bus:
        await _exchange_messages(bus, handler, options)
    assert pushes.addresses == {
        ("news", "publish"): 20,
        ("work", "send"): 20,
        ("work", "request"): 20,
    }
    assert pushes.replies == 20


async def _exchange_messages(bus: EventBus, handler: Any, options: dict[str, Any]) -> None:
    bus.consumer("work", handler, **options)
    bus.on("news", handler, **options)
    for n in range(20):
        await bus.publish("news", n)
        await bus.send("work", n)
        assert await bus.request("work", n) == n
    await bus.drain()


async def test_publish_reaches_pattern_subjects_and_observers_through_the_subject(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushes = Pushes(monkeypatch)
    seen: list[int] = []
    bus.on("user.*", lambda body: None)
    bus.observe("user.1").subscribe(lambda message: seen.append(message.body))
    for n in range(5):
        await bus.publish("user.1", n)
    assert pushes.addresses == {("user.1", "publish"): 5, ("user.*", "publish"): 5}
    assert seen == [0, 1, 2, 3, 4]


async def test_a_conversation_answers_through_the_reply_subject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pushes = Pushes(monkeypatch)
    async with EventBus() as bus:

        @bus.consumer("login")
        async def login(message: Message[str]) -> None:
            answer = await message.reply_and_request("password?")
            answer.reply(f"welcome, {answer.body}")

        question = await bus.request("login", "ann", full=True)
        final = await question.reply_and_request("s3cret")
    assert final.body == "welcome, s3cret"
    assert pushes.replies == 3  # the question, the password, the welcome


# -- the layout ----------------------------------------------------------------------------


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def test_no_module_is_over_about_400_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in _modules()}
    assert {name: size for name, size in sizes.items() if size > 420} == {}


def test_the_public_api_is_what_the_package_exports_and_every_other_module_is_private() -> None:
    public = {path.stem for path in _modules() if not path.stem.startswith("_")}
    assert public == {
        "addresses",
        "bus",
        "codecs",
        "errors",
        "gather",
        "headers",
        "instrumentation",
        "iteration",
        "message",
        "nats",
        "notebook",
        "otel",
        "options",
        "producers",
        "registration",
        "stats",
    }
    for name in tinybus.__all__:
        exported = getattr(tinybus, name)
        module = getattr(exported, "__module__", "tinybus._address")  # (MAX_ADDRESS_LENGTH)
        assert module.split(".")[1] in public | {"_address"}, name


def test_no_module_reaches_into_another_modules_private_attributes() -> None:
    """Modules share state through attributes and small protocols meant for it."""
    for path in _modules():
        assert "reportPrivateUsage" not in path.read_text(), path.name


def test_importing_any_module_first_works_without_an_import_cycle() -> None:
    """Each module imports on its own in a fresh interpreter (a cycle at run time would
    fail for the module imported first)."""
    names = [f"tinybus.{path.stem}" for path in _modules() if path.stem != "__init__"]
    names.remove("tinybus.notebook")  # (imports matplotlib lazily; covered by its tests)
    names.remove("tinybus.otel")  # (needs the tinybus[otel] extra; covered by tests/otel)
    script = "; ".join(
        f"import importlib, sys; importlib.import_module({name!r}); "
        "[sys.modules.pop(m) for m in list(sys.modules) if m.startswith('tinybus')]"
        for name in names
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_the_core_does_not_import_pydantic_until_a_type_needs_it() -> None:
    """``import tinybus`` stays light: pydantic comes with the first validated handler."""
    script = (
        "import sys, tinybus\n"
        "assert 'pydantic' not in sys.modules, 'imported by tinybus itself'\n"
        "bus = tinybus.EventBus()\n"
        "bus.on('a', lambda body: None)\n"
        "assert 'pydantic' not in sys.modules, 'imported for an unannotated handler'\n"
        "def typed(body: int) -> None: ...\n"
        "bus.on('b', typed)\n"
        "assert 'pydantic' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_an_address_with_one_listener_costs_few_tracked_objects() -> None:
    """At most 10 objects the garbage collector tracks per address with one listener (the
    collector's time grows with them: a full collection at a million addresses)."""

    def listener(body: Any) -> None: ...

    bus = EventBus()
    count = 2000
    gc.collect()
    before = len(gc.get_objects())
    for n in range(count):
        bus.on(f"address.{n}", listener)
    gc.collect()
    per_address = (len(gc.get_objects()) - before) / count
    assert per_address <= 10, per_address


def test_loop_subjects_are_reactivex_subjects() -> None:
    from reactivex.subject import Subject

    assert issubclass(AddressSubject, Subject)
    assert issubclass(ReplySubject, Subject)
    assert issubclass(LoopSubject, Subject)


def test_the_front_delegates_rather_than_implementing() -> None:
    """``EventBus`` checks arguments and hands each call on: no method of it is long."""
    tree = ast.parse((PACKAGE / "bus.py").read_text())
    [front] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EventBus"]
    long_methods = {}
    for node in front.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body  # docstring
            lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0  # type: ignore[operator]
            if lines > 25:
                long_methods[node.name] = lines
    assert long_methods == {}
