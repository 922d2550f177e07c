"""Register storage with the FPGA's widths: the building block of every module of the register map.

A :class:`Reg` describes one 32-bit bus register as the RTL declares it: the number of bits kept
(a write keeps the low ``width`` bits; a read returns them zero-extended, whatever the register
holds as a signed quantity), its reset value, and whether it is a constant (writes ignored).
Offsets not in a table read 0 and ignore writes, as the RTL's ``default`` branches do.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Reg:
    """One register: ``width`` bits, ``reset`` value at power-up, ``const`` if read-only; ``bits``
    replaces the low ``width`` bits by the bits actually stored when they are not contiguous."""

    width: int = 32
    reset: int = 0
    const: bool = False
    bits: int | None = None

    @property
    def mask(self) -> int:
        """The bits stored (and read back) of a written word."""
        return self.bits if self.bits is not None else (1 << self.width) - 1


def const(value: int) -> Reg:
    """A constant register (a module parameter such as a filter's number of stages)."""
    return Reg(32, value, const=True)


class RegisterFile:
    """The values of a table of registers, keyed by byte offset within their module."""

    def __init__(self, table: Mapping[int, Reg]) -> None:
        self.table = dict(table)
        self._values: dict[int, int] = {}
        self.reset()

    def reset(self) -> None:
        """Every register back to its reset value."""
        self._values = {offset: reg.reset & reg.mask for offset, reg in self.table.items()}

    def get(self, offset: int) -> int:
        """The zero-extended value at ``offset`` (0 for an offset not in the table)."""
        return self._values.get(offset, 0)

    def set(self, offset: int, value: int) -> bool:
        """Store the low bits of ``value`` at ``offset``; False (nothing stored) for a constant or
        an offset not in the table."""
        reg = self.table.get(offset)
        if reg is None or reg.const:
            return False
        self._values[offset] = int(value) & reg.mask
        return True


class Block:
    """A module of the bus: word-by-word reads and writes on a :class:`RegisterFile`.

    Subclasses compute registers that change by themselves (``read_word``) and react to writes
    (``write_word``); bulk areas (the scope's buffers, the ASG tables) override ``read``/``write``.
    Offsets are byte offsets within the block.
    """

    TABLE: ClassVar[Mapping[int, Reg]] = {}

    def __init__(self) -> None:
        self.regs = RegisterFile(self.TABLE)

    def reset(self) -> None:
        self.regs.reset()

    def read(self, offset: int, length: int) -> np.ndarray:
        """``length`` words from ``offset``."""
        return np.array([self.read_word(offset + 4 * i) for i in range(length)], dtype=np.uint32)

    def write(self, offset: int, words: np.ndarray) -> None:
        """Write ``words`` from ``offset``, one register after the other."""
        for i, word in enumerate(words):
            self.write_word(offset + 4 * i, int(word))

    def read_word(self, offset: int) -> int:
        return self.regs.get(offset)

    def write_word(self, offset: int, value: int) -> None:
        self.regs.set(offset, value)
