"""Ctrl-C and SIGTERM delivered only between store writes, never in the middle of one.

A ``KeyboardInterrupt`` raised inside a write to an SQLite store (MLflow's or Optuna's) can leave that
write's connection holding the database lock: the next write of the same process, the one that marks
the run KILLED, then waits out SQLite's busy timeout and fails with "database is locked", and the run
stays RUNNING. `python scripts/interrupted_writes.py --attempts 40` interrupts a loop of MLflow writes at
random: with writes interruptible (``--no-defer``) 4 of 40 runs were left RUNNING; as shipped, none.

So store writes run inside :func:`deferred_interrupts`: a SIGINT or SIGTERM arriving there is recorded
and raised as ``KeyboardInterrupt`` as soon as the outermost such block ends. Long work nested inside
one (a trial's training inside Optuna's bookkeeping) runs inside :func:`interruptible`, where signals
act at once again. Only the main thread receives signals; elsewhere both are no-ops. Handlers other than
Python's default SIGINT handler and :func:`raise_interrupt` (Lightning's, ``SIG_IGN`` after Lightning
caught a first Ctrl-C) are left alone.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Deferring", "deferred_interrupts", "interruptible", "raise_interrupt"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_depth = 0
_saved: dict[int, Any] = {}  # the handlers replaced by the outermost deferring block
_pending = False


def raise_interrupt(signum: int, frame: object) -> None:
    """A signal handler that ends the work like Ctrl-C (the CLI installs it for SIGTERM)."""
    raise KeyboardInterrupt


def _record(signum: int, frame: object) -> None:
    global _pending
    _pending = True


def _defer() -> dict[int, Any]:
    saved = {}
    for number in _SIGNALS:
        handler = signal.getsignal(number)
        if handler is signal.default_int_handler or handler is raise_interrupt:
            saved[number] = handler
            signal.signal(number, _record)
    return saved


def _restore(saved: dict[int, Any]) -> None:
    for number, handler in saved.items():
        signal.signal(number, handler)


def _deliver() -> None:
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the block whole: a Ctrl-C or SIGTERM during it is raised when the outermost block ends."""
    global _depth, _saved
    if not _in_main_thread():
        yield
        return
    if _depth == 0:
        _saved = _defer()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            _restore(_saved)
            _saved = {}
            _deliver()  # replaces an exception in flight: the user asked to stop (it stays the context)


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside a deferring block, let signals act at once again (an interrupt already recorded is raised
    on entry); deferring resumes when the block ends."""
    global _depth, _saved
    if not _in_main_thread() or _depth == 0:
        yield
        return
    depth, saved = _depth, _saved
    _restore(saved)
    _depth, _saved = 0, {}
    try:
        _deliver()
        yield
    finally:
        _depth, _saved = depth, _defer()


class Deferring:
    """Wraps an object (an ``MlflowClient``) so that each of its method calls runs inside
    :func:`deferred_interrupts`."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._wrapped, name)
        if not callable(attribute):
            return attribute

        def deferred(*args: Any, **kwargs: Any) -> Any:
            with deferred_interrupts():
                return attribute(*args, **kwargs)

        return deferred
