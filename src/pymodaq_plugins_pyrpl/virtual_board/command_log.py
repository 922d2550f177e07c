"""The log of the command lines run on the virtual board over ssh, by session, for tests of the
board link ("no ``killall monitor_server`` after the takeover", "which client restarted the
server"). It is the observer's record, not the board's state: a reboot does not clear it.
"""
from __future__ import annotations

import posixpath
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

COMMAND_LOG = 10000
"""Command lines remembered (the oldest are dropped)."""


@dataclass(frozen=True)
class Command:
    """One command line run over ssh: the log clock's ``time``, the ssh ``session`` (one per
    ssh connection, numbered from 1 for the board's life) and the ``line`` as received."""

    time: float
    session: int
    line: str


def is_killall_monitor(line: str) -> bool:
    """Whether ``line`` is a ``killall`` naming ``monitor_server``."""
    words = line.split()
    return bool(words) and posixpath.basename(words[0]) == "killall" and \
        "monitor_server" in words[1:]


class CommandLog:
    """Thread-safe log of ssh sessions and of their command lines; ``clock`` gives the times
    (the board's clock, so that they compare with its ``write_log``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._commands: deque[Command] = deque(maxlen=COMMAND_LOG)
        self._peers: dict[int, tuple[str, int]] = {}

    def new_session(self, peer: tuple[str, int]) -> int:
        """A new ssh connection from ``peer`` (client host, port): its session number."""
        with self._lock:
            session = len(self._peers) + 1
            self._peers[session] = (peer[0], peer[1])
            return session

    def peer(self, session: int) -> tuple[str, int]:
        """The client address of ``session``. Raises KeyError for an unknown session."""
        with self._lock:
            return self._peers[session]

    def record(self, session: int, line: str) -> None:
        """``line`` is run in ``session`` now."""
        with self._lock:
            self._commands.append(Command(self.clock(), session, line))

    def entries(self, since: float | None = None, session: int | None = None) -> list[Command]:
        """The logged lines, oldest first; only those at or after ``since`` (clock time) and of
        ``session`` when given."""
        with self._lock:
            commands = list(self._commands)
        return [c for c in commands if (since is None or c.time >= since)
                and (session is None or c.session == session)]

    def killalls(self, since: float | None = None, session: int | None = None) -> int:
        """How many ``killall monitor_server`` were run (same filters as :meth:`entries`)."""
        return sum(is_killall_monitor(c.line) for c in self.entries(since, session))
