"""One IQ module (iq0..iq2) as functions of its settings ``v`` (catalogue units) and its
oscillator ``lo``: demodulation of input tones into ``I + jQ``, the excitation and band-pass
outputs, the ADC noise on the quadratures and the transients its filter reads.

The input tones come from the caller (the board's signal graph); conventions: see the package
docstring.

Pipeline delays (``red_pitaya_iq_block.v`` and its blocks; T = one 8 ns cycle, f the input's
frequency, f_d the demodulation frequency): the input passes the input filter (the ``acbandwidth``
high-pass, :func:`.filters.filter_delay`) and one register (``firstproduct_reg``) before it
meets the oscillator, so the quadrature is ``s(t - T_in) e^{-j theta(t)}``, T_in = 1 cycle + the
input filter's delay; the product register and the quadrature filter stages then delay the
quadrature itself (1 cycle + ``filter_delay(bandwidth)``). The modulator puts out
``amplitude sin(theta)`` two cycles late (``firstproduct1_reg``, ``secondproduct_sum``,
``secondproduct_out``) and multiplies the band-pass quadrature, one cycle older, with that
oscillator; the quadrature outputs on the bus pass one more register (``q1_product_reg``). So an
excitation demodulated by its own module lags by 3 cycles plus the input filter's delay (PyRPL's
``NetworkAnalyzer._delay = 3``, +1 per high-pass), and the band-pass output lags by
``2 + filter_delay(bandwidth)`` cycles at f - f_d and ``3 + input filter`` cycles at f (PyRPL's
``Iq.transfer_function``).
"""
from __future__ import annotations

import cmath
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import catalogue
from .filters import delay, filter_delay, filter_response, filter_system
from .linalg import expm
from .signals import NYQUIST, TWO_PI, Phase, Tone
from .transients import Ring, Settling

DEMODULATOR_INPUT_CYCLES = 1
"""The input's register before the multiplier (``firstproduct_reg``, iq_demodulator_block.v)."""
PRODUCT_CYCLES = 1
"""The product register (``product1``/``product2``): the quadrature's own delay."""
MODULATOR_CYCLES = 2
"""Oscillator to output (``secondproduct_sum``, ``secondproduct_out``, iq_modulator_block.v)."""
BANDPASS_QUADRATURE_CYCLES = 1
"""The band-pass quadrature's register before the output multiplier (``firstproduct1_reg``)."""
QUADRATURE_OUTPUT_CYCLES = 1
"""The quadrature outputs' register on the bus (``q1_product_reg``, ``q2_product_reg``)."""


def input_cycles(v: Mapping[str, Any]) -> int:
    """Delay (cycles) of the input relative to the oscillator it is multiplied with."""
    return DEMODULATOR_INPUT_CYCLES + filter_delay([-v["acbandwidth"]])


def demodulator(v: Mapping[str, Any], lo: Phase) -> tuple[Phase, int, float]:
    """(oscillator, harmonic, frequency) of the demodulation."""
    harmonic = 2 if v["demodulation_at_2f"] == "on" else 1
    return lo, harmonic, harmonic * lo.freq


def demodulate(v: Mapping[str, Any], lo: Phase, inputs: Sequence[Tone]
               ) -> tuple[list[Tone], list[Tone]]:
    """The quadrature filter's input for the input tones ``inputs``, as complex exponentials:
    (difference, sum-frequency) terms (:func:`filtered` gives ``I + jQ``).

    An input tone ``Re(a e^{j theta})`` gives ``a e^{j(theta - theta_lo + phase)}`` and
    ``conj(a) e^{-j(theta + theta_lo - phase)}``, with the ``acbandwidth`` high-pass and the
    pipeline delays up to the filter (module docstring).
    """
    lo, harmonic, f_d = demodulator(v, lo)
    rotation = cmath.exp(1j * math.radians(v["phase"]))
    lag = input_cycles(v)
    difference, total = [], []
    for tone in inputs:
        a = tone.amp * filter_response([-v["acbandwidth"]], tone.freq) * delay(lag, tone.freq)
        if abs(a) < 1e-12:
            continue
        f = tone.freq - f_d
        difference.append(Tone(a, tone.terms).mixed(
            lo, -harmonic, rotation * delay(PRODUCT_CYCLES, f)))
        f = -tone.freq - f_d
        total.append(Tone(a, tone.terms).conj().mixed(
            lo, -harmonic, rotation * delay(PRODUCT_CYCLES, f)))
    return difference, [t for t in total if abs(t.amp) > 1e-12]


def filtered(v: Mapping[str, Any], difference: Sequence[Tone], total: Sequence[Tone]
             ) -> tuple[list[Tone], list[Tone]]:
    """``I + jQ``: the terms of :func:`demodulate` through the ``bandwidth`` filter, L(f) and
    its delay at each term's frequency f."""
    cutoffs = v["bandwidth"]
    lag = filter_delay(cutoffs)
    difference = [t.scaled(filter_response(cutoffs, t.freq) * delay(lag, t.freq))
                  for t in difference]
    total = [t.scaled(filter_response(cutoffs, t.freq) * delay(lag, t.freq)) for t in total]
    return difference, [t for t in total if abs(t.amp) > 1e-12]


def excitation(v: Mapping[str, Any], lo: Phase) -> list[Tone]:
    """The excitation ``amplitude * cos`` at the oscillator (its 2f with ``modulation_at_2f``),
    ``MODULATOR_CYCLES`` late; none at amplitude 0."""
    if not v["amplitude"]:
        return []
    harmonic = 2 if v["modulation_at_2f"] == "on" else 1
    return [Tone(delay(MODULATOR_CYCLES, harmonic * lo.freq) * v["amplitude"],
                 ((lo, harmonic),))]


def bandpass(v: Mapping[str, Any], f_d: float, inputs: Sequence[Tone]) -> list[Tone]:
    """PyRPL's band-pass output ``gain * L(f_in - f_d) * exp(j phase)`` of the input tones
    ``inputs`` (through the ``acbandwidth`` high-pass), ``f_d`` the demodulation frequency, with
    the pipeline delays (module docstring)."""
    k = v["gain"] * cmath.exp(1j * math.radians(v["phase"]))
    lag = input_cycles(v) + MODULATOR_CYCLES
    quadrature_lag = PRODUCT_CYCLES + filter_delay(v["bandwidth"]) + BANDPASS_QUADRATURE_CYCLES
    tones = []
    for tone in inputs:
        tone = tone.conj() if tone.freq < 0 else tone
        f = tone.freq - f_d
        tones.append(tone.scaled(k * filter_response(v["bandwidth"], f) * delay(quadrature_lag, f)
                                 * filter_response([-v["acbandwidth"]], tone.freq)
                                 * delay(lag, tone.freq)))
    return tones


def quadrature_noise(cutoffs: Sequence[float], adc_noise: float) -> float:
    """rms on each quadrature of white ADC noise of rms ``adc_noise`` at 125 MS/s through the
    quadrature filter ``cutoffs``: ``adc_noise * sqrt(2 B / 62.5 MHz)``, B = pi/2 times the lowest
    low-pass cutoff (62.5 MHz without one)."""
    lowpass = [c for c in cutoffs if c > 0]
    bandwidth = min(NYQUIST, math.pi / 2 * min(lowpass)) if lowpass else NYQUIST
    return adc_noise * math.sqrt(2.0 * bandwidth / NYQUIST)


def averaged_noise(duration: float, adc_noise: float) -> float:
    """rms on each quadrature of white ADC noise of rms ``adc_noise`` at 125 MS/s, demodulated and
    averaged over ``duration`` seconds (the network analyzer's averager): as
    :func:`quadrature_noise` with the noise bandwidth of a boxcar average, ``1 / (2 duration)``
    (the quadrature filter, at least as wide in a sweep, is neglected)."""
    return adc_noise * math.sqrt(2.0 * min(NYQUIST, 0.5 / duration) / NYQUIST)


def window_mean(freq: float, duration: float) -> complex:
    """The mean of ``exp(2j pi freq t)`` over ``0 <= t <= duration``, relative to its value at 0."""
    x = TWO_PI * freq * duration
    if abs(x) < 1e-9:
        return 1.0 + 0j
    return (cmath.exp(1j * x) - 1.0) / (1j * x)


def demodulated_ring(v: Mapping[str, Any], lo: Phase, ring: Ring, t: float
                     ) -> tuple[complex, complex]:
    """The plant's free oscillation ``ring`` on the input, demodulated: (U, lambda) at ``t``, the
    filter's input ``U exp(lambda (t' - t))``."""
    lo, harmonic, f_d = demodulator(v, lo)
    rotation = cmath.exp(1j * math.radians(v["phase"]))
    highpass = filter_response([-v["acbandwidth"]], ring.s / (TWO_PI * 1j))
    lagged = ring.at(t) * cmath.exp(-ring.s * input_cycles(v) / catalogue.FPGA_CLOCK)
    u = highpass * rotation * lagged * cmath.exp(-TWO_PI * 1j * harmonic * lo.at(t))
    return u, ring.s - TWO_PI * 1j * f_d


def transient(cutoffs: Sequence[float], ring: tuple[complex, complex] | None,
              settling: Settling | None, t: float) -> complex:
    """What the module reads at ``t`` beyond its steady state: the demodulated free oscillation
    ``ring`` (U, lambda) through the filter ``cutoffs`` and the filter's own deviation
    ``settling``."""
    z = 0j
    if ring is not None:
        z += filter_response(cutoffs, ring[1] / (TWO_PI * 1j)) * ring[0]
    if settling is not None and not settling.over(t):
        z += complex(filter_system(settling.cutoffs)[2] @ settling.homogeneous(t))
    return z


def transient_mean(cutoffs: Sequence[float], ring: tuple[complex, complex] | None,
                   settling: Settling | None, start: float, duration: float) -> complex:
    """The mean of :func:`transient` over ``duration`` seconds from ``start`` (the network
    analyzer's averaging window; the settings unchanged over it): the demodulated free
    oscillation ``ring`` (U, lambda) taken at ``start``, ``U (exp(lambda T) - 1) / (lambda T)``
    through the filter, and the filter's own deviation ``settling``,
    ``C A^-1 (expm(A T) - 1) x(start) / T`` (``A`` of :func:`.filters.filter_system`, invertible:
    every stage decays)."""
    z = 0j
    if ring is not None:
        u, rate = ring
        x = rate * duration
        mean = (cmath.exp(x) - 1.0) / x if abs(x) > 1e-12 else 1.0
        z += filter_response(cutoffs, rate / (TWO_PI * 1j)) * u * mean
    if settling is not None and not settling.over(start):
        a, _, c, _ = filter_system(settling.cutoffs)
        state = settling.homogeneous(start)
        growth = expm(a * duration) - np.eye(len(state))
        z += complex(c @ np.linalg.solve(a, growth @ state)) / duration
    return z
