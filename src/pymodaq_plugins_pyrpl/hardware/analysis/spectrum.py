"""The spectrum analyzer's arithmetic, as PyRPL 0.9.9's ``SpectrumAnalyzer`` does it in baseband:
spans from the scope decimations, the filter windows and their normalisation, the residual
bandwidth, the spectra of two scope channels and their cross-spectrum, and the units. Pure numpy;
the server's spectrum analyzer uses it with either backend, so a spectrum reads as PyRPL's own.

PyRPL's baseband procedure (``spectrum_analyzer.py``): the scope records ``input1_baseband`` and
``input2_baseband`` for 16384 samples at the decimation ``125 MHz / span`` (``average`` on,
trigger ``immediately``); each channel is multiplied by the window, zero-padded 16 times and
real-FFT'd (:data:`POINTS` frequencies from 0 to span/2); the spectra are ``|fft1|**2``,
``|fft2|**2`` and ``conj(fft1) * fft2``, divided by the square of the decimation's boxcar response
:func:`scope_response`; ``trace_average`` spectra are averaged (powers, not traces). The window is
normalised to a sum of 2, so a sine of amplitude A peaks at ``A**2`` (PyRPL's unit ``Vpk^2``).

Units (:func:`to_unit`) from ``Vpk^2`` per bin, with ``rbw`` the window's equivalent noise
bandwidth times the sample rate: ``V^2/Hz`` is PyRPL's ``Vrms^2/Hz`` (``data / 2 / rbw``, the
one-sided power spectral density); ``Vrms/sqrt(Hz)`` is its square root (PyRPL 0.9.9's
``data_to_unit`` divides by ``rbw`` instead of its square root there, which is not a density: we
do not copy that); ``dBm`` is the power of one ``rbw`` band into 50 Ω, ``10 log10(data / 2 / 50 Ω
/ 1 mW)`` (PyRPL 0.9.9 has no such unit; its obsolete ``data_to_dBm`` is ``10 log10(data) + 30``,
with no load), so a 1 V amplitude sine reads 10 dBm, as on an RF spectrum analyzer.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .. import catalogue

SAMPLES = catalogue.SCOPE_SAMPLES
PADDING_FACTOR = 16
"""The FFT length is this times the trace length (``SpectrumAnalyzer.PADDING_FACTOR``)."""
POINTS = SAMPLES * PADDING_FACTOR // 2 + 1
"""Frequencies of a baseband spectrum: 0 … span/2 in steps of span / (16 × 16384)."""
SPANS = catalogue.SA_SPANS
"""PyRPL's spans, the scope sample rates ``1 / sampling_time``: 125 MHz / 2**n, n = 0 … 16
(``SpectrumAnalyzer.spans``), descending."""
WINDOWS = catalogue.SA_WINDOWS
"""``SpectrumAnalyzer.windows``; PyRPL's default is the first."""
UNITS = catalogue.SA_UNITS
LOAD_OHMS = 50.0
"""The load the ``dBm`` unit's power is dissipated in."""
_FLATTOP = (1.0, 1.93, 1.29, 0.388, 0.032)
"""PyRPL 0.9.9's flat-top coefficients (``get_window_numpy``)."""


def decimation(span: float) -> int:
    """The scope decimation of ``span`` (one of :data:`SPANS`): ``125 MHz / span``."""
    return round(catalogue.FPGA_CLOCK / span)


def scope_duration(span: float) -> float:
    """The scope ``duration`` the spectrum of ``span`` needs: 16384 samples at its decimation."""
    return SAMPLES * decimation(span) / catalogue.FPGA_CLOCK


@functools.cache
def window(name: str) -> np.ndarray:
    """PyRPL's window ``name`` over 16384 samples, normalised to a sum of 2
    (``SpectrumAnalyzer.filter_window``; the gaussian's standard deviation is 16384 / 10 samples).
    Read-only. Raises ValueError for a name not in :data:`WINDOWS`."""
    n = np.arange(SAMPLES)
    if name == "blackman":
        w = np.blackman(SAMPLES)
    elif name == "boxcar":
        w = np.ones(SAMPLES)
    elif name == "hamming":
        w = np.hamming(SAMPLES)
    elif name == "flattop":
        a0, a1, a2, a3, a4 = _FLATTOP
        w = (a0 - a1 * np.cos(2 * np.pi * n / (SAMPLES - 1))
             + a2 * np.cos(4 * np.pi * n / (SAMPLES - 1))
             - a3 * np.cos(6 * np.pi * n / (SAMPLES - 1))
             + a4 * np.cos(8 * np.pi * n / (SAMPLES - 1)))
    elif name == "gaussian":
        std = SAMPLES / 10
        w = np.exp(-0.5 * ((n - (SAMPLES - 1) / 2) / std) ** 2)
    else:
        raise ValueError(f"unknown window {name!r}; windows are {list(WINDOWS)}")
    w = w / (np.sum(w) / 2)
    w.flags.writeable = False
    return w


@functools.cache
def equivalent_noise_bandwidth(name: str) -> float:
    """The window's noise bandwidth in units of the sample rate, ``sum(w**2) / sum(w)**2``
    (summed one by one, as PyRPL's builtin ``sum`` does)."""
    w = window(name)
    return float(sum(w**2) / sum(w) ** 2)


def sample_rate(span: float) -> float:
    """The scope's sample rate (Hz) at ``span``, as PyRPL computes it: ``1 / (8 ns ×
    decimation)``; the span PyRPL reads back."""
    return 1.0 / (8e-9 * decimation(span))


def rbw(span: float, name: str) -> float:
    """The residual bandwidth (Hz) of ``span`` with window ``name`` (``SpectrumAnalyzer.rbw``)."""
    return equivalent_noise_bandwidth(name) * sample_rate(span)


@functools.cache
def frequencies(span: float) -> np.ndarray:
    """The :data:`POINTS` frequencies (Hz) of a spectrum of ``span``
    (``SpectrumAnalyzer.frequencies``). Read-only."""
    f = np.fft.rfftfreq(SAMPLES * PADDING_FACTOR, 1.0 / sample_rate(span))
    f.flags.writeable = False
    return f


def scope_response(span: float, f: np.ndarray) -> np.ndarray:
    """The amplitude response PyRPL's SA divides out: the decimation's boxcar average,
    ``sinc(decimation × f / 125 MHz)`` (1 without decimation)."""
    dec = decimation(span)
    if dec == 1:
        return np.ones(len(f))
    return np.sinc(dec * np.asarray(f) / catalogue.FPGA_CLOCK)


@dataclass
class Spectra:
    """The spectra of two channels in ``Vpk^2`` per bin and their cross-spectrum
    ``conj(fft1) × fft2`` (same unit), on :func:`frequencies`."""

    in1: np.ndarray
    in2: np.ndarray
    cross: np.ndarray


def spectra(ch1: np.ndarray, ch2: np.ndarray, span: float, name: str) -> Spectra:
    """The spectra of one two-channel trace (16384 samples each, volts) taken at ``span``, with
    window ``name``, as PyRPL's ``SpectrumAnalyzer._get_trace`` computes them."""
    w = window(name)
    n = SAMPLES * PADDING_FACTOR
    fft1 = np.fft.rfft(np.asarray(ch1, dtype=np.float64) * w, n)
    fft2 = np.fft.rfft(np.asarray(ch2, dtype=np.float64) * w, n)
    cross = np.conjugate(fft1) * fft2
    response = _response_squared(span)
    if response is None:  # PyRPL divides by ones: nothing changes
        return Spectra(abs(fft1) ** 2, abs(fft2) ** 2, cross)
    return Spectra(abs(fft1) ** 2 / response, abs(fft2) ** 2 / response,
                   (cross.real / response) + 1j * (cross.imag / response))


@functools.cache
def _response_squared(span: float) -> np.ndarray | None:
    """``|scope_response|**2`` on the frequencies of ``span``; None without decimation."""
    if decimation(span) == 1:
        return None
    response = abs(scope_response(span, frequencies(span))) ** 2
    response.flags.writeable = False
    return response


def to_unit(vpk2: np.ndarray, unit: str, rbw_hz: float) -> np.ndarray:
    """A spectrum in ``Vpk^2`` per bin converted to ``unit`` (:data:`UNITS`, see the module
    docstring). Raises ValueError for another unit."""
    density = np.abs(vpk2) / 2.0 / rbw_hz
    if unit == "V^2/Hz":
        return density
    if unit == "Vrms/sqrt(Hz)":
        return np.sqrt(density)
    if unit == "dBm":
        watts = np.abs(vpk2) / 2.0 / LOAD_OHMS
        return 10.0 * np.log10(np.maximum(watts, np.finfo(float).tiny) / 1e-3)
    raise ValueError(f"unknown unit {unit!r}; units are {list(UNITS)}")


def density(vpk2: np.ndarray, rbw_hz: float) -> np.ndarray:
    """A (cross-)spectrum in ``Vpk^2`` per bin as a one-sided density in V^2/Hz, phase kept."""
    return np.asarray(vpk2) / 2.0 / rbw_hz


LSB = 2.0**-13
"""Step of the scope's 14-bit samples (V)."""


def input_noise_density(rms: float, span: float) -> float:
    """The one-sided density (V^2/Hz) a spectrum of ``span`` reads for an input with noise white
    at the FPGA clock, ``rms`` per clock sample: the scope's averaging decimation keeps its
    density, ``rms**2 / 62.5 MHz``, and its 14-bit samples add their rounding, ``LSB**2 / 12``
    per sample, over the band ``span / 2`` (valid while the averaged noise, ``rms /
    sqrt(decimation)``, is at least an LSB; below, rounding is not uniform and reads less)."""
    return (rms**2 + LSB**2 / 12 * decimation(span)) / (catalogue.FPGA_CLOCK / 2)


def sine_peak(amplitude: float, unit: str, rbw_hz: float) -> float:
    """The peak a sine of ``amplitude`` (V) reads in ``unit`` at its frequency."""
    return float(to_unit(np.array([amplitude**2]), unit, rbw_hz)[0])

