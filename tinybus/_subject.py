"""``LoopSubject``: the reactivex Subject behind every address, tuned for the loop thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject

type ObserverErrorHandler = Callable[[Exception, abc.ObserverBase[Any], Any], None]


class LoopSubject[T](Subject[T]):
    """A Subject used only from the event loop's thread.

    Two differences from reactivex's Subject, both for the bus's hot path and its guarantees:

    - Observers live in a tuple that is replaced on (un)subscribe, so ``on_next`` iterates a
      snapshot without taking a lock or copying a list per value, and an observer that
      unsubscribes (or subscribes another) while a value is being delivered is safe.
    - An observer that raises does not stop delivery to the observers after it: the error goes
      to ``on_observer_error`` and the loop goes on.
    """

    def __init__(
        self,
        on_observer_error: ObserverErrorHandler,
        on_empty: Callable[[], None] | None = None,
        on_first: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        # Read-only outside: a tuple, so that "does anyone listen?" is a truth test.
        self.subscribers: tuple[abc.ObserverBase[T], ...] = ()
        self._on_observer_error = on_observer_error
        self._on_empty = on_empty  # called when the last observer leaves
        self._on_first = on_first  # called when an observer arrives and there was none

    def attach(self, observer: abc.ObserverBase[T], first: bool = False) -> abc.DisposableBase:
        """Subscribe one of the bus's own observers directly, without the ``AutoDetachObserver``
        that ``subscribe`` wraps every observer in: the bus's observers never raise into the
        subject nor complete it, so that layer would only cost a call per message. ``first``
        puts it before the others: it sees each value before they do."""
        return self._add(observer, first)

    def _subscribe_core(
        self,
        observer: abc.ObserverBase[T],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        return self._add(observer, False)

    def _add(self, observer: abc.ObserverBase[T], first: bool) -> abc.DisposableBase:
        if self.is_stopped:
            observer.on_completed()
            return Disposable()
        had_none = not self.subscribers
        if first:
            self.subscribers = (observer, *self.subscribers)
        else:
            self.subscribers = (*self.subscribers, observer)
        if had_none and self._on_first is not None:
            self._on_first()
        return Disposable(lambda: self._remove(observer))

    def _remove(self, observer: abc.ObserverBase[T]) -> None:
        snapshot = self.subscribers
        if observer not in snapshot:
            return
        remaining = list(snapshot)
        remaining.remove(observer)
        self.subscribers = tuple(remaining)
        if not remaining and self._on_empty is not None:
            self._on_empty()

    def on_next(self, value: T) -> None:
        for observer in self.subscribers:
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
        observers, self.subscribers = self.subscribers, ()
        for observer in observers:
            try:
                notify(observer)
            except Exception as exc:
                self._on_observer_error(exc, observer, None)
