"""What the service and its clients share: the addresses and the bodies' types."""

from __future__ import annotations

import argparse
from enum import StrEnum

from pydantic import BaseModel

DEFAULT_SERVER = "nats://127.0.0.1:4222"


class Topic(StrEnum):
    QUOTE = "orders.quote"  # a consumer: an Order in, a Quote out
    PLACED = "orders.placed"  # an event: an order was placed
    SHIPPED = "orders.shipped"  # an event: the service shipped it


class Order(BaseModel):
    item: str
    quantity: int


class Quote(BaseModel):
    item: str
    quantity: int
    total: float
    served_by: str


def server_argument(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"the NATS server (default {DEFAULT_SERVER})"
    )
    return parser
