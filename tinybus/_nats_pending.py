"""Requests and sends out on NATS, kept until answered or their time is up, so that one the
server answers "no responders" is sent again within its grace period (a consumer that just
subscribed on another server of a cluster, or just after a reconnection, is not seen at
once), and fails with ``HandlerNotFoundError`` after it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from .errors import HandlerNotFoundError

RETRY_AFTER = 0.002  # between sends within the grace period (seconds)
SEND_WATCH = 2.0  # how long a send's no-responders answer is waited for, past the grace


class Outgoing:
    """A request or send on the wire: what to send again, and until when."""

    __slots__ = ("address", "deadline", "grace_end", "headers", "payload", "subject")

    def __init__(
        self,
        address: str,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        grace_end: float,
        deadline: float,
    ) -> None:
        self.address = address
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.grace_end = grace_end
        self.deadline = deadline


class Pending:
    """The requests (by their reply token) and sends (tokens ``s<n>``) out on the wire."""

    def __init__(
        self,
        grace: float,
        resend: Callable[[str, Outgoing], None],
        clock: Callable[[], float],
    ) -> None:
        self.grace = grace
        self.resend = resend  # sends it again, with the remaining timeout
        self.clock = clock
        self.by_token: dict[str, Outgoing] = {}
        self.timers: set[asyncio.TimerHandle] = set()
        self._sends = itertools.count(1)

    def send_token(self) -> str:
        return f"s{next(self._sends)}"

    def keep(
        self,
        token: str,
        address: str,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        timeout: float | None,
    ) -> None:
        """Keep what was sent, a request until ``timeout``, a send for a short while."""
        now = self.clock()
        grace_end = now + self.grace
        deadline = grace_end + SEND_WATCH if timeout is None else now + timeout
        by_token = self.by_token
        if by_token:  # forget, from the oldest, those whose time is up
            for old in list(itertools.islice(by_token, 8)):
                if by_token[old].deadline <= now:
                    del by_token[old]
        by_token[token] = Outgoing(address, subject, payload, headers, grace_end, deadline)

    def answered(self, token: str) -> Outgoing | None:
        return self.by_token.pop(token, None)

    def no_responders(self, token: str) -> tuple[Outgoing, HandlerNotFoundError] | None:
        """The server answered that nobody subscribes: send it again within the grace
        period (None), else forget it and return it with its error."""
        outgoing = self.by_token.get(token)
        if outgoing is None:
            return None
        now = self.clock()
        if now < outgoing.grace_end and now < outgoing.deadline:
            timer: asyncio.TimerHandle | None = None

            def again() -> None:
                assert timer is not None
                self.timers.discard(timer)
                if self.by_token.get(token) is outgoing:
                    self.resend(token, outgoing)

            delay = min(RETRY_AFTER, outgoing.grace_end - now)
            timer = asyncio.get_running_loop().call_later(delay, again)
            self.timers.add(timer)
            return None
        del self.by_token[token]
        error = HandlerNotFoundError(
            outgoing.address,
            f"no consumer is registered at address {outgoing.address!r} in this process or "
            "any other connected to NATS (the server answered: no responders)",
        )
        return outgoing, error

    def clear(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.by_token.clear()
