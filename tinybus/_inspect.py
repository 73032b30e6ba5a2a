"""What ``bus.stats()`` and ``repr(bus)`` read: counters, and the addresses as they are now."""

from __future__ import annotations

from dataclasses import replace

from ._replies import ReplySubject
from ._routes import Routes
from ._scheduler import BusScheduler
from ._tasks import Tasks
from .errors import handler_name
from .stats import AddressStats, BusStats, Counters, HandlerStats


def bus_stats(
    routes: Routes,
    counts: Counters,
    replies: ReplySubject,
    tasks: Tasks,
    scheduler: BusScheduler,
) -> BusStats:
    addresses: dict[str, AddressStats] = {}
    for subject in routes.all():
        handlers = tuple(
            HandlerStats(
                handler=handler_name(endpoint.handler),
                role=endpoint.role,
                piped=endpoint.pipeline is not None,
                paused=endpoint.mailbox is not None and endpoint.mailbox.paused,
                delivered=endpoint.delivered,
                replied=endpoint.replied,
                failed=endpoint.failed,
                dropped=0 if endpoint.mailbox is None else endpoint.mailbox.dropped,
                queued=0 if endpoint.mailbox is None else endpoint.mailbox.queued,
            )
            for endpoint in subject.endpoints()
        )
        addresses[subject.address] = AddressStats(
            subject.address,
            subject.pattern,
            subject.published,
            subject.sent,
            subject.requested,
            handlers,
        )
    return BusStats(
        totals=replace(counts),
        pending_requests=len(replies.pending) + len(replies.gatherings),
        running_handlers=len(tasks.running),
        scheduled_timers=scheduler.timer_count + replies.deadlines.timer_count,
        subscriptions=sum(len(subject) for subject in routes.all()),
        queued=sum(mailbox.queued for mailbox in tasks.mailboxes),
        addresses=addresses,
    )


def bus_repr(
    closed: bool, routes: Routes, counts: Counters, replies: ReplySubject, tasks: Tasks
) -> str:
    state = "closed" if closed else "open"
    return (
        f"<EventBus {state}: {len(routes.routes) + len(routes.patterns)} "
        f"addresses, {len(replies.pending)} pending requests, "
        f"{len(tasks.running)} running handlers; published {counts.published}, "
        f"sent {counts.sent}, requested {counts.requested}, delivered {counts.delivered}, "
        f"replied {counts.replied}, failed {counts.failed}, dropped {counts.dropped}>"
    )
