"""The tests' one way to wait for a condition that nothing signals: poll it until a deadline.

Anything that can be waited for through an event (a Qt signal, a condition variable, a process's
exit, a socket's data) is waited for through it; this is for the rest (a subprocess's log, a pid
that goes away, a server state seen through requests).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.02
"""Seconds between two checks of a condition."""


def wait_until(condition: Callable[[], T], timeout: float, what: str | Callable[[], str],
               interval: float = POLL_INTERVAL) -> T:
    """The first truthy value of ``condition()``, checked every ``interval`` s.

    Raises AssertionError "timed out after TIMEOUT s waiting for WHAT" if it is still falsy once
    ``timeout`` s have passed (``what`` may be a callable, called then, to describe what was seen).
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {described}")
        time.sleep(interval)
    return value
