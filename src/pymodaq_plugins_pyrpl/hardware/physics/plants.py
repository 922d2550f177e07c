"""The plants: what connects the analog outputs out1/out2 to the inputs in1/in2 (cables, a
resonator), and the spec strings that name them (``--plant``)."""
from __future__ import annotations

import cmath
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .asg import WAVEFORMS, Asg
from .signals import TWO_PI, Context, Grid, Phase, Tone

PERIOD_TABLE_MAX = 2**16
PERIOD_TABLES_KEPT = 8
"""Resonator responses to periodic waveforms kept in memory (up to 512 kB each)."""


@dataclass
class OutSources:
    """What is routed to one analog output, for a plant to transform."""

    asgs: list[Asg]
    pids: list[int]
    tones: list[Tone]
    """IQ outputs (excitations and band-pass outputs) and the PIDs' response to AC inputs."""
    total: Callable[[Grid], np.ndarray]
    """The output voltage itself (summed, clipped, 14-bit) on a grid."""


@dataclass(frozen=True)
class Loopback:
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

    def trace(self, out: OutSources, grid: Grid, ctx: Context) -> np.ndarray:
        """The delayed output through an FIR truncation of the low-pass (matters only at dt < 20 ns)."""
        taps = self._taps(grid.dt)
        k = len(taps) - 1
        if k == 0:
            return out.total(grid.shifted(self.delay))
        lead = grid.offsets[0] - grid.dt * np.arange(k, 0, -1)
        x = out.total(Grid(grid.start - self.delay, np.concatenate([lead, grid.offsets])))
        return sum(w * x[k - i: k - i + grid.n] for i, w in enumerate(taps))

    def _taps(self, dt: float) -> np.ndarray:
        a = math.exp(-TWO_PI * self.bandwidth * dt) if dt > 0 else 0.0
        if a < 1e-4:
            return np.ones(1)
        taps = a ** np.arange(min(16, math.ceil(math.log(1e-4) / math.log(a))) + 1)
        return taps / taps.sum()


@dataclass(frozen=True)
class Resonator:
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
        w0 = TWO_PI * self.f0
        return complex(-w0 / (2.0 * self.q), w0 * math.sqrt(1.0 - 1.0 / (4.0 * self.q**2)))

    def trace(self, out: OutSources, grid: Grid, ctx: Context) -> np.ndarray:
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

    def _asg_response(self, asg: Asg, grid: Grid, ctx: Context) -> np.ndarray:
        waveform, amplitude = asg.values["waveform"], asg.values["amplitude"]
        response = np.full(grid.n, self.gain * asg.values["offset"])
        if waveform in ("sin", "cos") or (waveform in WAVEFORMS and asg.phase.freq == 0):
            for tone in asg.tones(0.0)[1:]:
                response += tone.scaled(self.transfer(tone.freq)).evaluate(grid)
        elif waveform in WAVEFORMS:
            response += amplitude * self._periodic(waveform, asg.phase, grid)
        elif waveform == "noise" and ctx.rng is not None and grid.n > 1:
            spectrum = np.fft.rfft(ctx.noise(amplitude, grid.n))
            h = self.transfer(np.fft.rfftfreq(grid.n, grid.dt))
            response += np.fft.irfft(spectrum * h, grid.n)
        return response

    def _periodic(self, waveform: str, phase: Phase, grid: Grid) -> np.ndarray:
        """Response to a unit periodic waveform: one period filtered by FFT, interpolated on grid."""
        period = 1.0 / phase.freq
        resolution = grid.dt if grid.dt > 0 else period / 1024
        needed = max(period / resolution, 32.0 * self.f0 * period, 256.0)
        n = int(min(PERIOD_TABLE_MAX, 2 ** math.ceil(math.log2(needed))))
        key = (waveform, phase.freq, n)
        if key not in self._tables:
            if len(self._tables) >= PERIOD_TABLES_KEPT:
                self._tables.clear()
            spectrum = np.fft.rfft(WAVEFORMS[waveform](np.arange(n) / n))
            harmonics = phase.freq * np.arange(n // 2 + 1)
            self._tables[key] = np.fft.irfft(spectrum * self.transfer(harmonics), n)
        table = self._tables[key]
        position = phase.cycles(grid) * n
        index = np.floor(position).astype(int) % n
        frac = position - np.floor(position)
        return table[index] * (1.0 - frac) + table[(index + 1) % n] * frac


Plant = Loopback | Resonator
"""A plant: ``transfer(f)``, ``pole()``, ``trace(out, grid, ctx)`` and its ADC ``noise`` (V rms)."""

_PLANTS: dict[str, type[Plant]] = {"loopback": Loopback, "resonator": Resonator}


def parse_plant(spec: str) -> Plant:
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
