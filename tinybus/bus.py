"""``EventBus``: the public front. It checks arguments and hands each call to the part whose
job it is (see ``docs/architecture.md``)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Self

from reactivex import abc

from ._address import AnyAddress, to_address
from ._answers import Answers
from ._deadlines import loop_clock
from ._dispatch import Dispatch
from ._failures import Failures
from ._inspect import bus_repr, bus_stats
from ._loop import LoopBinding
from ._patterns import ensure_concrete
from ._registering import Registering
from ._registry import Registry
from ._remote import Remote
from ._replies import ReplySubject
from ._requests import Requests
from ._routes import Routes
from ._scatter import Scatter
from ._scheduler import BusScheduler
from ._sending import Sending
from ._shutdown import Shutdown
from ._taps import Taps
from ._tasks import Tasks
from ._transport import Transport
from ._watching import Watching
from .codecs import CodecRegistry, CodecSelector, MessageCodec
from .errors import HandlerFailure
from .headers import HeadersInput
from .instrumentation import Instrumentation
from .options import DeliveryOptions, check_delivery_options, check_timeout
from .producers import Publisher, Sender
from .stats import BusStats, Counters

DEFAULT_TIMEOUT = 30.0
DEFAULT_CLOSE_TIMEOUT = 5.0


class EventBus(Registering, Watching, Sending):
    """An event bus: request-response, publish-subscribe and point-to-point send.

    The bus can be built anywhere, with or without a running event loop; it binds to the loop
    that first uses it and serves that loop only. Use it as ``async with EventBus() as bus:``
    or call ``await bus.close()``.

    ``default_timeout`` is how long a request waits for its reply unless told otherwise;
    ``close_timeout`` is how long ``close()`` lets running handlers finish before cancelling
    them; ``validate=False`` turns off the validation of bodies and replies against handlers'
    annotations (registrations may turn it back on with ``validate=True``). ``transport``
    connects the bus to the buses of other processes (entered with ``async with``).
    ``instrumentation`` traces and measures it (``tinybus.otel.OpenTelemetry()``, the
    ``tinybus[otel]`` extra); without one, nothing is traced and nothing is paid for it.
    """

    _started = False  # its transport connected (start())

    def __init__(
        self,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        validate: bool = True,
        transport: Transport | None = None,
        instrumentation: Instrumentation | None = None,
    ) -> None:
        self._default_timeout = check_timeout(default_timeout, "default_timeout")
        self._close_timeout = _check_grace(close_timeout)
        validate = _check_validate(validate)
        self._transport = transport
        self._loop = loop = LoopBinding(self._on_bind, self._loop_ending)
        self._counts = counts = Counters()
        self._failures = failures = Failures(counts)
        self._scheduler = scheduler = BusScheduler(loop.get)
        self._tasks = tasks = Tasks(loop.get)
        self._routes = routes = Routes(failures.on_observer_error)
        self._replies = replies = ReplySubject(loop.get, counts)
        self._taps = taps = Taps(replies)
        self._codecs = codecs = CodecRegistry()
        self._answers = answers = Answers(codecs, taps)
        self._dispatch = dispatch = Dispatch(routes, tasks, taps, codecs, counts, transport)
        self._registry = Registry(loop, routes, tasks, failures, scheduler, validate, transport)
        self._requests = requests = Requests(
            loop, routes, dispatch, replies, self._default_timeout, transport, answers
        )
        self._instrument(instrumentation)
        self._shutdown = Shutdown(
            loop, tasks, replies, self._registry, routes, scheduler, taps, failures, transport
        )
        scatter = self._scatter = Scatter(loop, routes, dispatch, replies, requests, transport)
        self._remote = Remote(loop, routes, dispatch, replies, requests, scatter, failures)

    def _instrument(self, instrumentation: Instrumentation | None) -> None:
        """One hook, read where it applies (``is None`` when off): see tinybus.instrumentation."""
        if instrumentation is not None:
            self._dispatch.instrumentation = self._registry.instrumentation = instrumentation
            instrumentation.bind(self.stats)

    def _on_bind(self, loop: asyncio.AbstractEventLoop, previous: object) -> None:
        if previous is not None:
            # The old loop is gone (pytest-asyncio and asyncio.run close theirs), and with it
            # every task, future and timer of it: start afresh on the new one.
            self._tasks.reset()
            self._replies.reset()
            self._scheduler.reset()
        self._tasks.loop = loop
        self._replies.clock = loop_clock(loop)
        self._registry.bind(fresh=previous is not None)

    async def _loop_ending(self) -> None:
        await self._shutdown.loop_ending()

    @property
    def scheduler(self) -> abc.SchedulerBase:
        """The bus's asyncio scheduler; pass it to ``subscribe`` for time-based Rx operators."""
        return self._scheduler

    @property
    def is_closed(self) -> bool:
        return self._loop.closed

    @property
    def default_timeout(self) -> float:
        return self._default_timeout

    # -- shutting down -------------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the bus is quiet: no handler running, no message waiting in a buffer
        (except behind a paused registration), and no message held by an operator.

        A message is held by an operator while a timer it set off is pending (``debounce``,
        ``delay``, ``timeout``), or until the next tick of a periodic operator of a pipeline it
        entered (``buffer_with_time``, ``sample``); a tick with nothing to deliver is not
        waited for. Operators that wait for more messages rather than for time
        (``buffer_with_count``) hold theirs until then. Work started while draining is waited
        for too. Handlers that drain the bus they run on do not wait for each other.
        ``timeout`` (seconds) bounds the wait: ``TimeoutError`` when the bus is not quiet by
        then (what runs goes on). For tests and notebooks.
        """
        await self._shutdown.drain(None if timeout is None else check_timeout(timeout))

    async def close(self, timeout: float | None = None) -> None:
        """Close the bus.

        New requests, sends, publishes and registrations raise ``BusClosedError`` from now on,
        and pending requests fail with it at once. Pipelines are completed, so operators
        deliver what they hold (a partial ``buffer_with_time``). Then, for ``timeout`` seconds
        (default: the bus's ``close_timeout``, 5 s), running handlers finish and buffered
        messages are handled, as ``drain()`` waits; what is left is cancelled (handlers,
        timers) or dropped and reported (buffered messages), and cancelled handlers get
        ``timeout`` seconds (at least one) more to stop. Address streams, ``observe_all()`` and
        ``bus.errors`` complete. Closing twice is harmless; a second caller waits for the first.
        """
        grace = self._close_timeout if timeout is None else _check_grace(timeout)
        await self._shutdown.close(grace, lambda: None)

    async def start(self) -> None:
        """Bind the bus to the running loop and connect its transport, if it has one (which
        ``async with`` does too). Registrations made before reach other processes from now
        on. Starting twice is harmless; a bus without a transport needs no start."""
        # Bind now, so that the *_threadsafe methods work from the start.
        self._loop.check(None)
        if self._transport is not None and not self._started:
            self._started = True
            try:
                await self._transport.start(self._remote)
            except BaseException:
                self._started = False
                raise

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- codecs, producers, inspection ---------------------------------------------------------

    def register_codec(self, codec: MessageCodec[Any], *, default_for: type | None = None) -> None:
        """Register ``codec`` by its name, and as the codec of ``default_for`` bodies if given
        (and of its subclasses' that have no default codec of their own). A name or a type
        registered twice is a ``ValueError``. Default codecs apply to requests, sends,
        publishes and replies alike."""
        self._codecs.register(codec, default_for)
        self._answers.refresh()

    def unregister_codec(self, name: str) -> None:
        """Remove the codec named ``name`` (``ValueError`` when there is none)."""
        self._codecs.unregister(name)
        self._answers.refresh()

    def codec_selector(self, selector: CodecSelector | None) -> None:
        """Name the codec of bodies that have no default codec along their type's MRO, as
        Vert.x's ``codecSelector``: ``selector(body)`` returns a registered codec's name, or
        ``None`` for none. A ``DeliveryOptions(codec=...)`` still wins; ``None`` removes it."""
        self._codecs.select(selector)
        self._answers.refresh()

    def sender(
        self,
        address: AnyAddress,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
        options: DeliveryOptions | None = None,
    ) -> Sender:
        """A producer that sends and requests to ``address`` with these default options
        (``headers`` over ``options.headers``, ``timeout`` over ``options.timeout``)."""
        routed = to_address(address)
        ensure_concrete(routed)
        defaults = check_delivery_options(options) or DeliveryOptions()
        return Sender(
            self, routed, defaults.overlay(DeliveryOptions(headers=headers, timeout=timeout))
        )

    def publisher(
        self,
        address: AnyAddress,
        *,
        headers: HeadersInput | None = None,
        options: DeliveryOptions | None = None,
    ) -> Publisher:
        """A producer that publishes to ``address`` with these default options."""
        routed = to_address(address)
        ensure_concrete(routed)
        defaults = check_delivery_options(options) or DeliveryOptions()
        return Publisher(self, routed, defaults.overlay(DeliveryOptions(headers=headers)))

    def stats(self) -> BusStats:
        """Counters for the whole bus since it was built, and for each address (or pattern)
        that has registrations now, with each handler's own counters."""
        return bus_stats(self._routes, self._counts, self._replies, self._tasks, self._scheduler)

    @property
    def recent_failures(self) -> list[HandlerFailure]:
        """The last few records put on ``bus.errors``, oldest first."""
        return list(self._failures.recent)

    def __repr__(self) -> str:
        return bus_repr(self._loop.closed, self._routes, self._counts, self._replies, self._tasks)

    def _repr_html_(self) -> str:
        from ._display import bus_html  # notebooks only: not on the import path

        state = "closed" if self._loop.closed else "open"
        return bus_html(state, self.stats(), list(self._failures.recent))


def _check_validate(validate: object) -> bool:
    if type(validate) is not bool:
        raise TypeError(f"validate must be True or False, got {validate!r}")
    return validate


def _check_grace(timeout: object) -> float:
    if (type(timeout) is float or type(timeout) is int) and timeout >= 0:
        try:
            return float(timeout)
        except OverflowError:  # an int beyond any float
            raise ValueError(
                "close timeout is too large to be a number of seconds; use math.inf to let "
                "handlers finish for as long as they take"
            ) from None
    raise ValueError(f"close timeout must be a number of seconds >= 0, got {timeout!r}")
