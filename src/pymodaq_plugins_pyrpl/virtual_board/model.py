"""The board's physics driven by its registers: the shared model
(:class:`..hardware.physics.board.Board`, the one behind the simulator backend) fed with the
module settings decoded from the register words (:mod:`.decode`), at the board's time.

The register blocks call :meth:`BoardModel.update` after every write with the settings of the
modules it touched; only the settings that changed reach the physics, at the time of the write,
exactly as the simulator backend applies a ``set``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..hardware import catalogue
from ..hardware.physics.board import Board
from ..hardware.physics.iir import IirSettings
from ..hardware.physics.pid import Recorder
from ..hardware.physics.plants import parse_plant
from ..hardware.physics.signals import Grid
from ..hardware.physics.triggers import find_trigger

logger = logging.getLogger(__name__)


class BoardModel:
    """The physics of one board (``plant`` between outputs and inputs, noise seeded by ``seed``).

    ``settings`` gives the power-up settings of the modules (catalogue names; the modules left out
    keep the catalogue's defaults). Every method takes the board time ``t`` (s since power-up) of
    the access; times never go back.
    """

    def __init__(self, plant: str, seed: int | None,
                 settings: Mapping[str, Mapping[str, Any]]) -> None:
        self.values: dict[str, dict[str, Any]] = {
            name: {k: list(v) if isinstance(v, list) else v for k, v in spec.defaults().items()}
            for name, spec in catalogue.MODULES.items()}
        for name, values in settings.items():
            self.values[name].update(values)
        self.board = Board(parse_plant(plant), self.values, seed)
        self.recorder: Recorder | None = None

    def sync(self, t: float) -> None:
        """Advance the PID integrators to ``t`` (recording their outputs across a scope window)."""
        self.board.pids.advance(t, self.recorder)

    def update(self, module: str, settings: Mapping[str, Any], t: float) -> None:
        """``module`` has the (decoded) ``settings`` from time ``t`` on: apply what changed."""
        state = self.values[module]
        changed = {k: v for k, v in settings.items() if state[k] != v}
        if changed:
            self._change(module, changed, t)

    def update_iir(self, settings: IirSettings, t: float) -> None:
        """The IIR filter has the (decoded) ``settings`` from time ``t`` on."""
        if settings != self.board.iir:
            self.sync(t)
            self.board.set_iir(settings, t)
            if self.recorder is not None:
                self.recorder.add(t, self.board.pids.outputs())

    def iir_overflow(self, t: float) -> int:
        """The IIR's overflow flags at ``t`` (register 0x108)."""
        self.sync(t)
        return self.board.iir_overflow()

    def preset_ival(self, n: int, volts: float, t: float) -> None:
        """Write PID ``n``'s integrator (a write to its 0x100)."""
        self._change(f"pid{n}", {"ival": volts}, t)

    def ival(self, n: int, t: float) -> float:
        """PID ``n``'s integrator at ``t`` (V)."""
        self.sync(t)
        return float(self.board.pids.ival[n])

    def restart_asg(self, n: int, t: float) -> None:
        """Software trigger of a running generator: it starts again at its start phase."""
        self._change(f"asg{n}", {"trigger_source": "off"}, t)
        self._change(f"asg{n}", {"trigger_source": "immediately"}, t)

    def restart_iq(self, n: int, t: float) -> None:
        """iq ``n``'s oscillator starts again at phase 0 (its sync bit set again)."""
        self.sync(t)
        self.board.restart_iq(n, t)
        if self.recorder is not None:
            self.recorder.add(t, self.board.pids.outputs())

    def _change(self, module: str, values: Mapping[str, Any], t: float) -> None:
        self.sync(t)
        self.board.change(module, values, t)
        if self.recorder is not None:
            self.recorder.add(t, self.board.pids.outputs())

    # -- readings ----------------------------------------------------------------------------------

    def sample(self, signal: str, t: float) -> float:
        """The bus signal ``signal`` at ``t`` (14-bit volts, with noise)."""
        self.sync(t)
        return self.board.sample([signal])[signal]

    def iq_average(self, n: int, start: float, duration: float) -> complex:
        """The mean ``I + jQ`` of iq ``n`` over ``duration`` s from ``start`` (V; a series of its
        network-analyzer averager, ended by now): the steady state and noise of
        :meth:`.Board.average_iq` and the transients of :meth:`.Board.iq_transient_mean`, with
        the PID outputs of ``start`` (or later, if they were advanced past it already)."""
        self.sync(start)
        return (self.board.average_iq(n, start, duration)
                + self.board.iq_transient_mean(n, start, duration))

    def trigger(self, cfg: Mapping[str, Any], start: float, t: float) -> float | None:
        """Time of the first trigger event of the scope settings ``cfg`` (catalogue names, see
        :func:`.decode.scope`) at or after ``start`` (searched at ``t`` on the settings of then);
        None if it never comes."""
        self.sync(t)
        return find_trigger(self.board, cfg, start)

    def record(self, start: float, stop: float, t: float) -> None:
        """From ``t`` on, record the PID outputs for a scope window [start, stop]."""
        self.sync(t)
        self.recorder = Recorder(start, stop)
        self.recorder.add(t, self.board.pids.outputs())

    def window(self, inputs: tuple[str, str], grid: Grid, t: float, averaged: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """The scope's two channels on ``grid`` (ending at or before ``t``), 14-bit volts, each
        sample averaging ``averaged`` FPGA-clock samples (``physics.board.Board.window``)."""
        self.sync(t)
        return self.board.window(inputs, grid, self.recorder, averaged)
