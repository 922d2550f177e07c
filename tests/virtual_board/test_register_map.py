"""The virtual board's register map without sockets: the RTL's widths, reset values and constants,
the 125 MHz time base, the scope's state machine and buffers, the IQ averagers and the sampler
paths, on a clock the test moves (so nothing here depends on the machine's speed)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend
from pymodaq_plugins_pyrpl.virtual_board import VirtualBoard
from tests.helpers.clock import FakeClock

HK, SCOPE, ASG, DSP, AMS = 0x40000000, 0x40100000, 0x40200000, 0x40300000, 0x40400000
PID0, IQ0, IQ2 = DSP, DSP + 5 * 0x10000, DSP + 7 * 0x10000
SCOPE_IN1_SELECT, ASG0_OUTPUT_SELECT = DSP + 8 * 0x10000, DSP + 8 * 0x10000 + 0x4
DSP_NUMBER = {"in1": 10, "in2": 11, "out1": 12, "out2": 13, "asg0": 8, "asg1": 9, "off": 15}
ALL_ONES = 0xFFFFFFFF


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


@pytest.fixture
def board(clock: FakeClock) -> VirtualBoard:
    return VirtualBoard(seed=3, clock=clock)


def word(board: VirtualBoard, address: int) -> int:
    return int(board.read(address, 1)[0])


def put(board: VirtualBoard, address: int, *words: int) -> None:
    board.write(address, np.array(words, dtype=np.uint32))


def volts(w: int) -> float:
    return catalogue.VOLTS.value(w)


# -- widths, reset values, constants ---------------------------------------------------------------

WIDTHS = {  # address: value read back after writing all ones
    HK + 0x0C: 0x1, HK + 0x30: 0xFF,
    SCOPE + 0x08: 0x3FFF, SCOPE + 0x10: ALL_ONES, SCOPE + 0x14: 0x1FFFF, SCOPE + 0x20: 0x3FFF,
    SCOPE + 0x28: 0x1, SCOPE + 0x90: 0xFFFFF,
    ASG + 0x04: 0x3FFF3FFF, ASG + 0x08: 0x3FFFFFFF, ASG + 0x0C: 0x3FFFFFFF,
    ASG + 0x10: 0x3FFFFFFF, ASG + 0x1C: 0xFFFF, ASG + 0x24: 0x3FFF3FFF,
    PID0 + 0x0: 0xF, PID0 + 0x4: 0x3, PID0 + 0xC: 0xFF, PID0 + 0x104: 0x3FFF,
    PID0 + 0x108: 0xFFFFFF, PID0 + 0x10C: 0xFFFFFF, PID0 + 0x120: ALL_ONES,
    PID0 + 0x124: 0x3FFF, PID0 + 0x128: 0x3FFF, PID0 + 0x12C: 0xF,
    IQ0 + 0x104: ALL_ONES, IQ0 + 0x10C: 0xF, IQ0 + 0x110: 0x3FFFF, IQ0 + 0x114: 0x3FFFF,
    IQ0 + 0x130: ALL_ONES,
    DSP + 3 * 0x10000 + 0x104: 0x3, DSP + 3 * 0x10000 + 0x118: 0x3FFF,
    DSP + 4 * 0x10000 + 0x100: 0x3FF, AMS + 0x28: 0xFFFFFF,
}


@pytest.mark.parametrize("address", sorted(WIDTHS), ids=hex)
def test_registers_keep_their_rtl_width(board: VirtualBoard, address: int) -> None:
    put(board, address, ALL_ONES)
    assert word(board, address) == WIDTHS[address]


RESET = {  # address: value at power-up
    HK + 0x0: 1, HK + 0x30: 0,
    SCOPE + 0x0: 0, SCOPE + 0x4: 0, SCOPE + 0x10: 8192, SCOPE + 0x14: 0x2000, SCOPE + 0x20: 20,
    SCOPE + 0x90: 62500,
    ASG + 0x0: 1 << 9 | 1 << 25, ASG + 0x4: 0x2000, ASG + 0x8: 2**30 - 1, ASG + 0x24: 0x2000,
    ASG + 0x28: 2**30 - 1,
    PID0 + 0x0: DSP_NUMBER["in1"], PID0 + 0x4: 0, PID0 + 0xC: 0xFF, PID0 + 0x124: 0x2000,
    PID0 + 0x128: 0x1FFF, PID0 + 0x12C: 0x7,
    SCOPE_IN1_SELECT: DSP_NUMBER["in1"], SCOPE_IN1_SELECT + 0x10000: DSP_NUMBER["in2"],
    DSP + 10 * 0x10000: DSP_NUMBER["off"],
    IQ0 + 0x100: 0b11, IQ0 + 0x10C: 0, DSP + 3 * 0x10000 + 0x11C: 20,
}


@pytest.mark.parametrize("address", sorted(RESET), ids=hex)
def test_power_up_values(board: VirtualBoard, address: int) -> None:
    assert word(board, address) == RESET[address]


CONSTANTS = {  # PyRPL reads these to know the FPGA's parameters
    PID0 + 0x200: 12, PID0 + 0x204: 32, PID0 + 0x208: 10, PID0 + 0x20C: 24,
    PID0 + 0x220: 4, PID0 + 0x224: 5, PID0 + 0x228: 10,
    IQ0 + 0x200: 11, IQ0 + 0x204: 17, IQ0 + 0x208: 32, IQ0 + 0x20C: 18, IQ0 + 0x210: 14,
    IQ0 + 0x214: 24, IQ0 + 0x218: 8, IQ0 + 0x220: 1, IQ0 + 0x224: 5, IQ0 + 0x228: 50,
    IQ0 + 0x230: 2, IQ0 + 0x234: 5, IQ0 + 0x238: 10, IQ2 + 0x230: 4,
    DSP + 4 * 0x10000 + 0x200: 32, DSP + 4 * 0x10000 + 0x204: 29, DSP + 4 * 0x10000 + 0x208: 14,
}


@pytest.mark.parametrize("address", sorted(CONSTANTS), ids=hex)
def test_constants_ignore_writes(board: VirtualBoard, address: int) -> None:
    put(board, address, 0x1234)
    assert word(board, address) == CONSTANTS[address]


def test_constants_match_the_catalogue(board: VirtualBoard) -> None:
    assert tuple(board.read(PID0 + 0x220, 3)) == catalogue.PID_FILTER
    assert tuple(board.read(IQ0 + 0x220, 3)) == catalogue.IQ_INPUT_FILTER
    assert tuple(board.read(IQ0 + 0x230, 3)) == catalogue.IQ_BANDWIDTH_FILTER
    assert tuple(board.read(IQ2 + 0x230, 3)) == catalogue.IQ2_BANDWIDTH_FILTER


def test_pwm_outputs_follow_their_dsp_signal(board: VirtualBoard) -> None:
    """PyRPL's pwm0 reads asg1 (its output is its offset): ams.dac0 shows the RTL's PWM code."""
    put(board, ASG + 0x24, catalogue.ASG_OFFSET.word(0.5) & catalogue.ASG_OFFSET.bitmask)
    put(board, ASG + 0x0, 1 << 16)
    assert word(board, AMS + 0x20) == 1 << 23  # no input: mid-scale
    put(board, DSP + 10 * 0x10000, DSP_NUMBER["asg1"])
    assert word(board, AMS + 0x20) == 1 << 23 | 0x40 << 16  # 0.5 V: bits 12:6 of 0x1000
    put(board, AMS + 0x20, 0)
    assert word(board, AMS + 0x20) == 1 << 23 | 0x40 << 16  # not writable


def test_buffer_reads_across_a_boundary_take_each_word_from_its_own_place(
        board: VirtualBoard, clock: FakeClock) -> None:
    """The end of ch1 and the start of ch2 in one read; the end of asg0's table and 0x20000."""
    asg_dc(board, 0, 0.25, 1)
    put(board, SCOPE + 0x14, 1)
    put(board, SCOPE + 0x0, 0b10)
    put(board, SCOPE + 0x10, 16384)
    put(board, SCOPE + 0x0, 0b01)
    put(board, SCOPE + 0x4, 1)
    clock.t += 1e-3
    ch1, ch2 = board.read(SCOPE + 0x10000, 16384), board.read(SCOPE + 0x20000, 16384)
    assert list(board.read(SCOPE + 0x20000 - 8, 4)) == [*ch1[-2:], *ch2[:2]]
    put(board, ASG + 0x20000 - 8, 1, 2, 3, 4)  # last two samples of asg0, first two of asg1
    assert list(board.read(ASG + 0x20000 - 8, 4)) == [1, 2, 3, 4]
    assert list(board.read(ASG + 0x10000, 2)) == [0, 0]


def test_unmapped_addresses_read_zero(board: VirtualBoard) -> None:
    put(board, 0x40500000, 7)
    assert word(board, 0x40500000) == 0 and word(board, HK + 0x40) == 0


def test_loading_the_bitfile_restores_power_up_values(board: VirtualBoard) -> None:
    put(board, HK + 0x30, 0x55)
    board.load_bitfile()
    assert word(board, HK + 0x30) == 0


def test_reboot_restores_power_up_values(board: VirtualBoard) -> None:
    put(board, HK + 0x30, 0x55)
    put(board, PID0 + 0x104, 0x100)
    board.reboot(0.0)
    assert board.wait_rebooted(5.0)
    assert word(board, HK + 0x30) == 0 and word(board, PID0 + 0x104) == 0


# -- time base -------------------------------------------------------------------------------------


def test_the_cycle_counter_follows_the_clock(board: VirtualBoard, clock: FakeClock) -> None:
    low, high = board.read(SCOPE + 0x15C, 2)
    start = int(high) << 32 | int(low)
    clock.t += 40.0  # 5e9 cycles: the high word moves
    low, high = board.read(SCOPE + 0x15C, 2)
    assert (int(high) << 32 | int(low)) - start == 40 * 125_000_000


def test_scope_acquisition_immediately(board: VirtualBoard, clock: FakeClock) -> None:
    """PyRPL's sequence: reset, delay 16384, arm, source 1 (the software trigger)."""
    put(board, SCOPE + 0x14, 1)  # decimation 1: 16384 samples in 131 µs
    put(board, SCOPE + 0x0, 0b10)
    put(board, SCOPE + 0x10, 16384)
    put(board, SCOPE + 0x0, 0b01)
    put(board, SCOPE + 0x4, 1)
    assert word(board, SCOPE + 0x0) & 0b101 == 0b101  # writing, triggered
    assert word(board, SCOPE + 0x4) == 1
    clock.t += 100e-6
    assert word(board, SCOPE + 0x0) & 0b101 == 0b101
    assert 12000 < word(board, SCOPE + 0x18) < 12600  # the write pointer moves
    clock.t += 40e-6
    assert word(board, SCOPE + 0x0) == 0  # curve ready
    assert word(board, SCOPE + 0x4) == 0  # source cleared at the end
    trigger_pointer = word(board, SCOPE + 0x1C)
    assert word(board, SCOPE + 0x18) == (trigger_pointer + 16384) % 16384


def test_scope_edge_trigger_waits_for_the_pre_trigger_samples(board: VirtualBoard,
                                                              clock: FakeClock) -> None:
    """An ASG square wave on out1 → in1, trigger on ch1's rising edge at 0 V, delay 8192."""
    table = np.where(np.arange(16384) < 8192, 8191, -8191 & 0x3FFF)
    put(board, ASG + 0x10000, *table)
    put(board, ASG + 0x10, round(10e3 / 125e6 * 2**30))  # 10 kHz
    put(board, ASG + 0x4, 0x1000)  # 0.5 V
    put(board, ASG0_OUTPUT_SELECT, 1)  # out1
    put(board, ASG + 0x0, 1 | 1 << 25)  # channel A immediately
    put(board, SCOPE + 0x14, 8)  # 1 µs per sample: 16.4 ms
    put(board, SCOPE + 0x0, 0b10)
    put(board, SCOPE + 0x10, 8192)
    put(board, SCOPE + 0x0, 0b01)
    put(board, SCOPE + 0x4, 2)  # ch1 rising edge, threshold 0
    assert not word(board, SCOPE + 0x16C)  # pretrig_ok: not before 8192 samples
    clock.t += 8.3e-3
    assert word(board, SCOPE + 0x16C)
    clock.t += 20e-3
    assert word(board, SCOPE + 0x0) == 0
    assert word(board, SCOPE + 0x2C) >= 8192  # samples before the trigger
    ch1 = board.read(SCOPE + 0x10000, 16384).astype(np.int64)
    ch1[ch1 >= 8192] -= 16384
    pointer = word(board, SCOPE + 0x1C)
    trace = np.roll(ch1, -(pointer + 8192 + 1)) / 8192  # PyRPL's _get_ch
    assert trace[8191] < 0 <= trace[8192]  # the edge at the centre
    assert abs(np.max(trace) - 0.5) < 0.02 and abs(np.min(trace) + 0.5) < 0.02


def test_scope_trigger_comes_once_its_generator_starts(board: VirtualBoard, clock: FakeClock) -> None:
    """Source asg1 with asg1 stopped: no trigger; asg1 started after the arm: it triggers."""
    put(board, SCOPE + 0x14, 1)
    put(board, SCOPE + 0x0, 0b10)
    put(board, SCOPE + 0x10, 16384)
    put(board, SCOPE + 0x0, 0b01)
    put(board, SCOPE + 0x4, 9)  # asg1
    clock.t += 1e-3
    assert word(board, SCOPE + 0x0) & 0b101 == 0b001  # armed, not triggered
    put(board, ASG + 0x30, catalogue.ASG_FREQUENCY.word(1e6))
    put(board, ASG + 0x0, 1 << 16)  # asg1 immediately
    clock.t += 1e-6 + 16384 * 8e-9
    assert word(board, SCOPE + 0x0) == 0  # triggered within a period, then done


def test_asg_output_peaks_at_the_tables_full_scale(board: VirtualBoard, clock: FakeClock) -> None:
    """The FPGA outputs table * amplitude / 2**13 and PyRPL's tables peak at 2**13 - 1: a 0.5 V sine
    with 0.1 V offset never reaches 0.6 V (PyRPL's test_sampler)."""
    x = np.arange(16384) / 16384
    put(board, ASG + 0x10000, *(np.round(8191 * np.sin(2 * np.pi * x)).astype(np.int64)
                                & 0x3FFF))
    put(board, ASG + 0x10, catalogue.ASG_FREQUENCY.word(1e3))
    offset_bits = catalogue.ASG_OFFSET.word(0.1) & catalogue.ASG_OFFSET.bitmask
    put(board, ASG + 0x4, catalogue.ASG_AMPLITUDE.word(0.5) | offset_bits)
    put(board, ASG + 0x0, 1)
    offset, amplitude = catalogue.ASG_OFFSET.value(offset_bits), 0.5
    samples = []
    for _ in range(400):
        clock.t += 2.5e-6  # one period in 400 steps
        sampled = volts(word(board, DSP + DSP_NUMBER["asg0"] * 0x10000 + 0x10))
        samples.append(sampled * 8192 / 8191)  # PyRPL's sampler scaling
    assert offset - amplitude <= min(samples) and max(samples) <= offset + amplitude
    assert max(samples) > offset + amplitude - 1e-3


def test_trig_module_fires_on_its_edge_and_records_the_asg_phase(board: VirtualBoard,
                                                                  clock: FakeClock) -> None:
    """PyRPL's test_trig: asg0 sine 0.4 V around 0.5 V; trigger on asg0 through 0.5 V."""
    trig = DSP + 3 * 0x10000
    x = np.arange(16384) / 16384
    put(board, ASG + 0x10000, *(np.round(8191 * np.sin(2 * np.pi * x)).astype(np.int64)
                                & 0x3FFF))
    put(board, trig + 0x0, DSP_NUMBER["asg0"])
    put(board, trig + 0x118, catalogue.VOLTS.word(0.5))
    put(board, trig + 0x11C, catalogue.VOLTS.word(1e-3))
    put(board, trig + 0x10C, 1)  # output: asg0's phase
    for source, phase in ((1, 0.0), (2, 180.0)):  # rising, falling edge
        put(board, trig + 0x108, source)
        put(board, trig + 0x100, 1)  # arm
        assert word(board, trig + 0x100) == 1  # asg0 stopped: nothing crosses
        offset_bits = catalogue.ASG_OFFSET.word(0.5) & catalogue.ASG_OFFSET.bitmask
        put(board, ASG + 0x4, catalogue.ASG_AMPLITUDE.word(0.4) | offset_bits)
        put(board, ASG + 0x10, catalogue.ASG_FREQUENCY.word(10e3))
        put(board, ASG + 0x0, 1)
        clock.t += 250e-6
        assert word(board, trig + 0x100) == 0
        output = word(board, trig + 0x10)
        assert ((output / 2**14 * 360.0 - phase + 180.0) % 360.0) - 180.0 == pytest.approx(
            0.0, abs=1.0)
        put(board, ASG + 0x0, 0)  # stop asg0 for the next round


def test_rolling_mode_keeps_writing(board: VirtualBoard, clock: FakeClock) -> None:
    put(board, SCOPE + 0x14, 1)
    put(board, SCOPE + 0x0, 0b10)
    put(board, SCOPE + 0x0, 0b01)  # armed, source off: never triggered
    pointers = []
    for _ in range(4):
        clock.t += 50e-6  # 6250 samples
        assert word(board, SCOPE + 0x0) & 0b101 == 0b001
        pointers.append(word(board, SCOPE + 0x18))
    steps = np.diff(pointers) % 16384
    assert all(abs(step - 6250) <= 1 for step in steps), pointers


def test_iq_averager_is_busy_for_its_cycles(board: VirtualBoard, clock: FakeClock) -> None:
    put(board, IQ0 + 0x130, 125_000)  # averages: 1 ms
    put(board, IQ0 + 0x134, 12_500)  # sleep: 0.1 ms
    put(board, IQ0 + 0x108, 1000)  # a frequency write starts the series
    assert all(w >> 31 for w in board.read(IQ0 + 0x140, 4))
    clock.t += 1.05e-3
    assert all(w >> 31 for w in board.read(IQ0 + 0x140, 4))
    clock.t += 0.1e-3
    assert not any(w >> 31 for w in board.read(IQ0 + 0x140, 4))


def na_series(clock: FakeClock, amplitude: float, bandwidth: float = 1000.0) -> VirtualBoard:
    """A noiseless loopback board whose iq0 excites out1 at 100 kHz with ``amplitude`` from
    time 0 and demodulates in1 (quadrature filter 2 × ``bandwidth``, 1.2 kHz by default); at
    0.1 s the excitation becomes 0.5 V and a rewrite of the frequency starts a series of 1 ms
    (no sleep)."""
    board = VirtualBoard(plant="loopback:noise=0", seed=3, clock=clock)
    put(board, IQ0 + 0x124, catalogue.FilterRegister(*catalogue.IQ_BANDWIDTH_FILTER).word(
        [bandwidth, bandwidth]))
    put(board, IQ0 + 0x4, 1)  # output_direct out1
    put(board, IQ0 + 0x130, 125_000)
    for value, then in ((amplitude, 0.1), (0.5, 0.0)):
        put(board, IQ0 + 0x114, catalogue.IQ_AMPLITUDE.word(value) & (2**18 - 1))
        put(board, IQ0 + 0x108, catalogue.IQ_FREQUENCY.word(100e3))
        clock.t += then
    return board


def na_mean(board: VirtualBoard) -> complex:
    """The series' mean I + jQ (V) from the four sum words."""
    a, b, c, d = (int(w) for w in board.read(IQ0 + 0x140, 4))
    assert not (a | b | c | d) >> 31
    i = ((b << 31 | a) ^ 1 << 61) - (1 << 61)
    q = ((d << 31 | c) ^ 1 << 61) - (1 << 61)
    return complex(i, q) / 125_000 * 2**-22


def test_iq_averager_holds_the_mean_over_its_series() -> None:
    """A step of the excitation from 0 to 0.5 V: the quadrature filter settles (time constant
    0.13 ms) during the 1 ms series, whose mean is below the settled value; the sums are the
    same whenever they are read."""
    soon, late = FakeClock(100.0), FakeClock(100.0)
    read_soon, read_late = na_series(soon, 0.0), na_series(late, 0.0)
    soon.t += 1.0e-3 + 1e-6
    late.t += 0.5
    assert na_mean(read_soon) == na_mean(read_late)
    assert abs(na_mean(read_soon)) < 0.9 * 0.5


def test_iq_averager_sums_are_latched_when_the_series_ends() -> None:
    """A series on a settled filter: turning the excitation off after the series ended, before
    the sums are read, does not change them (on the FPGA they are final when the series ends)."""
    untouched, changed = FakeClock(100.0), FakeClock(100.0)
    boards = na_series(untouched, 0.5), na_series(changed, 0.5)
    untouched.t += 1.1e-3
    changed.t += 1.1e-3
    put(boards[1], IQ0 + 0x114, 0)
    changed.t += 0.05  # the quadrature filter has long settled to 0
    assert abs(na_mean(boards[0])) == pytest.approx(0.5, rel=1e-3)
    assert na_mean(boards[1]) == na_mean(boards[0])


def test_iq_averager_series_with_a_change_in_its_middle() -> None:
    """The excitation changes halfway through a series (quadrature filter 2 × 78 kHz): the sums
    hold a mean within the two levels (the virtual board takes a series with the settings at its
    end, the transient of the change from the change on), not the filter's transient run
    backwards to the series' start (which overflows)."""
    clock = FakeClock(100.0)
    board = na_series(clock, 0.5, bandwidth=80e3)
    clock.t += 0.5e-3
    put(board, IQ0 + 0x114, catalogue.IQ_AMPLITUDE.word(0.2) & (2**18 - 1))
    clock.t += 1e-3
    assert 0.19 < abs(na_mean(board)) < 0.51


def test_pid_integrator_preset_and_readback(board: VirtualBoard) -> None:
    put(board, PID0 + 0x100, round(-1.5 * 2**13) & 0xFFFF)
    assert word(board, PID0 + 0x100) == round(-1.5 * 2**13) & 0xFFFF


# -- one physics: the same settings read the same on the simulator and the virtual board --------


def asg_dc(board: VirtualBoard, channel: int, offset: float, output_select: int) -> None:
    """PyRPL's dc waveform: an all-zero table, the offset in 0x4 bits 29:16, running."""
    base = 0x20 * channel
    put(board, ASG + 0x4 + base, catalogue.ASG_OFFSET.word(offset) & catalogue.ASG_OFFSET.bitmask)
    put(board, ASG0_OUTPUT_SELECT + channel * 0x10000, output_select)
    put(board, ASG + 0x0, 1 | 1 << 16)


def test_sampler_paths_read_the_outputs_as_the_simulator(board: VirtualBoard) -> None:
    asg_dc(board, 0, 0.25, 1)
    asg_dc(board, 1, -0.5, 2)
    simulator = SimulatorBackend(seed=3)
    simulator.set("asg0", {"waveform": "dc", "offset": 0.25, "amplitude": 0.0,
                           "trigger_source": "immediately", "output_direct": "out1"})
    simulator.set("asg1", {"waveform": "dc", "offset": -0.5, "amplitude": 0.0,
                           "trigger_source": "immediately", "output_direct": "out2"})
    expected = simulator.sampler_read()
    for signal in ("out1", "out2", "asg0", "asg1"):
        sampled = volts(word(board, DSP + DSP_NUMBER[signal] * 0x10000 + 0x10))
        assert sampled * 8192 / 8191 == pytest.approx(expected[signal], abs=1e-12), signal
    assert volts(word(board, DSP + DSP_NUMBER["in1"] * 0x10000 + 0x10)) == pytest.approx(
        expected["in1"], abs=0.01)


def test_iq_quadratures_agree_with_the_simulator(board: VirtualBoard, clock: FakeClock) -> None:
    """A 0.3 V ASG sine through the loopback, demodulated by iq0 at its frequency."""
    frequency, amplitude = 50e3, 0.3
    x = np.arange(16384) / 16384
    put(board, ASG + 0x10000, *(np.round(8191 * np.sin(2 * np.pi * x)).astype(np.int64)
                                & 0x3FFF))
    put(board, ASG + 0x10, catalogue.ASG_FREQUENCY.word(frequency))
    put(board, ASG + 0x4, catalogue.ASG_AMPLITUDE.word(amplitude))
    put(board, ASG0_OUTPUT_SELECT, 1)
    put(board, ASG + 0x0, 1)
    put(board, IQ0 + 0x124, catalogue.FilterRegister(*catalogue.IQ_BANDWIDTH_FILTER).word(
        [1000.0, 1000.0]))
    put(board, IQ0 + 0x130, 125_000)
    put(board, IQ0 + 0x108, catalogue.IQ_FREQUENCY.word(frequency))
    clock.t += 0.1  # the quadrature filter settles, then a series of 1 ms starts
    put(board, IQ0 + 0x108, catalogue.IQ_FREQUENCY.word(frequency))
    clock.t += 0.01
    a, b, c, d = (int(w) for w in board.read(IQ0 + 0x140, 4))
    i = ((b << 31 | a) ^ 1 << 61) - (1 << 61)
    q = ((d << 31 | c) ^ 1 << 61) - (1 << 61)
    board_amplitude = math.hypot(i, q) / 125_000 * 2**-22
    simulator_clock = FakeClock(100.0)
    simulator = SimulatorBackend(seed=3, clock=simulator_clock)
    simulator.set("asg0", {"waveform": "sin", "frequency": frequency, "amplitude": amplitude,
                           "trigger_source": "immediately", "output_direct": "out1"})
    simulator.set("iq0", {"frequency": frequency, "bandwidth": [1000.0, 1000.0]})
    simulator_clock.t += 0.1
    reading = simulator.iq_read("iq0")
    assert board_amplitude == pytest.approx(math.hypot(reading["i"], reading["q"]), abs=2e-3)
    assert board_amplitude == pytest.approx(amplitude, abs=2e-3)
