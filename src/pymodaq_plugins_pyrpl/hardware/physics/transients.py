"""Transients: the plant's free oscillation on an input and an IQ quadrature filter relaxing to
its steady state after a change."""
from __future__ import annotations

import cmath
from dataclasses import dataclass

import numpy as np

from .filters import filter_system
from .linalg import expm
from .signals import TWO_PI, Grid

SETTLED = 60.0
"""A transient ``exp(-x)`` (times a polynomial) with ``x`` beyond this is over (dropped)."""


@dataclass(frozen=True)
class Ring:
    """The plant's free oscillation on one input since time ``t``: ``Re(c exp(s (t' - t)))``."""

    t: float
    c: complex
    s: complex

    def at(self, t: float) -> complex:
        """The complex value ``c exp(s (t' - t))`` at time ``t'`` = ``t``."""
        return self.c * cmath.exp(self.s * (t - self.t))

    def over(self, t: float) -> bool:
        return -self.s.real * (t - self.t) > SETTLED

    def evaluate(self, grid: Grid) -> np.ndarray:
        start = self.at(grid.start)
        return (start * np.exp(self.s * grid.offsets)).real


@dataclass(frozen=True)
class Settling:
    """An IQ quadrature filter on its way to its steady state since time ``t``: its state is the
    steady-state (particular) one plus ``expm(A (t' - t)) deviation``."""

    t: float
    cutoffs: tuple[float, ...]
    deviation: np.ndarray | None
    """None: settled."""

    def over(self, t: float) -> bool:
        active = [abs(c) for c in self.cutoffs if c]
        return (self.deviation is None or not active
                or TWO_PI * min(active) * (t - self.t) > SETTLED)

    def homogeneous(self, t: float) -> np.ndarray:
        """The state's deviation from the steady state at time ``t``."""
        if self.over(t):
            return np.zeros(len(self.cutoffs), complex)
        a = filter_system(self.cutoffs)[0]
        return expm(a * (t - self.t)) @ self.deviation
