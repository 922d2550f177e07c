"""The PID loops pid0..pid2: their quasi-static loop model, the integrators advanced exactly in
simulated time (ADC noise included), the recording of their outputs across a scope window, and
their linear response to AC inputs.

Sign convention, limits and approximations: see the package docstring.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .filters import delay, filter_delay, filter_response
from .linalg import expm, noisy_step, square_root
from .signals import LSB, TWO_PI, Grid

logger = logging.getLogger(__name__)

IVAL_RANGE = (-4.0, 4.0 - LSB)
"""Saturation of the PID integrators (V)."""
MIN_STEP = 1e-9
RECORD_POINTS = 64
"""PID output samples recorded across a scope window while an integrator moves."""
MAX_STEPS = 32
"""PID integration steps of one advance (most take 1 to 3; loops that oscillate or keep switching
limits take one or two per switch): beyond, the loops skip the rest of the time in their state."""
MAX_RECORD_STEPS = 4 * RECORD_POINTS
"""Further steps allowed in one advance that crosses a pending scope window (its trace's detail)."""
PROPORTIONAL_CYCLES = 4
"""Filtered input to output through the proportional path (``red_pitaya_pid_block.v``: the
``error``, ``kp_reg``, ``pid_out`` and ``out_buffer`` registers; PyRPL's ``Pid._delay`` = 3 plus
the extra delay its test allows)."""
INTEGRAL_CYCLES = 5
"""Filtered input to output through the integrator (``error``, ``ki_mult``, ``int_reg``,
``pid_out``, ``out_buffer``): one cycle more than the proportional path."""


def gains(cfg: Mapping[str, Any]) -> tuple[float, float]:
    """(p, integrator rate ``2 pi i``) of a PID's settings ``cfg``, zero where ``paused`` freezes
    them per ``pause_gains``."""
    paused = cfg["paused"]
    p = 0.0 if paused and "p" in cfg["pause_gains"] else cfg["p"]
    k = 0.0 if paused and "i" in cfg["pause_gains"] else TWO_PI * cfg["i"]
    return p, k


def input_response(cutoffs: Sequence[float], f: float) -> complex:
    """The input filter ``cutoffs`` at ``f``, its pipeline delay included (the signal the
    error and, in differential mode, the other PID see)."""
    return filter_response(cutoffs, f) * delay(filter_delay(cutoffs), f)


def response(cfg: Mapping[str, Any], f: float) -> complex:
    """Output per unit error at ``f`` != 0 (Hz, either sign) of a PID with settings ``cfg``,
    ignoring its limits: ``p`` and the integrator ``2 pi i / (2 j pi f)`` with their pipeline
    delays (PyRPL's ``Pid._pid_transfer_function`` with ``Pid._delay``)."""
    p, k = gains(cfg)
    return p * delay(PROPORTIONAL_CYCLES, f) + k / (TWO_PI * 1j * f) * delay(INTEGRAL_CYCLES, f)


@dataclass(frozen=True)
class LoopModel:
    """Quasi-static PID loops: ``error = E @ u + c + D @ w`` and
    ``u = clamp(p * error + ival, lo, hi)``, ``w`` the ADC inputs' white noise (unit intensity).

    ``k`` holds the integrator rates ``2 pi i`` (0 when frozen by ``paused``).
    """

    E: np.ndarray
    c: np.ndarray
    p: np.ndarray
    k: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    D: np.ndarray
    """White noise of each error, per ADC input (in1, in2), in V·√s: ``noise / sqrt(FPGA_CLOCK)``."""


@dataclass(frozen=True)
class _Affine:
    """The loops for one clamp ``state`` (per PID 0: free, +1: at ``hi``, -1: at ``lo``).

    Outputs ``u = b @ ival + u0`` (noise aside) and integrator dynamics
    ``d ival / dt = G @ ival + g + N @ w``: the noise enters the error directly and through the
    proportional outputs of the free PIDs.
    """

    state: tuple[int, ...]
    b: np.ndarray
    u0: np.ndarray
    G: np.ndarray
    g: np.ndarray
    N: np.ndarray

    @classmethod
    def build(cls, m: LoopModel, state: tuple[int, ...]) -> _Affine:
        n = len(state)
        free = np.array(state) == 0
        held = np.where(np.array(state) > 0, m.hi, m.lo)
        b, u0 = np.zeros((n, n)), np.where(free, 0.0, held)
        if free.any():
            # (1 - p E)_FF u_F = p_F (E_FC u_C + c_F) + ival_F
            if m.p[free].any():
                inverse = np.linalg.pinv(
                    np.eye(free.sum()) - m.p[free, None] * m.E[np.ix_(free, free)])
            else:  # no proportional gain: the identity
                inverse = np.eye(free.sum())
            b[np.ix_(free, free)] = inverse
            u0[free] = inverse @ (m.p[free] * (m.E[:, ~free][free] @ held[~free] + m.c[free]))
        noise = m.k[:, None] * ((np.eye(n) + m.E @ b * m.p) @ m.D)
        return cls(state, b, u0, m.k[:, None] * (m.E @ b), m.k * (m.E @ u0 + m.c), noise)


@dataclass(frozen=True)
class _Region:
    """Where the integrators are: the affine piece, which are frozen at saturation, their rates."""

    affine: _Affine
    frozen: tuple[bool, ...]
    rate: np.ndarray
    horizon: float
    """Time until a clamped output is expected to come back into range (inf: none)."""

    @functools.cached_property
    def still(self) -> bool:
        """True if the integrators do not move here: no rate and no noise driving them."""
        return not self.rate.any() and not self.affine.N.any()

    def live(self, span: float) -> bool:
        """True if an integrator visibly moves (> 1 µV) within ``span`` seconds."""
        return bool(np.max(np.abs(self.rate)) * span > 1e-6)


class PidLoops:
    """Integrator states of pid0..pid2, advanced lazily in simulated time.

    The analog path is orders of magnitude faster than the PIDs, so the loops are quasi-static: at
    each instant the outputs solve the algebraic loop ``u = clamp(p (E u + c) + ival)`` and only the
    integrators carry dynamics, linear between output clamps and solved exactly (matrix exponential),
    so any time step is stable and accurate. The ADC noise of the inputs drives the integrators
    too: each step adds the exact Gaussian spread of the integrated noise over the step (drawn from
    ``rng``), so an unstable loop does not stay at its setpoint. The linear algebra is cached per
    clamp state and step size: steps through a scope window cost a few matrix-vector products.

    Work per advance is bounded (MAX_STEPS, plus MAX_RECORD_STEPS across a scope window): loops
    that oscillate or switch limits faster than that skip the rest of the time in their current
    state, i.e. at another phase of their motion, once per advance (logged once per settings).
    """

    def __init__(self, build: Callable[[], LoopModel], n: int, t: float,
                 rng: np.random.Generator) -> None:
        self._build = build
        self._rng = rng
        self._skip_logged = False
        self._model: LoopModel | None = None
        self._outputs: np.ndarray | None = None
        self._affines: dict[tuple[int, ...], _Affine] = {}
        self._propagators: dict[tuple[Any, ...], np.ndarray] = {}
        self._region_of: tuple[bytes, _Region] | None = None  # the last region, by its ival
        self._state = (0,) * n
        self.ival = np.zeros(n)
        self.t = t

    def invalidate(self) -> None:
        """Settings changed: rebuild the loop model when next needed."""
        self._model = None
        self._outputs = None
        self._affines.clear()
        self._propagators.clear()
        self._region_of = None
        self._skip_logged = False

    def preset(self, k: int, value: float) -> None:
        """Write integrator ``k`` (PyRPL's ``ival``)."""
        self.ival[k] = value
        self._outputs = None

    @property
    def model(self) -> LoopModel:
        if self._model is None:
            self._model = self._build()
        return self._model

    def outputs(self) -> np.ndarray:
        if self._outputs is None:
            self._outputs = self._locate(self.ival)[1]
        return self._outputs

    def advance(self, t: float, recorder: Recorder | None) -> None:
        """Integrate up to time ``t``, recording the outputs across a pending scope window."""
        if recorder is not None and self.t > recorder.stop + MIN_STEP:
            recorder = None  # its window is over: it takes no more outputs
        if recorder is None and (not self.model.k.any() or self._region().still):
            self.t = max(self.t, t)  # no integrator moves and nothing to record
            return
        start, budget = self.t, MAX_STEPS
        if recorder is not None and self.t < recorder.stop and t > recorder.start:
            budget += MAX_RECORD_STEPS
        for _ in range(budget):
            if self.t >= t:
                return
            region = self._region()
            h = t - self.t
            if recorder is not None:
                h = recorder.limit(self.t, h, region.live(recorder.stop - recorder.start))
            h = self._propagate(region, min(h, max(region.horizon, MIN_STEP)))
            self.t = t if h >= t - self.t else self.t + h
            if recorder is not None:
                recorder.add(self.t, self.outputs())
        if self.t < t and not self._skip_logged:
            self._skip_logged = True
            logger.info("the PID loops switch limits or oscillate faster than the simulator "
                        "follows (%d steps covered %.3g of %.3g s): the rest of a call's time is "
                        "skipped in their current state", budget, self.t - start, t - start)
        self.t = max(self.t, t)

    def _affine(self, state: tuple[int, ...]) -> _Affine:
        if state not in self._affines:
            self._affines[state] = _Affine.build(self.model, state)
        return self._affines[state]

    def _locate(self, ival: np.ndarray) -> tuple[_Affine, np.ndarray]:
        """The clamp state and outputs for ``ival`` (active-set iteration from the last state)."""
        m, state = self.model, self._state
        for _ in range(2 * len(ival) + 2):
            affine = self._affine(state)
            u = affine.b @ ival + affine.u0
            value = m.p * (m.E @ u + m.c) + ival  # what each output would be without its clamp
            new = tuple(int(s) for s in np.where(
                value > m.hi, 1, np.where(value < m.lo, -1, 0)))
            if new == state:
                break
            state = new
        self._state = state
        return affine, np.clip(u, m.lo, m.hi)

    def _region(self) -> _Region:
        """Linear integrator dynamics around the current state (the last one again while the
        integrators have not moved: e.g. all frozen at their limits)."""
        key = self.ival.tobytes()
        if self._region_of is None or self._region_of[0] != key:
            self._region_of = (key, self._new_region())
        return self._region_of[1]

    def _new_region(self) -> _Region:
        m, ival = self.model, self.ival
        affine, u = self._locate(ival)
        if not m.k.any():
            return _Region(affine, (True,) * len(ival), np.zeros(len(ival)), math.inf)
        rate = affine.G @ ival + affine.g
        frozen = ((ival >= IVAL_RANGE[1]) & (rate > 0)) | ((ival <= IVAL_RANGE[0]) & (rate < 0))
        rate[frozen] = 0.0
        return _Region(affine, tuple(frozen), rate, self._horizon(m, affine, u, ival, rate))

    @staticmethod
    def _horizon(m: LoopModel, affine: _Affine, u: np.ndarray, ival: np.ndarray,
                 rate: np.ndarray) -> float:
        """Time until a clamped output's unclamped value ``p e + ival`` moves back into [lo, hi]."""
        value = m.p * (m.E @ u + m.c) + ival
        slope = m.p * (m.E @ (affine.b @ rate)) + rate
        times = [math.inf]
        for k in np.flatnonzero((np.array(affine.state) != 0) & (rate != 0)):
            if value[k] >= m.hi[k] and slope[k] < 0:
                times.append((value[k] - m.hi[k]) / -slope[k])
            elif value[k] <= m.lo[k] and slope[k] > 0:
                times.append((m.lo[k] - value[k]) / slope[k])
        return min(times) * (1 + 1e-6) + 1e-12

    def _propagate(self, region: _Region, h: float) -> float:
        """Exact step of ``h`` seconds (halved while it overflows), noise included; return the
        step taken."""
        if region.still:
            return h
        while True:
            phi, spread = self._propagator(region, h)
            with np.errstate(over="ignore", invalid="ignore"):
                new = phi[:, :-1] @ self.ival + phi[:, -1]
                if spread is not None:
                    new = new + spread @ self._rng.standard_normal(len(new))
            if np.all(np.isfinite(new)) or h <= MIN_STEP:
                self.ival, self._outputs = np.clip(np.nan_to_num(new), *IVAL_RANGE), None
                return h
            h /= 2.0

    def _propagator(self, region: _Region, h: float) -> tuple[np.ndarray, np.ndarray | None]:
        """``expm([[G h, g h], [0, 0]])[:n]`` and a square root of the covariance of the noise
        integrated over ``h`` (Van Loan's method; None without noise), with the frozen
        integrators' rows zeroed (cached)."""
        key = (region.affine.state, region.frozen, h)
        if key not in self._propagators:
            n = len(self.ival)
            keep = ~np.array(region.frozen)
            a = region.affine.G * keep[:, None] * h
            g = region.affine.g * keep * h
            noise = region.affine.N * keep[:, None]
            if len(self._propagators) > 256:
                self._propagators.clear()
            with np.errstate(over="ignore", invalid="ignore"):
                if noise.any():
                    phi, covariance = noisy_step(a, g, noise @ noise.T * h)
                    self._propagators[key] = (phi, square_root(covariance))
                else:
                    aug = np.zeros((n + 1, n + 1))
                    aug[:n, :n], aug[:n, n] = a, g
                    self._propagators[key] = (expm(aug)[:n], None)
        return self._propagators[key]


@dataclass
class Recorder:
    """PID outputs recorded while the integrators advance through a scope window, for the trace."""

    start: float
    stop: float
    times: list[float] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def limit(self, t: float, h: float, live: bool) -> float:
        """Shorten a step from ``t`` to end on the next window point (the ends; a grid if ``live``)."""
        if t >= self.stop or t + h <= self.start:
            return h
        points = np.linspace(self.start, self.stop, RECORD_POINTS) if live else np.array(
            [self.start, self.stop])
        later = points[points > t + MIN_STEP / 2]
        return min(h, float(later[0]) - t) if len(later) else h

    def add(self, t: float, u: np.ndarray) -> None:
        if not self.start - MIN_STEP <= t <= self.stop + MIN_STEP:
            return
        if self.times and t <= self.times[-1]:
            t = float(np.nextafter(self.times[-1], math.inf))
        self.times.append(t)
        self.values.append(u.copy())

    def pid(self, k: int, grid: Grid, fallback: np.ndarray) -> np.ndarray:
        """Output of pid ``k`` on ``grid``, interpolated (``fallback``: outputs if none recorded)."""
        if not self.times:
            return np.full(grid.n, fallback[k])
        return np.interp(grid.absolute, self.times, [v[k] for v in self.values])
