"""The log of a driver session's calls, for the scripts that run inside a test's private network
namespace (net_driver.py, board_net_driver.py). Imported by those scripts as a sibling module
(``from call_log import CallLog``): it imports nothing of the package nor of the test helpers."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any


class CallLog:
    """Every call's kind, outcome, start and end (``time.monotonic()``), elapsed time and own
    timeout (``limit``), and the problems seen; thread-safe.

    ``outcomes`` names the exceptions a call may end with, first match wins (e.g.
    ``[(CallTimeout, "timeout")]``); a call that returns is ``ok``, one that raises anything else
    is ``error``. A call whose outcome is in ``problem_outcomes`` (and not in the ``fine`` of its
    :meth:`run`) is also recorded as a problem.
    """

    def __init__(self, outcomes: Sequence[tuple[type[BaseException], str]],
                 problem_outcomes: Collection[str] = ("error",)) -> None:
        self.outcomes = list(outcomes)
        self.problem_outcomes = set(problem_outcomes)
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.problems: list[str] = []

    def run(self, kind: str, limit: float, fn: Callable[[], Any], *,
            fine: Collection[str] = ()) -> tuple[str, Any]:
        """Call ``fn``; ``limit`` is the call's own timeout. Returns (outcome, result or the
        exception raised)."""
        start = time.monotonic()
        try:
            result, outcome = fn(), "ok"
        except Exception as exc:  # noqa: BLE001 (every outcome is recorded)
            result = exc
            outcome = next((name for cls, name in self.outcomes if isinstance(exc, cls)),
                           "error")
        end = time.monotonic()
        with self.lock:
            self.records.append({"kind": kind, "outcome": outcome, "start": start, "end": end,
                                 "elapsed": end - start, "limit": limit})
            if outcome in self.problem_outcomes and outcome not in fine:
                self.problems.append(f"{kind}: {type(result).__name__}: {result}")
        return outcome, result

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def started_between(self, start: float, end: float) -> list[dict[str, Any]]:
        """The records of the calls started in [start, end)."""
        with self.lock:
            return [r for r in self.records if start <= r["start"] < end]
