"""Run as a script (bench/analyzers.py runs it in a process of its own, with isolated folders):

    python tests/helpers/scripts/daq_scan_sweep.py PORT START STOP POINTS BANDWIDTH FOLDER

PyMoDAQ's real DAQ_Scan, headless, sweeps the IQ actuator's frequency from START to STOP (Hz) in
POINTS points with the IQ viewer as detector: a fresh Dashboard loads the shipped experiment
``pyrpl_resonance`` (its default state chooses the resonator plant of the simulated board's server,
auto-started on PORT, and initializes the modules), the IQ viewer's filter cutoff is set to
BANDWIDTH (Hz), and the scan's h5 file goes to FOLDER. Prints one line
``PROBE_RESULT {"seconds", "points"}``: ``seconds`` from ``do_scan()`` to DAQ_Scan's
``scan_done_signal``, ``points`` the points DAQ_Scan made. Exits with status 1 if any stage takes
longer than STALL_S (the stacks of all threads are written to stderr).
"""
from __future__ import annotations

import faulthandler
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

STALL_S = 60.0
"""Longest a stage (load and initialize, the scan, saving and quitting) may take."""
EXCITATION = 0.02
"""V: the IQ module's output, 0.6 V at the resonator's peak, within the inputs' ±1 V."""


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    from qtpy import QtCore, QtWidgets

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        QtWidgets.QApplication.processEvents(QtCore.QEventLoop.AllEvents, 20)


def no_popup(*args, **kwargs):
    """In place of PyMoDAQ's modal message boxes, which would block a headless scan for good."""
    raise RuntimeError(f"DAQ_Scan wanted to show a message: {args} {kwargs}")


def default_port(port: int) -> None:
    """The IQ plugins default to ``port`` and the simulated board (an experiment stores no plugin
    settings)."""
    from pymodaq_plugins_pyrpl.daq_move_plugins.daq_move_PyRPL_IQ_TCP import DAQ_Move_PyRPL_IQ_TCP
    from pymodaq_plugins_pyrpl.daq_viewer_plugins.plugins_0D.daq_0Dviewer_PyRPL_IQ_TCP import (
        DAQ_0DViewer_PyRPL_IQ_TCP,
    )

    for cls in (DAQ_Move_PyRPL_IQ_TCP, DAQ_0DViewer_PyRPL_IQ_TCP):
        group = next(p for p in cls.params if p["name"] == "pyrpl")
        for child in group["children"]:
            if child["name"] == "server_port":
                child["value"] = port
            elif child["name"] == "hostname":
                child["value"] = ""


def save_in(folder: Path) -> None:
    """DAQ_Scan's h5 files go to ``folder`` (it creates its file when it loads, from H5Saver's
    class-level settings)."""
    from pymodaq_gui.h5modules.saving import H5SaverBase

    for param in H5SaverBase.params:
        if param.get("name") in ("base_path", "current_scan_path"):
            param["value"] = str(folder)


def scan(port: int, start: float, stop: float, points: int, bandwidth: float,
         folder: Path) -> dict:
    from pymodaq.dashboard import create_load_dashboard
    from pymodaq.extensions import ExtensionEnum
    from pymodaq.extensions.scan import daq_scan
    from pymodaq.utils.config import get_set_experiment_path
    from qtpy import QtWidgets

    from pymodaq_plugins_pyrpl import cli

    faulthandler.dump_traceback_later(STALL_S, exit=True)
    default_port(port)
    save_in(folder)
    daq_scan.messagebox = no_popup
    if cli.main(["experiments", "install", "--force"]) != 0:
        raise RuntimeError("pymodaq-pyrpl experiments install failed")
    path = Path(get_set_experiment_path()) / "pyrpl_resonance.xml"
    shared_ui, dashboard = create_load_dashboard(show_dashboard=False)
    manager = dashboard.experiment_manager
    manager.entry = "pyrpl_resonance"
    applied = []
    manager.applied_entry.connect(applied.append)
    manager.execute_entry(path)
    wait_until(lambda: applied, STALL_S)
    viewer = dashboard.modules_manager.get_mod_from_name("IQ", "det")
    for name, value in (("input", "in1"), ("output_direct", "out1"), ("amplitude", EXCITATION),
                        ("bandwidth", bandwidth)):
        viewer.settings.child("detector_settings", name).setValue(value)

    faulthandler.dump_traceback_later(STALL_S, exit=True)
    extension = dashboard.load_extension(ExtensionEnum.SCANNER)
    extension.override_popups(False)
    extension.settings.child("plot_options", "plot_every_n_steps").setValue(0)  # no live plots
    extension.modules_manager.selected_actuators_name = ["IQ frequency"]
    extension.modules_manager.selected_detectors_name = ["IQ"]
    extension.scanner.set_scan_type_and_subtypes("Scan1D", "Linear")
    sweep = extension.scanner.get_scanner_sub_settings()
    for name, value in (("start", start), ("stop", stop), ("step", (stop - start) / (points - 1))):
        sweep.child(name).setValue(value)
    done = []
    extension.scan_done_signal.connect(lambda *args: done.append(time.perf_counter()))
    started = time.perf_counter()
    extension.do_scan()
    wait_until(lambda: done, STALL_S)
    seconds = done[0] - started
    made = extension.scanner.n_steps

    faulthandler.dump_traceback_later(STALL_S, exit=True)
    wait_until(lambda: extension.settings["saver_worker", "worker_tasks"] == 0, STALL_S)
    extension.h5_manager.close_file()
    extension.quit_fun()
    dashboard.quit_fun()
    for widget in (shared_ui.parent, dashboard.tree):
        widget.close()
        widget.deleteLater()
    QtWidgets.QApplication.processEvents()
    faulthandler.cancel_dump_traceback_later()
    return {"seconds": seconds, "points": made}


def main(argv: list[str]) -> None:
    from pymodaq_gui.qt_utils import mkQApp

    port, start, stop, points, bandwidth, folder = argv
    mkQApp("DAQ_Scan sweep")
    result = scan(int(port), float(start), float(stop), int(points), float(bandwidth),
                  Path(folder))
    print("PROBE_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
