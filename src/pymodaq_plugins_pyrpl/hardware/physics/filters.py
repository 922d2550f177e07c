"""PyRPL's cascaded first-order filters (the IQ quadrature filters, the ``acbandwidth``
high-pass): their transfer function and their state-space form."""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from .signals import TWO_PI


def filter_response(cutoffs: Sequence[float], f: float) -> complex:
    """PyRPL's cascaded first-order filters at ``f`` (cutoff > 0: low-pass, < 0: high-pass, 0: off).

    The model of PyRPL's ``Pid._filter_transfer_function`` / ``Iq.transfer_function``, without delays.
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
