"""``Instrumentation``: the one hook through which a bus is traced and measured.

A bus built without one (``EventBus()``, the default) pays one ``is None`` test where a
message is made, where its sender is done with it, and where a handler is called. With one
(``EventBus(instrumentation=...)``; ``tinybus.otel.OpenTelemetry`` is the one the package
ships), the bus tells it:

- ``bind``: the bus it serves, once, as its statistics (``bus.stats``), which is where the
  counting already is;
- ``outgoing``: a message the bus made for ``publish``, ``send`` or one attempt of
  ``request``, after the interceptors: it returns the message to push instead (the same, or
  one with headers added: ``message.with_headers``). The message takes the same way as any;
- ``done``: its sender is done with that message: a publish or send pushed (``error``: what
  the sender got instead, ``HandlerNotFoundError`` for one), an attempt of a request
  answered (``error``: the failure, timeout or cancellation its requester gets). Called
  exactly once for each message ``outgoing`` returned;
- ``handle``: call a handler with its argument, in the one place handlers are called
  (``message`` is what reached it, or ``None`` for a body a ``pipe=`` let out), and return
  what it returned. A coroutine (or awaitable) it returns is awaited by the bus where it
  would have been (a task, or the caller's own for an inline handler), so an instrumentation
  that wraps it sees the handler's run end.

What it raises reaches the caller as if the bus had raised it: an instrumentation must not
raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .message import Message
    from .stats import BusStats


class Instrumentation(Protocol):
    """What a bus tells the instrumentation it was built with (see the module)."""

    def bind(self, stats: Callable[[], BusStats]) -> None:
        """The bus this serves, as its ``stats``; called once, when the bus is built."""
        ...

    def outgoing(self, message: Message[Any]) -> Message[Any]:
        """A published, sent or requested message, before it is pushed: what to push."""
        ...

    def done(self, message: Message[Any], error: BaseException | None) -> None:
        """The sender is done with ``message``: pushed, or its request attempt answered."""
        ...

    def handle(
        self,
        address: str,
        handler: Callable[[Any], Any],
        message: Message[Any] | None,
        argument: Any,
    ) -> Any:
        """Call ``handler(argument)`` for ``message`` at ``address``; what it returned."""
        ...
