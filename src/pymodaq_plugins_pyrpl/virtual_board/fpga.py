"""The FPGA's bus: which module answers an address (``red_pitaya_top.v``: module select =
``addr[22:20]`` from 0x40000000), and the modules wired to one time base and one physics.

======  ==========  =========================================================
select  base        module
======  ==========  =========================================================
0       0x40000000  housekeeping (:mod:`.housekeeping`)
1       0x40100000  scope (:mod:`.scope`)
2       0x40200000  signal generators asg0/asg1 (:mod:`.asg`)
3       0x40300000  DSP: pid0-2, trig, iir, iq0-2 and the routing (:mod:`.dsp`)
4       0x40400000  analog mixed signals, PWM (:mod:`.ams`)
======  ==========  =========================================================

Other addresses read 0 and ignore writes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from .ams import Ams
from .asg import Asg
from .dsp import Dsp
from .housekeeping import Housekeeping
from .model import BoardModel
from .scope import Scope
from .timebase import TimeBase

BASE = 0x40000000
MODULE_SPAN = 0x100000
"""Bytes of address space per module (``addr[19:0]``)."""
PHYSICS_MODULES = ("asg0", "asg1", "pid0", "pid1", "pid2", "iq0", "iq1", "iq2")
"""The catalogue modules whose settings drive the physics."""


class Module(Protocol):
    """What the bus asks of a module: words in and out at byte offsets within it."""

    def read(self, offset: int, length: int) -> np.ndarray: ...

    def write(self, offset: int, words: np.ndarray) -> None: ...


class Fpga:
    """The register map of PyRPL's bitfile on one board, its time base and its physics.

    Not thread-safe (the board serializes requests). ``plant`` and ``seed`` are the physics'
    (:class:`.model.BoardModel`), ``clock`` the time base's.
    """

    def __init__(self, plant: str, seed: int | None, clock: Callable[[], float]) -> None:
        self.time = TimeBase(clock)
        self._plant = plant
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        """Power-up: every register at its reset value, the time base and the physics restarted."""
        self.time.power_up()
        self.dsp = Dsp(self)
        self.asg = Asg(self)
        self.scope = Scope(self)
        self.blocks: dict[int, Module] = {0: Housekeeping(), 1: self.scope, 2: self.asg,
                                          3: self.dsp, 4: Ams(self)}
        self.model = BoardModel(self._plant, self._seed,
                                {name: self.settings(name) for name in PHYSICS_MODULES})

    def settings(self, module: str) -> dict[str, Any]:
        """The catalogue settings of ``module`` (asg0/1, pid0-2, iq0-2) its registers hold."""
        n = int(module[-1])
        if module.startswith("asg"):
            return self.asg.settings(n)
        if module.startswith("pid"):
            return self.dsp.pid_settings(n)
        return self.dsp.iq_settings(n)

    def refresh(self, modules: Iterable[str]) -> None:
        """Registers of ``modules`` (catalogue names, and ``iir``) were written: the physics takes
        up their settings now."""
        t = self.time.now()
        for module in sorted(modules):
            if module == "iir":  # not a catalogue module: settings of its own
                self.model.update_iir(self.dsp.iir_settings(), t)
            else:
                self.model.update(module, self.settings(module), t)
        if modules:
            self.scope.settings_changed()
            self.dsp.trig.settings_changed()

    def read(self, address: int, length: int) -> np.ndarray:
        """``length`` words from byte ``address``, as uint32."""
        out = np.zeros(length, dtype=np.uint32)
        for start, count, block, offset in self._spans(address, length):
            if block is not None:
                out[start:start + count] = block.read(offset, count)
        return out

    def write(self, address: int, words: np.ndarray) -> None:
        """Write ``words`` from byte ``address``."""
        for start, count, block, offset in self._spans(address, len(words)):
            if block is not None:
                block.write(offset, words[start:start + count])

    def _spans(self, address: int, length: int) -> list[tuple[int, int, Module | None, int]]:
        """Split a request at module boundaries: (first word, words, block, offset in block)."""
        spans = []
        i = 0
        while i < length:
            a = (address + 4 * i) & 0xFFFFFFFF
            offset = a % MODULE_SPAN
            count = min(length - i, (MODULE_SPAN - offset) // 4)
            select = (a - BASE) // MODULE_SPAN if BASE <= a < BASE + 8 * MODULE_SPAN else None
            spans.append((i, count, self.blocks.get(select) if select is not None else None,
                          offset))
            i += count
        return spans
