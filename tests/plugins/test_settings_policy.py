"""The plugins' one policy for a setting the board or the server refuses, and the thread their
connection events are handled in. Through PyMoDAQ's real DAQ_Viewer and DAQ_Move, headless, against
an auto-started simulated board."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue, runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.plugins import move, plugin_of, server_client, snap
from tests.helpers.support import ServerProcess

IQ = catalogue.MODULES["iq0"].attributes


def refused(qtbot, module, group: str, name: str, value, shown, reason: str) -> None:
    """Set the plugin setting ``name`` of ``module`` (a DAQ_Viewer or DAQ_Move) to a ``value``
    that is refused for ``reason``: the status bar says why, the 'Problem' setting too (it stays),
    and the setting shows ``shown`` again (what the board uses)."""
    messages: list[str] = []
    module.status_sig.connect(messages.append)
    try:
        module.settings.child(group, name).setValue(value)
        expected = f"{name} not changed"
        qtbot.waitUntil(lambda: any(expected in m and reason in m for m in messages),
                        timeout=5000)
        problem = module.settings[group, "problem"]
        assert expected in problem and reason in problem
        qtbot.waitUntil(lambda: module.settings[group, name] == shown, timeout=5000)
    finally:
        module.status_sig.disconnect(messages.append)


def test_a_viewer_module_switch_refused_keeps_the_module_and_shows_it(qtbot, port, make_viewer):
    """A switch to a module another program holds: the viewer keeps its module, which the setting
    shows again, and says why in the status bar and in its 'Problem' setting."""
    viewer = make_viewer("PyRPL_IQ_TCP", port)
    with server_client(port) as other:
        other.lease("iq1")
        refused(qtbot, viewer, "detector_settings", "module", "iq1", "iq0", "leased")
        assert ["iq0"] in [c["leases"] for c in other.status()["clients"]]
    snap(qtbot, viewer)  # on iq0, which it still holds


def test_an_actuator_module_switch_refused_keeps_the_module_and_shows_it(qtbot, port,
                                                                         make_actuator):
    """The same policy on an actuator."""
    actuator = make_actuator("PyRPL_ASG_TCP", port, axis="Amplitude")
    with server_client(port) as other:
        other.lease("asg1")
        refused(qtbot, actuator, "actuator_settings", "module", "asg1", "asg0", "leased")
        assert ["asg0"] in [c["leases"] for c in other.status()["clients"]]
    assert move(qtbot, actuator, 0.25) == 0.25  # on asg0, which it still holds
    with server_client(port) as observer:
        assert observer.get("asg0", ["amplitude"]) == {"amplitude": 0.25}


def test_settings_refused_by_the_board_show_the_boards_values(qtbot, tmp_path):
    """Module attributes refused by the board (the modules were leased by another program while
    the plugins' connection was cut for longer than their session's grace): the viewer's and the
    actuator's settings show the board's values again, and the status bar and the 'Problem'
    setting say why; the PID's integrator reset too. PyMoDAQ's tree holds a setting to its limits,
    so a lease lost in an outage is how a valid value gets refused."""
    from pymodaq.control_modules.daq_move import DAQ_Move
    from pymodaq.control_modules.daq_viewer import DAQ_Viewer

    with ServerProcess(tmp_path, ["--mock", "--session-grace", "1"]) as server, \
            FaultProxy(server.port) as proxy:
        viewer = DAQ_Viewer(parent=None, title="IQ outage")
        viewer.daq_type, viewer.detector = "DAQ0D", "PyRPL_IQ_TCP"
        actuator = DAQ_Move(parent=None, title="PID outage")
        actuator.actuator = "PyRPL_PID_TCP"
        modules = ((viewer, "detector_settings"), (actuator, "actuator_settings"))
        try:
            for module, group in modules:
                module.settings.child(group, "pyrpl", "server_ip").setValue("127.0.0.1")
                module.settings.child(group, "pyrpl", "server_port").setValue(proxy.port)
                module.settings.child(group, "pyrpl", "token").setValue(server.token)
                with qtbot.waitSignal(module.init_signal, timeout=30000) as init:
                    module.init_hardware(True)
                assert init.args[0] is True
            observer = PyRPLClient("127.0.0.1", server.port, server.token, "observer",
                                   reconnect=False)
            with observer:
                observer.connect()
                proxy.set_mode("drop")

                def plugins_session_ended() -> bool:
                    return all(c["client"] == "observer" for c in observer.status()["clients"])

                qtbot.waitUntil(plugins_session_ended, timeout=10000)
                observer.lease("iq0")
                observer.lease("pid0")
                board = {"iq0": observer.set("iq0", {"frequency": 777.0}),
                         "pid0": observer.set("pid0", {"max_voltage": 0.5})}
                proxy.set_mode("pass")  # the plugins' client joins a new session

                def reapplying_refused() -> bool:  # the new session's events handled
                    return all("could not re-apply" in module.settings[group, "problem"]
                               for module, group in modules)

                qtbot.waitUntil(reapplying_refused, timeout=20000)
                refused(qtbot, viewer, "detector_settings", "frequency", 5000.0,
                        board["iq0"]["frequency"], "leased")
                refused(qtbot, actuator, "actuator_settings", "max_voltage", 0.25,
                        board["pid0"]["max_voltage"], "leased")
                # a push button: ready for the next press even when the reset is refused
                refused(qtbot, actuator, "actuator_settings", "reset_ival", True, False, "leased")
        finally:
            for module, _ in modules:
                module.quit_fun()


def test_connection_events_are_handled_in_the_plugins_thread(qtbot, port, make_viewer,
                                                            make_actuator, monkeypatch):
    """After a server restart (the connection lost, then a new session), each plugin handles the
    connection events, re-applying its settings, in its own worker thread, not in the client's
    events thread."""
    from qtpy.QtCore import QThread

    from pymodaq_plugins_pyrpl.plugin_support import PyRPLLink

    handled: list[tuple[str, str, bool, str]] = []  # plugin, event, in its thread, thread name
    original = PyRPLLink._on_connection_event

    def recording(link, event, info):
        thread = (QThread.currentThread() is link.plugin.thread(), threading.current_thread().name)
        original(link, event, info)  # recorded once handled (the settings applied again)
        handled.append((link.holder, event, *thread))

    monkeypatch.setattr(PyRPLLink, "_on_connection_event", recording)
    viewer = make_viewer("PyRPL_IQ_TCP", port, frequency=5000.0)
    actuator = make_actuator("PyRPL_PID_TCP", port, max_voltage=0.5)
    titles = (viewer.title, actuator.title)
    assert plugin_of(viewer).thread() is not plugin_of(actuator).thread()
    old = runtime.read_state(port)
    os.kill(old.pid, signal.SIGKILL)  # the manager restarts it; each plugin applies its settings

    def restarted() -> bool:
        return {(title, "new_session") for title in titles} <= {h[:2] for h in handled}

    qtbot.waitUntil(restarted, timeout=20000)
    assert {(title, "lost") for title in titles} <= {h[:2] for h in handled}
    outside = [h for h in handled if not h[2]]
    assert outside == [], f"handled outside the plugin's thread: {outside}"
    with server_client(port) as observer:
        assert observer.get("iq0", ["frequency"]) == {
            "frequency": pytest.approx(IQ["frequency"].validate(5000.0))}
        assert observer.get("pid0", ["max_voltage"]) == {"max_voltage": 0.5}
