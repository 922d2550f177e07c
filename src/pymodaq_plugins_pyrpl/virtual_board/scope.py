"""The scope (``red_pitaya_scope.v``, base 0x40100000), computed from the time base when read.

The state machine, as the RTL has it: arming (0x0 bit 0) starts writing one sample per
``decimation`` cycles into two 16384-sample ring buffers, from the current write pointer; a reset
(0x0 bit 1) zeroes the pointers and clears the trigger source. A trigger is taken only once
``pretrig_ok``: more than ``16384 - delay`` samples written since the arm, or ``delay >= 16384``
(0x10). It stores the write pointer (0x1C) and the time (0x164), and the scope writes ``delay`` more
samples, then stops (0x0 bit 0 clears, unless bit 3 'keep' is set) and clears the trigger source.
Sources (0x4): 1 software (fires at the write of 1 itself), 2-5 ch1/ch2 rising/falling edges with
the threshold (0x8) and hysteresis (0x20), 8/9 the period starts of asg0/asg1; 0 (off), 6/7
(external) and 10 (dsp) never fire. While armed and not triggered the buffers roll.

Nothing is stored as samples: the buffers are computed when read, from the shared physics, for the
samples written by then (cached once the acquisition is over). With averaging (0x28) on, a sample
is the mean of ``decimation`` clock cycles as far as the white noises go (``physics.signals.
Context.averaged``; the signals themselves are picked, their boxcar filtering is not modelled); a trigger is searched when it becomes possible and again whenever
settings change before it comes (on noise-free signals, see ``physics.triggers``); addresses not
yet written since the arm read the samples last read out
(0 at power-up).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..hardware import catalogue
from ..hardware.physics.signals import Grid
from . import decode
from .registers import Reg, RegisterFile
from .timebase import to_cycles, to_seconds

if TYPE_CHECKING:
    from .fpga import Fpga

SAMPLES = catalogue.SCOPE_SAMPLES
CONTROL, SOURCE, THRESHOLD, DELAY, DECIMATION = 0x0, 0x4, 0x8, 0x10, 0x14
WRITE_POINTER, TRIGGER_POINTER, HYSTERESIS, AVERAGE, SINCE_ARM = 0x18, 0x1C, 0x20, 0x28, 0x2C
DEBOUNCE = 0x90
RAW_IN1, RAW_IN2 = 0x154, 0x158
COUNTER, TIMESTAMP, PRETRIG_OK = 0x15C, 0x164, 0x16C
DATA = (0x10000, 0x20000)
DATA_SPAN = 4 * SAMPLES
"""Bytes of each channel's buffer (0x10000: ``20'h1????`` and ``20'h2????`` in the RTL)."""
ARM, RESET, TRIGGERED, KEEP = 1 << 0, 1 << 1, 1 << 2, 1 << 3
SOFTWARE = 1
SEARCHED = (2, 3, 4, 5, 8, 9)
"""Trigger sources searched in the signals: ch1/ch2 edges and the generators' period starts."""

TABLE = {THRESHOLD: Reg(14), DELAY: Reg(32, SAMPLES // 2), DECIMATION: Reg(17, 0x2000),
         HYSTERESIS: Reg(14, 20), AVERAGE: Reg(1), DEBOUNCE: Reg(20, 62500)}


@dataclass
class _Acquisition:
    """Writing since ``arm`` (cycle) from write address ``first``, one sample per ``decimation``
    cycles; ``trigger`` (cycle) and ``written_before`` (samples before it) once known; ``total``
    samples written in all (None: until re-armed)."""

    arm: int
    first: int
    decimation: int
    inputs: tuple[str, str]
    trigger: int | None = None
    written_before: int = 0
    total: int | None = None

    def written(self, now: int) -> int:
        """Samples written by cycle ``now``."""
        count = max(0, (now - self.arm) // self.decimation)
        return count if self.total is None else min(count, self.total)

    def triggered(self, now: int) -> bool:
        return self.trigger is not None and now >= self.trigger

    def over(self, now: int) -> bool:
        return self.total is not None and self.written(now) >= self.total

    def sample_time(self, k: int | np.ndarray) -> float | np.ndarray:
        """Board time (s) of sample ``k`` (0: the first after the arm)."""
        return to_seconds(self.arm + (np.asarray(k) + 1) * self.decimation)


class Scope:
    """The scope's registers and buffers, wired to ``fpga``'s time and physics."""

    def __init__(self, fpga: Fpga) -> None:
        self.fpga = fpga
        self.regs = RegisterFile(TABLE)
        self.keep = False
        self.source = 0
        self._acq: _Acquisition | None = None
        self._next_address = 0  # write address of the next sample when not writing
        self._last_written = 0  # 0x18 when not writing
        self._trigger_pointer = 0
        self._timestamp = 0
        self._buffers = np.zeros((2, SAMPLES), dtype=np.uint32)
        self._cache_key: tuple[int, int] | None = None
        self._acquisitions = 0

    # -- bus ---------------------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> np.ndarray:
        for channel, start in enumerate(DATA):
            if start <= offset and offset + 4 * length <= start + DATA_SPAN:
                index = (offset - start) // 4
                return self._buffer(channel)[index:index + length].copy()
        return np.array([self.read_word(offset + 4 * i) for i in range(length)], dtype=np.uint32)

    def write(self, offset: int, words: np.ndarray) -> None:
        for i, word in enumerate(words):
            self.write_word(offset + 4 * i, int(word))

    def read_word(self, offset: int) -> int:
        for channel, start in enumerate(DATA):
            if start <= offset < start + DATA_SPAN:
                return int(self._buffer(channel)[(offset - start) // 4])
        now = self.fpga.time.cycles()
        acq = self._acq
        if offset == CONTROL:
            writing = acq is not None and (self.keep or not acq.over(now))
            running = acq is not None and acq.triggered(now) and not acq.over(now)
            return int(writing) | TRIGGERED * running | KEEP * self.keep
        if offset == SOURCE:
            return 0 if acq is not None and acq.triggered(now) and acq.over(now) else self.source
        if offset == WRITE_POINTER:
            if acq is None or not acq.written(now):
                return self._last_written
            return (acq.first + acq.written(now) - 1) % SAMPLES
        if offset == TRIGGER_POINTER:
            if acq is not None and acq.triggered(now):
                return (acq.first + acq.written_before - 1) % SAMPLES
            return self._trigger_pointer
        if offset == SINCE_ARM:
            return min(self._since_arm(now), 0xFFFFFFFF)
        if offset in (RAW_IN1, RAW_IN2):
            name = decode.signal(self.fpga.dsp.input_select[8 + (offset == RAW_IN2)])
            return catalogue.VOLTS.word(self.fpga.model.sample(name, self.fpga.time.now()))
        if offset in (COUNTER, COUNTER + 4):
            return now >> 32 * (offset == COUNTER + 4) & 0xFFFFFFFF
        if offset in (TIMESTAMP, TIMESTAMP + 4):
            stamp = acq.trigger if acq is not None and acq.triggered(now) else self._timestamp
            return stamp >> 32 * (offset == TIMESTAMP + 4) & 0xFFFFFFFF
        if offset == PRETRIG_OK:
            return int(self._pretrig_ok(now))
        return self.regs.get(offset)

    def write_word(self, offset: int, value: int) -> None:
        now = self.fpga.time.cycles()
        if offset == CONTROL:
            self.keep = bool(value & KEEP)
            if value & RESET:
                self._reset(now)
            if value & ARM:
                self._arm(now)
        elif offset == SOURCE:
            self.source = value & 0xF
            self._source_written(now)
        else:
            self.regs.set(offset, value)
            if offset in (THRESHOLD, HYSTERESIS):
                self.settings_changed()

    def settings_changed(self) -> None:
        """The signals or the trigger settings changed: a trigger still to come is searched again
        on the new settings (one already passed stays)."""
        now = self.fpga.time.cycles()
        acq = self._acq
        if acq is None or self.source not in SEARCHED or acq.triggered(now) or acq.over(now):
            return
        acq.trigger, acq.written_before, acq.total = None, 0, None
        self._search(now)

    # -- state machine -----------------------------------------------------------------------------

    def _freeze(self, now: int) -> None:
        """Remember the pointers and trigger of the acquisition so far (before a reset/arm)."""
        acq = self._acq
        if acq is None:
            return
        written = acq.written(now)
        if written:
            self._last_written = (acq.first + written - 1) % SAMPLES
        self._next_address = (acq.first + written) % SAMPLES
        if acq.triggered(now):
            self._trigger_pointer = (acq.first + acq.written_before - 1) % SAMPLES
            self._timestamp = acq.trigger

    def _reset(self, now: int) -> None:
        self._freeze(now)
        self._acq = None
        self._next_address = self._last_written = self._trigger_pointer = 0
        self._timestamp = now
        self.source = 0

    def _arm(self, now: int) -> None:
        self._freeze(now)
        dsp = self.fpga.dsp
        inputs = (decode.signal(dsp.input_select[8]), decode.signal(dsp.input_select[9]))
        self._acquisitions += 1
        self._acq = _Acquisition(now, self._next_address, max(self.regs.get(DECIMATION), 1),
                                 inputs)
        if self.source in SEARCHED:
            self._search(now)

    def _source_written(self, now: int) -> None:
        acq = self._acq
        if acq is None or acq.trigger is not None or acq.over(now):
            return
        if self.source == SOFTWARE:
            if self._pretrig_ok(now):
                self._triggered_at(now, now)
        elif self.source in SEARCHED:
            self._search(now)

    def _search(self, now: int) -> None:
        """Find when the trigger of the current source comes (once it is allowed to)."""
        acq = self._acq
        assert acq is not None
        delay = self.regs.get(DELAY)
        start = now
        if delay < SAMPLES:  # pretrig_ok needs more than SAMPLES - delay samples first
            start = max(now, acq.arm + (SAMPLES - delay + 1) * acq.decimation)
        dsp = self.fpga.dsp
        cfg = decode.scope(dsp.input_select[8], dsp.input_select[9], self.source,
                           self.regs.get(THRESHOLD), self.regs.get(HYSTERESIS), acq.decimation)
        t = self.fpga.model.trigger(cfg, to_seconds(start), self.fpga.time.now())
        if t is not None:
            self._triggered_at(max(to_cycles(t), start), now)

    def _triggered_at(self, trigger: int, now: int) -> None:
        acq = self._acq
        assert acq is not None
        acq.trigger = trigger
        acq.written_before = max(0, (trigger - acq.arm) // acq.decimation)
        acq.total = acq.written_before + self.regs.get(DELAY)
        if self.keep:
            acq.total = None
            return
        first = max(0, acq.total - SAMPLES)
        self.fpga.model.record(float(acq.sample_time(first)),
                               float(acq.sample_time(acq.total - 1)), self.fpga.time.now())

    def _since_arm(self, now: int) -> int:
        """0x2C: samples written since the arm before the trigger."""
        acq = self._acq
        if acq is None:
            return 0
        written = acq.written(now)
        return min(written, acq.written_before) if acq.triggered(now) else written

    def _pretrig_ok(self, now: int) -> bool:
        delay = self.regs.get(DELAY)
        return delay >= SAMPLES or self._since_arm(now) > SAMPLES - delay

    # -- buffers -----------------------------------------------------------------------------------

    def _buffer(self, channel: int) -> np.ndarray:
        """Channel ``channel``'s buffer now: the samples written since the arm over the older
        ones."""
        acq = self._acq
        if acq is None:
            return self._buffers[channel]
        now = self.fpga.time.cycles()
        written = acq.written(now)
        key = (self._acquisitions, written)
        if written and key != self._cache_key:
            ks = np.arange(max(0, written - SAMPLES), written)
            grid = Grid.uniform(float(acq.sample_time(ks[0])), to_seconds(acq.decimation),
                                len(ks))
            averaged = acq.decimation if self.regs.get(AVERAGE) else 1
            volts = self.fpga.model.window(acq.inputs, grid, self.fpga.time.now(), averaged)
            addresses = (acq.first + ks) % SAMPLES
            for ch in (0, 1):
                self._buffers[ch][addresses] = decode.bus_words(volts[ch])
            self._cache_key = key
        return self._buffers[channel]
