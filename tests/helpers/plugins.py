"""Helpers of the plugin tests (tests/plugins/): observing the server, moving, snapping."""
from __future__ import annotations

import pytest

from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient


def server_client(port: int) -> PyRPLClient:
    """A separate client of the plugins' auto-started server, to observe it."""
    state = runtime.read_state(port)
    client = PyRPLClient("127.0.0.1", port, state.token, "test observer", reconnect=False)
    client.connect()
    return client


def default_to_board(monkeypatch: pytest.MonkeyPatch, classes, port: int,
                     hostname: str = "") -> None:
    """Make each plugin class in ``classes`` default to the server on ``port`` and the board
    ``hostname`` ("": the simulated board; "virtual": the real PyRPL path on a virtual board), as
    config_pyrpl.toml would (an experiment stores no plugin settings). "pyrpl" is
    plugin_support.GROUP, not imported: importing plugin_support before PyMoDAQ makes PyMoDAQ's
    plugin discovery miss the plugins (a circular import)."""
    for cls in classes:
        group = next(p for p in cls.params if p["name"] == "pyrpl")
        for child in group["children"]:
            if child["name"] == "server_port":
                monkeypatch.setitem(child, "value", port)
            elif child["name"] == "hostname":
                monkeypatch.setitem(child, "value", hostname)


def plugin_of(module):
    """The plugin instance behind a DAQ_Viewer or DAQ_Move (white-box)."""
    return module.controller_and_thread.thread._hardwares[module.title].plugin


def move(qtbot, actuator, value, relative: bool = False) -> float:
    """Move (a number is in the axis unit) and return the value reported by move_done."""
    with qtbot.waitSignal(actuator.move_done_signal, timeout=10000) as done:
        (actuator.move_rel if relative else actuator.move_abs)(value)
    return done.args[0].value()


def select_axis(qtbot, actuator, axis: str, unit: str) -> None:
    """Switch the axis and wait until the worker reports its unit and value."""
    actuator.axis_name = axis
    qtbot.waitUntil(lambda: actuator.units == unit, timeout=5000)
    with qtbot.waitSignal(actuator.current_value_signal, timeout=5000):
        actuator.get_actuator_value()


def snap(qtbot, viewer, timeout: int = 10000):
    """One snap; its DataToExport."""
    with qtbot.waitSignal(viewer.grab_done_signal, timeout=timeout) as done:
        viewer.snap()
    return done.args[0]


def set_setting(qtbot, viewer, name, value, applied=None) -> None:
    """Change a plugin setting in the DAQ_Viewer; wait until it shows the applied value."""
    path = name if isinstance(name, tuple) else (name,)
    viewer.settings.child("detector_settings", *path).setValue(value)
    expected = value if applied is None else applied
    qtbot.waitUntil(lambda: viewer.settings[("detector_settings", *path)] == pytest.approx(expected),
                    timeout=5000)


def continuous_frames(qtbot, viewer, count: int = 5) -> None:
    """A continuous grab delivers ``count`` frames; after Stop no frame comes but the next snap's."""
    frames = []
    viewer.grab_done_signal.connect(frames.append)
    with qtbot.waitSignal(viewer.grab_status, timeout=5000):
        viewer.grab_data(grab_state=True)
    qtbot.waitUntil(lambda: len(frames) >= count, timeout=10000)
    with qtbot.waitSignal(viewer.grab_status, timeout=5000) as stopped:
        viewer.stop_grab()
    assert stopped.args == [False]
    # the frames the worker sent before it stopped all arrived before its "grab stopped" status
    before = list(frames)
    dte = snap(qtbot, viewer)
    assert frames == before + [dte]
    viewer.grab_done_signal.disconnect(frames.append)


def quit_stops_server(qtbot, viewer, port: int) -> None:
    """Quitting the last plugin stops the server it auto-started."""
    pid = runtime.read_state(port).pid
    viewer.quit_fun()
    qtbot.waitUntil(lambda: not runtime.pid_alive(pid), timeout=10000)


def failed_init_messages(qtbot, name: str, dim: str, port: int, reason: str) -> list[str]:
    """Initialize the viewer plugin ``name`` on ``port``, expecting it to fail with ``reason`` as
    the last status message and in its 'Problem' setting; the status messages until then (the
    viewer is quit afterwards: quitting adds PyMoDAQ's own messages, not returned)."""
    from pymodaq.control_modules.daq_viewer import DAQ_Viewer

    viewer = DAQ_Viewer(parent=None, title=f"{name} init failure")
    messages: list[str] = []
    try:
        viewer.daq_type = dim
        viewer.detector = name
        viewer.settings.child("detector_settings", "pyrpl", "server_port").setValue(port)
        viewer.status_sig.connect(messages.append)
        with qtbot.waitSignal(viewer.init_signal, timeout=30000) as init:
            viewer.init_hardware(True)
        assert init.args[0] is False
        qtbot.waitUntil(lambda: bool(messages) and reason in messages[-1], timeout=5000)
        qtbot.waitUntil(lambda: reason in viewer.settings["detector_settings", "problem"],
                        timeout=5000)
        return list(messages)
    finally:
        viewer.quit_fun()
