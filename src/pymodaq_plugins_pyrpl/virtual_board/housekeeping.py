"""The housekeeping module (``red_pitaya_hk.v``, base 0x40000000): board id, DNA, the expansion
connector's digital pins and the LEDs."""
from __future__ import annotations

from typing import ClassVar

from .registers import Block, Reg, const

DNA = 0x0823456789ABCDE & ((1 << 57) - 1)
"""The 57-bit device DNA: the RTL's simulation value (every board has its own)."""


class Housekeeping(Block):
    """Registers of ``red_pitaya_hk.v``; the digital inputs read 0 (nothing is connected)."""

    TABLE: ClassVar[dict[int, Reg]] = {
        0x00: const(0x1),  # id: board type 1 (release 1)
        0x04: const(DNA & 0xFFFFFFFF),
        0x08: const(DNA >> 32),
        0x0C: Reg(1),  # digital_loop
        0x10: Reg(8),  # exp_p_dir
        0x14: Reg(8),  # exp_n_dir
        0x18: Reg(8),  # exp_p_out
        0x1C: Reg(8),  # exp_n_out
        0x20: const(0),  # exp_p_in
        0x24: const(0),  # exp_n_in
        0x30: Reg(8),  # LEDs
    }
