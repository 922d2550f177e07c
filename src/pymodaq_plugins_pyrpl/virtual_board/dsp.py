"""The DSP module (``red_pitaya_dsp.v``, base 0x40300000): the signal routing and the modules on
the DSP bus, module ``n`` at ``0x40300000 + n * 0x10000`` (numbers: :data:`.decode.DSP_NUMBERS`).

Every module number answers the routing registers: 0x0 input select (4 bits; modules 0-11),
0x4 output select (2 bits; modules 0-9), 0x8 the DAC saturation flags, 0xC the global sync bits
(8 bits; a PID is paused while its bit is clear; setting an IQ module's bit again restarts its
oscillator at phase 0, PyRPL's ``synchronize_iqs``) and 0x10 the module's current output on the
bus (14 bits; PyRPL's sampler). The input selects of 8 and 9 are the scope's two channels, the
output selects of 8 and 9 the generators' ``output_direct``.

Registers from 0x100 are the module's own: PIDs 0-2 (``red_pitaya_pid_block.v``), trig 3
(:mod:`.trig`), iir 4 (``red_pitaya_iir_block.v``), IQs 5-7
(``red_pitaya_iq_block.v``; 7 has four quadrature filter stages and a second output, 14).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..hardware import catalogue
from ..hardware.physics.iir import STAGES, IirSettings
from . import decode
from .registers import Reg, RegisterFile, const
from .timebase import to_seconds
from .trig import Trig

if TYPE_CHECKING:
    from .fpga import Fpga

SUBMODULE_SPAN = 0x10000
PIDS = (0, 1, 2)
TRIG = 3
IIR = 4
IQS = (5, 6, 7)
SYNC_BITS = 8
INPUT_SELECTS = 12
OUTPUT_SELECTS = 10
INPUT_RESET = {n: decode.DSP_NUMBERS["in1"] for n in (*PIDS, TRIG, IIR, *IQS, 8)} | {
    9: decode.DSP_NUMBERS["in2"], 10: decode.DSP_NUMBERS["off"], 11: decode.DSP_NUMBERS["off"]}
"""Input selects at power-up: every module reads in1, the scope in1/in2, the PWMs nothing."""

_PID_STAGES, _PID_SHIFTBITS, _PID_MINBW = catalogue.PID_FILTER
PID_TABLE = {
    0x104: Reg(14),  # setpoint
    0x108: Reg(24),  # p
    0x10C: Reg(24),  # i
    0x110: Reg(24),  # d (not used by PyRPL)
    0x120: Reg(32),  # input filter
    0x124: Reg(14, 0x2000),  # min_voltage: -1 V
    0x128: Reg(14, 0x1FFF),  # max_voltage: 1 - 2**-13 V
    0x12C: Reg(4, 0x7),  # {differential mode, pause d, p, i on sync}
    0x200: const(12), 0x204: const(32), 0x208: const(10), 0x20C: const(24),  # PSR ISR DSR GAINBITS
    0x220: const(_PID_STAGES), 0x224: const(_PID_SHIFTBITS), 0x228: const(_PID_MINBW),
}
PID_IVAL = 0x100

_IQ_IN_STAGES, _IQ_IN_SHIFTBITS, _IQ_IN_MINBW = catalogue.IQ_INPUT_FILTER


def _iq_table(quadrature_filter: tuple[int, int, int]) -> dict[int, Reg]:
    stages, shiftbits, minbw = quadrature_filter
    return {
        0x100: Reg(6, 0b10),  # {2f flags, pfd_on} in bits 5:1; bit 0 reads the sync bit
        0x104: Reg(32),  # phase
        0x108: Reg(32),  # frequency
        0x10C: Reg(4),  # output_signal: quadrature
        0x110: Reg(18), 0x114: Reg(18), 0x118: Reg(18), 0x11C: Reg(18),  # g1 (gain), g2
        # (amplitude), g3 (quadrature_factor), g4 (gain)
        0x120: Reg(32),  # input filter
        0x124: Reg(32),  # quadrature filter (bandwidth)
        0x130: Reg(32),  # NA averages
        0x134: Reg(32),  # NA sleep cycles
        0x150: const(0),  # PFD integral (not modelled)
        0x200: const(11), 0x204: const(17), 0x208: const(32), 0x20C: const(18),  # LUTSZ LUTBITS
        0x210: const(14), 0x214: const(24), 0x218: const(8),  # PHASEBITS GAINBITS SIGNALBITS
        # LPFBITS SHIFTBITS
        0x220: const(_IQ_IN_STAGES), 0x224: const(_IQ_IN_SHIFTBITS), 0x228: const(_IQ_IN_MINBW),
        0x230: const(stages), 0x234: const(shiftbits), 0x238: const(minbw),
    }


IQ_TABLES = (_iq_table(catalogue.IQ_BANDWIDTH_FILTER),) * 2 + (
    _iq_table(catalogue.IQ2_BANDWIDTH_FILTER),)
IQ_FREQUENCY = 0x108
IQ_NA_DATA = 0x140
"""Four words from here: {busy, I[30:0]}, {busy, I[61:31]}, {busy, Q[30:0]}, {busy, Q[61:31]}."""
NA_SCALE = 2**22
"""The NA accumulators add ``(I + jQ) * 2**22`` per cycle for a quadrature of I + jQ volts."""

IIR_LOOPS, IIR_FLAGS, IIR_OVERFLOW, IIR_FILTER = 0x100, 0x104, 0x108, 0x120
IIR_TABLE = {
    IIR_LOOPS: Reg(10),
    IIR_FLAGS: Reg(2),  # {shortcut, on}
    IIR_FILTER: Reg(32),
    0x200: const(decode.IIR_COEFFICIENT_BITS), 0x204: const(decode.IIR_COEFFICIENT_SHIFT),
    0x208: const(STAGES),  # IIRBITS IIRSHIFT IIRSTAGES
    0x220: const(decode.IIR_INPUT_FILTER.stages), 0x224: const(decode.IIR_INPUT_FILTER.shiftbits),
    0x228: const(decode.IIR_INPUT_FILTER.minbw),
}
IIR_COEFFICIENTS = 0x8000
"""Offsets with bit 15 set write coefficient ``offset[11:2]`` (write-only: they read 0); the
overflow register (0x108) is the physics' (:meth:`..hardware.physics.board.Board.iir_overflow`)."""
IIR_COEFFICIENT_WORDS = STAGES * decode.IIR_WORDS_PER_BIQUAD


class NaAverager:
    """An IQ module's network-analyzer accumulators: a write of the frequency starts a series of
    ``averages`` cycles after ``sleep`` cycles; the sums are busy (bit 31 of the four words) until
    the series ends, then hold ``averages * 2**22 * (I + jQ)`` (62-bit two's complement), I + jQ
    the mean over the series' cycles, latched when it ends (see :meth:`ended`)."""

    def __init__(self) -> None:
        self.begin = 0
        self.end: int | None = None
        self.averages = 0
        self.sums: tuple[int, int] | None = (0, 0)

    def start(self, now: int, averages: int, sleep: int) -> None:
        self.begin = now + sleep
        self.end = self.begin + averages
        self.averages = averages
        self.sums = None

    def ended(self, now: int) -> tuple[int, int] | None:
        """The series (first cycle, cycles) if it has ended by cycle ``now`` and its mean is
        not latched yet (:meth:`latch`); None otherwise."""
        if self.sums is not None or self.end is None or now < self.end:
            return None
        return self.begin, self.averages

    def latch(self, mean: complex) -> None:
        """The series' mean I + jQ (V)."""
        self.sums = (round(self.averages * NA_SCALE * mean.real),
                     round(self.averages * NA_SCALE * mean.imag))

    def words(self, now: int) -> list[int]:
        """The four data words at cycle ``now`` (an ended series latched first)."""
        if self.sums is None:
            return [1 << 31] * 4
        words = []
        for total in self.sums:
            total &= (1 << 62) - 1
            words += [total & 0x7FFFFFFF, total >> 31 & 0x7FFFFFFF]
        return words


class Dsp:
    """The DSP module's registers and routing, wired to ``fpga``'s time and physics."""

    def __init__(self, fpga: Fpga) -> None:
        self.fpga = fpga
        self.input_select = [INPUT_RESET[n] for n in range(INPUT_SELECTS)]
        self.output_select = [0] * OUTPUT_SELECTS
        self.sync = (1 << SYNC_BITS) - 1
        self.pids = [RegisterFile(PID_TABLE) for _ in PIDS]
        self.iqs = [RegisterFile(table) for table in IQ_TABLES]
        self.averagers = [NaAverager() for _ in IQS]
        self._series_requested: list[int] = []
        """The IQ modules whose frequency the write being served wrote: their averagers start
        a series once the physics has taken the write up."""
        self.trig = Trig(fpga)
        self.iir = RegisterFile(IIR_TABLE)
        self.iir_coefficients = np.zeros(IIR_COEFFICIENT_WORDS, dtype=np.uint32)

    # -- decoded settings --------------------------------------------------------------------------

    def pid_settings(self, k: int) -> dict:
        r = self.pids[k]
        return decode.pid(self.input_select[k], self.output_select[k], bool(self.sync >> k & 1),
                          r.get(0x104), r.get(0x108), r.get(0x10C), r.get(0x120), r.get(0x124),
                          r.get(0x128), r.get(0x12C))

    def iq_settings(self, k: int) -> dict:
        r, n = self.iqs[k], IQS[k]
        return decode.iq(k, self.input_select[n], self.output_select[n], r.get(0x100),
                         r.get(0x104), r.get(0x108), r.get(0x10C), r.get(0x110), r.get(0x114),
                         r.get(0x118), r.get(0x120), r.get(0x124))

    def iir_settings(self) -> IirSettings:
        r = self.iir
        return decode.iir(self.input_select[IIR], self.output_select[IIR], r.get(IIR_LOOPS),
                          r.get(IIR_FLAGS), r.get(IIR_FILTER), self.iir_coefficients)

    # -- bus ---------------------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> np.ndarray:
        return np.array([self.read_word(offset + 4 * i) for i in range(length)], dtype=np.uint32)

    def write(self, offset: int, words: np.ndarray) -> None:
        self._latch_ended()  # the FPGA's sums hold what the settings until now gave
        touched: set[str] = set()
        for i, word in enumerate(words):
            touched |= self.write_word(offset + 4 * i, int(word))
        self.fpga.refresh(touched)
        now = self.fpga.time.cycles()  # not before the physics took up the write
        for k in self._series_requested:
            r = self.iqs[k]
            self.averagers[k].start(now, r.get(0x130), r.get(0x134))
        self._series_requested.clear()

    def read_word(self, offset: int) -> int:
        n, sub = offset // SUBMODULE_SPAN, offset % SUBMODULE_SPAN
        if sub == 0x0:
            return self.input_select[n] if n < INPUT_SELECTS else 0
        if sub == 0x4:
            return self.output_select[n] if n < OUTPUT_SELECTS else 0
        if sub == 0x8:
            return 0  # the DACs never saturate here: the physics clips the outputs instead
        if sub == 0xC:
            return self.sync
        if sub == 0x10:
            name = decode.DSP_NAMES[n]
            if n == TRIG:
                return self.trig.output()
            if name == "off":
                return 0
            volts = self.fpga.model.sample(name, self.fpga.time.now())
            return catalogue.VOLTS.word(volts)
        if n in PIDS:
            if sub == PID_IVAL:
                return decode.ival_word(self.fpga.model.ival(n, self.fpga.time.now()))
            return self.pids[n].get(sub)
        if n in IQS:
            if IQ_NA_DATA <= sub < IQ_NA_DATA + 16:
                return self._na_words(IQS.index(n))[(sub - IQ_NA_DATA) // 4]
            if sub == 0x100:
                return self.iqs[IQS.index(n)].get(sub) & ~1 | (self.sync >> n & 1)
            return self.iqs[IQS.index(n)].get(sub)
        if n == TRIG:
            return self.trig.read_word(sub)
        if n == IIR:
            if sub == IIR_OVERFLOW:
                return self.fpga.model.iir_overflow(self.fpga.time.now())
            return self.iir.get(sub)
        return 0

    def write_word(self, offset: int, value: int) -> set[str]:
        """Store one word; the catalogue modules whose settings it may change."""
        n, sub = offset // SUBMODULE_SPAN, offset % SUBMODULE_SPAN
        if sub == 0x0:
            if n < INPUT_SELECTS:
                self.input_select[n] = value & 0xF
            if n == TRIG:
                self.trig.settings_changed()
            return _module_of(n)
        if sub == 0x4:
            if n < OUTPUT_SELECTS:
                self.output_select[n] = value & 0x3
            return _module_of(n)
        if sub == 0xC:
            started = value & ~self.sync
            self.sync = value & ((1 << SYNC_BITS) - 1)
            now = self.fpga.time.now()
            for k, n in enumerate(IQS):
                if started >> n & 1:
                    self.fpga.model.restart_iq(k, now)
            return {f"pid{k}" for k in PIDS}
        if sub in (0x8, 0x10):
            return set()
        if n in PIDS:
            if sub == PID_IVAL:
                self.fpga.model.preset_ival(n, decode.ival_volts(value), self.fpga.time.now())
                return set()
            self.pids[n].set(sub, value)
            return {f"pid{n}"}
        if n in IQS:
            k = IQS.index(n)
            self.iqs[k].set(sub, value)
            if sub == IQ_FREQUENCY:
                self._series_requested.append(k)
            return {f"iq{k}"}
        if n == TRIG:
            self.trig.write_word(sub, value)
        elif n == IIR:
            if sub & IIR_COEFFICIENTS:
                index = sub >> 2 & 0x3FF
                if index < IIR_COEFFICIENT_WORDS:
                    self.iir_coefficients[index] = value
                return {"iir"}
            return {"iir"} if self.iir.set(sub, value) else set()
        return set()

    def _na_words(self, k: int) -> list[int]:
        self._latch_ended()
        return self.averagers[k].words(self.fpga.time.cycles())

    def _latch_ended(self) -> None:
        """Latch the mean of every averager whose series has ended (before any change of the
        settings it was taken with)."""
        now = self.fpga.time.cycles()
        for k, averager in enumerate(self.averagers):
            series = averager.ended(now)
            if series is None:
                continue
            begin, cycles = series
            averager.latch(self.fpga.model.iq_average(k, to_seconds(begin), to_seconds(cycles))
                           if cycles else 0j)


def _module_of(n: int) -> set[str]:
    """The catalogue module whose settings the routing of DSP module ``n`` belongs to."""
    if n in PIDS:
        return {f"pid{n}"}
    if n in IQS:
        return {f"iq{IQS.index(n)}"}
    if n in (8, 9):
        return {f"asg{n - 8}"}
    if n == IIR:
        return {"iir"}
    return set()
