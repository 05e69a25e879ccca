"""Waiting on another process from a test: a sweep driver started as a subprocess, a trial that must be running
before it is killed."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(pred: Callable[[], object], timeout: float, what: str, *, every: float = 0.3) -> None:
    """Poll `pred` every `every` seconds until it is true; AssertionError naming `what` after `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
