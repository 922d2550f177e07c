"""The analog mixed-signal module (``red_pitaya_ams.v``, base 0x40400000): the slow PWM outputs.

PWM 0 and 1 follow the DSP signals selected by ``pwm0``/``pwm1`` in the RTL; here they read back
the last value written, like PWM 2 and 3 (24 bits each).
"""
from __future__ import annotations

from typing import ClassVar

from .registers import Block, Reg


class Ams(Block):
    TABLE: ClassVar[dict[int, Reg]] = {0x20: Reg(24), 0x24: Reg(24), 0x28: Reg(24), 0x2C: Reg(24)}
