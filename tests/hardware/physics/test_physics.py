"""The physics package (hardware/physics) on its own: no backend, no Qt, no PyMoDAQ behind it, and
a Board driven directly from module settings and times, as a register-level board would."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.physics.board import Board
from pymodaq_plugins_pyrpl.hardware.physics.plants import parse_plant
from pymodaq_plugins_pyrpl.hardware.physics.signals import Grid


def test_physics_imports_neither_a_backend_nor_qt_nor_pymodaq() -> None:
    code = ("import sys, pkgutil, importlib\n"
            "import pymodaq_plugins_pyrpl.hardware.physics as physics\n"
            "for m in pkgutil.iter_modules(physics.__path__):\n"
            "    importlib.import_module(physics.__name__ + '.' + m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pymodaq', 'pymodaq_utils',\n"
            "       'PyQt5', 'PyQt6', 'PySide6', 'qtpy', 'pyrpl')\n"
            "       or m.startswith(('pymodaq_plugins_pyrpl.hardware.backends',\n"
            "                        'pymodaq_plugins_pyrpl.hardware.server'))]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, env={**os.environ}, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def defaults() -> dict[str, dict]:
    return {name: {k: list(v) if isinstance(v, list) else v for k, v in spec.defaults().items()}
            for name, spec in catalogue.MODULES.items()}


def test_a_board_driven_without_the_backend_shows_its_physics() -> None:
    """An ASG sine routed to out1 reaches in1 through the cable; iq0 demodulating in1 at the
    ASG's frequency reads its amplitude (the filter settled long ago)."""
    board = Board(parse_plant("loopback:noise=0"), defaults(), seed=1)
    board.change("asg0", {"waveform": "sin", "frequency": 1e5, "amplitude": 0.5,
                          "output_direct": "out1", "trigger_source": "immediately"}, 0.0)
    board.change("iq0", {"input": "in1", "frequency": 1e5, "bandwidth": [1e3, 1e3]}, 0.0)
    t = 1.0
    board.pids.advance(t, None)
    grid = Grid.uniform(t, 8e-9, 1250)  # one period of 100 kHz
    in1 = board.trace("in1", grid, board.context(None))
    assert abs(np.max(in1) - 0.5) < 2e-3 and abs(np.min(in1) + 0.5) < 2e-3
    assert abs(abs(board.read_iq(0, t)) - 0.5) < 2e-3


def test_iq_readings_follow_every_change_along_a_sweep() -> None:
    """A network-analyzer sweep (iq0 exciting out1, demodulating in1) with a PID and a second IQ
    module in the chain: after each change, once the filters settled, both IQ modules read what
    a board given the same settings from the start reads (the tones computed once per settings
    are never reused across a change)."""
    steps = [("iq0", {"input": "in1", "output_direct": "out1", "amplitude": 0.2,
                      "bandwidth": [1e3, 1e3], "frequency": 1e4}),
             ("iq1", {"input": "in2", "bandwidth": [1e3, 1e3], "frequency": 1e4}),
             *(("iq0", {"frequency": f}) for f in (2e4, 5e4, 2e5)),
             ("pid0", {"input": "in1", "output_direct": "out2", "p": 0.5}),
             ("iq1", {"frequency": 2e5}),
             ("iq0", {"frequency": 3e5}), ("iq1", {"frequency": 3e5}),
             ("pid0", {"p": -0.25}),
             ("iq0", {"amplitude": 0.4})]
    board = Board(parse_plant("loopback:noise=0"), defaults(), seed=1)
    settings = defaults()
    for k, (module, values) in enumerate(steps):
        t = 0.1 * k
        board.change(module, values, t)
        settings[module].update(values)
        fresh = Board(parse_plant("loopback:noise=0"), defaults(), seed=1)
        for name in ("iq0", "iq1", "pid0"):
            fresh.change(name, settings[name], 0.0)
        board.pids.advance(t + 0.05, None)
        fresh.pids.advance(0.05, None)
        assert board.read_iq(0, t + 0.05) == pytest.approx(fresh.read_iq(0, 0.05), abs=1e-9), k
        assert abs(board.read_iq(1, t + 0.05)) == pytest.approx(abs(fresh.read_iq(1, 0.05)),
                                                                abs=1e-9), k
