"""The network analyzer viewer through PyMoDAQ's real DAQ_Viewer, against auto-started simulated
boards: the direct cable (loopback plant) and the resonator plant."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.analysis.resonance import fit_resonator
from pymodaq_plugins_pyrpl.hardware.physics.plants import Loopback, Resonator
from tests.helpers.plugins import (
    failed_init_messages,
    plugin_of,
    server_client,
    set_setting,
    snap,
)

NAME = "PyRPL_NA_TCP"
NA = catalogue.module("na").attributes
CABLE = Loopback()
"""The simulated board's cables (out1→in1): 16 ns and a 60 MHz first-order low-pass."""
RESONATOR = Resonator()
"""The resonator plant's defaults: f0 = 100 kHz, Q = 30, gain 1."""
STOP_BOUND_S = 1.0
"""A stopped sweep's acquisition ends within this (the server stops at its next chunk boundary,
≤ 0.1 s; the rest is margin for a loaded machine): far less than the sweep had left to run."""


@pytest.fixture
def make_na(qtbot):
    """``make_na(port, plant="loopback", title=..., **settings)``: an initialized DAQ_Viewer (no
    UI) with the NA plugin on the simulated board with ``plant``; quit after the test."""
    from pymodaq.control_modules.daq_viewer import DAQ_Viewer

    made = []

    def make(port: int, plant: str = "loopback", title: str = "NA test", **settings):
        viewer = DAQ_Viewer(parent=None, title=title)
        viewer.daq_type = "DAQ1D"
        viewer.detector = NAME
        group = viewer.settings.child("detector_settings")
        group.child("pyrpl", "server_port").setValue(port)
        group.child("pyrpl", "plant").setValue(plant)
        for key, value in settings.items():
            group.child(key).setValue(value)
        made.append(viewer)
        with qtbot.waitSignal(viewer.init_signal, timeout=30000) as init:
            viewer.init_hardware(True)
        assert init.args[0] is True, viewer.settings["detector_settings", "problem"]
        return viewer

    yield make
    for viewer in reversed(made):
        viewer.quit_fun()


def sweep_of(dte) -> tuple[np.ndarray, np.ndarray, dict]:
    """(frequencies, complex transfer function, channels by name) of an NA frame."""
    channels = {d.name: d for d in dte.get_data_from_dim("Data1D")}
    magnitude, phase = channels["Magnitude"], channels["Phase"]
    response = magnitude.data[0] * np.exp(1j * np.radians(phase.data[0]))
    return magnitude.axes[0].get_data(), response, channels


def test_direct_cable_reads_0_db_and_the_cable_delay(qtbot, port, make_na):
    viewer = make_na(port, start_freq=1e3, stop_freq=1e6, points=101, logscale=True,
                     amplitude=0.1)
    estimate = viewer.settings["detector_settings", "sweep_time"]
    assert estimate > 0
    started = time.perf_counter()
    dte = snap(qtbot, viewer, timeout=int((3 * estimate + 10) * 1000))
    print(f"101-point sweep: {time.perf_counter() - started:.2f} s (estimate {estimate:.2f} s)")
    f, response, channels = sweep_of(dte)
    assert set(channels) == {"Magnitude", "Magnitude (dB)", "Phase"}
    assert channels["Magnitude (dB)"].units == "dB" and channels["Phase"].units == "°"
    axis = channels["Magnitude"].axes[0]
    assert axis.label == "Frequency" and axis.units == "Hz"
    assert f.shape == (101,) and f[0] == pytest.approx(1e3, rel=1e-3)
    assert f[-1] == pytest.approx(1e6, rel=1e-3)
    assert np.allclose(np.diff(np.log(f)), math.log(1e3) / 100, rtol=1e-2)  # log-spaced
    decibels = channels["Magnitude (dB)"].data[0]
    assert np.allclose(decibels, 20 * np.log10(np.abs(response)))
    assert np.max(np.abs(decibels)) < 0.05
    # phase: the cable's delay, −360°·f·16 ns, and its 60 MHz pole (−0.95° at 1 MHz)
    expected = np.degrees(np.angle([CABLE.transfer(x) for x in f]))
    assert np.max(np.abs(channels["Phase"].data[0] - expected)) < 0.2
    delay_only = -360 * f * CABLE.delay
    assert np.max(np.abs(channels["Phase"].data[0][f < 1e5] - delay_only[f < 1e5])) < 0.2


def test_resonator_sweep_gives_f0_and_q(qtbot, port, make_na):
    viewer = make_na(port, plant="resonator", start_freq=80e3, stop_freq=120e3, points=201,
                     logscale=False, amplitude=0.02)
    estimate = viewer.settings["detector_settings", "sweep_time"]
    f, response, channels = sweep_of(snap(qtbot, viewer, timeout=int((3 * estimate + 10) * 1000)))
    assert np.allclose(np.diff(f), 200.0, rtol=1e-2)  # linear
    f0, q = fit_resonator(f, response)
    print(f"resonator: f0 = {f0:.1f} Hz, Q = {q:.2f}")
    assert f0 == pytest.approx(RESONATOR.f0, rel=0.005)
    assert q == pytest.approx(RESONATOR.q, rel=0.05)
    assert f[int(np.argmax(channels["Magnitude"].data[0]))] == pytest.approx(RESONATOR.f0,
                                                                              rel=0.01)


def test_settings_show_what_the_server_applied_and_the_sweep_time(qtbot, port, make_na):
    viewer = make_na(port, points=101)
    before = viewer.settings["detector_settings", "sweep_time"]
    set_setting(qtbot, viewer, "points", 201)
    qtbot.waitUntil(lambda: viewer.settings["detector_settings", "sweep_time"] > 1.9 * before,
                    timeout=5000)
    with server_client(port) as observer:
        assert observer.get("na", ["points", "sweep_time"]) == {
            "points": 201,
            "sweep_time": pytest.approx(viewer.settings["detector_settings", "sweep_time"])}
        leases = [c["leases"] for c in observer.status()["clients"]]
        assert any({"na", "iq2"} <= set(held) for held in leases), leases


def test_stop_ends_the_sweep_and_turns_the_output_off(qtbot, port, make_na):
    """Partial sweeps are shown while a sweep runs (temporary data); Stop ends the sweep on the
    server: the acquisition returns at once, the IQ's output is off; the next snap works."""
    viewer = make_na(port, start_freq=1e3, stop_freq=1e5, points=2001, amplitude=0.1)
    estimate = viewer.settings["detector_settings", "sweep_time"]
    assert estimate > 3.0  # time to stop it in the middle
    plugin = plugin_of(viewer)
    partial, frames = [], []
    plugin.dte_signal_temp.connect(partial.append)
    viewer.grab_done_signal.connect(frames.append)
    with qtbot.waitSignal(viewer.grab_status, timeout=5000):
        viewer.grab_data(grab_state=True)
    qtbot.waitUntil(lambda: len(partial) >= 2, timeout=10000)
    with server_client(port) as observer:
        assert observer.get("iq2", ["amplitude"])["amplitude"] > 0  # sweeping
        stopped_at = time.perf_counter()
        with qtbot.waitSignal(viewer.grab_status, timeout=5000):
            viewer.stop_grab()
        qtbot.waitUntil(lambda: not plugin.acquisition.busy, timeout=int(STOP_BOUND_S * 1000))
        print(f"stop: the acquisition ended {time.perf_counter() - stopped_at:.3f} s after Stop")
        assert observer.get("iq2", ["amplitude"])["amplitude"] == 0
    assert not frames  # the stopped sweep gives no frame
    shown = sweep_of(partial[-1])[0]
    assert 0 < shown.size < 2001  # the points measured so far
    set_setting(qtbot, viewer, "points", 11)
    dte = snap(qtbot, viewer, timeout=15000)
    assert sweep_of(dte)[0].size == 11


def test_continuous_grab_repeats_sweeps(qtbot, port, make_na):
    viewer = make_na(port, points=11)
    frames = []
    viewer.grab_done_signal.connect(frames.append)
    with qtbot.waitSignal(viewer.grab_status, timeout=5000):
        viewer.grab_data(grab_state=True)
    qtbot.waitUntil(lambda: len(frames) >= 3, timeout=20000)
    with qtbot.waitSignal(viewer.grab_status, timeout=5000):
        viewer.stop_grab()
    assert all(sweep_of(frame)[0].size == 11 for frame in frames)


def test_an_iq_module_used_by_an_iq_plugin_is_busy(qtbot, port, make_viewer, make_na):
    """In one program, the NA and an IQ viewer or actuator on the same IQ module refuse each
    other at Initialize, whichever came first; on another IQ module they go together."""
    make_viewer("PyRPL_IQ_TCP", port, module="iq2")
    messages = failed_init_messages(qtbot, NAME, "DAQ1D", port, "busy: the iq2 is used by "
                                                                  "PyRPL_IQ_TCP test")
    assert "needs it alone in this program" in messages[-1]

    na = make_na(port, iq="iq1", title="NA on iq1")
    snap(qtbot, na)
    # moving the NA onto the IQ viewer's module is refused: nothing changes
    na.settings.child("detector_settings", "iq").setValue("iq2")
    qtbot.waitUntil(lambda: "busy: the iq2 is used by"
                    in na.settings["detector_settings", "problem"], timeout=5000)
    qtbot.waitUntil(lambda: na.settings["detector_settings", "iq"] == "iq1", timeout=5000)
    with server_client(port) as observer:
        assert observer.get("na", ["iq"]) == {"iq": "iq1"}


def test_an_iq_plugin_is_refused_the_na_module(qtbot, port, make_na):
    make_na(port)  # iq2
    from pymodaq.control_modules.daq_move import DAQ_Move

    actuator = DAQ_Move(parent=None, title="IQ scan")
    try:
        actuator.actuator = "PyRPL_IQ_TCP"
        actuator.settings.child("actuator_settings", "pyrpl", "server_port").setValue(port)
        actuator.settings.child("actuator_settings", "module").setValue("iq2")
        messages = []
        actuator.status_sig.connect(messages.append)
        with qtbot.waitSignal(actuator.init_signal, timeout=30000) as init:
            actuator.init_hardware(True)
        assert init.args[0] is False
        qtbot.waitUntil(lambda: any("busy: the iq2 is used by NA test, which needs it alone"
                                    in m for m in messages), timeout=5000)
    finally:
        actuator.quit_fun()
