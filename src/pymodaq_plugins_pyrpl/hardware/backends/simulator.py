"""A virtual Red Pitaya for plugin development and demos: the backend of the server's ``--mock``.

Nothing is stored as samples: every DSP signal is a function of time computed from the module
settings and evaluated, vectorized, on the time grid asked for (a scope trace, one sampler instant, a
trigger search). Sinusoidal parts (ASG sin/cos and the harmonics of its other waveforms, IQ
excitations, DC levels) are also carried as *tones*, complex amplitudes on phase accumulators, so the
IQ demodulators and the plant see them analytically. Imports only the standard library and numpy.
"""
from __future__ import annotations

import cmath
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import catalogue
from ..errors import InternalError, InvalidParams
from .base import ScopeTrace

logger = logging.getLogger(__name__)

LSB = 2.0**-13
"""Step of the 14-bit DSP bus (V)."""
NYQUIST = catalogue.FPGA_CLOCK / 2
SAMPLES = catalogue.SCOPE_SAMPLES
STATIC_HZ = 1e-6
"""Tones slower than this are constant (DC)."""
TRIGGER_HORIZON = 10.0
"""Seconds after arming searched for an edge trigger; beyond, the acquisition never completes."""
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
HARMONICS_AROUND = 4
"""Harmonics of non-sinusoidal ASG waveforms kept on each side of a demodulation frequency."""
PERIOD_TABLE_MAX = 2**16
PERIOD_TABLES_KEPT = 8
"""Resonator responses to periodic waveforms kept in memory (up to 512 kB each)."""
_TWO_PI = 2.0 * math.pi
_CHANNEL = {"in1": "out1", "in2": "out2"}
_ROUTES = {"out1": ("out1", "both"), "out2": ("out2", "both")}


def _quantize(x: np.ndarray) -> np.ndarray:
    """14-bit DSP bus value: clipped to [-1, 1 - 2**-13] V and rounded to the 2**-13 V grid."""
    return np.clip(np.round(x * 8192.0), -8192.0, 8191.0) / 8192.0


def _cos_cycles(cycles: np.ndarray) -> np.ndarray:
    """``cos(2 pi cycles)``, in float32 after reduction to one period: the error (< 1e-6) is far
    below the 14-bit LSB (1.2e-4 V) and float32 cosines are several times faster than float64."""
    angle = (_TWO_PI * (cycles - np.floor(cycles))).astype(np.float32)
    return np.cos(angle).astype(np.float64)


def _gaussian(rng: np.random.Generator, sigma: float, n: int) -> np.ndarray:
    """``n`` independent normal samples of rms ``sigma``: the Box-Muller transform in float32,
    several times faster than ``rng.normal``; float32 is ample for noise on a 14-bit bus."""
    half = (n + 1) // 2
    u = rng.random((2, half), dtype=np.float32)
    radius = np.sqrt(-2.0 * np.log1p(-u[0]))  # 1 - u is in (0, 1]
    angle = np.float32(_TWO_PI) * u[1]
    samples = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
    return sigma * samples.astype(np.float64)


def _filter_response(cutoffs: Sequence[float], f: float) -> complex:
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


# ------------------------------------------------------------------------------------------------
# time grids, phase accumulators, tones


@dataclass(frozen=True)
class _Grid:
    """Sample times ``start + offsets`` (simulated s); phases use the offsets for precision."""

    start: float
    offsets: np.ndarray

    @classmethod
    def uniform(cls, start: float, dt: float, n: int) -> _Grid:
        return cls(start, dt * np.arange(n))

    @property
    def n(self) -> int:
        return len(self.offsets)

    @property
    def dt(self) -> float:
        """Sample spacing (0 for a single instant)."""
        return float(self.offsets[1] - self.offsets[0]) if self.n > 1 else 0.0

    @property
    def absolute(self) -> np.ndarray:
        return self.start + self.offsets

    def shifted(self, delay: float) -> _Grid:
        """The same samples ``delay`` seconds earlier."""
        return _Grid(self.start - delay, self.offsets)


@dataclass(frozen=True)
class _Phase:
    """A phase accumulator ``cycles(t) = cycles_ref + freq * (t - t_ref)`` (only the fraction counts)."""

    freq: float = 0.0
    t_ref: float = 0.0
    cycles_ref: float = 0.0

    def at(self, t: float) -> float:
        return (self.cycles_ref + self.freq * (t - self.t_ref)) % 1.0

    def retuned(self, t: float, freq: float) -> _Phase:
        """The accumulator continuing from its phase at ``t`` at a new frequency (no phase jump)."""
        return _Phase(freq, t, self.at(t))

    def cycles(self, grid: _Grid) -> np.ndarray:
        return (self.at(grid.start) + self.freq * grid.offsets) % 1.0


@dataclass(frozen=True)
class _Tone:
    """``Re(amp * exp(2j pi sum(m * phase.cycles(t))))``: a sinusoid (DC when ``terms`` is empty).

    Composite terms represent mixing products, e.g. an input tone times a demodulation oscillator.
    """

    amp: complex
    terms: tuple[tuple[_Phase, int], ...] = ()
    freq: float = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "freq", sum(m * p.freq for p, m in self.terms))

    @property
    def static(self) -> bool:
        return abs(self.freq) < STATIC_HZ

    def scaled(self, k: complex) -> _Tone:
        return _Tone(self.amp * k, self.terms)

    def conj(self) -> _Tone:
        """The same real signal written with the opposite frequency."""
        return _Tone(self.amp.conjugate(), tuple((p, -m) for p, m in self.terms))

    def mixed(self, phase: _Phase, m: int, k: complex) -> _Tone:
        """This tone times ``k * exp(2j pi m phase)``."""
        return _Tone(self.amp * k, self.terms + ((phase, m),))

    def phasor(self, t: float) -> complex:
        """The complex value ``amp * exp(2j pi cycles)`` at time ``t``."""
        return self.amp * cmath.exp(2j * math.pi * sum(m * p.at(t) for p, m in self.terms))

    def evaluate(self, grid: _Grid) -> np.ndarray:
        start = self.phasor(grid.start)
        if self.static:
            return np.full(grid.n, start.real)
        return abs(start) * _cos_cycles(self.freq * grid.offsets + cmath.phase(start) / _TWO_PI)


# ------------------------------------------------------------------------------------------------
# ASG waveforms (PyRPL's tables, asg.py) and their Fourier series


def _ramp(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0.5, 4.0 * x - 1.0, 3.0 - 4.0 * x)


_WAVEFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": lambda x: _cos_cycles(x - 0.25),
    "cos": _cos_cycles,
    "ramp": _ramp,
    "halframp": lambda x: 2.0 * x - 1.0,
    "square": lambda x: np.where(x < 0.5, 1.0, -1.0),
}
"""One period of the periodic waveforms, ``x`` in cycles [0, 1) (``dc`` and ``noise`` are not)."""


def _fourier(waveform: str, n: int) -> complex:
    """Coefficient ``c_n`` of ``w(x) = Re(sum_n c_n exp(2j pi n x))`` for a periodic waveform."""
    if waveform in ("sin", "cos"):
        return (-1j if waveform == "sin" else 1.0 + 0j) if n == 1 else 0j
    if waveform == "halframp":
        return 2j / (math.pi * n)
    if n % 2 == 0:
        return 0j
    return -4j / (math.pi * n) if waveform == "square" else -8.0 / (math.pi * n) ** 2 + 0j


def _harmonics(f: float, near: float) -> list[int]:
    """Harmonics of a waveform at ``f`` worth keeping around frequency ``near``, and the fundamental."""
    n_max = max(1, int(NYQUIST // f))
    n0 = round(near / f)
    around = range(max(1, n0 - HARMONICS_AROUND), min(n_max, n0 + HARMONICS_AROUND) + 1)
    return sorted({1, *around})


class _Asg:
    """Phase accumulator and output of one signal generator; its settings live in ``values``.

    Only a running generator (``trigger_source == 'immediately'``) outputs anything: ``'off'`` stops
    it and the external trigger sources arm it for a trigger that never comes.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.phase = _Phase()
        self.running = False

    def update(self, old: Mapping[str, Any], t: float) -> None:
        """Apply changed settings at time ``t``: start at ``start_phase``, or retune continuously."""
        running = self.values["trigger_source"] == "immediately"
        if running and not self.running:
            self.phase = _Phase(self.values["frequency"], t, self.values["start_phase"] / 360.0)
        elif self.values["frequency"] != old["frequency"]:
            self.phase = self.phase.retuned(t, self.values["frequency"])
        self.running = running

    def evaluate(self, grid: _Grid, rng: np.random.Generator | None) -> np.ndarray:
        """Output on ``grid`` (V, unclipped); ``rng`` None leaves out the noise waveform."""
        if not self.running:
            return np.zeros(grid.n)
        waveform = self.values["waveform"]
        if waveform in _WAVEFORMS:
            shape = _WAVEFORMS[waveform](self.phase.cycles(grid))
        elif waveform == "noise" and rng is not None:
            shape = _gaussian(rng, 1.0, grid.n)
        else:
            shape = np.zeros(grid.n)
        return self.values["amplitude"] * shape + self.values["offset"]

    def tones(self, near: float) -> list[_Tone]:
        """The output as tones: the offset and the harmonics that matter around frequency ``near``."""
        if not self.running:
            return []
        tones = [_Tone(complex(self.values["offset"]))]
        waveform, amplitude = self.values["waveform"], self.values["amplitude"]
        if waveform not in _WAVEFORMS or amplitude == 0:
            return tones
        if self.phase.freq == 0:
            level = _WAVEFORMS[waveform](np.array([self.phase.cycles_ref]))[0]
            return tones + [_Tone(complex(amplitude * level))]
        return tones + [_Tone(amplitude * c, ((self.phase, n),))
                        for n in _harmonics(self.phase.freq, near) if (c := _fourier(waveform, n))]

    def next_period_start(self, t: float) -> float | None:
        """First time >= ``t`` at which a period starts (the scope's asg trigger), None if never."""
        if not self.running or self.phase.freq <= 0:
            return None
        return t + ((1.0 - self.phase.at(t)) % 1.0) / self.phase.freq


# ------------------------------------------------------------------------------------------------
# plants: what connects out1/out2 to in1/in2


@dataclass
class _OutSources:
    """What is routed to one analog output, for a plant to transform."""

    asgs: list[_Asg]
    pids: list[int]
    tones: list[_Tone]
    """IQ outputs (excitations and band-pass outputs)."""
    total: Callable[[_Grid], np.ndarray]
    """The output voltage itself (summed, clipped, 14-bit) on a grid."""


@dataclass(frozen=True)
class _Loopback:
    """Cables out1→in1 and out2→in2: a delay and a first-order low-pass."""

    delay: float = 16e-9
    bandwidth: float = 60e6
    noise: float = 1e-3

    def __post_init__(self) -> None:
        if self.delay < 0 or self.bandwidth <= 0 or self.noise < 0:
            raise ValueError("plant 'loopback' needs delay >= 0, bandwidth > 0 and noise >= 0")

    def transfer(self, f: float) -> complex:
        return cmath.exp(-2j * math.pi * f * self.delay) / (1.0 + 1j * f / self.bandwidth)

    def pole(self) -> complex | None:
        """None: no free oscillation worth modelling (the cable settles within nanoseconds)."""
        return None

    def trace(self, out: _OutSources, grid: _Grid, ctx: _Context) -> np.ndarray:
        """The delayed output through an FIR truncation of the low-pass (matters only at dt < 20 ns)."""
        taps = self._taps(grid.dt)
        k = len(taps) - 1
        if k == 0:
            return out.total(grid.shifted(self.delay))
        lead = grid.offsets[0] - grid.dt * np.arange(k, 0, -1)
        x = out.total(_Grid(grid.start - self.delay, np.concatenate([lead, grid.offsets])))
        return sum(w * x[k - i: k - i + grid.n] for i, w in enumerate(taps))

    def _taps(self, dt: float) -> np.ndarray:
        a = math.exp(-_TWO_PI * self.bandwidth * dt) if dt > 0 else 0.0
        if a < 1e-4:
            return np.ones(1)
        taps = a ** np.arange(min(16, math.ceil(math.log(1e-4) / math.log(a))) + 1)
        return taps / taps.sum()


@dataclass(frozen=True)
class _Resonator:
    """A damped resonator in place of each cable: H(f) = gain / (1 - (f/f0)**2 + j f / (f0 q))."""

    f0: float = 100e3
    q: float = 30.0
    gain: float = 1.0
    noise: float = 1e-3
    _tables: dict[tuple[str, float, int], np.ndarray] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.f0 <= 0 or self.q <= 0 or self.noise < 0:
            raise ValueError("plant 'resonator' needs f0 > 0, q > 0 and noise >= 0")

    def transfer(self, f: Any) -> Any:
        """H at ``f`` (a float or an array)."""
        x = f / self.f0
        return self.gain / (1.0 - x * x + 1j * x / self.q)

    def pole(self) -> complex | None:
        """The upper pole ``-w0/(2q) + j w0 sqrt(1 - 1/(4 q**2))`` of H (1/s): the free
        oscillation, which decays with the ring-up time constant ``q / (pi f0)``; None if the
        resonator is not underdamped (q <= 1/2)."""
        if self.q <= 0.5:
            return None
        w0 = _TWO_PI * self.f0
        return complex(-w0 / (2.0 * self.q), w0 * math.sqrt(1.0 - 1.0 / (4.0 * self.q**2)))

    def trace(self, out: _OutSources, grid: _Grid, ctx: _Context) -> np.ndarray:
        """Steady-state response to each source: tones exactly, PIDs quasi-statically, the other ASG
        waveforms by FFT of one period (noise: of the trace). Output clipping is ignored here."""
        total = np.zeros(grid.n)
        for tone in out.tones:
            total += tone.scaled(self.transfer(tone.freq)).evaluate(grid)
        for k in out.pids:
            total += self.gain * ctx.pid(k, grid)
        for asg in out.asgs:
            total += self._asg_response(asg, grid, ctx)
        return total

    def _asg_response(self, asg: _Asg, grid: _Grid, ctx: _Context) -> np.ndarray:
        waveform, amplitude = asg.values["waveform"], asg.values["amplitude"]
        response = np.full(grid.n, self.gain * asg.values["offset"])
        if waveform in ("sin", "cos") or (waveform in _WAVEFORMS and asg.phase.freq == 0):
            for tone in asg.tones(0.0)[1:]:
                response += tone.scaled(self.transfer(tone.freq)).evaluate(grid)
        elif waveform in _WAVEFORMS:
            response += amplitude * self._periodic(waveform, asg.phase, grid)
        elif waveform == "noise" and ctx.rng is not None and grid.n > 1:
            spectrum = np.fft.rfft(_gaussian(ctx.rng, amplitude, grid.n))
            h = self.transfer(np.fft.rfftfreq(grid.n, grid.dt))
            response += np.fft.irfft(spectrum * h, grid.n)
        return response

    def _periodic(self, waveform: str, phase: _Phase, grid: _Grid) -> np.ndarray:
        """Response to a unit periodic waveform: one period filtered by FFT, interpolated on grid."""
        period = 1.0 / phase.freq
        resolution = grid.dt if grid.dt > 0 else period / 1024
        needed = max(period / resolution, 32.0 * self.f0 * period, 256.0)
        n = int(min(PERIOD_TABLE_MAX, 2 ** math.ceil(math.log2(needed))))
        key = (waveform, phase.freq, n)
        if key not in self._tables:
            if len(self._tables) >= PERIOD_TABLES_KEPT:
                self._tables.clear()
            spectrum = np.fft.rfft(_WAVEFORMS[waveform](np.arange(n) / n))
            harmonics = phase.freq * np.arange(n // 2 + 1)
            self._tables[key] = np.fft.irfft(spectrum * self.transfer(harmonics), n)
        table = self._tables[key]
        position = phase.cycles(grid) * n
        index = np.floor(position).astype(int) % n
        frac = position - np.floor(position)
        return table[index] * (1.0 - frac) + table[(index + 1) % n] * frac


_PLANTS: dict[str, type[_Loopback | _Resonator]] = {"loopback": _Loopback, "resonator": _Resonator}


def parse_plant(spec: str) -> _Loopback | _Resonator:
    """Build the plant of a spec such as ``"loopback"`` or ``"resonator:f0=100e3,q=30,gain=1"``.

    Raises ValueError naming the known plants and parameters.
    """
    name, _, params = spec.partition(":")
    name = name.strip().lower()
    cls = _PLANTS.get(name)
    if cls is None:
        raise ValueError(f"unknown plant {name!r} in {spec!r}: use 'loopback[:delay=..,"
                         f"bandwidth=..,noise=..]' or 'resonator[:f0=..,q=..,gain=..,noise=..]'")
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, float] = {}
    for item in (s.strip() for s in params.split(",")):
        if not item:
            continue
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in allowed:
            raise ValueError(f"plant {name!r} has no parameter {key!r} (in {spec!r}); "
                             f"parameters: {allowed}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"plant parameter {key}={value!r} is not a number (in {spec!r})"
                             ) from None
        if not math.isfinite(number):
            raise ValueError(f"plant parameter {key}={value!r} must be finite (in {spec!r})")
        kwargs[key] = number
    return cls(**kwargs)


def plant_spec(spec: str) -> str:
    """The canonical spec of the plant ``spec`` describes: its name and every parameter, defaults
    included, in a fixed order (``"resonator"`` → ``"resonator:f0=100000,q=30,gain=1,noise=0.001"``).
    Two specs describe the same plant if and only if their canonical specs are equal. Raises
    ValueError as :func:`parse_plant`."""
    plant = parse_plant(spec)
    name = next(key for key, cls in _PLANTS.items() if isinstance(plant, cls))

    def number(value: float) -> str:
        return repr(float(value)).removesuffix(".0")

    return name + ":" + ",".join(f"{field.name}={number(getattr(plant, field.name))}"
                                 for field in dataclasses.fields(plant) if field.init)


# ------------------------------------------------------------------------------------------------
# PID dynamics


def _squarings(m: np.ndarray) -> int:
    """Halvings that bring ``m``'s 1-norm to at most 0.5 (where the Taylor series is exact)."""
    norm = float(np.abs(m).sum(axis=0).max())
    return max(0, math.ceil(math.log2(norm / 0.5))) if norm > 0.5 else 0


def _taylor_expm(a: np.ndarray) -> np.ndarray:
    """``expm(a)`` by a 12th-order Taylor series, for a 1-norm up to about 1."""
    result = term = np.eye(len(a))
    for k in range(1, 13):
        term = term @ a / k
        result = result + term
    return result


def _expm(m: np.ndarray) -> np.ndarray:
    """Matrix exponential by scaling and squaring of a 12th-order Taylor series (small matrices)."""
    squarings = _squarings(m)
    result = _taylor_expm(m / 2.0**squarings)
    for _ in range(squarings):
        result = result @ result
    return result


def _noisy_step(a: np.ndarray, g: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of ``dx = (A x + c) dt + B dW`` given ``a = A h``, ``g = c h``, ``q = B B.T h``:
    ``[Phi, d]`` (``x -> Phi x + d``) and the covariance of the noise integrated over the step.

    Van Loan's block exponential on ``h / 2**s`` (small enough not to overflow), then ``s``
    doublings: ``Q <- Q + Phi Q Phi.T``, ``d <- Phi d + d``, ``Phi <- Phi Phi``.
    """
    n = len(a)
    squarings = max(_squarings(a), _squarings(g[:, None]), _squarings(q))
    scale = 2.0**-squarings
    block = np.zeros((2 * n + 1, 2 * n + 1))
    block[:n, :n], block[:n, n:2 * n] = -a * scale, q * scale
    block[n:2 * n, n:2 * n], block[2 * n, n:2 * n] = a.T * scale, g * scale
    e = _taylor_expm(block)
    phi, d = e[n:2 * n, n:2 * n].T, e[2 * n, n:2 * n]
    covariance = phi @ e[:n, n:2 * n]
    for _ in range(squarings):
        covariance = covariance + phi @ covariance @ phi.T
        d = phi @ d + d
        phi = phi @ phi
    return np.hstack([phi, d[:, None]]), covariance


def _square_root(covariance: np.ndarray) -> np.ndarray:
    """``S`` with ``S @ S.T = covariance`` (symmetric, positive semi-definite, maybe singular);
    NaN if the covariance is not finite (an overflowing step, to be halved)."""
    if not np.all(np.isfinite(covariance)):
        return np.full_like(covariance, np.nan)
    values, vectors = np.linalg.eigh((covariance + covariance.T) / 2)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


@dataclass(frozen=True)
class _LoopModel:
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
    def build(cls, m: _LoopModel, state: tuple[int, ...]) -> _Affine:
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

    def live(self, span: float) -> bool:
        """True if an integrator visibly moves (> 1 µV) within ``span`` seconds."""
        return bool(np.max(np.abs(self.rate)) * span > 1e-6)


class _PidLoops:
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

    def __init__(self, build: Callable[[], _LoopModel], n: int, t: float,
                 rng: np.random.Generator) -> None:
        self._build = build
        self._rng = rng
        self._skip_logged = False
        self._model: _LoopModel | None = None
        self._outputs: np.ndarray | None = None
        self._affines: dict[tuple[int, ...], _Affine] = {}
        self._propagators: dict[tuple[Any, ...], np.ndarray] = {}
        self._state = (0,) * n
        self.ival = np.zeros(n)
        self.t = t

    def invalidate(self) -> None:
        """Settings changed: rebuild the loop model when next needed."""
        self._model = None
        self._outputs = None
        self._affines.clear()
        self._propagators.clear()
        self._skip_logged = False

    def preset(self, k: int, value: float) -> None:
        """Write integrator ``k`` (PyRPL's ``ival``)."""
        self.ival[k] = value
        self._outputs = None

    @property
    def model(self) -> _LoopModel:
        if self._model is None:
            self._model = self._build()
        return self._model

    def outputs(self) -> np.ndarray:
        if self._outputs is None:
            self._outputs = self._locate(self.ival)[1]
        return self._outputs

    def advance(self, t: float, recorder: _Recorder | None) -> None:
        """Integrate up to time ``t``, recording the outputs across a pending scope window."""
        if recorder is None and not self.model.k.any():
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
        """Linear integrator dynamics around the current state."""
        m, ival = self.model, self.ival
        affine, u = self._locate(ival)
        if not m.k.any():
            return _Region(affine, (True,) * len(ival), np.zeros(len(ival)), math.inf)
        rate = affine.G @ ival + affine.g
        frozen = ((ival >= IVAL_RANGE[1]) & (rate > 0)) | ((ival <= IVAL_RANGE[0]) & (rate < 0))
        rate[frozen] = 0.0
        return _Region(affine, tuple(frozen), rate, self._horizon(m, affine, u, ival, rate))

    @staticmethod
    def _horizon(m: _LoopModel, affine: _Affine, u: np.ndarray, ival: np.ndarray,
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
        if not region.rate.any() and not region.affine.N.any():
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
                    phi, covariance = _noisy_step(a, g, noise @ noise.T * h)
                    self._propagators[key] = (phi, _square_root(covariance))
                else:
                    aug = np.zeros((n + 1, n + 1))
                    aug[:n, :n], aug[:n, n] = a, g
                    self._propagators[key] = (_expm(aug)[:n], None)
        return self._propagators[key]


@dataclass
class _Recorder:
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

    def pid(self, k: int, grid: _Grid, fallback: np.ndarray) -> np.ndarray:
        """Output of pid ``k`` on ``grid``, interpolated (``fallback``: outputs if none recorded)."""
        if not self.times:
            return np.full(grid.n, fallback[k])
        return np.interp(grid.absolute, self.times, [v[k] for v in self.values])


# ------------------------------------------------------------------------------------------------
# transients: the plant's free oscillation and the IQ quadrature filters


SETTLED = 60.0
"""A transient ``exp(-x)`` (times a polynomial) with ``x`` beyond this is over (dropped)."""


@dataclass(frozen=True)
class _Ring:
    """The plant's free oscillation on one input since time ``t``: ``Re(c exp(s (t' - t)))``."""

    t: float
    c: complex
    s: complex

    def at(self, t: float) -> complex:
        """The complex value ``c exp(s (t' - t))`` at time ``t'`` = ``t``."""
        return self.c * cmath.exp(self.s * (t - self.t))

    def over(self, t: float) -> bool:
        return -self.s.real * (t - self.t) > SETTLED

    def evaluate(self, grid: _Grid) -> np.ndarray:
        start = self.at(grid.start)
        return (start * np.exp(self.s * grid.offsets)).real


@functools.lru_cache(maxsize=64)
def _filter_system(cutoffs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(A, B, C, D)`` of PyRPL's cascaded first-order stages (cutoff > 0 low-pass, < 0
    high-pass, 0 off) as ``x' = A x + B u``, ``y = C x + D u``, one state per stage: a low-pass
    stage's state is its output, a high-pass stage's the low-pass of its input (output: input -
    state). An off stage's state is a dummy that decays to 0 and is not used. The transfer function
    is ``_filter_response(cutoffs, f)``."""
    n = len(cutoffs)
    a, b = np.zeros((n, n)), np.zeros(n)
    c, d = np.zeros(n), 1.0  # the input of the next stage as a function of (x, u)
    for k, cutoff in enumerate(cutoffs):
        if cutoff == 0:
            a[k, k] = -1.0
            continue
        w = _TWO_PI * abs(cutoff)
        a[k] = w * c
        a[k, k] -= w
        b[k] = w * d
        if cutoff > 0:
            c, d = np.eye(n)[k], 0.0
        else:
            c = c - np.eye(n)[k]
    return a, b, c, d


@dataclass(frozen=True)
class _Settling:
    """An IQ quadrature filter on its way to its steady state since time ``t``: its state is the
    steady-state (particular) one plus ``expm(A (t' - t)) deviation``."""

    t: float
    cutoffs: tuple[float, ...]
    deviation: np.ndarray | None
    """None: settled."""

    def over(self, t: float) -> bool:
        active = [abs(c) for c in self.cutoffs if c]
        return (self.deviation is None or not active
                or _TWO_PI * min(active) * (t - self.t) > SETTLED)

    def homogeneous(self, t: float) -> np.ndarray:
        """The state's deviation from the steady state at time ``t``."""
        if self.over(t):
            return np.zeros(len(self.cutoffs), complex)
        a = _filter_system(self.cutoffs)[0]
        return _expm(a * (t - self.t)) @ self.deviation


# ------------------------------------------------------------------------------------------------
# evaluation context and acquisitions


@dataclass(frozen=True)
class _Context:
    """How to evaluate signals: PID outputs (DC levels ``u`` and their time course) and noise."""

    u: np.ndarray
    pid: Callable[[int, _Grid], np.ndarray]
    rng: np.random.Generator | None
    """None: noise-free (trigger search)."""


@dataclass
class _Acquisition:
    """A pending scope acquisition (settings snapshot at arm time)."""

    inputs: tuple[str, str]
    duration: float
    t0: float
    start: float | None
    """Simulated time of the first sample; None if the trigger never comes."""
    recorder: _Recorder | None

    @property
    def end(self) -> float:
        return math.inf if self.start is None else self.start + self.duration


# ------------------------------------------------------------------------------------------------
# the backend


class SimulatorBackend:
    """A virtual Red Pitaya with physically meaningful signals (the server's ``--mock`` backend).

    Parameters
    ----------
    seed:
        Seed of the numpy Generator behind all noise: the same seed and the same sequence of calls
        and clock readings give identical results. None: unpredictable.
    plant:
        What connects the outputs to the inputs, ``name[:key=value,...]``:

        - ``"loopback"`` (default): cables out1→in1 and out2→in2 with ``delay=16e-9`` s
          (2 samples), a first-order low-pass ``bandwidth=60e6`` Hz and ADC ``noise=1e-3`` V rms.
        - ``"resonator"``: a damped resonator in place of each cable,
          ``H(f) = gain / (1 - (f/f0)**2 + j f/(f0 q))``, defaults ``f0=100e3`` Hz, ``q=30``,
          ``gain=1``, ``noise=1e-3`` V rms. Its DC gain is ``gain``, its peak gain ``gain * q`` at
          f0 and its linewidth (FWHM of the power) f0/q; excite it with less than 1/(gain q) V to
          stay within the ±1 V input range. Example: ``"resonator:f0=250e3,q=100,gain=0.5"``.

        An unknown plant or parameter, or a value that is not a number, raises ValueError.
    clock:
        Monotonic seconds. Simulated time is the clock minus its value at construction; inject a
        fake clock in tests. Acquisitions take clock time: a trace is ready once the clock has
        passed its last sample, and PID integrators evolve with the clock.

    Physics
    -------
    - Outputs: out1/out2 are the sum of the ASG, PID and IQ outputs routed there by
      ``output_direct``, clipped to [-1, 1 - 2**-13] V and 14-bit quantized; in1/in2 come from
      them through the plant, plus ADC noise, clipped and quantized. Every bus signal seen by the
      scope or the sampler is 14-bit; the sampler divides by 2**13 - 1 like PyRPL's.
    - ASG: PyRPL's waveform tables (sin, cos, ramp = triangle, halframp = sawtooth, square, dc,
      noise = Gaussian of rms ``amplitude``) times ``amplitude`` plus ``offset``.
      ``trigger_source='immediately'`` starts it at ``start_phase``; 'off' stops it (0 V); the
      external sources arm it for a trigger that never comes (0 V). Changing ``frequency`` keeps the
      phase continuous; ``start_phase`` applies at the next start; sending 'immediately' to a running
      ASG does not restart it. ``cycles_per_burst`` is not simulated (continuous output).
    - PID, sign convention: PyRPL's FPGA (``fpga/rtl/red_pitaya_pid_block.v``:
      ``error <= $signed(dat_i) - $signed(set_sp)``, confirmed by PyRPL's ``test_pid_paused`` and
      ``test_diff_pid``) uses ``error = input - setpoint``, ``output = p * error + ival`` and
      ``d ival/dt = 2 pi i * error``; ival saturates at ±4 V, the output at ±1 V and then at
      [min_voltage, max_voltage]. So, as on a board, a loop through the plain loopback (out1→in1, DC
      gain +1) is negative feedback for NEGATIVE p and i: p=-0.1, i=-1000 settle in1 on the setpoint
      within ~1 ms, positive gains run away to the limits. ``paused`` zeroes the proportional term
      and/or freezes the integrator as ``pause_gains`` selects (there is no d gain).
      ``differential_mode_enabled`` on pid0/pid1 replaces the setpoint by the other one's input
      (ignored on pid2). ``inputfilter`` is ignored.
    - IQ: ``I + jQ`` is the input demodulated at ``frequency`` (twice that with
      ``demodulation_at_2f``) and rotated by ``+phase``, as PyRPL's accumulators on a board: with
      theta the input's phase relative to the excitation, ``i = A cos(theta + phase)`` and
      ``q = A sin(theta + phase)``, times the response of the
      ``bandwidth`` stages at the offset from ``frequency`` and of the ``acbandwidth`` high-pass. The
      excitation ``amplitude * cos(2 pi f t)`` (2f with ``modulation_at_2f``) goes to
      ``output_direct``, plus, when ``gain`` is not 0, PyRPL's band-pass
      ``gain * L(f_in - f) * exp(j phase)`` of the input. On the bus, ``iqN`` is
      ``I * quadrature_factor`` for ``output_signal`` 'quadrature' or 'quadrature_hf', the output
      for 'output_direct', else 0; ``iq2_2`` is ``Q * quadrature_factor``.
    - Transients: at every change (a ``set`` of any module but the scope), the quadrature filter
      of each IQ module in use (set at least once) keeps its state and relaxes from there to its
      new steady state through its stages (PyRPL's cascaded first-order low- and high-passes,
      solved exactly); ``iq_settle_remaining`` says how long that takes after the module's own last
      change (``catalogue.filter_settle_time``). With the resonator, in1/in2 keep their value and
      slope: the difference to the new steady state is the resonator's free oscillation, decaying
      with the ring-up time constant ``q / (pi f0)``; it shows on in1/in2 (scope, sampler) and,
      demodulated and filtered, in ``iq_read``. So a reading taken too soon after a frequency step
      lags the sweep.
    - Scope: 16384 samples, PyRPL's 17 durations, any bus signal as input (trig, iir and off read
      0). Triggers: 'immediately' (t0 = 0); ch1/ch2 edges with threshold and hysteresis (the signal
      must first be beyond threshold ∓ hysteresis, then cross threshold); asg0/asg1 at the start of
      a period (phase 0 of the table); off, ext_* and dsp never fire. The trigger is at t = 0 and the
      trace is centred on ``trigger_delay`` (PyRPL's ``scope.times``). ``scope_arm`` returns the
      seconds until the trace is complete. ``trace_average`` is the server's business.

    Approximations
    --------------
    - Quasi-static PID loops: a PID acts on the DC part of its input (ASG waveforms and IQ
      excitations count with their mean, so the proportional term does not copy AC signals); the
      proportional loop through the analog path is solved algebraically (a loop gain
      ``|p H(0)| >= 1``, which would oscillate or latch on a board, only logs a warning); the loop
      algebra ignores the ±1 V clipping of outputs and inputs (the PID's own limits hold). The
      ADC noise of in1/in2 (the plant's ``noise``, white at 125 MS/s) drives the integrators of
      the PIDs that read them, directly or through other PIDs' proportional outputs, exactly
      (its integrated spread over each step): an unstable loop left at its setpoint drifts away,
      an open-loop integrator random-walks by ``2 pi i noise sqrt(t / 125 MHz)``. The
      proportional term does not copy that noise onto the outputs (they show the integrators'
      motion only). Loops that oscillate or switch limits faster than the simulator follows
      within one call (MAX_STEPS integration steps, more across a scope window) skip the rest
      of that call's time in their current state: the oscillation goes on at another phase.
    - ``iq_read`` is computed analytically from the tones of the input (ASG sin/cos, the harmonics
      of the other ASG waveforms near the demodulation frequency, IQ excitations, DC levels)
      through the plant's H(f): clipping is ignored, the sum-frequency (2f) ripple is left out (it
      is present on the bus signals), ASG noise is not seen. ADC noise reaches the quadratures of
      in1/in2 with rms ``noise * sqrt(2 B / 62.5 MHz)``, B = pi/2 times the lowest low-pass cutoff
      (62.5 MHz without one). A band-pass output is computed open loop (not fed back through the
      plant into IQ inputs); chains of IQ signals deeper than 8 read 0; 'pfd' reads 0.
    - Transients: the resonator's free oscillation starts from the tones near f0 (not from ASG
      noise, far harmonics or the PID outputs' drift); the demodulators see only its difference-
      frequency part; the ``acbandwidth`` high-pass and the quadratures on the DSP bus (``iqN``,
      ``iq2_2``) have no transient. An IQ module untouched since the start is in its steady state.
    - Scope: samples are picked at the sampling instants (``average`` is ignored, so the noise
      does not shrink with decimation). Settings changed during a pending acquisition apply to the
      whole trace, except the inputs and the duration (taken at arm time) and the PID outputs
      (recorded in time, constant before the arm time). The trigger search sees noise-free signals
      and the PID outputs of the arm time. With the resonator, ASG noise is filtered on the trace
      grid (aliasing ignored), the other waveforms through a one-period FFT table of up to 65536
      points, the PID outputs quasi-statically (H(0)), and out-of-range outputs are not clipped.
    """

    name = "mock"
    hostname = ""
    needs_own_thread = False

    def __init__(self, seed: int | None = None, plant: str = "loopback",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._plant = parse_plant(plant)
        self.plant = plant_spec(plant)
        """The plant's canonical spec (:func:`plant_spec`)."""
        self._pole = self._plant.pole()
        self._clock = clock
        self._epoch = clock()
        self._rng = np.random.default_rng(seed)
        self._values: dict[str, dict[str, Any]] = {
            name: {k: list(v) if isinstance(v, list) else v for k, v in spec.defaults().items()}
            for name, spec in catalogue.MODULES.items()}
        self._asgs = [_Asg(self._values[f"asg{n}"]) for n in range(2)]
        self._iq_phases = [_Phase() for _ in range(3)]
        self._iq_changed = [-math.inf] * 3
        self._settling: dict[int, _Settling] = {}  # the IQ modules set so far: their filters
        self._rings: dict[str, _Ring] = {}  # in1/in2 → the plant's free oscillation
        self._pids = _PidLoops(self._loop_model, 3, 0.0, np.random.default_rng(
            np.random.SeedSequence(seed).spawn(1)[0]))
        self._acquisition: _Acquisition | None = None

    # -- Backend interface ----------------------------------------------------------------------

    def open(self) -> None:
        """Nothing to connect."""
        logger.info("virtual Red Pitaya ready (plant %r)", self.plant)

    def close(self) -> None:
        """Nothing to disconnect."""

    def device_state(self) -> tuple[str, str | None]:
        """Always ready: the simulated board never stops answering."""
        return "ready", None

    def get(self, module: str, names: Sequence[str]) -> dict[str, Any]:
        """Current values; ``ival`` and the sampler signals evolve with time."""
        names = catalogue.attribute_names(module, list(names))
        if module == "sampler":
            values = self.sampler_read()
            return {n: values[n] for n in names}
        self._sync()
        return self._read(module, names)

    def _read(self, module: str, names: Sequence[str]) -> dict[str, Any]:
        """The values of ``names`` of ``module`` (not the sampler) at the last sync."""
        state = self._values[module]
        result: dict[str, Any] = {}
        for n in names:
            if module == "scope" and n == "sampling_time":
                result[n] = state["duration"] / SAMPLES
            elif module.startswith("pid") and n == "ival":
                result[n] = math.floor(self._pids.ival[int(module[3])] / LSB) * LSB
            else:
                result[n] = list(state[n]) if isinstance(state[n], list) else state[n]
        return result

    def set(self, module: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Apply quantized values at the current time; return them as ``get`` reads them."""
        spec = catalogue.module(module)
        catalogue.attribute_names(module, list(values))
        for n in values:
            if spec.attributes[n].readonly:
                raise InvalidParams(f"attribute '{n}' of '{module}' is read-only", {"attribute": n})
        now = self._sync()
        if module.startswith("iq"):  # in use from now on: its filter's state is followed
            n = int(module[2])
            self._iq_changed[n] = now
            self._settling.setdefault(n, _Settling(now, self._cutoffs(n), None))
        before = self._transients_before(now) if module != "scope" else None
        state = self._values[module]
        old = dict(state)
        state.update({k: list(v) if isinstance(v, list) else v for k, v in values.items()})
        self._apply(module, old, values, now)
        if before is not None:
            self._transients_after(now, *before)
        return self._read(module, list(values))

    def scope_arm(self) -> float:
        """Find the trigger for the current settings; return the seconds until the trace is done."""
        now = self._sync()
        cfg = self._values["scope"]
        duration = cfg["duration"]
        trigger = self._find_trigger(cfg, now)
        t0 = 0.0 if cfg["trigger_source"] == "immediately" else cfg["trigger_delay"] - duration / 2
        start = None if trigger is None else trigger + t0
        recorder = None if start is None else _Recorder(start, start + duration)
        self._acquisition = _Acquisition((cfg["input1"], cfg["input2"]), duration, t0, start,
                                         recorder)
        if recorder is None:
            logger.debug("scope armed on %s: no trigger within %g s", cfg["trigger_source"],
                         TRIGGER_HORIZON)
            return duration
        recorder.add(now, self._pids.outputs())
        return max(0.0, self._acquisition.end - now)

    def scope_ready(self) -> bool:
        now = self._sync()
        return self._acquisition is not None and now >= self._acquisition.end - 1e-9

    def scope_fetch(self) -> ScopeTrace:
        """The completed trace; raises InternalError if none is armed or it is not complete yet."""
        acq = self._acquisition
        if acq is None:
            raise InternalError("scope_fetch() without a pending acquisition: call scope_arm() "
                                "first")
        if not self.scope_ready():
            raise InternalError("the scope trace is not complete yet: wait until scope_ready() is "
                                "True")
        assert acq.start is not None and acq.recorder is not None
        self._acquisition = None
        recorder, u = acq.recorder, self._pids.outputs()
        ctx = _Context(u, lambda k, grid: recorder.pid(k, grid, u), self._rng)
        dt = acq.duration / SAMPLES
        grid = _Grid.uniform(acq.start, dt, SAMPLES)
        ch1 = self._trace(acq.inputs[0], grid, ctx)
        same = acq.inputs[1] == acq.inputs[0]
        ch2 = ch1.copy() if same else self._trace(acq.inputs[1], grid, ctx)
        return ScopeTrace(ch1, ch2, acq.t0, dt)

    def scope_stop(self) -> None:
        self._acquisition = None

    def iq_read(self, module: str) -> dict[str, float]:
        """``{"i": V, "q": V}``: the input component at the demodulation frequency (see class)."""
        if module not in ("iq0", "iq1", "iq2"):
            raise InvalidParams(f"iq_read needs iq0, iq1 or iq2, not {module!r}",
                                {"module": module})
        now = self._sync()
        n = int(module[2])
        difference, total = self._demodulated(n, self._pids.outputs(), 0)
        z = sum((t.phasor(now) for t in difference), 0j)
        z += sum((t.phasor(now) for t in total if t.static), 0j)
        z += self._iq_transient(n, now)
        sigma = self._iq_noise(n)
        if sigma:
            z += complex(*self._rng.normal(0.0, sigma, 2))
        return {"i": z.real, "q": z.imag}

    def iq_settle_remaining(self, module: str) -> float:
        """Seconds until the quadrature filter of ``module`` has settled after the module's last
        ``set`` (``catalogue.filter_settle_time`` of its ``bandwidth``), 0 if it has."""
        if module not in ("iq0", "iq1", "iq2"):
            raise InvalidParams(f"iq_settle_remaining needs iq0, iq1 or iq2, not {module!r}",
                                {"module": module})
        n = int(module[2])
        settled = self._iq_changed[n] + catalogue.filter_settle_time(self._cutoffs(n))
        return max(0.0, settled - (self._clock() - self._epoch))

    def sampler_read(self) -> dict[str, float]:
        """Values of catalogue.SAMPLER_SIGNALS now (PyRPL's sampler scaling, 1 / (2**13 - 1))."""
        now = self._sync()
        ctx = self._context(self._rng)
        grid = _Grid(now, np.zeros(1))
        return {s: float(self._trace(s, grid, ctx)[0]) * 8192.0 / 8191.0
                for s in catalogue.SAMPLER_SIGNALS}

    # -- time and settings ----------------------------------------------------------------------

    def _sync(self) -> float:
        """Advance the PID integrators to the current simulated time, and return it."""
        now = self._clock() - self._epoch
        acq = self._acquisition
        self._pids.advance(now, acq.recorder if acq is not None else None)
        return now

    def _apply(self, module: str, old: Mapping[str, Any], values: Mapping[str, Any],
               now: float) -> None:
        """Side effects of the new ``values`` of ``module`` (previously ``old``) at time ``now``."""
        if module == "scope":
            return
        state, n = self._values[module], int(module[-1])
        if module.startswith("asg"):
            self._asgs[n].update(old, now)
        elif module.startswith("iq") and state["frequency"] != old["frequency"]:
            self._iq_phases[n] = self._iq_phases[n].retuned(now, state["frequency"])
        elif module.startswith("pid") and "ival" in values:
            self._pids.preset(n, values["ival"])
        self._pids.invalidate()
        acq = self._acquisition
        if acq is not None and acq.recorder is not None:
            acq.recorder.add(now, self._pids.outputs())

    def _context(self, rng: np.random.Generator | None) -> _Context:
        """Evaluation with the PID outputs held at their current values."""
        u = self._pids.outputs()
        return _Context(u, lambda k, grid: np.full(grid.n, u[k]), rng)

    # -- signals in time --------------------------------------------------------------------------

    def _trace(self, signal: str, grid: _Grid, ctx: _Context) -> np.ndarray:
        """The DSP bus signal ``signal`` on ``grid`` (14-bit volts)."""
        if signal in _CHANNEL:
            analog = self._plant.trace(self._out_sources(_CHANNEL[signal], ctx), grid, ctx)
            ring = self._rings.get(signal)
            if ring is not None and not ring.over(grid.start):
                analog = analog + ring.evaluate(grid)
            if ctx.rng is not None:
                analog = analog + _gaussian(ctx.rng, self._plant.noise, grid.n)
            return _quantize(analog)
        if signal in _ROUTES:
            return self._out_sources(signal, ctx).total(grid)
        if signal.startswith("asg"):
            return _quantize(self._asgs[int(signal[3])].evaluate(grid, ctx.rng))
        if signal.startswith("pid"):
            return _quantize(ctx.pid(int(signal[3]), grid))
        if signal.startswith("iq"):
            tones = self._bus_tones(signal, ctx.u, 0)
            values = sum((t.evaluate(grid) for t in tones), np.zeros(grid.n))
            sigma = self._bus_noise(signal)
            if ctx.rng is not None and sigma:
                values = values + _gaussian(ctx.rng, sigma, grid.n)
            return _quantize(values)
        return np.zeros(grid.n)

    def _bus_noise(self, signal: str) -> float:
        """rms ADC noise on the bus signal ``iqN`` / ``iq2_2`` (only quadratures of in1/in2)."""
        v = self._values[f"iq{signal[2]}"]
        if signal != "iq2_2" and v["output_signal"] not in ("quadrature", "quadrature_hf"):
            return 0.0
        return self._iq_noise(int(signal[2])) * abs(v["quadrature_factor"])

    def _routed(self, out: str, kind: str, count: int) -> list[int]:
        return [n for n in range(count)
                if self._values[f"{kind}{n}"]["output_direct"] in _ROUTES[out]]

    def _out_sources(self, out: str, ctx: _Context) -> _OutSources:
        asgs = [self._asgs[n] for n in self._routed(out, "asg", 2)]
        pids = self._routed(out, "pid", 3)
        tones = [t for n in self._routed(out, "iq", 3)
                 for t in self._iq_output_tones(n, ctx.u, True, 0)]

        def total(grid: _Grid) -> np.ndarray:
            x = np.zeros(grid.n)
            for asg in asgs:
                x += asg.evaluate(grid, ctx.rng)
            for k in pids:
                x += ctx.pid(k, grid)
            for tone in tones:
                x += tone.evaluate(grid)
            return _quantize(x)

        return _OutSources(asgs, pids, tones, total)

    # -- signals as tones -------------------------------------------------------------------------

    def _tones(self, signal: str, near: float, u: np.ndarray, bandpass: bool,
               depth: int) -> list[_Tone]:
        """``signal`` as tones (those that matter around frequency ``near``), for PID outputs ``u``.

        ``bandpass`` False leaves out IQ band-pass outputs (they are evaluated open loop).
        """
        if depth > 8:
            return []
        if signal in _CHANNEL:
            return [t.scaled(self._plant.transfer(t.freq))
                    for t in self._tones(_CHANNEL[signal], near, u, bandpass, depth + 1)]
        if signal in _ROUTES:
            return ([t for n in self._routed(signal, "asg", 2) for t in self._asgs[n].tones(near)]
                    + [_Tone(complex(u[k])) for k in self._routed(signal, "pid", 3)]
                    + [t for n in self._routed(signal, "iq", 3)
                       for t in self._iq_output_tones(n, u, bandpass, depth + 1)])
        if signal.startswith("asg"):
            return self._asgs[int(signal[3])].tones(near)
        if signal.startswith("pid"):
            return [_Tone(complex(u[int(signal[3])]))]
        if signal.startswith("iq"):
            return self._bus_tones(signal, u, depth + 1)
        return []

    def _bus_tones(self, signal: str, u: np.ndarray, depth: int) -> list[_Tone]:
        """Tones of ``iqN`` (per ``output_signal``) or ``iq2_2`` on the DSP bus."""
        n = int(signal[2])
        v = self._values[f"iq{n}"]
        if signal == "iq2_2" or v["output_signal"] in ("quadrature", "quadrature_hf"):
            difference, total = self._demodulated(n, u, depth)
            k = v["quadrature_factor"] * (-1j if signal == "iq2_2" else 1.0)
            return [t.scaled(k) for t in difference + total]
        if v["output_signal"] == "output_direct":
            return self._iq_output_tones(n, u, True, depth)
        return []

    def _demodulator(self, n: int) -> tuple[_Phase, int, float]:
        """(oscillator, harmonic, frequency) of the demodulation of iq ``n``."""
        harmonic = 2 if self._values[f"iq{n}"]["demodulation_at_2f"] == "on" else 1
        lo = self._iq_phases[n]
        return lo, harmonic, harmonic * lo.freq

    def _demodulated(self, n: int, u: np.ndarray, depth: int, filtered: bool = True
                     ) -> tuple[list[_Tone], list[_Tone]]:
        """``I + jQ`` of iq ``n`` as complex exponentials: (difference, sum-frequency) terms.

        An input tone ``Re(a e^{j theta})`` gives ``a L(f_in - f) e^{j(theta - theta_lo + phase)}``
        and ``conj(a) L(-f_in - f) e^{-j(theta + theta_lo - phase)}``, L the bandwidth filter
        (left out if not ``filtered``: the filter's input).
        """
        v = self._values[f"iq{n}"]
        lo, harmonic, f_d = self._demodulator(n)
        rotation = cmath.exp(1j * math.radians(v["phase"]))
        cutoffs = v["bandwidth"] if filtered else []
        difference, total = [], []
        for tone in self._tones(v["input"], f_d, u, True, depth + 1):
            a = tone.amp * _filter_response([-v["acbandwidth"]], tone.freq)
            if abs(a) < 1e-12:
                continue
            difference.append(_Tone(a, tone.terms).mixed(
                lo, -harmonic, rotation * _filter_response(cutoffs, tone.freq - f_d)))
            total.append(_Tone(a, tone.terms).conj().mixed(
                lo, -harmonic, rotation * _filter_response(cutoffs, -tone.freq - f_d)))
        return difference, [t for t in total if abs(t.amp) > 1e-12]

    def _iq_output_tones(self, n: int, u: np.ndarray, bandpass: bool, depth: int) -> list[_Tone]:
        """Excitation and (if ``bandpass`` and ``gain`` != 0) band-pass output of iq ``n``."""
        v = self._values[f"iq{n}"]
        tones = []
        if v["amplitude"]:
            harmonic = 2 if v["modulation_at_2f"] == "on" else 1
            tones.append(_Tone(complex(v["amplitude"]), ((self._iq_phases[n], harmonic),)))
        if bandpass and v["gain"]:
            _, _, f_d = self._demodulator(n)
            k = v["gain"] * cmath.exp(1j * math.radians(v["phase"]))
            for tone in self._tones(v["input"], f_d, u, False, depth + 1):
                tone = tone.conj() if tone.freq < 0 else tone
                tones.append(tone.scaled(k * _filter_response(v["bandwidth"], tone.freq - f_d)
                                         * _filter_response([-v["acbandwidth"]], tone.freq)))
        return tones

    def _iq_noise(self, n: int) -> float:
        """rms ADC noise on each quadrature of iq ``n`` (0 unless it demodulates in1 or in2)."""
        v = self._values[f"iq{n}"]
        if v["input"] not in _CHANNEL:
            return 0.0
        lowpass = [c for c in v["bandwidth"] if c > 0]
        bandwidth = min(NYQUIST, math.pi / 2 * min(lowpass)) if lowpass else NYQUIST
        return self._plant.noise * math.sqrt(2.0 * bandwidth / NYQUIST)

    # -- transients -------------------------------------------------------------------------------

    def _cutoffs(self, n: int) -> tuple[float, ...]:
        return tuple(float(c) for c in self._values[f"iq{n}"]["bandwidth"])

    def _transients_before(self, t: float) -> tuple[dict[str, tuple[float, float]],
                                                    dict[int, np.ndarray]]:
        """Just before a change at ``t``: the inputs' value and slope (for a plant with a free
        oscillation) and the state of every IQ filter in use."""
        if self._pole is None and not self._settling:
            return {}, {}
        u = self._pids.outputs()
        inputs = {}
        if self._pole is not None:
            for channel in _CHANNEL:
                y, dy = self._steady_input(channel, u, t)
                ring = self._rings.get(channel)
                if ring is not None:
                    y, dy = y + ring.at(t).real, dy + (ring.s * ring.at(t)).real
                inputs[channel] = (y, dy)
        states = {n: self._filter_state(n, u, t) + settling.homogeneous(t)
                  for n, settling in self._settling.items()}
        return inputs, states

    def _transients_after(self, t: float, inputs: dict[str, tuple[float, float]],
                          states: dict[int, np.ndarray]) -> None:
        """Just after a change at ``t``: the free oscillation of the plant and the deviation of
        every IQ filter from its new steady state take up the differences (value and slope of the
        inputs, filter states), so that both stay continuous."""
        if not inputs and not states:
            return
        u = self._pids.outputs()
        s = self._pole
        for channel, (y, dy) in inputs.items():
            y_new, dy_new = self._steady_input(channel, u, t)
            jump, slope = y - y_new, dy - dy_new
            c = complex(jump, (s.real * jump - slope) / s.imag)
            self._rings[channel] = _Ring(t, c, s)
        for n, state in states.items():
            deviation = state - self._filter_state(n, u, t)
            self._settling[n] = _Settling(t, self._cutoffs(n), deviation)

    def _steady_input(self, channel: str, u: np.ndarray, t: float) -> tuple[float, float]:
        """Value and slope at ``t`` of the steady-state part of the input ``channel`` (the tones
        that matter near the plant's resonance)."""
        near = abs(self._pole) / _TWO_PI if self._pole is not None else 0.0
        y = dy = 0.0
        for tone in self._tones(channel, near, u, True, 0):
            value = tone.phasor(t)
            y += value.real
            dy += (_TWO_PI * 1j * tone.freq * value).real
        return y, dy

    def _filter_inputs(self, n: int, u: np.ndarray, t: float) -> list[tuple[complex, complex]]:
        """The input of iq ``n``'s quadrature filter at ``t`` as terms ``U exp(lambda (t' - t))``:
        (U, lambda) for each input tone and for the plant's free oscillation."""
        difference, total = self._demodulated(n, u, 0, filtered=False)
        terms = [(tone.phasor(t), _TWO_PI * 1j * tone.freq) for tone in difference]
        terms += [(tone.phasor(t), 0j) for tone in total if tone.static]
        ring = self._ring_seen(n, t)
        if ring is not None:
            terms.append(ring)
        return terms

    def _ring_seen(self, n: int, t: float) -> tuple[complex, complex] | None:
        """The plant's free oscillation on iq ``n``'s input, demodulated: (U, lambda) at ``t``."""
        v = self._values[f"iq{n}"]
        ring = self._rings.get(v["input"])
        if ring is None or ring.over(t):
            return None
        lo, harmonic, f_d = self._demodulator(n)
        rotation = cmath.exp(1j * math.radians(v["phase"]))
        highpass = _filter_response([-v["acbandwidth"]], ring.s / (_TWO_PI * 1j))
        u = highpass * rotation * ring.at(t) * cmath.exp(-_TWO_PI * 1j * harmonic * lo.at(t))
        return u, ring.s - _TWO_PI * 1j * f_d

    def _filter_state(self, n: int, u: np.ndarray, t: float) -> np.ndarray:
        """The steady-state (particular) state of iq ``n``'s quadrature filter at ``t``: for an
        input ``U exp(lambda t)``, each stage's state is ``w / (lambda + w)`` times its input (see
        _filter_system; an off stage's dummy state is 0)."""
        cutoffs = self._cutoffs(n)
        state = np.zeros(len(cutoffs), complex)
        for value, rate in self._filter_inputs(n, u, t):
            x = value
            for k, cutoff in enumerate(cutoffs):
                if cutoff == 0:
                    continue
                w = _TWO_PI * abs(cutoff)
                lowpass = w / (rate + w) * x
                state[k] += lowpass
                x = lowpass if cutoff > 0 else x - lowpass
        return state

    def _iq_transient(self, n: int, t: float) -> complex:
        """What iq ``n`` reads at ``t`` beyond its steady state: the plant's free oscillation
        through the filter and the filter's own deviation."""
        z = 0j
        ring = self._ring_seen(n, t)
        if ring is not None:
            z += _filter_response(self._cutoffs(n), ring[1] / (_TWO_PI * 1j)) * ring[0]
        settling = self._settling.get(n)
        if settling is not None and not settling.over(t):
            z += complex(_filter_system(settling.cutoffs)[2] @ settling.homogeneous(t))
        return z

    # -- PID loop model ---------------------------------------------------------------------------

    def _dc(self, signal: str, u: np.ndarray) -> float:
        """Static (DC) part of ``signal`` for PID outputs ``u``, before any clipping."""
        now = self._pids.t
        tones = self._tones(signal, 0.0, u, True, 0)
        return sum((t.phasor(now).real for t in tones if t.static), 0.0)

    def _loop_model(self) -> _LoopModel:
        """Linearize every PID's error in the PID outputs (the plant and wiring are linear)."""
        cfg = [self._values[f"pid{k}"] for k in range(3)]
        n = len(cfg)
        p = np.array([0.0 if c["paused"] and "p" in c["pause_gains"] else c["p"] for c in cfg])
        k = np.array([0.0 if c["paused"] and "i" in c["pause_gains"] else _TWO_PI * c["i"]
                      for c in cfg])
        lo = np.array([max(c["min_voltage"], -1.0) for c in cfg])
        hi = np.array([min(c["max_voltage"], 1.0 - LSB) for c in cfg])
        inputs = np.zeros((n, n))  # d input / d u
        offset = np.zeros(n)  # error at u = 0
        noise = np.zeros((n, len(_CHANNEL)))  # white noise of each error per ADC input
        if p.any() or k.any():
            x0 = np.array([self._dc(c["input"], np.zeros(n)) for c in cfg])
            for j in range(n):
                inputs[:, j] = np.array([self._dc(c["input"], np.eye(n)[j]) for c in cfg]) - x0
            error, offset = inputs.copy(), x0 - np.array([c["setpoint"] for c in cfg])
            adc = self._plant.noise / math.sqrt(catalogue.FPGA_CLOCK)
            direct = np.array([[adc * (c["input"] == ch) for ch in _CHANNEL] for c in cfg])
            noise = direct.copy()
            for a in (0, 1):
                if cfg[a]["differential_mode_enabled"]:
                    error[a], offset[a] = inputs[a] - inputs[1 - a], x0[a] - x0[1 - a]
                    noise[a] = direct[a] - direct[1 - a]
            inputs = error
            self._warn_loop_gain(p, inputs)
        return _LoopModel(inputs, offset, p, k, lo, hi, noise)

    @staticmethod
    def _warn_loop_gain(p: np.ndarray, E: np.ndarray) -> None:
        gain = float(np.max(np.abs(np.linalg.eigvals(p[:, None] * E))))
        if gain >= 1.0:
            logger.warning("PID proportional loop gain %.3g >= 1 through the plant: a board would "
                           "oscillate or latch; the simulator solves the loop statically", gain)

    # -- scope triggers ---------------------------------------------------------------------------

    def _find_trigger(self, cfg: Mapping[str, Any], now: float) -> float | None:
        """Simulated time of the first trigger at or after ``now`` (None: it never comes)."""
        source = cfg["trigger_source"]
        if source == "immediately":
            return now
        if source in ("asg0", "asg1"):
            return self._asgs[int(source[3])].next_period_start(now)
        if source[:3] in ("ch1", "ch2"):
            signal = cfg["input1"] if source.startswith("ch1") else cfg["input2"]
            sign = 1.0 if source.endswith("positive_edge") else -1.0
            return self._find_edge(signal, sign, cfg["threshold"], cfg["hysteresis"], now,
                                   cfg["duration"] / SAMPLES)
        return None

    def _find_edge(self, signal: str, sign: float, threshold: float, hysteresis: float, now: float,
                   dt: float) -> float | None:
        """Edge search on noise-free signals, on grids 4x coarser each time, up to TRIGGER_HORIZON.

        ``sign`` -1 turns a negative edge into a positive edge of the negated signal.
        """
        ctx = self._context(None)
        level, arm = sign * threshold, sign * threshold - hysteresis
        step = dt
        while True:
            y = sign * self._trace(signal, _Grid.uniform(now, step, SAMPLES), ctx)
            index = _first_crossing(y, level, arm)
            if index is not None:
                start = now + (index - 1) * step
                return self._refine_edge(signal, sign, level, start, step, dt, ctx)
            if step * SAMPLES >= TRIGGER_HORIZON:
                return None
            step *= 4.0

    def _refine_edge(self, signal: str, sign: float, level: float, start: float, width: float,
                     dt: float, ctx: _Context) -> float:
        """Narrow a bracket [below level, at or above level] down to dt/1000; return its top."""
        while width > dt / 1000:
            y = sign * self._trace(signal, _Grid.uniform(start, width / 1024, 1025), ctx)
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
