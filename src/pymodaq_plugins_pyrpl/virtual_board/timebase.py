"""The board's time: wall-clock (monotonic) seconds since power-up, and the FPGA's 125 MHz cycles.

Everything that moves by itself on the board (the scope's counters and write pointers, the IQ
averagers, the PID integrators, the signals) is computed from this time when a register is
accessed; nothing runs in between.
"""
from __future__ import annotations

from collections.abc import Callable

from ..hardware.catalogue import FPGA_CLOCK


class TimeBase:
    """Seconds and 125 MHz cycles since power-up, following ``clock`` (monotonic seconds)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._epoch = clock()

    def power_up(self) -> None:
        """Restart from 0 (a reboot)."""
        self._epoch = self._clock()

    def now(self) -> float:
        """Seconds since power-up."""
        return self._clock() - self._epoch

    def cycles(self) -> int:
        """Clock cycles since power-up (the scope's 64-bit counter)."""
        return to_cycles(self.now())


def to_cycles(seconds: float) -> int:
    """Whole 125 MHz cycles in ``seconds``."""
    return int(seconds * FPGA_CLOCK)


def to_seconds(cycles: int) -> float:
    """Seconds of ``cycles`` 125 MHz cycles."""
    return cycles / FPGA_CLOCK
