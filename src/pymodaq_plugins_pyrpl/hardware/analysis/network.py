"""The network analyzer's arithmetic, as PyRPL 0.9.9's ``NetworkAnalyzer`` does it: the frequency
grid, the IQ averaging registers, the time per point and the normalisation of the averaged
quadratures into a transfer function. Pure numpy; both backends and the server use it, so a sweep
reads the same on the simulator, on a board through PyRPL and in PyRPL's own analyzer.

PyRPL's per-point procedure (``network_analyzer.py``): write the IQ ``frequency`` (which restarts
the FPGA's averager: it waits ``_na_sleepcycles`` cycles, then sums ``_na_averages`` cycles of
I + jQ), wait :func:`time_per_point` (three times that for the first point of a sweep), read the
sum (``_nadata_total``) and :func:`normalise` it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import catalogue

SLEEPTIMES = 0.5
"""Settling before averaging, in units of 1/rbw (``NetworkAnalyzer.sleeptimes``)."""
FIRST_POINT_FACTOR = 3
"""The first point of a sweep waits this many times the time per point (``_remaining_time``)."""
RESCALE = 2.0**-24 * 4.0
"""Raw averaged sum to volts: ``2**-_LPFBITS × 4`` ("4 is an artefact of the FPGA code")."""
MODULE_DELAY_CYCLES = 3
"""The IQ's own delay from excitation to demodulation (``NetworkAnalyzer._delay``), in cycles;
one more with the input high-pass on, two more with an input low-pass."""
CYCLE = 1.0 / catalogue.FPGA_CLOCK
TIMEOUT_FACTOR = 3.0
TIMEOUT_MARGIN = 10.0
"""An acquisition of the network analyzer without a timeout of its own ends after TIMEOUT_FACTOR
times its sweeps' sweep_time plus TIMEOUT_MARGIN seconds (:func:`default_timeout`)."""


@dataclass(frozen=True)
class Averaging:
    """The IQ averager's registers for one sweep."""

    averages: int
    """``_na_averages``: cycles summed per point."""
    sleepcycles: int
    """``_na_sleepcycles``: cycles waited before summing."""

    @property
    def time_per_point(self) -> float:
        """Seconds per point (``NetworkAnalyzer._time_per_point``, frequency correction 1)."""
        return float(self.sleepcycles + self.averages) / catalogue.FPGA_CLOCK


def averaging(rbw: float, average_per_point: int) -> Averaging:
    """The averager's registers for the applied ``rbw`` (Hz, the IQ's first bandwidth cutoff) and
    ``average_per_point`` (``_start_trace_acquisition``)."""
    return Averaging(int(np.round(catalogue.FPGA_CLOCK / rbw * average_per_point)),
                     int(np.round(catalogue.FPGA_CLOCK / rbw * SLEEPTIMES)))


def frequencies(start: float, stop: float, points: int, logscale: bool) -> np.ndarray:
    """The sweep's frequencies (Hz): ``points`` values from ``start`` to ``stop`` (both included),
    log- or linearly spaced, each rounded to the IQ frequency grid (``_get_frequencies``). Equal
    ``start`` and ``stop`` (zero span) give ``points`` times that frequency."""
    if start == stop:
        return np.full(points, catalogue.IQ_FREQUENCY.validate(start))
    if logscale:
        raw = np.logspace(np.log10(start), np.log10(stop), points, endpoint=True)
    else:
        raw = np.linspace(start, stop, points, endpoint=True)
    return np.array([catalogue.IQ_FREQUENCY.validate(float(f)) for f in raw])


def sweep_time(points: int, rbw: float, average_per_point: int) -> float:
    """Seconds one sweep takes at least: ``points`` times the time per point, the first one
    FIRST_POINT_FACTOR times."""
    return (points - 1 + FIRST_POINT_FACTOR) * averaging(rbw, average_per_point).time_per_point


def settings_sweep_time(settings: Mapping[str, Any]) -> float:
    """:func:`sweep_time` of the ``na`` module's ``settings`` (catalogue names)."""
    return sweep_time(settings["points"], settings["rbw"], settings["average_per_point"])


def default_timeout(settings: Mapping[str, Any]) -> float:
    """Seconds an acquisition of the ``na`` module's ``settings`` may take when it gives no
    timeout: TIMEOUT_FACTOR x sweep_time x trace_average + TIMEOUT_MARGIN."""
    return (TIMEOUT_FACTOR * settings_sweep_time(settings) * settings["trace_average"]
            + TIMEOUT_MARGIN)


def transfer_function(freqs: np.ndarray, inputfilter: float) -> np.ndarray:
    """The analyzer's own response the data are divided by (``NetworkAnalyzer.
    transfer_function``): the IQ's input filter (``inputfilter``: the IQ's cutoff in Hz, negative
    for the ``acbandwidth`` high-pass, 0 off) and its delay of MODULE_DELAY_CYCLES cycles."""
    f = np.asarray(freqs, dtype=float).astype(complex)
    tf = np.ones_like(f)
    cycles = MODULE_DELAY_CYCLES
    if inputfilter > 0:
        tf /= 1.0 + 1j * f / inputfilter
        cycles += 2
    elif inputfilter < 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            tf /= 1.0 + 1j * inputfilter / f
        cycles += 1
    return tf * np.exp(-2j * np.pi * cycles * CYCLE * f)


def normalise(total: np.ndarray | complex, averages: int, amplitude: float,
              tf: np.ndarray | complex) -> np.ndarray:
    """The transfer function from averaged sums (``_nadata_total``) of ``averages`` cycles, for an
    excitation of ``amplitude`` V (0: not divided), divided by the analyzer's own response ``tf``
    (``NetworkAnalyzer._get_point``)."""
    y = np.asarray(total, dtype=complex) / averages
    y = y * (RESCALE if amplitude == 0 else RESCALE / amplitude)
    return y / tf
