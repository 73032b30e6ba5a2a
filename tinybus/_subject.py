"""``LoopSubject``: the reactivex Subject behind every address and the reply stream."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from reactivex import abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject

type ObserverErrorHandler = Callable[[Exception, abc.ObserverBase[Any], Any], None]

# reactivex's own Subject methods that are not overridden here (none on the bus's paths) take
# ``self.lock``; every LoopSubject is used from its loop's thread only, so one lock serves all.
_SHARED_LOCK = threading.RLock()


class LoopSubject[T](Subject[T]):
    """A reactivex Subject used only from the event loop's thread.

    The rules it keeps, beyond a Subject's:

    - Observers are called in subscription order. They are kept in a dict, so subscribing and
      unsubscribing cost O(1) however many there are; ``on_next`` iterates a tuple of them,
      made again after a change, so an observer may (un)subscribe others, or itself, while a
      value is being delivered: the value reaches the observers there were when it arrived.
    - An observer that raises does not stop delivery to the ones after it: the error goes to
      ``on_observer_error`` and delivery goes on.
    - ``attach`` subscribes one of the bus's own observers directly, without the
      ``AutoDetachObserver`` that ``subscribe`` wraps every observer in (the bus's observers
      never raise into the subject nor complete it).
    """

    def __init__(
        self,
        on_observer_error: ObserverErrorHandler,
        on_first: Callable[[], None] | None = None,
        on_empty: Callable[[], None] | None = None,
    ) -> None:
        # Not Subject.__init__: it makes a lock and an observer list of its own, which this
        # subject does not use (every method that would is overridden).
        self.is_disposed = False
        self.is_stopped = False
        self.exception: Exception | None = None
        self.lock = _SHARED_LOCK
        self._observers: dict[abc.ObserverBase[T], None] = {}
        self._snapshot: tuple[abc.ObserverBase[T], ...] | None = ()
        self._on_observer_error = on_observer_error
        self._on_first = on_first  # an observer arrived where there was none
        self._on_empty = on_empty  # the last observer left

    @property
    def subscribers(self) -> tuple[abc.ObserverBase[T], ...]:
        """The observers, in the order they are called."""
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._snapshot = tuple(self._observers)
        return snapshot

    def __len__(self) -> int:
        return len(self._observers)

    def attach(self, observer: abc.ObserverBase[T], first: bool = False) -> None:
        """Subscribe ``observer`` directly; ``first`` calls it before the others."""
        if self.is_stopped:
            observer.on_completed()
            return
        observers = self._observers
        had_none = not observers
        if first and observers:
            self._observers = {observer: None, **observers}
        else:
            observers[observer] = None
        self._snapshot = None
        if had_none:
            self.became_observed()

    def detach(self, observer: abc.ObserverBase[T]) -> None:
        """Unsubscribe ``observer`` (nothing happens when it is not subscribed)."""
        observers = self._observers
        if observer not in observers:
            return
        del observers[observer]
        self._snapshot = None
        if not observers:
            self.became_unobserved()

    def became_observed(self) -> None:
        """An observer arrived where there was none."""
        if self._on_first is not None:
            self._on_first()

    def became_unobserved(self) -> None:
        """The last observer left."""
        if self._on_empty is not None:
            self._on_empty()

    def _subscribe_core(
        self,
        observer: abc.ObserverBase[T],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        if self.is_stopped:
            observer.on_completed()
            return Disposable()
        self.attach(observer)
        return Disposable(lambda: self.detach(observer))

    def on_next(self, value: T) -> None:
        observers = self._snapshot
        if observers is None:
            observers = self._snapshot = tuple(self._observers)
        for observer in observers:
            try:
                observer.on_next(value)
            except Exception as exc:
                self._on_observer_error(exc, observer, value)

    def on_error(self, error: Exception) -> None:
        self._stop(lambda observer: observer.on_error(error))

    def on_completed(self) -> None:
        self._stop(lambda observer: observer.on_completed())

    def _stop(self, notify: Callable[[abc.ObserverBase[T]], None]) -> None:
        if self.is_stopped:
            return
        self.is_stopped = True
        observers = self.subscribers
        self._observers = {}
        self._snapshot = ()
        for observer in observers:
            try:
                notify(observer)
            except Exception as exc:
                self._on_observer_error(exc, observer, None)

    def dispose(self) -> None:
        self.is_disposed = True
        self.is_stopped = True
        self._observers = {}
        self._snapshot = ()
