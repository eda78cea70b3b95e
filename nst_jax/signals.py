"""Stop signals: which ones end a run, holding them across a step that must not be cut in
two (``deferred``), and, for the processes of a multi-host job, recording them to act on
together (``polled``)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

# The signals a run stops on (``cli.py`` turns SIGTERM and SIGHUP into KeyboardInterrupt).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def deferred():
    """Holds the stop signals that arrive inside the block and raises them after it, so a
    Ctrl-C cannot land between a step taking the donated state and returning the new
    one. Only the main thread handles signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Any] = {}
    active = True

    def hold(signum, frame):
        if active:
            held.append(signum)
            return
        # Still installed after the block (a signal cut its swapping short): act as
        # the handler it replaced, so no stop signal is ever lost for good.
        handler = previous.get(signum)
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    try:
        for s in STOP_SIGNALS:
            if signal.getsignal(s) is not None:  # None: not Python's to swap.
                previous[s] = signal.signal(s, hold)
        yield
    finally:
        active = False
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in held:
            signal.raise_signal(s)


def stopped_during(fn, *args, **kwargs) -> bool:
    """Runs ``fn`` with the stop signals held (``deferred``), so that work done (a result
    computed) is written whole; whether a stop signal came meanwhile."""
    try:
        with deferred():
            fn(*args, **kwargs)
    except KeyboardInterrupt:
        return True
    return False


_requests: list[int] | None = None  # The stop signals ``polled`` recorded, while active.
_last: list[int] = []  # Every signal ``polled`` recorded in this process, for exit codes.


@contextlib.contextmanager
def polled():
    """Within the block, the stop signals are recorded, not raised; ``requested()`` says
    whether one came. For the processes of a multi-host job: a signal lands on each at
    another moment, and they must stop at the same step, so each acts on it only where
    they all agree (the driver's syncs, the batches' starts). A nested block shares the
    outer one's record. Signals set to be ignored stay ignored. Only the main thread
    handles signals; elsewhere this does nothing."""
    global _requests
    if threading.current_thread() is not threading.main_thread() or _requests is not None:
        yield
        return
    _requests = []
    previous = {}

    def record(signum, frame):
        _last.append(signum)
        if _requests is not None:
            _requests.append(signum)

    try:
        for s in STOP_SIGNALS:
            if signal.getsignal(s) not in (None, signal.SIG_IGN):
                previous[s] = signal.signal(s, record)
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requests = None


def requested() -> bool:
    """Whether a stop signal came inside ``polled``."""
    return bool(_requests)


def last_recorded() -> int | None:
    """The last stop signal ``polled`` recorded since ``forget``, or None."""
    return _last[-1] if _last else None


def forget() -> None:
    """Clears ``last_recorded``: a new command starts."""
    _last.clear()
