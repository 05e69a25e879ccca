"""Interruption: SIGINT and SIGTERM during a sweep become `Interrupted`, raised where the sweep can clean up.

`interruptible()` (entered by the sweep's orchestration, mutransfer.sweep) turns both signals into the same stop:
`Interrupted` is raised at once in the main thread, wherever it is. That is safe: every store write is one
transaction (rolled back if cut short) and the trials that were running are reset to pending anyway. Letting Tune
wind its trials down first is not: when the whole process group gets the signal (a batch scheduler, a container
stop) Ray's GCS is gone, and Tune's stop then waits 60 s on it before Ray ends the process with exit code 1.

The sweep then puts its running trials back to pending, marks itself interrupted, ends Ray's processes and removes
its scratch folder; signals that arrive meanwhile are ignored, so the clean-up is not cut short (SIGKILL still
works: the next run resumes). The CLI exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).

Ray turns an exception raised by a signal handler during one of its waits into a plain KeyboardInterrupt:
`received()` tells which signal it was.

Signal handlers can only be set in the main thread: elsewhere (a sweep run from a thread) `interruptible()` changes
nothing and signals keep their usual effect.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A sweep stopped by a signal. A KeyboardInterrupt, so that code which catches Exception lets it through.

    `ran`: how many trials finished in this run before it stopped."""

    def __init__(self, signum: int, message: str = "", ran: int = 0) -> None:
        super().__init__(message or signal.Signals(signum).name)
        self.signum, self.ran = signum, ran

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process ended by the signal: 128 + its number."""
        return 128 + self.signum


@dataclass
class _State:
    depth: int = 0  # nested interruptible() blocks; the outermost sets and restores the handlers
    signum: int | None = None  # the first signal received; then the clean-up runs and signals are ignored
    previous: dict[int, Any] = field(default_factory=dict)


_state = _State()


def _handle(signum: int, frame: FrameType | None) -> None:
    if _state.signum is not None:
        return
    _state.signum = signum
    raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` inside the block (see the module's notes); nests."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state.depth == 0:
        _state.signum = None
        _state.previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, _handle)
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            _restore(_state.previous)
            _state.signum = None


def received() -> int:
    """The signal that interrupted the sweep; SIGINT for a KeyboardInterrupt that no signal of ours raised."""
    return _state.signum or signal.SIGINT


def as_interrupted(e: KeyboardInterrupt, message: str, ran: int) -> Interrupted:
    """`e` (an Interrupted, or the KeyboardInterrupt Ray made of it) as Interrupted with `message`."""
    return Interrupted(e.signum if isinstance(e, Interrupted) else received(), message, ran=ran)


@contextmanager
def handlers_kept() -> Iterator[None]:
    """The SIGINT and SIGTERM handlers after the block are those before it (ray.init replaces SIGTERM's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        yield
    finally:
        _restore(handlers)


def _restore(handlers: dict[int, Any]) -> None:
    for s, handler in handlers.items():
        if handler is not None:  # None: a handler not set from Python, which cannot be put back from here
            signal.signal(s, handler)


__all__ = ["SIGNALS", "Interrupted", "as_interrupted", "handlers_kept", "interruptible", "received"]
