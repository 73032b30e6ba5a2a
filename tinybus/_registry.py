"""Registering handlers: an ``Endpoint`` attached to its address's Subject, and its end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._endpoint import Endpoint, Role
from ._failures import Failures
from ._flow import Mailbox
from ._inbound import Inbound
from ._loop import LoopBinding
from ._patterns import is_pattern
from ._pipeline import Pipeline
from ._routes import Routes
from ._scheduler import BusScheduler
from ._tasks import Tasks
from ._transport import Transport
from ._validation import read_handler_types
from .errors import BusClosedError
from .instrumentation import Instrumentation
from .options import RegistrationOptions, check_registration_options
from .registration import Registration


class Registry:
    """Every registration's endpoint and pipeline: made, attached, paused and ended here."""

    def __init__(
        self,
        binding: LoopBinding,
        routes: Routes,
        tasks: Tasks,
        failures: Failures,
        scheduler: BusScheduler,
        validate: bool,
        transport: Transport | None,
    ) -> None:
        self.binding = binding
        self.routes = routes
        self.tasks = tasks
        self.failures = failures
        self.scheduler = scheduler
        self.validate = validate  # the bus's default
        self.transport = transport
        self.instrumentation: Instrumentation | None = None  # given to every endpoint
        self.inbound = Inbound()  # the inbound interceptors, shared by every endpoint
        self.pipelines: set[Pipeline] = set()

    def register(
        self,
        address: str,
        handler: Callable[..., Any],
        role: Role,
        raw_options: RegistrationOptions,
    ) -> Registration:
        if not callable(handler):
            raise TypeError(f"a {role} must be callable, got {handler!r}")
        options = check_registration_options(raw_options)
        if role == "consumer" and is_pattern(address):
            raise ValueError(
                f"a consumer's address is exact, got the pattern {address!r}: requests and "
                "sends go to one address; use bus.on() to listen to a pattern"
            )
        if self.binding.closed:
            raise BusClosedError(address=address)
        validate = self.validate if options.validate is None else options.validate
        endpoint = Endpoint(
            address,
            handler,
            role,
            read_handler_types(handler, role, validate),
            self.tasks,
            self.failures,
            inline=options.inline,
            local=options.local,
            max_concurrency=options.max_concurrency,
            max_buffered=options.max_buffered,
            overflow=options.overflow,
            inbound=self.inbound,
        )
        endpoint.instrumentation = self.instrumentation
        registration = endpoint.registration = Registration(endpoint, self)
        pipeline = None
        if options.pipe:
            pipeline = endpoint.pipeline = Pipeline(
                handler,
                options.pipe,
                self.scheduler,
                endpoint.admit,
                lambda exc: endpoint.report(None, exc),
                lambda discard: self.end(endpoint, discard),
                options.on_error,
            )
            endpoint.items_are_messages = endpoint.pipe_messages
            endpoint.update()
        self.routes.ensure(address).add(endpoint)
        if options.max_concurrency is not None:
            self._mailbox(endpoint)
        if pipeline is not None:
            self.pipelines.add(pipeline)
            if self.binding.running_here():
                # Operators that fail to subscribe end this registration (reported on
                # bus.errors): reactivex turns their exception into on_error.
                pipeline.start()
        if self.transport is not None and not options.local:
            try:
                self.transport.export(endpoint)
            except BaseException:  # (an address it cannot carry): no half-made registration
                self.end(endpoint, True)
                raise
        return registration

    def _mailbox(self, endpoint: Endpoint) -> Mailbox:
        mailbox = endpoint.mailbox = Mailbox(
            endpoint,
            self.tasks,
            endpoint.max_concurrency,
            endpoint.max_buffered,
            endpoint.overflow,
        )
        self.tasks.mailboxes.add(mailbox)
        endpoint.update()
        return mailbox

    def pause(self, endpoint: Endpoint) -> None:
        mailbox = endpoint.mailbox
        if mailbox is None:
            mailbox = self._mailbox(endpoint)
        mailbox.pause()

    def unregister(self, endpoint: Endpoint) -> None:
        self.end(endpoint, True)

    async def wait_exported(self, endpoint: Endpoint) -> None:
        if self.transport is not None and not endpoint.local:
            await self.transport.wait_exported(endpoint)

    def end(self, endpoint: Endpoint, discard: bool) -> None:
        """Take ``endpoint`` off its address; with ``discard``, drop what waits for it, else
        (its pipeline completed) let its buffer drain first."""
        endpoint.registered = False
        endpoint.update()
        subject = endpoint.subject
        if subject is not None:
            subject.remove(endpoint)
        if self.transport is not None and not endpoint.local:
            self.transport.unexport(endpoint)
        pipeline = endpoint.pipeline
        if pipeline is not None:
            pipeline.stop()
            self.pipelines.discard(pipeline)
        mailbox = endpoint.mailbox
        if mailbox is not None:
            if discard or mailbox.paused:
                # (Paused, nobody could ever resume it: what waits is dropped and reported.)
                # (A pipeline completed by close() ends it because the bus closes.)
                closing = self.binding.closed and not discard
                mailbox.discard_all("closed" if closing else "unregistered")
            mailbox.pump()  # a pipeline that completed: what waits is still handled first
        endpoint.ended()

    def endpoints(self) -> list[Endpoint]:
        return [endpoint for subject in self.routes.all() for endpoint in subject.endpoints()]

    # -- the loop ----------------------------------------------------------------------------

    def bind(self, fresh: bool) -> None:
        """The bus bound to a loop (``fresh``: a new one, the old one closed): pipelines made
        before start now, and messages left waiting are handled on it."""
        if fresh:
            for pipeline in self.pipelines:
                pipeline.stop(ending=False)
        for pipeline in list(self.pipelines):
            if not pipeline.started:
                pipeline.start()
        for mailbox in list(self.tasks.mailboxes):
            mailbox.pump()
