"""The DSP trigger module (``red_pitaya_trigger_block.v``, DSP module 3 at 0x40330000).

Armed by a write to 0x100 (or continuously with ``auto_rearm``, 0x104 bit 0), it fires at the first
rising and/or falling edge (0x108 bits 0/1) of its input through the threshold (0x118) with the
hysteresis (0x11C) and disarms; it then outputs (0x10C = 1) the phase of asg0's table pointer at
that instant plus ``phase_offset`` (0x110; absolute value with 0x104 bit 1), as a 14-bit word, or
(0x10C = 0) a one-cycle TTL pulse, which reads 0. The edge is searched on noise-free signals
(``physics.triggers``) from the later of the arm and the last settings change.

Not modelled: the input filter (0x120), the trigger output towards the scope (source 'dsp'), and
the ``trig`` signal on the DSP bus seen by other modules (it reads 0 there).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..hardware import catalogue
from . import decode
from .registers import Reg, RegisterFile, const
from .timebase import to_cycles, to_seconds

if TYPE_CHECKING:
    from .fpga import Fpga

ARMED, FLAGS, SOURCE, OUTPUT, PHASE_OFFSET = 0x100, 0x104, 0x108, 0x10C, 0x110
THRESHOLD, HYSTERESIS, FILTER = 0x118, 0x11C, 0x120
COUNTER, TIMESTAMP = 0x15C, 0x164
AUTO_REARM, PHASE_ABS = 1 << 0, 1 << 1
POSITIVE, NEGATIVE = 1 << 0, 1 << 1
OUTPUT_PHASE = 1
PHASE_BITS = 14
_STAGES, _SHIFTBITS, _MINBW = 1, 5, 1

TABLE = {
    FLAGS: Reg(2), SOURCE: Reg(2), OUTPUT: Reg(4), PHASE_OFFSET: Reg(14), THRESHOLD: Reg(14),
    HYSTERESIS: Reg(14, 20), FILTER: Reg(32),
    0x220: const(_STAGES), 0x224: const(_SHIFTBITS), 0x228: const(_MINBW),
}
SEARCH_DURATION = catalogue.SCOPE_DURATIONS[0]
"""Resolution of the edge search: the scope's finest grid (8 ns)."""
TRIGGER_LATENCY = 3
"""Cycles from the input crossing the threshold to the trigger (Schmitt register, edge pulse,
trigger register)."""
PHASE_LATENCY = 2
"""Cycles from the crossing to the asg0 phase the trigger records (one register behind)."""


class Trig:
    """The trigger module's registers and its one trigger event, wired to ``fpga``."""

    def __init__(self, fpga: Fpga) -> None:
        self.fpga = fpga
        self.regs = RegisterFile(TABLE)
        self._armed_at: int | None = None  # cycle of the last arm
        self._changed_at = 0  # cycle of the last settings change
        self._changes = 0  # settings changes so far
        self._event: tuple[tuple[int, int], int] | None = None  # ((arm, changes), trigger or -1)
        self._phase = 0
        self._timestamp = 0

    def settings_changed(self) -> None:
        """The signals or the trigger's settings changed: a trigger still to come is searched
        again."""
        self._changed_at = self.fpga.time.cycles()
        self._changes += 1

    def read_word(self, offset: int) -> int:
        now = self.fpga.time.cycles()
        if offset == ARMED:
            return int(self._armed(now))
        if offset in (COUNTER, COUNTER + 4):
            return now >> 32 * (offset == COUNTER + 4) & 0xFFFFFFFF
        if offset in (TIMESTAMP, TIMESTAMP + 4):
            self._armed(now)
            return self._timestamp >> 32 * (offset == TIMESTAMP + 4) & 0xFFFFFFFF
        return self.regs.get(offset)

    def write_word(self, offset: int, value: int) -> None:
        now = self.fpga.time.cycles()
        if offset == ARMED:
            self._armed_at = now
            self._changes += 1  # a new search even within the same cycle
            return
        was_auto = self.regs.get(FLAGS) & AUTO_REARM
        self.regs.set(offset, value)
        if offset == FLAGS and was_auto and not value & AUTO_REARM:
            self._armed_at = now  # it was held armed: armed from now on
        self.settings_changed()

    def output(self) -> int:
        """The module's output on the bus (14-bit word): the phase of the last trigger or 0."""
        self._armed(self.fpga.time.cycles())
        return self._phase if self.regs.get(OUTPUT) == OUTPUT_PHASE else 0

    def _armed(self, now: int) -> bool:
        """Whether the module is armed at cycle ``now``; records the trigger once it has passed."""
        if self.regs.get(FLAGS) & AUTO_REARM:
            return True
        if self._armed_at is None:
            return False
        key = (self._armed_at, self._changes)
        if self._event is None or self._event[0] != key:
            self._event = (key, self._search(max(self._armed_at, self._changed_at)))
        trigger = self._event[1]
        if trigger < 0 or now < trigger:
            return True
        self._armed_at = None
        self._timestamp = trigger
        self._phase = self._phase_at(trigger - TRIGGER_LATENCY + PHASE_LATENCY)
        return False

    def _search(self, start: int) -> int:
        """Cycle of the first qualifying edge at or after ``start``, -1 if none comes."""
        sources = self.regs.get(SOURCE)
        name = decode.signal(self.fpga.dsp.input_select[3])
        found = []
        for bit, edge in ((POSITIVE, "ch1_positive_edge"), (NEGATIVE, "ch1_negative_edge")):
            if sources & bit:
                cfg = {"trigger_source": edge, "input1": name, "input2": name,
                       "threshold": catalogue.VOLTS.value(self.regs.get(THRESHOLD)),
                       "hysteresis": catalogue.VOLTS.value(self.regs.get(HYSTERESIS)),
                       "duration": SEARCH_DURATION}
                t = self.fpga.model.trigger(cfg, to_seconds(start), self.fpga.time.now())
                if t is not None:
                    found.append(max(to_cycles(t), start) + TRIGGER_LATENCY)
        return min(found) if found else -1

    def _phase_at(self, cycle: int) -> int:
        """asg0's table pointer at ``cycle`` plus the phase offset (14 bits, absolute if asked)."""
        asg = self.fpga.model.board.asgs[0]
        cycles = asg.phase.at(to_seconds(cycle)) if asg.running else 0.0
        word = (int(cycles * 2**PHASE_BITS) + self.regs.get(PHASE_OFFSET)) % 2**PHASE_BITS
        if self.regs.get(FLAGS) & PHASE_ABS and word >> (PHASE_BITS - 1):
            word = -word % 2**PHASE_BITS
        return word
