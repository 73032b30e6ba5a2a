"""``DeliveryOptions``: how one message is delivered (timeout, headers, retries)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .message import freeze_headers


def check_timeout(timeout: object, what: str = "timeout") -> float:
    """Return ``timeout`` as seconds, refusing anything but a positive number.

    ``math.inf`` is accepted and means "wait for as long as it takes".
    """
    if type(timeout) is float or type(timeout) is int:
        if timeout > 0:
            return float(timeout)
        raise ValueError(f"{what} must be a positive number of seconds, got {timeout!r}")
    raise TypeError(
        f"{what} must be a positive number of seconds, got {timeout!r} of type "
        f"{type(timeout).__name__}"
    )


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """Options for one delivery, accepted as ``options=`` by request, publish and send.

    - ``timeout``: seconds a request waits for its reply; ``None`` means the bus's
      ``default_timeout`` (30 s unless the bus was built with another).
    - ``headers``: headers added to the message; headers passed to the call itself are
      merged over these.
    - ``retry_attempts``: how many more times a request is sent when an attempt times out.
      Each attempt has the full timeout. Publish and send, which wait for no reply, ignore it.

    Keyword arguments given to the call itself win over these.
    """

    timeout: float | None = None
    headers: Mapping[str, str] | None = None
    retry_attempts: int = 0

    def __post_init__(self) -> None:
        if self.timeout is not None:
            object.__setattr__(self, "timeout", check_timeout(self.timeout))
        if type(self.retry_attempts) is not int or self.retry_attempts < 0:
            raise ValueError(f"retry_attempts must be an int >= 0, got {self.retry_attempts!r}")
        if self.headers is not None:
            object.__setattr__(self, "headers", freeze_headers(self.headers))
