"""The IIR module of the virtual board without sockets: its registers, the coefficients decoded as
PyRPL's ``IIR.coefficients`` writes them, its output on the DSP bus and its overflow register."""
from __future__ import annotations

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.physics import iir
from pymodaq_plugins_pyrpl.virtual_board import VirtualBoard

DSP = 0x40300000
IIR = DSP + 4 * 0x10000
ASG = 0x40200000
ASG0_SELECT = DSP + 8 * 0x10000
LOOPS, FLAGS, OVERFLOW, FILTER, COEFFICIENTS = 0x100, 0x104, 0x108, 0x120, 0x8000
ON, BYPASS = 1, 2
IN_SELECT = {"asg0": 8, "in1": 10}


@pytest.fixture
def board() -> VirtualBoard:
    return VirtualBoard(seed=3, clock=lambda: 100.0)


def word(board: VirtualBoard, address: int) -> int:
    return int(board.read(address, 1)[0])


def put(board: VirtualBoard, address: int, *words: int) -> None:
    board.write(address, np.array(words, dtype=np.uint32))


def pyrpl_coefficient_words(rows: list[list[float]]) -> list[int]:
    """What PyRPL's ``IIR.coefficients = rows`` writes from 0x8000 (``iir.py``: 14 x 8 words,
    ``[b0, b1, 0, 1, a1, a2]`` rows, a1/a2 negated, ``round(v * 2**29)`` in 32 bits as the low
    word of each (low, high) pair)."""
    data = [0] * (iir.STAGES * 8)
    for i, (b0, b1, _, _, a1, a2) in enumerate(rows):
        for k, v in enumerate((b0, b1, -a1, -a2)):
            data[i * 8 + 2 * k] = round(v * 2**29) & 0xFFFFFFFF
    return data


def test_registers_at_power_up_and_their_widths(board: VirtualBoard) -> None:
    assert [word(board, IIR + a) for a in (LOOPS, FLAGS, OVERFLOW, FILTER)] == [0, 0, 0, 0]
    assert [word(board, IIR + a) for a in (0x200, 0x204, 0x208)] == [32, 29, 14]
    put(board, IIR + FLAGS, 0xFFFFFFFF)
    put(board, IIR + LOOPS, 0xFFFFFFFF)
    assert (word(board, IIR + FLAGS), word(board, IIR + LOOPS)) == (0x3, 0x3FF)
    put(board, IIR + COEFFICIENTS, 0x12345678)
    assert word(board, IIR + COEFFICIENTS) == 0  # write-only, as on the FPGA


def test_coefficients_decode_as_pyrpl_encodes_them(board: VirtualBoard) -> None:
    rows = [[0.25, -0.5, 0, 1, -1.8, 0.9], [1.5, 0.0, 0, 1, 0.1, -0.2]]
    put(board, IIR + COEFFICIENTS, *pyrpl_coefficient_words(rows))
    put(board, IIR + LOOPS, 35)
    put(board, IIR + FLAGS, ON)
    settings = board.fpga.dsp.iir_settings()
    assert settings.on and not settings.bypass and settings.loops == 35
    decoded = [(q.b0, q.b1, q.a1, q.a2) for q in settings.biquads[:2]]
    expected = [[round(v * 2**29) / 2**29 for v in (b0, b1, a1, a2)]
                for b0, b1, _, _, a1, a2 in rows]
    assert decoded == [tuple(e) for e in expected]
    assert settings.biquads[2:] == (iir.Biquad(),) * (iir.STAGES - 2)
    assert board.fpga.model.board.iir == settings  # the physics took them up


def asg0_sine(board: VirtualBoard, amplitude: float) -> None:
    """asg0: a 100 kHz sine of ``amplitude`` (PyRPL's table), running."""
    table = np.round(8191 * np.sin(2 * np.pi * np.arange(2**14) / 2**14)).astype(np.int64)
    board.write(ASG + 0x10000, (table & 0x3FFF).astype(np.uint32))
    put(board, ASG + 0x4, catalogue.ASG_AMPLITUDE.word(amplitude))
    put(board, ASG + 0x10, catalogue.ASG_FREQUENCY.word(1e5))
    put(board, ASG + 0x0, 0x1)  # trigger: immediately


def test_bus_output_and_overflow_follow_on_and_bypass(board: VirtualBoard) -> None:
    asg0_sine(board, 0.8)
    put(board, IIR + 0x0, IN_SELECT["asg0"])
    put(board, IIR + COEFFICIENTS, *pyrpl_coefficient_words([[3.0, 0, 0, 1, 0, 0]]))
    put(board, IIR + LOOPS, 14)
    assert word(board, IIR + OVERFLOW) == 0  # off
    put(board, IIR + FLAGS, ON)
    assert word(board, IIR + OVERFLOW) == iir.PRODUCT_B0 | iir.BIQUAD_OUTPUT | iir.OUTPUT_SUM
    put(board, IIR + FLAGS, 0)
    assert word(board, IIR + OVERFLOW) == 0
    put(board, IIR + FLAGS, BYPASS)
    model = board.fpga.model
    assert model.board.iir.bypass
    assert abs(iir.response(model.board.iir, 1e5)) == pytest.approx(1.0)
