"""A client of the order service, in a process of its own: a quote, the failures that cross
processes, and an order placed and shipped.

    uv run --extra nats examples/cluster/client.py   # with the server and a service running
"""

from __future__ import annotations

import asyncio

from orders import Order, Quote, Topic, server_argument

from tinybus import (
    EventBus,
    HandlerExecutionError,
    MessageValidationError,
    ReplyFailedError,
)
from tinybus.nats import NatsTransport


async def run(server: str) -> None:
    async with EventBus(transport=NatsTransport(server), default_timeout=5.0) as bus:
        quote = await bus.request(Topic.QUOTE, Order(item="tea", quantity=3), response_type=Quote)
        print(f"3 tea cost {quote.total} (quoted by {quote.served_by})")

        try:
            await bus.request(Topic.QUOTE, Order(item="coffee", quantity=1))
        except ReplyFailedError as failed:  # the service's message.fail(404, ...)
            print(f"coffee: failed with {failed.code}: {failed.text}")
        try:
            await bus.request(Topic.QUOTE, Order(item="tea", quantity=0))
        except HandlerExecutionError as raised:  # its exception, by type name and message
            print(f"0 tea: {raised.original_error}")
        try:
            await bus.request(Topic.QUOTE, {"item": "tea"})
        except MessageValidationError as invalid:  # validated on arrival, as locally
            print(f"no quantity: not a valid {invalid.expected}")

        shipped: asyncio.Queue[Order] = asyncio.Queue()

        def on_shipped(order: Order) -> None:  # (validated into an Order on arrival)
            shipped.put_nowait(order)

        await bus.on(Topic.SHIPPED, on_shipped).wait_exported()
        await bus.publish(Topic.PLACED, Order(item="cake", quantity=2))
        order = await asyncio.wait_for(shipped.get(), 5)
        print(f"shipped: {order.quantity} {order.item}")


def main() -> None:
    arguments = server_argument("A client of the cluster example's order service.").parse_args()
    asyncio.run(run(arguments.server))


if __name__ == "__main__":
    main()
