"""PyRPL's cascaded first-order filters (the IQ quadrature filters, the ``acbandwidth``
high-pass, the PID input filters): their transfer function, their pipeline delay and their
state-space form; the phase factor of a delay in clock cycles."""
from __future__ import annotations

import cmath
import functools
from collections.abc import Sequence

import numpy as np

from .. import catalogue
from .signals import TWO_PI

LOWPASS_CYCLES = 2
"""Pipeline delay of a low-pass stage (``red_pitaya_lpf_block.v``: the ``delta`` register, then
``y``, whose top bits are the output)."""
HIGHPASS_CYCLES = 1
"""Pipeline delay of a high-pass stage (its output is the ``delta`` register). An off stage
passes its input through without a register."""


def delay(cycles: float, f: float) -> complex:
    """Phase factor ``exp(-2j pi f cycles / 125 MHz)`` of a delay of ``cycles`` FPGA clock cycles
    at frequency ``f`` (Hz, either sign)."""
    return cmath.exp(-1j * TWO_PI * f * cycles / catalogue.FPGA_CLOCK) if cycles and f else 1.0


def filter_delay(cutoffs: Sequence[float]) -> int:
    """Pipeline delay (clock cycles) of the filter stages ``cutoffs`` (> 0 low-pass, < 0
    high-pass, 0 off)."""
    return sum(LOWPASS_CYCLES if c > 0 else HIGHPASS_CYCLES for c in cutoffs if c)


def filter_response(cutoffs: Sequence[float], f: float) -> complex:
    """PyRPL's cascaded first-order filters at ``f`` (cutoff > 0: low-pass, < 0: high-pass, 0: off).

    The model of PyRPL's ``Pid._filter_transfer_function`` / ``Iq.transfer_function``, without
    their pipeline delay (:func:`filter_delay`).
    """
    h = 1.0 + 0j
    for fc in cutoffs:
        if fc > 0:
            h /= 1.0 + 1j * f / fc
        elif fc < 0:
            h = 0j if f == 0 else h / (1.0 + 1j * fc / f)
    return h


@functools.lru_cache(maxsize=64)
def filter_system(cutoffs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(A, B, C, D)`` of PyRPL's cascaded first-order stages (cutoff > 0 low-pass, < 0
    high-pass, 0 off) as ``x' = A x + B u``, ``y = C x + D u``, one state per stage: a low-pass
    stage's state is its output, a high-pass stage's the low-pass of its input (output: input -
    state). An off stage's state is a dummy that decays to 0 and is not used. The transfer function
    is ``filter_response(cutoffs, f)``."""
    n = len(cutoffs)
    a, b = np.zeros((n, n)), np.zeros(n)
    c, d = np.zeros(n), 1.0  # the input of the next stage as a function of (x, u)
    for k, cutoff in enumerate(cutoffs):
        if cutoff == 0:
            a[k, k] = -1.0
            continue
        w = TWO_PI * abs(cutoff)
        a[k] = w * c
        a[k, k] -= w
        b[k] = w * d
        if cutoff > 0:
            c, d = np.eye(n)[k], 0.0
        else:
            c = c - np.eye(n)[k]
    return a, b, c, d


def steady_state(cutoffs: Sequence[float], inputs: Sequence[tuple[complex, complex]]
                 ) -> np.ndarray:
    """The steady-state (particular) state of the stages ``cutoffs`` (as :func:`filter_system`)
    for the input ``sum U exp(lambda t)`` over ``inputs`` = [(U, lambda), ...]: each stage's
    state is ``w / (lambda + w)`` times its input (an off stage's dummy state is 0)."""
    state = np.zeros(len(cutoffs), complex)
    for value, rate in inputs:
        x = value
        for k, cutoff in enumerate(cutoffs):
            if cutoff == 0:
                continue
            w = TWO_PI * abs(cutoff)
            lowpass = w / (rate + w) * x
            state[k] += lowpass
            x = lowpass if cutoff > 0 else x - lowpass
    return state
