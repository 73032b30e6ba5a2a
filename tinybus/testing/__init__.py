"""TinyBus's test kit: a virtual clock, a recorder of what reaches an address, and a log of
the failures a bus reports, with pytest fixtures (``bus``, ``bus_failures``, ``record``) that
the ``tinybus`` pytest plugin offers to every test suite where TinyBus is installed. The
plugin is inert unless a test asks for one of its fixtures. See the docs page "Testing"."""

from .clock import VirtualClockLoop, run_virtual
from .failures import FailureLog, UnexaminedFailures
from .recorder import Recorder

__all__ = ["FailureLog", "Recorder", "UnexaminedFailures", "VirtualClockLoop", "run_virtual"]
