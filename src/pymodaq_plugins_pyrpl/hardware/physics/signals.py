"""Signals as functions of time: sample grids, phase accumulators, tones, the 14-bit bus, noise.

Nothing is stored as samples: a signal is evaluated, vectorized, on the :class:`Grid` asked for.
Sinusoidal parts are also carried as :class:`Tone` objects, complex amplitudes on phase
accumulators, so that demodulators and plants see them analytically.
"""
from __future__ import annotations

import cmath
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import catalogue

LSB = 2.0**-13
"""Step of the 14-bit DSP bus (V)."""
NYQUIST = catalogue.FPGA_CLOCK / 2
STATIC_HZ = 1e-6
"""Tones slower than this are constant (DC)."""
TWO_PI = 2.0 * math.pi


def quantize(x: np.ndarray) -> np.ndarray:
    """14-bit DSP bus value: clipped to [-1, 1 - 2**-13] V and rounded to the 2**-13 V grid."""
    return np.clip(np.round(x * 8192.0), -8192.0, 8191.0) / 8192.0


def cos_cycles(cycles: np.ndarray) -> np.ndarray:
    """``cos(2 pi cycles)``, in float32 after reduction to one period: the error (< 1e-6) is far
    below the 14-bit LSB (1.2e-4 V) and float32 cosines are several times faster than float64."""
    angle = (TWO_PI * (cycles - np.floor(cycles))).astype(np.float32)
    return np.cos(angle).astype(np.float64)


def gaussian(rng: np.random.Generator, sigma: float, n: int) -> np.ndarray:
    """``n`` independent normal samples of rms ``sigma``: the Box-Muller transform in float32,
    several times faster than ``rng.normal``; float32 is ample for noise on a 14-bit bus."""
    half = (n + 1) // 2
    u = rng.random((2, half), dtype=np.float32)
    radius = np.sqrt(-2.0 * np.log1p(-u[0]))  # 1 - u is in (0, 1]
    angle = np.float32(TWO_PI) * u[1]
    samples = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
    return sigma * samples.astype(np.float64)


# ------------------------------------------------------------------------------------------------
# time grids, phase accumulators, tones


@dataclass(frozen=True)
class Grid:
    """Sample times ``start + offsets`` (simulated s); phases use the offsets for precision."""

    start: float
    offsets: np.ndarray

    @classmethod
    def uniform(cls, start: float, dt: float, n: int) -> Grid:
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

    def shifted(self, delay: float) -> Grid:
        """The same samples ``delay`` seconds earlier."""
        return Grid(self.start - delay, self.offsets)


@dataclass(frozen=True)
class Phase:
    """A phase accumulator ``cycles(t) = cycles_ref + freq * (t - t_ref)`` (only the fraction counts)."""

    freq: float = 0.0
    t_ref: float = 0.0
    cycles_ref: float = 0.0

    def at(self, t: float) -> float:
        return (self.cycles_ref + self.freq * (t - self.t_ref)) % 1.0

    def retuned(self, t: float, freq: float) -> Phase:
        """The accumulator continuing from its phase at ``t`` at a new frequency (no phase jump)."""
        return Phase(freq, t, self.at(t))

    def cycles(self, grid: Grid) -> np.ndarray:
        return (self.at(grid.start) + self.freq * grid.offsets) % 1.0


@dataclass(frozen=True)
class Tone:
    """``Re(amp * exp(2j pi sum(m * phase.cycles(t))))``: a sinusoid (DC when ``terms`` is empty).

    Composite terms represent mixing products, e.g. an input tone times a demodulation oscillator.
    """

    amp: complex
    terms: tuple[tuple[Phase, int], ...] = ()
    freq: float = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "freq", sum(m * p.freq for p, m in self.terms))

    @property
    def static(self) -> bool:
        return abs(self.freq) < STATIC_HZ

    def scaled(self, k: complex) -> Tone:
        return Tone(self.amp * k, self.terms)

    def conj(self) -> Tone:
        """The same real signal written with the opposite frequency."""
        return Tone(self.amp.conjugate(), tuple((p, -m) for p, m in self.terms))

    def mixed(self, phase: Phase, m: int, k: complex) -> Tone:
        """This tone times ``k * exp(2j pi m phase)``."""
        return Tone(self.amp * k, self.terms + ((phase, m),))

    def phasor(self, t: float) -> complex:
        """The complex value ``amp * exp(2j pi cycles)`` at time ``t``."""
        return self.amp * cmath.exp(2j * math.pi * sum(m * p.at(t) for p, m in self.terms))

    def evaluate(self, grid: Grid) -> np.ndarray:
        start = self.phasor(grid.start)
        if self.static:
            return np.full(grid.n, start.real)
        return abs(start) * cos_cycles(self.freq * grid.offsets + cmath.phase(start) / TWO_PI)


# ------------------------------------------------------------------------------------------------
# evaluation context


@dataclass(frozen=True)
class Context:
    """How to evaluate signals: PID outputs (DC levels ``u`` and their time course) and noise."""

    u: np.ndarray
    pid: Callable[[int, Grid], np.ndarray]
    rng: np.random.Generator | None
    """None: noise-free (trigger search)."""
    averaged: int = 1
    """FPGA-clock samples averaged into each sample of the grid: the scope's decimation with its
    ``average`` on, else 1 (samples picked). White noises (ADC, ASG noise) shrink by its square
    root."""

    def noise(self, sigma: float, n: int) -> np.ndarray:
        """``n`` samples of noise white at the FPGA clock with rms ``sigma``, each the average of
        ``averaged`` clock samples. Needs ``rng``."""
        assert self.rng is not None
        return gaussian(self.rng, sigma / math.sqrt(self.averaged), n)
