"""The main scan: PyMoDAQ's real DAQ_Scan, headless, sweeps the IQ actuator's frequency over the
simulated resonator with the IQ viewer as detector (the shipped experiment ``pyrpl_resonance``), and
the resonance is fitted from the h5 file DAQ_Scan saved.

The experiment's default state (installed by ``pymodaq-pyrpl experiments install``) chooses the
resonator plant and initializes the modules; the test only points the plugins at its port and at
the simulated board (the plugin classes' defaults).
"""
from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pymodaq_plugins_pyrpl import cli
from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.analysis.resonance import fit_resonator
from tests.helpers.plugins import default_to_board, server_client

F0, Q = 100e3, 30.0
"""The resonator plant's defaults (hardware/physics/plants.py)."""
START, STOP, STEP = 50e3, 150e3, 2.5e3
"""The sweep: 41 points, steps of 0.75 linewidths (f0 / Q = 3.3 kHz)."""
EXCITATION = 0.02
"""V: 0.6 V at the peak, within the inputs' ±1 V."""
BANDWIDTH = min(catalogue.MODULES["iq0"].attributes["bandwidth"].options,
                key=lambda f: abs(f - 19.0))
"""Hz (18.97): the quadrature filter's cutoff. It settles in 76 ms (time constant 8.4 ms), longer
than DAQ_Scan takes from one frequency step to the next reading: without the server's wait for the
filter, the readings lag the sweep and the fit fails."""
SETTINGS = {"input": "in1", "output_direct": "out1", "amplitude": EXCITATION,
            "bandwidth": BANDWIDTH}
"""The IQ viewer's settings for the sweep (an experiment stores no plugin settings)."""


@pytest.fixture(scope="module", autouse=True)
def pymodaq_theme(qapp):
    """The Dashboard's UI needs a theme (PyMoDAQ's mkQApp sets one, pytest-qt's QApplication
    not)."""
    from pymodaq_gui.qt_utils import apply_styling_rules

    apply_styling_rules(qapp)


@pytest.fixture
def resonator_port(port: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """The plugins of pyrpl_resonance default to ``port`` and to the simulated board (the
    experiment's default state chooses the resonator plant)."""
    from pymodaq_plugins_pyrpl.daq_move_plugins.daq_move_PyRPL_IQ_TCP import DAQ_Move_PyRPL_IQ_TCP
    from pymodaq_plugins_pyrpl.daq_viewer_plugins.plugins_0D.daq_0Dviewer_PyRPL_IQ_TCP import (
        DAQ_0DViewer_PyRPL_IQ_TCP,
    )

    from pymodaq_plugins_pyrpl.daq_viewer_plugins.plugins_1D.daq_1Dviewer_PyRPL_NA_TCP import (
        DAQ_1DViewer_PyRPL_NA_TCP,
    )

    default_to_board(monkeypatch, (DAQ_Move_PyRPL_IQ_TCP, DAQ_0DViewer_PyRPL_IQ_TCP,
                                   DAQ_1DViewer_PyRPL_NA_TCP), port)
    return port


def load_resonance_experiment(qtbot):
    """A headless Dashboard with pyrpl_resonance and its default state loaded (the state chooses
    the resonator plant and initializes the modules): (shared_ui, dashboard)."""
    from pymodaq.dashboard import create_load_dashboard
    from pymodaq.utils.config import get_set_experiment_path

    assert cli.main(["experiments", "install", "--force"]) == 0
    path = Path(get_set_experiment_path()) / "pyrpl_resonance.xml"
    shared_ui, dashboard = create_load_dashboard(show_dashboard=False)
    manager = dashboard.experiment_manager
    manager.entry = "pyrpl_resonance"
    with qtbot.waitSignal(manager.applied_entry, timeout=60000):
        manager.execute_entry(path)
    modules = dashboard.actuators_modules + dashboard.detector_modules
    assert [m.title for m in modules] == ["IQ frequency", "IQ", "Network analyzer"]
    assert all(m.initialized_state for m in modules)
    return shared_ui, dashboard


IQ_PIPELINE = 3 / catalogue.FPGA_CLOCK
"""s: the IQ module's excitation, demodulated by the same module, lags by 3 FPGA cycles
(red_pitaya_iq_modulator_block.v: 2 output registers; red_pitaya_iq_demodulator_block.v: the input
register before the multiplier), a phase linear in f that the fit divides out."""


def save_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyMoDAQ's h5 files go to ``folder`` (its default, from its config: "C:\\Data", which on
    Linux is a folder of that name in the current directory). DAQ_Scan creates its file when it
    loads, from H5Saver's class-level settings."""
    from pymodaq_gui.h5modules.saving import H5SaverBase

    for param in H5SaverBase.params:
        if param.get("name") in ("base_path", "current_scan_path"):
            monkeypatch.setitem(param, "value", str(folder))


def no_popup(*args, **kwargs):
    """In place of PyMoDAQ's modal message boxes, which would block a headless test for good."""
    raise AssertionError(f"DAQ_Scan wanted to show a message: {args} {kwargs}")


def test_daq_scan_of_the_iq_frequency_finds_the_resonance(qtbot, resonator_port, tmp_path,
                                                           monkeypatch):
    from pymodaq.extensions import ExtensionEnum
    from pymodaq.extensions.scan import daq_scan
    from qtpy import QtWidgets

    monkeypatch.setattr(daq_scan, "messagebox", no_popup)
    save_in(tmp_path, monkeypatch)
    shared_ui, dashboard = load_resonance_experiment(qtbot)
    scan = None
    try:
        viewer = dashboard.modules_manager.get_mod_from_name("IQ", "det")
        for name, value in SETTINGS.items():
            viewer.settings.child("detector_settings", name).setValue(value)
        applied = {"input": "in1", "output_direct": "out1", "amplitude": pytest.approx(
            EXCITATION, abs=1e-5), "bandwidth": [BANDWIDTH, 0.0]}
        with server_client(resonator_port) as observer:
            assert observer.status()["device"]["plant"].startswith("resonator")
            qtbot.waitUntil(lambda: observer.get("iq0", list(SETTINGS)) == applied, timeout=5000)

        scan = dashboard.load_extension(ExtensionEnum.SCANNER)
        scan.override_popups(False)
        scan.settings.child("plot_options", "plot_every_n_steps").setValue(0)  # no live plots
        scan.modules_manager.selected_actuators_name = ["IQ frequency"]
        scan.modules_manager.selected_detectors_name = ["IQ"]
        scan.scanner.set_scan_type_and_subtypes("Scan1D", "Linear")
        sweep = scan.scanner.get_scanner_sub_settings()
        for name, value in (("start", START), ("stop", STOP), ("step", STEP)):
            sweep.child(name).setValue(value)
        started = time.perf_counter()
        with qtbot.waitSignal(scan.scan_done_signal, timeout=120000):
            scan.do_scan()
        elapsed = time.perf_counter() - started
        points = scan.scanner.n_steps
        assert points == round((STOP - START) / STEP) + 1
        qtbot.waitUntil(lambda: scan.settings["saver_worker", "worker_tasks"] == 0,
                        timeout=30000)  # every point written
        h5_path = Path(scan.h5_manager.get_h5saver().settings["current_h5_file"])
        assert h5_path.is_relative_to(tmp_path)  # base/year/date/file
        scan.h5_manager.close_file()
    finally:
        if scan is not None:
            if scan.scan_acquisition.is_running:
                with qtbot.waitSignal(scan.scan_done_signal, timeout=30000):
                    scan.do_scan(start_scan=False)
            qtbot.waitUntil(lambda: scan.settings["saver_worker", "worker_tasks"] == 0,
                            timeout=30000)
            scan.quit_fun()
        dashboard.quit_fun()
        for widget in (shared_ui.parent, dashboard.tree):
            widget.close()
            widget.deleteLater()
        QtWidgets.QApplication.processEvents()

    frequencies, iq = read_scan(h5_path)
    f0, q = fit_resonator(frequencies, iq, delay=IQ_PIPELINE)
    print(f"\nDAQ_Scan: {points} points in {elapsed:.1f} s ({elapsed / points * 1e3:.0f} ms per "
          f"point); fitted f0 = {f0:.1f} Hz, Q = {q:.2f}")
    assert f0 == pytest.approx(F0, rel=0.01)
    assert q == pytest.approx(Q, rel=0.10)


def read_scan(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The swept frequencies and the complex IQ readings of the scan saved in ``path`` (PyMoDAQ's
    layout: the navigation axis, then the IQ viewer's channels I, Q, Amplitude)."""
    with h5py.File(path, "r") as f:
        scan = f["RawData/Scan000"]
        assert scan["Actuator000"].attrs["TITLE"] == "IQ frequency"
        frequencies = np.asarray(scan["NavAxes/Axis00"])
        channels = scan["Detector000/Data0D/CH00"]
        assert channels.attrs["TITLE"] == "Lock-in"
        i, q = np.asarray(channels["Data00"]), np.asarray(channels["Data01"])
    return frequencies, i + 1j * q
