"""The scope viewer through PyMoDAQ's real DAQ_Viewer, against an auto-started simulated board."""
from __future__ import annotations

import time

import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from tests.helpers.plugins import (
    continuous_frames,
    failed_init_messages,
    plugin_of,
    quit_stops_server,
    server_client,
    set_setting,
    snap,
)

NAME = "PyRPL_Scope_TCP"


def test_snap_settings_and_quit(qtbot, port, make_viewer):
    viewer = make_viewer(NAME, port, dim="DAQ1D", duration=catalogue.SCOPE_DURATIONS[3],
                         input2="out1")
    dte = snap(qtbot, viewer)
    [dwa] = dte.get_data_from_dim("Data1D")
    assert dwa.name == "Scope" and dwa.units == "V"
    assert dwa.labels == ["in1", "out1"]
    assert [a.shape for a in dwa.data] == [(16384,), (16384,)]
    axis = dwa.get_axis_from_index(0)[0]
    assert axis.label == "Time" and axis.units == "s"
    t = axis.get_data()
    assert t.shape == (16384,)
    assert t[1] - t[0] == pytest.approx(8e-9 * 8)  # 1.05 ms trace: decimation 8
    assert t[-1] - t[0] == pytest.approx(catalogue.SCOPE_DURATIONS[3], rel=1e-3)

    # settings round trip: the server gets the quantized value, the setting shows it
    set_setting(qtbot, viewer, "threshold", 0.1, applied=round(0.1 * 2**13) / 2**13)
    set_setting(qtbot, viewer, "trace_average", 3)
    with server_client(port) as observer:
        values = observer.get("scope", ["threshold", "trace_average", "input2", "duration"])
        assert values == {"threshold": pytest.approx(round(0.1 * 2**13) / 2**13),
                          "trace_average": 3, "input2": "out1",
                          "duration": pytest.approx(catalogue.SCOPE_DURATIONS[3])}
        leases = [c["leases"] for c in observer.status()["clients"]]
        assert ["scope"] in leases

    # the axis comes with every frame, also after a settings change
    dte = snap(qtbot, viewer)
    assert dte.get_data_from_dim("Data1D")[0].get_axis_from_index(0)[0] is not None

    quit_stops_server(qtbot, viewer, port)


def test_continuous_grab_and_stop(qtbot, port, make_viewer):
    viewer = make_viewer(NAME, port, dim="DAQ1D", duration=catalogue.SCOPE_DURATIONS[0])
    continuous_frames(qtbot, viewer)


def test_stop_during_a_long_trace(qtbot, port, make_viewer):
    """Stop does not wait for the trace being taken; its result is dropped; the next snap works."""
    viewer = make_viewer(NAME, port, dim="DAQ1D", duration=catalogue.SCOPE_DURATIONS[13])  # 1.07 s
    plugin = plugin_of(viewer)
    frames = []
    viewer.grab_done_signal.connect(frames.append)
    with qtbot.waitSignal(viewer.grab_status, timeout=5000):
        viewer.grab_data(grab_state=True)
    qtbot.waitUntil(lambda: plugin.acquisition.busy, timeout=5000)
    start = time.perf_counter()
    with qtbot.waitSignal(viewer.grab_status, timeout=5000) as stopped:
        viewer.stop_grab()
    stop_time = time.perf_counter() - start
    assert stopped.args == [False]
    assert plugin.acquisition.busy, f"Stop waited for the trace ({stop_time:.3f} s)"
    # the next snap runs after the abandoned trace (the server takes one at a time); only its
    # own frame arrives
    dte = snap(qtbot, viewer, timeout=15000)
    assert frames == [dte]
    assert dte.get_data_from_dim("Data1D")[0].size == 16384


def test_no_trigger_shows_a_status_message(qtbot, port, make_viewer):
    viewer = make_viewer(NAME, port, dim="DAQ1D", duration=catalogue.SCOPE_DURATIONS[0],
                         trigger_source="ch1_positive_edge", threshold=0.9, trigger_wait=0.3)
    messages = []
    viewer.status_sig.connect(messages.append)
    frames = []
    viewer.grab_done_signal.connect(frames.append)
    viewer.snap()  # in1 is ~0 V (no ASG output): never crosses 0.9 V
    qtbot.waitUntil(lambda: any("no trace within" in m for m in messages), timeout=10000)
    assert not frames
    # still usable
    set_setting(qtbot, viewer, "trigger_source", "immediately")
    dte = snap(qtbot, viewer)
    assert dte.get_data_from_dim("Data1D")[0].size == 16384


def test_continuous_grab_keeps_waiting_for_a_trigger(qtbot, port, make_viewer):
    """Live: a missing trigger is reported once (not at every attempt) and stays shown as the
    module's problem while the scope re-arms; frames come once it triggers, and the problem is
    cleared."""
    viewer = make_viewer(NAME, port, dim="DAQ1D", duration=catalogue.SCOPE_DURATIONS[0],
                         trigger_source="ch1_positive_edge", threshold=0.9, trigger_wait=0.2)
    plugin = plugin_of(viewer)
    messages, frames, failed = [], [], []
    viewer.status_sig.connect(messages.append)
    viewer.grab_done_signal.connect(frames.append)
    viewer.grab_data(grab_state=True)
    qtbot.waitUntil(lambda: plugin.acquisition is not None, timeout=5000)
    describe = plugin.acquisition._describe_error

    def counted(exc):  # counts the failed attempts (white-box)
        failed.append(exc)
        return describe(exc)
    plugin.acquisition._describe_error = counted
    qtbot.waitUntil(lambda: len(failed) >= 3, timeout=10000)
    assert not frames
    assert sum("no trace within" in m for m in messages) == 1, messages
    assert "no trace within" in viewer.settings["detector_settings", "problem"]
    viewer.settings.child("detector_settings", "trigger_source").setValue("immediately")
    qtbot.waitUntil(lambda: len(frames) >= 3, timeout=10000)
    assert viewer.settings["detector_settings", "problem"] == ""
    with qtbot.waitSignal(viewer.grab_status, timeout=5000):
        viewer.stop_grab()


def test_initialization_failure_is_shown(qtbot, port):
    """A port held by another program: init fails and the status bar says why."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen()

    def refuse() -> None:  # accept and hang up: not a PyRPL server
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=refuse, daemon=True).start()
    try:
        messages = failed_init_messages(qtbot, NAME, "DAQ1D", port, "not a PyRPL server")
        assert "not a PyRPL server" in messages[-1]  # not hidden by "Viewer initialized: False"
    finally:
        listener.close()
