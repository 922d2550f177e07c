"""Faults of the data port that a test can switch on and off while clients are connected: added
latency per request, a port that stops answering, corrupted header echoes.

The board reboot, which also involves the register map and the servers, is
:meth:`.board.VirtualBoard.reboot`.
"""
from __future__ import annotations

import threading


class LinkFaults:
    """The data-port faults of one board, shared by all its monitor servers and connections.

    Thread-safe. Waiting never spins: the monitor server's connection threads block on a condition
    that :meth:`resume` and :meth:`wake` notify.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latency = 0.0
        self._stalled = False
        self._corrupt = 0

    # -- switches (the test-facing API) ----------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds added before each request is answered (0: none)."""
        with self._cond:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        seconds = float(seconds)
        if not seconds >= 0.0:
            raise ValueError(f"latency must be >= 0 s, not {seconds!r}")
        with self._cond:
            self._latency = seconds
            self._cond.notify_all()

    def stall(self) -> None:
        """The data port stops answering: requests are received but not executed nor answered
        until :meth:`resume` (connections stay open; new ones are accepted by the kernel)."""
        with self._cond:
            self._stalled = True

    def resume(self) -> None:
        """Undo :meth:`stall`: pending requests are executed and answered in order."""
        with self._cond:
            self._stalled = False
            self._cond.notify_all()

    @property
    def stalled(self) -> bool:
        with self._cond:
            return self._stalled

    def corrupt_echoes(self, count: int = 1) -> None:
        """The next ``count`` header echoes (reads and writes, any connection) come back with byte 1
        inverted; the request itself is executed normally."""
        if count < 0:
            raise ValueError(f"count must be >= 0, not {count!r}")
        with self._cond:
            self._corrupt = int(count)

    def clear(self) -> None:
        """No latency, not stalled, no corrupted echo pending."""
        with self._cond:
            self._latency, self._stalled, self._corrupt = 0.0, False, 0
            self._cond.notify_all()

    # -- used by the monitor server --------------------------------------------------------------

    def wait_turn(self, cancelled: threading.Event) -> bool:
        """Block while the port is stalled, then for the latency. False if ``cancelled`` was set
        meanwhile (the connection is being killed: do not answer)."""
        with self._cond:
            while self._stalled and not cancelled.is_set():
                self._cond.wait()
            latency = self._latency
        if latency and cancelled.wait(latency):
            return False
        return not cancelled.is_set()

    def echo(self, header: bytes) -> bytes:
        """The echo of ``header``: itself, or corrupted while :meth:`corrupt_echoes` has some
        left."""
        with self._cond:
            if not self._corrupt:
                return header
            self._corrupt -= 1
        return header[:1] + bytes([header[1] ^ 0xFF]) + header[2:]

    def wake(self) -> None:
        """Wake the threads waiting in :meth:`wait_turn` so they look at their cancel events."""
        with self._cond:
            self._cond.notify_all()
