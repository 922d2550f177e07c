"""PyRPL's IIR filter (``red_pitaya_iir_block.v``, DSP module 4) as its transfer function on
tones: up to 14 biquads computed one per 125 MHz cycle in a round of ``loops`` cycles, their
outputs summed and held for the round; the bypass (``shortcut``) and the overflow flags.

The FPGA, as modelled here
--------------------------
- The input goes through the one-stage input filter (``inputfilter``), then is sampled once per
  round by each active biquad: ``min(loops, 14)`` of them (``loops`` 0 counts as 1024, the
  10-bit counter wrapping). Biquad ``k`` computes ``y[m] = b0 x[m] + b1 x[m-1] - a1 y[m-1]
  - a2 y[m-2]`` at the sampling rate ``125 MHz / loops``, its input taken ``k`` cycles before
  biquad 0's.
- The sum of the biquads' outputs is latched 7 cycles after biquad 0's sample (the ``x0``
  register, three pipeline stages, the accumulator, the output latch and ``dat_o``) and held for
  the round (a zero-order hold of ``loops`` cycles). So a tone at ``f`` comes out as
  ``sum_k H_k(e^{j w loops}) e^{-j w (7 + k)} * ZOH(w)``, ``w = 2 pi f * 8 ns``, ``ZOH`` the
  average of ``e^{-j w r}`` over ``r = 0 .. loops - 1`` (PyRPL's ``tf_final`` predicts a delay
  of ``6 + k + loops / 2`` cycles and no hold roll-off).
- ``bypass`` puts the filtered input on the output one cycle late, whether ``on`` or not; off and
  not bypassed, the output is 0.
- Overflow flags (register 0x108, sticky while ``on``, cleared while off), from the peak of the
  steady-state signals: bit 0/1 ``a1 * y[m-1]`` / ``a2 * y[m-2]``, bit 2 a biquad's output,
  bit 3/4 ``b0 * x[m]`` / ``b1 * x[m-1]`` beyond the 32-bit internal range (2 V, the input being
  at 2**30 per volt), bit 6 the output accumulator beyond the 14-bit output (1 V), partial sums
  included and, with ``loops`` > 14, the RTL's accumulator adding biquad 0's last output
  ``loops - 14`` times before the sum restarts at biquad 13.

Approximations: steady state only (no ringing after a change, the filter's state is not
followed); the aliases of the zero-order hold (tones at ``f ± n 125 MHz / loops``) are left
out; the internal saturation itself is not applied (only flagged); an unstable biquad (a pole on
or outside the unit circle), which on a board rails at once, contributes 0 V and sets bits 0-2;
the input filter has no delay (as everywhere in this model); the ADC noise of the input is not
carried through.
"""
from __future__ import annotations

import cmath
from collections.abc import Sequence
from dataclasses import dataclass

from .filters import filter_response
from .signals import TWO_PI, Tone

STAGES = 14
"""Biquads of the FPGA (``IIRSTAGES``)."""
LOOPS_WRAP = 2**10
"""``loops`` is a 10-bit counter: 0 makes a round of 1024 cycles."""
CYCLE = 8e-9
"""One FPGA clock cycle (s)."""
PIPELINE_CYCLES = 7
"""Cycles from the module's input to its output for biquad 0's sample."""
BYPASS_CYCLES = 1
"""Cycles from the input to the output when bypassed (the ``dat_o`` register)."""
INTERNAL_RANGE = 2.0
"""Saturation of the internal 32-bit signals and products (V)."""
OUTPUT_RANGE = 1.0
"""Saturation of the 14-bit output (V)."""

PRODUCT_A1, PRODUCT_A2, BIQUAD_OUTPUT, PRODUCT_B0, PRODUCT_B1 = 1, 2, 4, 8, 16
OUTPUT_SUM = 64
"""Overflow flags (register 0x108) as ``red_pitaya_iir_block.v`` numbers them."""


@dataclass(frozen=True)
class Biquad:
    """``(b0 + b1 z^-1) / (1 + a1 z^-1 + a2 z^-2)``: PyRPL's ``coefficients`` row
    ``[b0, b1, 0, 1, a1, a2]`` (the FPGA stores ``-a1``, ``-a2``)."""

    b0: float = 0.0
    b1: float = 0.0
    a1: float = 0.0
    a2: float = 0.0

    @property
    def stable(self) -> bool:
        """Both poles strictly inside the unit circle."""
        return abs(self.a2) < 1.0 and abs(self.a1) < 1.0 + self.a2

    def response(self, z: complex) -> complex:
        """The transfer function at ``z`` (0 for an unstable biquad)."""
        if not self.stable:
            return 0j
        zi = 1.0 / z
        return (self.b0 + self.b1 * zi) / (1.0 + self.a1 * zi + self.a2 * zi * zi)


@dataclass(frozen=True)
class IirSettings:
    """The IIR module: its input and ``output_direct`` (DSP bus names), ``on``, ``bypass``,
    ``loops`` (register value), the input filter's cutoffs and the biquads (index = position)."""

    input: str = "in1"
    output_direct: str = "off"
    on: bool = False
    bypass: bool = False
    loops: int = 0
    inputfilter: tuple[float, ...] = (0.0,)
    biquads: tuple[Biquad, ...] = ()

    @property
    def period(self) -> int:
        """Cycles of one round (the biquads' sampling period)."""
        return self.loops if self.loops > 0 else LOOPS_WRAP

    @property
    def active(self) -> tuple[Biquad, ...]:
        """The biquads computed each round."""
        return self.biquads[: min(self.period, STAGES)]


def response(s: IirSettings, f: float) -> complex:
    """The module's output per unit input at frequency ``f`` (Hz, either sign)."""
    w = TWO_PI * f * CYCLE
    if s.bypass:
        return filter_response(s.inputfilter, f) * cmath.exp(-1j * w * BYPASS_CYCLES)
    if not s.on:
        return 0j
    return filter_response(s.inputfilter, f) * _biquads(s, w) * _hold(w, s.period)


def _biquads(s: IirSettings, w: float) -> complex:
    z = cmath.exp(1j * w * s.period)
    return sum((q.response(z) * cmath.exp(-1j * w * (PIPELINE_CYCLES + k))
                for k, q in enumerate(s.active)), 0j)


def _hold(w: float, period: int) -> complex:
    """The zero-order hold over ``period`` cycles: the mean of ``e^{-j w r}``, r < period."""
    denominator = 1.0 - cmath.exp(-1j * w)
    if abs(denominator) < 1e-12:
        return 1.0 + 0j
    return (1.0 - cmath.exp(-1j * w * period)) / (period * denominator)


def overflow(s: IirSettings, inputs: Sequence[Tone]) -> int:
    """The overflow flags (see the module docstring) raised by the steady state of the input
    ``inputs`` (tones, V); 0 unless ``on``."""
    if not s.on:
        return 0
    flags = 0
    if not all(q.stable for q in s.active):
        flags |= PRODUCT_A1 | PRODUCT_A2 | BIQUAD_OUTPUT
    x = [t.amp * filter_response(s.inputfilter, t.freq) for t in inputs]
    x_peak = sum(abs(a) for a in x)
    # outputs[k][i]: biquad k's response to tone i, as it enters the accumulator
    outputs = []
    for k, q in enumerate(s.active):
        terms = []
        for a, tone in zip(x, inputs, strict=True):
            w = TWO_PI * tone.freq * CYCLE
            terms.append(a * q.response(cmath.exp(1j * w * s.period)) * cmath.exp(-1j * w * k))
        outputs.append(terms)
        y_peak = sum(abs(v) for v in terms)
        flags |= _beyond(abs(q.a1) * y_peak, PRODUCT_A1) | _beyond(abs(q.a2) * y_peak, PRODUCT_A2)
        flags |= _beyond(y_peak, BIQUAD_OUTPUT)
        flags |= _beyond(abs(q.b0) * x_peak, PRODUCT_B0) | _beyond(abs(q.b1) * x_peak, PRODUCT_B1)
    partial = [0j] * len(x)
    sums = []
    for terms in reversed(outputs):  # the accumulator runs from the highest biquad down to 0
        partial = [p + v for p, v in zip(partial, terms, strict=True)]
        sums.append(sum(abs(p) for p in partial))
    if outputs and s.period > STAGES:
        sums.append((s.period - STAGES) * sum(abs(v) for v in outputs[0]))
    if sums and max(sums) >= OUTPUT_RANGE:
        flags |= OUTPUT_SUM
    return flags


def _beyond(peak: float, flag: int) -> int:
    return flag if peak >= INTERNAL_RANGE else 0
