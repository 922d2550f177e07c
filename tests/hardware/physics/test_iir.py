"""The IIR filter of the physics (hardware/physics/iir.py) on its own and wired into a Board: its
transfer function against a cycle-by-cycle run of the FPGA's algorithm, the bypass, the routing
to an output, and the overflow flags."""
from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.physics import iir
from pymodaq_plugins_pyrpl.hardware.physics.board import Board
from pymodaq_plugins_pyrpl.hardware.physics.plants import parse_plant
from pymodaq_plugins_pyrpl.hardware.physics.signals import Grid

RESONANT = iir.Biquad(b0=0.02, b1=-0.015, a1=-1.9, a2=0.95)
"""A stable resonant biquad (poles at radius 0.975)."""


def settings(*biquads: iir.Biquad, loops: int = 20, **kw: object) -> iir.IirSettings:
    padded = biquads + (iir.Biquad(),) * (iir.STAGES - len(biquads))
    return iir.IirSettings(**{"on": True, "loops": loops, "biquads": padded, **kw})


def rtl_response(s: iir.IirSettings, f: float, rounds: int = 3000) -> complex:
    """The module's response at ``f`` from a cycle-by-cycle run of red_pitaya_iir_block.v's
    algorithm on a complex exponential: biquad k samples the input k cycles before biquad 0,
    the sum is latched 7 cycles after biquad 0's sample and held for the round."""
    w = 2 * math.pi * f * 8e-9
    L, biquads = s.period, s.active
    x1, y1, y2 = [0j] * len(biquads), [0j] * len(biquads), [0j] * len(biquads)
    out = np.zeros(rounds * L, complex)
    for m in range(rounds):
        sample = m * L  # the cycle of biquad 0's input sample (the x0 register)
        total = 0j
        for k, q in enumerate(biquads):
            x = cmath.exp(1j * w * (sample - k))
            y = q.b0 * x + q.b1 * x1[k] - q.a1 * y1[k] - q.a2 * y2[k]
            x1[k], y2[k], y1[k] = x, y1[k], y
            total += y
        start = sample + iir.PIPELINE_CYCLES
        out[start:start + L] = total
    n = np.arange(len(out))
    settled = slice(len(out) // 2, len(out) - L - iir.PIPELINE_CYCLES)  # whole rounds, settled
    return complex(np.mean(out[settled] * np.exp(-1j * w * n[settled])))


@pytest.mark.parametrize("loops", [3, 14, 20, 35])
@pytest.mark.parametrize("f", [1e3, 250e3, 1.5e6])
def test_response_is_the_fpga_algorithms(loops: int, f: float) -> None:
    s = settings(RESONANT, iir.Biquad(0.3, 0.1, 0.2, 0.0), iir.Biquad(-0.1), loops=loops)
    expected = rtl_response(s, f)
    assert abs(iir.response(s, f) - expected) < 2e-3 * abs(expected) + 1e-9


def test_off_reads_zero_and_bypass_passes_the_filtered_input_one_cycle_late() -> None:
    s = settings(RESONANT, on=False)
    assert iir.response(s, 1e5) == 0
    bypassed = settings(RESONANT, on=False, bypass=True)
    assert iir.response(bypassed, 1e5) == pytest.approx(cmath.exp(-2j * math.pi * 1e5 * 8e-9))
    filtered = settings(RESONANT, bypass=True, inputfilter=(1e5,))
    assert abs(iir.response(filtered, 1e5)) == pytest.approx(2**-0.5)


def defaults() -> dict[str, dict]:
    return {name: {k: list(v) if isinstance(v, list) else v for k, v in spec.defaults().items()}
            for name, spec in catalogue.MODULES.items()}


def sine_board(amplitude: float, frequency: float = 1e5) -> Board:
    board = Board(parse_plant("loopback:noise=0"), defaults(), seed=1)
    board.change("asg0", {"waveform": "sin", "frequency": frequency, "amplitude": amplitude,
                          "trigger_source": "immediately"}, 0.0)
    return board


def test_a_board_routes_the_filtered_input_to_its_output() -> None:
    """asg0 (0.5 V) through a gain-0.5 IIR to out1: in1 shows 0.25 V times the hold's roll-off;
    the scope's 'iir' signal the same; switched off, nothing."""
    board = sine_board(0.5)
    s = settings(iir.Biquad(0.5), loops=10, input="asg0", output_direct="out1")
    board.set_iir(s, 0.0)
    grid = Grid.uniform(1.0, 8e-9, 1250)  # one period of 100 kHz
    expected = 0.25 * abs(iir.response(s, 1e5)) / 0.5
    for signal in ("in1", "iir"):
        trace = board.trace(signal, grid, board.context(None))
        assert (np.max(trace) - np.min(trace)) / 2 == pytest.approx(expected, abs=2e-4), signal
    board.set_iir(settings(iir.Biquad(0.5), on=False, input="asg0", output_direct="out1"), 1.0)
    assert not np.any(board.trace("in1", grid, board.context(None)))


def test_overflow_flags_are_sticky_while_on_and_clear_when_off() -> None:
    board = sine_board(0.8)
    big = settings(iir.Biquad(b0=3.0), loops=14, input="asg0")
    board.set_iir(big, 0.0)
    flags = board.iir_overflow()
    assert flags == iir.PRODUCT_B0 | iir.BIQUAD_OUTPUT | iir.OUTPUT_SUM
    board.change("asg0", {"amplitude": 0.01}, 1.0)  # now far from any limit: the flags stay
    assert board.iir_overflow() == flags
    board.set_iir(iir.IirSettings(**{**big.__dict__, "on": False}), 2.0)
    assert board.iir_overflow() == 0
    board.set_iir(big, 3.0)
    assert board.iir_overflow() == 0


def test_the_accumulator_flags_biquad_0_added_once_per_idle_cycle() -> None:
    """With loops > 14 the RTL's output accumulator adds biquad 0's last output loops - 14 times
    before restarting at biquad 13: 0.02 V from biquad 0 and loops = 100 raise the output-sum
    flag (86 x 0.02 V >= 1 V) while the output itself is 0.02 V; loops = 14 does not."""
    board = sine_board(0.2)
    small = iir.Biquad(b0=0.1)
    board.set_iir(settings(small, loops=100, input="asg0"), 0.0)
    assert board.iir_overflow() == iir.OUTPUT_SUM
    board.set_iir(settings(small, loops=14, input="asg0", on=False), 1.0)
    board.set_iir(settings(small, loops=14, input="asg0"), 1.0)
    assert board.iir_overflow() == 0


def test_an_unstable_biquad_contributes_nothing_and_flags_its_saturation() -> None:
    board = sine_board(0.1)
    board.set_iir(settings(iir.Biquad(b0=1.0, a1=-2.0, a2=1.0), input="asg0"), 0.0)
    assert iir.response(board.iir, 1e5) == 0
    assert board.iir_overflow() & (iir.PRODUCT_A1 | iir.PRODUCT_A2 | iir.BIQUAD_OUTPUT) == 7
