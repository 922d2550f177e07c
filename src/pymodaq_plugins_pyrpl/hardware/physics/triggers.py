"""The scope's trigger: when the first trigger event comes after arming (immediately, an ASG
period start, an edge of a channel with hysteresis), searched on noise-free signals of a board."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import catalogue
from .board import Board
from .signals import Context, Grid

TRIGGER_HORIZON = 10.0
"""Seconds after arming searched for an edge trigger; beyond, the acquisition never completes."""


def find_trigger(board: Board, cfg: Mapping[str, Any], now: float) -> float | None:
    """Simulated time of the first trigger at or after ``now`` (None: it never comes)."""
    source = cfg["trigger_source"]
    if source == "immediately":
        return now
    if source in ("asg0", "asg1"):
        return board.asgs[int(source[3])].next_period_start(now)
    if source[:3] in ("ch1", "ch2"):
        signal = cfg["input1"] if source.startswith("ch1") else cfg["input2"]
        sign = 1.0 if source.endswith("positive_edge") else -1.0
        return _find_edge(board, signal, sign, cfg["threshold"], cfg["hysteresis"], now,
                          cfg["duration"] / catalogue.SCOPE_SAMPLES)
    return None


def _find_edge(board: Board, signal: str, sign: float, threshold: float, hysteresis: float,
               now: float, dt: float) -> float | None:
    """Edge search on noise-free signals, on grids 4x coarser each time, up to TRIGGER_HORIZON.

    ``sign`` -1 turns a negative edge into a positive edge of the negated signal.
    """
    ctx = board.context(None)
    level, arm = sign * threshold, sign * threshold - hysteresis
    step = dt
    while True:
        y = sign * board.trace(signal, Grid.uniform(now, step, catalogue.SCOPE_SAMPLES), ctx)
        index = _first_crossing(y, level, arm)
        if index is not None:
            start = now + (index - 1) * step
            return _refine_edge(board, signal, sign, level, start, step, dt, ctx)
        if step * catalogue.SCOPE_SAMPLES >= TRIGGER_HORIZON:
            return None
        step *= 4.0


def _refine_edge(board: Board, signal: str, sign: float, level: float, start: float,
                 width: float, dt: float, ctx: Context) -> float:
    """Narrow a bracket [below level, at or above level] down to dt/1000; return its top."""
    while width > dt / 1000:
        y = sign * board.trace(signal, Grid.uniform(start, width / 1024, 1025), ctx)
        above = np.flatnonzero(y >= level)
        j = int(above[0]) if len(above) else 1024
        start, width = start + max(j - 1, 0) * width / 1024, width / 1024
    return start + width


def _first_crossing(y: np.ndarray, level: float, arm: float) -> int | None:
    """Index of the first sample >= ``level`` after one < ``arm`` (the hysteresis), or None."""
    armed = np.flatnonzero(y < arm)
    if not len(armed):
        return None
    above = np.flatnonzero(y[armed[0]:] >= level)
    return int(armed[0] + above[0]) if len(above) else None
