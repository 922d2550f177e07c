"""The signal generators (asg0, asg1): PyRPL's waveform tables (its ``asg.py``), their Fourier
series, and one generator's phase accumulator and output."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .signals import NYQUIST, Context, Grid, Phase, Tone, cos_cycles

HARMONICS_AROUND = 4
"""Harmonics of non-sinusoidal ASG waveforms kept on each side of a demodulation frequency."""


def _ramp(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0.5, 4.0 * x - 1.0, 3.0 - 4.0 * x)


WAVEFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": lambda x: cos_cycles(x - 0.25),
    "cos": cos_cycles,
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


RUNNING_SOURCES = ("immediately", "high")
"""The trigger sources that start a generator at once: the software trigger and 'high', whose
trigger input is always 1 (``red_pitaya_asg_ch.v``: ``3'd5 : trig_in <= 1'b1``); switching
between them does not restart it (no new trigger while the table is being read, ``dac_do``)."""


class Asg:
    """Phase accumulator and output of one signal generator; its settings live in ``values``.

    Only a running generator (``trigger_source`` in RUNNING_SOURCES) outputs anything: ``'off'``
    stops it and the external trigger sources arm it for a trigger that never comes.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.phase = Phase()
        self.running = False

    def update(self, old: Mapping[str, Any], t: float) -> None:
        """Apply changed settings at time ``t``: start at ``start_phase``, or retune continuously."""
        running = self.values["trigger_source"] in RUNNING_SOURCES
        if running and not self.running:
            self.phase = Phase(self.values["frequency"], t, self.values["start_phase"] / 360.0)
        elif self.values["frequency"] != old["frequency"]:
            self.phase = self.phase.retuned(t, self.values["frequency"])
        self.running = running

    def evaluate(self, grid: Grid, ctx: Context) -> np.ndarray:
        """Output on ``grid`` (V, unclipped); a ``ctx`` without rng leaves out the noise
        waveform."""
        if not self.running:
            return np.zeros(grid.n)
        waveform = self.values["waveform"]
        if waveform in WAVEFORMS:
            shape = WAVEFORMS[waveform](self.phase.cycles(grid))
        elif waveform == "noise" and ctx.rng is not None:
            shape = ctx.noise(1.0, grid.n)
        else:
            shape = np.zeros(grid.n)
        return self.values["amplitude"] * shape + self.values["offset"]

    def tones(self, near: float) -> list[Tone]:
        """The output as tones: the offset and the harmonics that matter around frequency ``near``."""
        if not self.running:
            return []
        tones = [Tone(complex(self.values["offset"]))]
        waveform, amplitude = self.values["waveform"], self.values["amplitude"]
        if waveform not in WAVEFORMS or amplitude == 0:
            return tones
        if self.phase.freq == 0:
            level = WAVEFORMS[waveform](np.array([self.phase.cycles_ref]))[0]
            return tones + [Tone(complex(amplitude * level))]
        return tones + [Tone(amplitude * c, ((self.phase, n),))
                        for n in _harmonics(self.phase.freq, near) if (c := _fourier(waveform, n))]

    def next_period_start(self, t: float) -> float | None:
        """First time >= ``t`` at which a period starts (the scope's asg trigger), None if never."""
        if not self.running or self.phase.freq <= 0:
            return None
        return t + ((1.0 - self.phase.at(t)) % 1.0) / self.phase.freq
