"""Run as a script (tests/test_experiments.py runs it in a subprocess, so that a Dashboard frozen at
quit fails the test instead of hanging the suite):

    python tests/helpers/scripts/dashboard_quit.py PORT DETECTOR[,DETECTOR...] [PORT DETECTORS ...]

For each (port, detectors) pair: a fresh headless Dashboard loads the shipped experiment
``pyrpl_demo`` on the simulated board's server auto-started on PORT, the named detectors grab
continuously until each has delivered frames, and the Dashboard quits while they still grab. Prints
one JSON line per pair: ``{"detectors", "frames", "quit_s", "terminated", "server_pid"}``;
``terminated`` lists PyMoDAQ's warnings about a worker thread it had to terminate. The environment
(isolated folders) comes from the calling test.

Each stage of a pair (load, init, grab, quit) and the process's exit are announced on stderr as
they begin (``STAGE time scenario: stage``); a stage still going after STALL_S is a freeze: the stacks of all threads are written to
stderr and the process exits with status 1, so a failing test names the stage and the blocking call.
"""
from __future__ import annotations

import faulthandler
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

FRAMES = 3
"""Frames each grabbing detector delivers before the Dashboard quits."""
GROUP = "pyrpl"
STALL_S = 75.0
"""A stage lasting longer than this is frozen (its longest wait for a condition is 60 s)."""


def stage(scenario: str, name: str) -> None:
    """Announce on stderr that stage ``name`` of ``scenario`` begins; STALL_S later, unless the
    next stage has begun, the stacks of all threads are dumped there and the process exits."""
    print(f"STAGE {time.strftime('%H:%M:%S')} {scenario}: {name}", file=sys.stderr, flush=True)
    faulthandler.dump_traceback_later(STALL_S, exit=True)


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    from qtpy import QtCore, QtWidgets

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        QtWidgets.QApplication.processEvents(QtCore.QEventLoop.AllEvents, 50)


def default_port(port: int) -> None:
    """Every plugin class of the experiment defaults to ``port`` and the simulated board (an
    experiment stores no plugin settings)."""
    from pymodaq_plugins_pyrpl.daq_move_plugins import (
        daq_move_PyRPL_ASG_TCP,
        daq_move_PyRPL_PID_TCP,
    )
    from pymodaq_plugins_pyrpl.daq_viewer_plugins.plugins_0D import (
        daq_0Dviewer_PyRPL_IQ_TCP,
        daq_0Dviewer_PyRPL_Sampler_TCP,
    )
    from pymodaq_plugins_pyrpl.daq_viewer_plugins.plugins_1D import daq_1Dviewer_PyRPL_Scope_TCP

    classes = (daq_move_PyRPL_ASG_TCP.DAQ_Move_PyRPL_ASG_TCP,
               daq_move_PyRPL_PID_TCP.DAQ_Move_PyRPL_PID_TCP,
               daq_0Dviewer_PyRPL_IQ_TCP.DAQ_0DViewer_PyRPL_IQ_TCP,
               daq_0Dviewer_PyRPL_Sampler_TCP.DAQ_0DViewer_PyRPL_Sampler_TCP,
               daq_1Dviewer_PyRPL_Scope_TCP.DAQ_1DViewer_PyRPL_Scope_TCP)
    for cls in classes:
        group = next(p for p in cls.params if p["name"] == GROUP)
        for child in group["children"]:
            if child["name"] == "server_port":
                child["value"] = port
            elif child["name"] == "hostname":
                child["value"] = ""


class _Terminated(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "terminated" in record.getMessage():
            self.messages.append(record.getMessage())


def run(port: int, detectors: list[str], terminated: _Terminated) -> dict:
    from pymodaq.dashboard import create_load_dashboard
    from pymodaq.utils.config import get_set_experiment_path
    from qtpy import QtWidgets

    from pymodaq_plugins_pyrpl import cli
    from pymodaq_plugins_pyrpl.hardware import runtime

    scenario = ",".join(detectors)
    stage(scenario, "load")
    default_port(port)
    shipped = cli.EXPERIMENTS / "pyrpl_demo.xml"
    path = Path(get_set_experiment_path()) / shipped.name
    path.write_bytes(shipped.read_bytes())
    shared_ui, dashboard = create_load_dashboard(show_dashboard=False)
    manager = dashboard.experiment_manager
    manager.entry = "pyrpl_demo"
    applied = []
    manager.applied_entry.connect(applied.append)
    manager.execute_entry(path)
    stage(scenario, "init")
    wait_until(lambda: applied, 60)
    server_pid = runtime.read_live_state(port).pid
    stage(scenario, "grab")
    frames = {name: 0 for name in detectors}
    for name in detectors:
        module = dashboard.modules_manager.get_mod_from_name(name, "det")

        def count(_dte, name=name) -> None:
            frames[name] += 1
        module.grab_done_signal.connect(count)
        module.grab_data(grab_state=True)
    wait_until(lambda: all(n >= FRAMES for n in frames.values()), 30)
    stage(scenario, "quit")
    start = time.perf_counter()
    dashboard.quit_fun()
    quit_s = time.perf_counter() - start
    for widget in (shared_ui.parent, dashboard.tree):
        widget.close()
        widget.deleteLater()
    QtWidgets.QApplication.processEvents()
    return {"detectors": detectors, "frames": frames, "quit_s": quit_s,
            "terminated": list(terminated.messages), "server_pid": server_pid}


def main(argv: list[str]) -> None:
    from pymodaq_gui.qt_utils import mkQApp

    mkQApp("dashboard quit test")
    terminated = _Terminated()
    logging.getLogger("pymodaq").addHandler(terminated)
    for port, names in zip(argv[::2], argv[1::2]):
        terminated.messages.clear()
        print(json.dumps(run(int(port), names.split(","), terminated)), flush=True)
    stage("all", "exit")


if __name__ == "__main__":
    main(sys.argv[1:])
