"""The signal generators (``red_pitaya_asg.v``, base 0x40200000): channel A (asg0) and B (asg1).

0x0 holds both channels' configuration: bits 2:0 channel A's trigger source, 12:4 its flags
{random, advanced trigger ×3, rgate, zero, rst, once, wrap}; bits 18:16 and 28:20 the same for B.
Channel A's registers follow at 0x4 (amplitude 13:0, offset 29:16), 0x8 (counter wrap, 30 bits),
0xC (start offset, 30 bits), 0x10 (step, 30 bits), 0x18/0x1C/0x20 (burst); channel B's at +0x20.
The tables (16384 × 14 bits) are at 0x10000 (A) and 0x20000 (B). A write to 0x0 with a channel's
bit 0 set fires its software trigger: a generator already running 'immediately' starts again at
its start phase.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import decode
from .registers import Reg, RegisterFile

if TYPE_CHECKING:
    from .fpga import Fpga

CONFIG = 0x0
CHANNEL_BITS = (0, 16)
"""Where each channel's 13 configuration bits start in 0x0."""
CHANNEL_REGISTERS = (0x00, 0x20)
"""Offset of each channel's registers (amplitude at 0x4 + this)."""
TABLES = (0x10000, 0x20000)
TABLE_BYTES = 4 * decode.TABLE_SIZE

_CHANNEL = {0x4: Reg(30, 0x2000, bits=0x3FFF3FFF), 0x8: Reg(30, (1 << 30) - 1), 0xC: Reg(30),
            0x10: Reg(30), 0x18: Reg(32), 0x1C: Reg(16), 0x20: Reg(32)}
"""One channel's registers at power-up (amplitude 0x2000 = 1 V, counter wrap 2**30 - 1)."""
TABLE = {CONFIG: Reg(32, 1 << 9 | 1 << 25, bits=0x1FF71FF7)} | {
    base + offset: reg for base in CHANNEL_REGISTERS for offset, reg in _CHANNEL.items()}
"""0x0 at power-up: both advanced triggers held in reset (bit 9 of each channel); bits 3, 13-15,
19 and 29-31 are not stored."""
CONFIG_MASK = 0x1FFF
"""A channel's 13 configuration bits."""


class Asg:
    """Both generators' registers and tables, wired to ``fpga``'s time and physics."""

    def __init__(self, fpga: Fpga) -> None:
        self.fpga = fpga
        self.regs = RegisterFile(TABLE)
        self.tables = [np.zeros(decode.TABLE_SIZE, dtype=np.uint32) for _ in TABLES]

    def settings(self, n: int) -> dict:
        """Catalogue settings of asg ``n``."""
        base, config = CHANNEL_REGISTERS[n], self.regs.get(CONFIG) >> CHANNEL_BITS[n] & CONFIG_MASK
        table = self.tables[n].astype(np.int64)
        table[table >= 2**13] -= 2**14
        return decode.asg(config, self.regs.get(base + 0x4), self.regs.get(base + 0x10),
                          self.regs.get(base + 0xC), self.regs.get(base + 0x18), table,
                          self.fpga.dsp.output_select[8 + n])

    def read(self, offset: int, length: int) -> np.ndarray:
        table = self._table_word(offset)
        last = self._table_word(offset + 4 * (length - 1))
        if table is not None and last is not None and last[0] == table[0]:
            n, index = table
            return self.tables[n][index:index + length].copy()
        out = np.zeros(length, dtype=np.uint32)
        for i in range(length):
            table = self._table_word(offset + 4 * i)
            if table is not None:
                n, index = table
                out[i] = self.tables[n][index]
            else:
                out[i] = self.regs.get(offset + 4 * i)
        return out

    def write(self, offset: int, words: np.ndarray) -> None:
        table = self._table_word(offset)
        last = self._table_word(offset + 4 * (len(words) - 1)) if len(words) else None
        if table is not None and last is not None and last[0] == table[0]:
            n, index = table  # PyRPL's whole-table write, in one piece
            self.tables[n][index:index + len(words)] = words & 0x3FFF
            self.fpga.refresh({f"asg{n}"})
            return
        for i, word in enumerate(words):
            self._write_word(offset + 4 * i, int(word))

    @staticmethod
    def _table_word(offset: int) -> tuple[int, int] | None:
        """(channel, sample index) of a table address, None for a register."""
        for n, start in enumerate(TABLES):
            if start <= offset < start + TABLE_BYTES:
                return n, (offset - start) // 4
        return None

    def _write_word(self, offset: int, value: int) -> None:
        table = self._table_word(offset)
        if table is not None:
            self.tables[table[0]][table[1]] = value & 0x3FFF
            self.fpga.refresh({f"asg{table[0]}"})
            return
        if offset != CONFIG:
            self.regs.set(offset, value)
            touched = {f"asg{n}" for n, base in enumerate(CHANNEL_REGISTERS)
                       if base < offset <= base + 0x20}
            self.fpga.refresh(touched)
            return
        running = [self.fpga.model.values[f"asg{n}"]["trigger_source"] == "immediately"
                   for n in range(2)]
        self.regs.set(offset, value)
        self.fpga.refresh({"asg0", "asg1"})
        now = self.fpga.time.now()
        for n, bit in enumerate(CHANNEL_BITS):
            if running[n] and value >> bit & 1 and self.settings(n)["trigger_source"] == \
                    "immediately":
                self.fpga.model.restart_asg(n, now)
