"""A bus in an OS process of its own, for the tests across processes (``processes.py``).

``python worker.py URL NAME LOG``: connects to the NATS server at URL, registers the
handlers below, logs to the file LOG, and prints ``ready NAME`` once every registration is
exported (``wait_exported``). Some handlers print a line when they start, so a test can wait
for that event. It serves until its stdin closes, then closes its bus and exits 0.

- ``work``: a consumer that answers ``{"worker": NAME, "body": body}``.
- ``news.today`` (a listener) and ``news.*`` (a pattern listener) note what they hear.
- ``NAME.heard``: a consumer that answers what the listeners heard and how many ``work``
  requests this process answered.
- ``boom`` raises ``ValueError``; ``pay`` fails with code 402; ``orders`` takes an ``Order``.
- ``slow`` prints ``slow NAME BODY`` and answers once a ``slow.release`` is published.
- ``chat``: a conversation (``reply_and_request``); ``ask``: asks the conversation at the
  address it is sent, from this process, and answers how it ended.
- ``private``: a consumer made ``local=True``, which no other process reaches.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from pydantic import BaseModel

from tinybus import EventBus, Message
from tinybus.nats import NatsTransport


class Order(BaseModel):
    item: str
    quantity: int


async def serve(url: str, name: str) -> None:
    heard: list[list[Any]] = []
    answered = 0
    released = asyncio.Event()

    def work(message: Message[Any]) -> dict[str, Any]:
        nonlocal answered
        answered += 1
        return {"worker": name, "body": message.body}

    def boom(message: Message[Any]) -> None:
        raise ValueError(f"no such order: {message.body}")

    def pay(message: Message[Any]) -> None:
        message.fail(402, "no funds")

    def total(order: Order) -> int:
        return order.quantity * 2

    async def slow(message: Message[Any]) -> str:
        print(f"slow {name} {message.body}", flush=True)
        await released.wait()
        return f"late from {name}"

    async def chat(message: Message[str]) -> None:
        challenge = await message.reply_and_request(f"password for {message.body}?", timeout=5)
        challenge.reply("welcome" if challenge.body == "s3cret" else "denied")

    async def ask(message: Message[str]) -> str:
        question = await bus.request(message.body, "ada", full=True)
        answer = await question.reply_and_request(f"{name} says s3cret")
        return f"{question.body} / {answer.body}"

    async with EventBus(transport=NatsTransport(url), default_timeout=5.0) as bus:
        registrations = [
            bus.consumer("work", work),
            bus.on("news.today", lambda body: heard.append(["plain", body])),
            bus.on("news.*", lambda body: heard.append(["pattern", body])),
            bus.consumer(f"{name}.heard", lambda message: {"heard": heard, "work": answered}),
            bus.consumer("boom", boom),
            bus.consumer("pay", pay),
            bus.consumer("orders", total),
            bus.consumer("slow", slow),
            bus.on("slow.release", lambda body: released.set()),
            bus.consumer("chat", chat),
            bus.consumer("ask", ask),
        ]
        bus.consumer("private", lambda message: "here", local=True)
        for registration in registrations:
            await registration.wait_exported()
        print(f"ready {name}", flush=True)
        logging.getLogger("tinybus").info("worker %s ready", name)

        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        await stdin.read()  # until the test closes it


def main() -> None:
    url, name, log = sys.argv[1:4]
    logging.basicConfig(
        filename=log, level=logging.DEBUG, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    asyncio.run(serve(url, name))


if __name__ == "__main__":
    main()
