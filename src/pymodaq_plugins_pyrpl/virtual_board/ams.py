"""The analog mixed-signal module (``red_pitaya_ams.v``, base 0x40400000): the slow PWM outputs.

PWM 0 and 1 (0x20, 0x24; PyRPL's ``ams.dac0``/``dac1``) read the 24-bit PWM configuration the RTL
derives from the DSP signals selected by the inputs of DSP modules 10 and 11 (PyRPL's ``pwm0`` and
``pwm1``; none at power-up: 0 V); writes to them are ignored, as in the RTL. PWM 2 and 3 (0x28,
0x2C) hold what was written (24 bits).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..hardware import catalogue
from . import decode
from .registers import Block, Reg

if TYPE_CHECKING:
    from .fpga import Fpga

PWM_SELECTS = {0x20: 10, 0x24: 11}
"""The DSP module whose input select feeds each derived PWM register."""


def pwm_config(sample: int) -> int:
    """The RTL's 24-bit PWM configuration for a 14-bit signal word: the inverted sign and bits
    12:6 as the duty cycle, bits 5:2 spread over 15 sub-cycles."""
    b3, b2, b1, b0 = (sample >> 5 & 1, sample >> 4 & 1, sample >> 3 & 1, sample >> 2 & 1)
    spread = (b3, b2, b3, b1, b3, b2, b3, b0, b3, b2, b3, b1, b3, b2, b3)
    low = 0
    for bit in spread:
        low = low << 1 | bit
    return (~sample >> 13 & 1) << 23 | (sample >> 6 & 0x7F) << 16 | low


class Ams(Block):
    TABLE: ClassVar[dict[int, Reg]] = {0x28: Reg(24), 0x2C: Reg(24)}

    def __init__(self, fpga: Fpga) -> None:
        super().__init__()
        self.fpga = fpga

    def read_word(self, offset: int) -> int:
        if offset in PWM_SELECTS:
            name = decode.signal(self.fpga.dsp.input_select[PWM_SELECTS[offset]])
            if name == "off":
                return pwm_config(0)
            volts = self.fpga.model.sample(name, self.fpga.time.now())
            return pwm_config(catalogue.VOLTS.word(volts))
        return super().read_word(offset)
