"""The ASG actuator through PyMoDAQ's real DAQ_Move, against an auto-started simulated board.

The server is checked through a separate PyRPLClient observer.
"""
from __future__ import annotations

import pytest
from pymodaq.utils.data import DataActuator

from pymodaq_plugins_pyrpl.hardware import catalogue, runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from tests.helpers.plugins import move, select_axis, server_client

ASG = catalogue.MODULES["asg0"].attributes
AXES = {"Frequency": ("frequency", "Hz", 1234.5678), "Amplitude": ("amplitude", "V", 0.3),
        "Offset": ("offset", "V", 0.1), "Phase": ("start_phase", "°", 45.3)}
"""axis → (ASG attribute, unit, a value to move to)."""






def move_home(qtbot, actuator) -> float:
    with qtbot.waitSignal(actuator.move_done_signal, timeout=10000) as done:
        actuator.move_home()
    return done.args[0].value()




def leases(observer: PyRPLClient) -> list[list[str]]:
    return [c["leases"] for c in observer.status()["clients"] if c["client"] != "test observer"]


def test_asg_moves_are_instant_and_quantized(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_ASG_TCP", port, axis="Frequency")
    with qtbot.waitSignal(actuator.move_done_signal, timeout=10000) as done:
        actuator.move_abs(1000.0)
    assert done.args[0].value() == pytest.approx(1000.00761449337)
    with server_client(port) as observer:
        values = observer.get("asg0", ["frequency", "output_direct", "trigger_source"])
        assert values == {"frequency": pytest.approx(1000.00761449337), "output_direct": "out1",
                          "trigger_source": "immediately"}
        assert ["asg0"] in leases(observer)


def test_asg_every_axis_moves_and_reads_back_quantized(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_ASG_TCP", port, axis="Frequency")
    with server_client(port) as observer:
        for axis, (attribute, unit, value) in AXES.items():
            select_axis(qtbot, actuator, axis, AXES[axis][1])
            expected = ASG[attribute].validate(value)
            assert expected != value  # the value is really quantized
            assert move(qtbot, actuator, value) == expected, axis
            assert observer.get("asg0", [attribute]) == {attribute: expected}
            with qtbot.waitSignal(actuator.current_value_signal, timeout=5000) as read:
                actuator.get_actuator_value()
            assert read.args[0].value() == expected and read.args[0].units == unit


def test_asg_move_rel_and_home(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_ASG_TCP", port, axis="Frequency")
    first = move(qtbot, actuator, 1000.0)
    assert move(qtbot, actuator, 500.0, relative=True) == ASG["frequency"].validate(first + 500)
    assert move(qtbot, actuator, DataActuator(data=-0.25, units="kHz"), relative=True) == \
        pytest.approx(1250.0, abs=0.2)
    select_axis(qtbot, actuator, "Amplitude", AXES["Amplitude"][1])
    move(qtbot, actuator, 0.5)
    assert move_home(qtbot, actuator) == 0.0
    with server_client(port) as observer:
        assert observer.get("asg0", ["amplitude", "frequency"]) == {
            "amplitude": 0.0, "frequency": pytest.approx(1250.0, abs=0.2)}
        select_axis(qtbot, actuator, "Frequency", AXES["Frequency"][1])
        assert move_home(qtbot, actuator) == 0.0
        assert observer.get("asg0", ["frequency"]) == {"frequency": 0.0}


def test_asg_settings_and_module_switch(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_ASG_TCP", port, axis="Amplitude")
    changes = {"waveform": "square", "output_direct": "out2", "trigger_source": "off"}
    with server_client(port) as observer:
        for name, value in changes.items():
            actuator.settings.child("actuator_settings", name).setValue(value)
        qtbot.waitUntil(lambda: observer.get("asg0", list(changes)) == changes, timeout=5000)
        # asg0 → asg1: the lease moves and the settings go to asg1; asg0 keeps its values
        actuator.settings.child("actuator_settings", "module").setValue("asg1")
        qtbot.waitUntil(lambda: observer.get("asg1", list(changes)) == changes, timeout=5000)
        assert leases(observer) == [["asg1"]]
        observer.lease("asg0")  # free for others now
        observer.release("asg0")
        assert move(qtbot, actuator, 0.25) == 0.25
        assert observer.get("asg1", ["amplitude"]) == {"amplitude": 0.25}
        assert observer.get("asg0", ["amplitude", "waveform"]) == {"amplitude": 0.0,
                                                                   "waveform": "square"}


def test_asg_invalid_value_shows_an_error_and_changes_nothing(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_ASG_TCP", port, axis="Amplitude")
    move(qtbot, actuator, 0.25)
    messages: list[str] = []
    actuator.status_sig.connect(messages.append)
    with server_client(port) as observer:
        before = observer.get("asg0")
        assert move(qtbot, actuator, 5.0) == 0.25  # move_done reports the unchanged amplitude
        qtbot.waitUntil(lambda: any("refused" in m and "amplitude" in m for m in messages),
                        timeout=5000)
        assert observer.get("asg0") == before
        # the problem stays shown (not only PyMoDAQ's 1 s status message) ...
        assert "move refused" in actuator.settings["actuator_settings", "problem"]
        assert move(qtbot, actuator, 0.5) == 0.5  # and the actuator works on
        # ... until it no longer holds
        qtbot.waitUntil(lambda: actuator.settings["actuator_settings", "problem"] == "",
                        timeout=5000)


def test_asg_quit_stops_the_auto_started_server(qtbot, port):
    from pymodaq.control_modules.daq_move import DAQ_Move

    actuator = DAQ_Move(parent=None, title="ASG quit test")
    actuator.actuator = "PyRPL_ASG_TCP"
    actuator.settings.child("actuator_settings", "pyrpl", "server_port").setValue(port)
    try:
        with qtbot.waitSignal(actuator.init_signal, timeout=30000) as init:
            actuator.init_hardware(True)
        assert init.args[0] is True
        state = runtime.read_state(port)
        assert runtime.pid_alive(state.pid)
    finally:
        actuator.quit_fun()
    qtbot.waitUntil(lambda: not runtime.pid_alive(state.pid), timeout=10000)
    assert runtime.read_live_state(port) is None


def test_master_asg_and_slave_pid_share_one_controller(qtbot, port, make_actuator):
    """PyMoDAQ's controller sharing, wired by hand as its ModuleLoader does for an experiment."""
    from pymodaq.control_modules.daq_move import DAQ_Move

    master = make_actuator("PyRPL_ASG_TCP", port, axis="Amplitude")
    slave = DAQ_Move(parent=None, title="PID slave test")
    slave.actuator = "PyRPL_PID_TCP"
    slave.axis_name = "Setpoint"
    slave.controller_and_thread.controller = master.controller_and_thread.controller
    slave.controller_and_thread.thread = master.controller_and_thread.thread
    slave.master = False
    slave.id = master.id = 42
    try:
        with qtbot.waitSignal(slave.init_signal, timeout=30000) as init:
            slave.init_hardware(True)
        assert init.args[0] is True
        plugins = master.controller_and_thread.thread._hardwares
        asg, pid = plugins[master.title].plugin, plugins[slave.title].plugin
        assert not pid.is_master and pid.controller is asg.controller
        assert move(qtbot, master, 0.25) == 0.25
        assert move(qtbot, slave, 0.125) == 0.125
        with server_client(port) as observer:
            assert observer.get("asg0", ["amplitude"]) == {"amplitude": 0.25}
            assert observer.get("pid0", ["setpoint"]) == {"setpoint": 0.125}
            # one connection (the master's client) holds both leases
            assert sorted(map(sorted, leases(observer))) == [["asg0", "pid0"]]
    finally:
        slave.quit_fun()  # slaves before their master (the fixture quits the master)
    with server_client(port) as observer:
        assert leases(observer) == [["asg0"]]
        assert move(qtbot, master, 0.5) == 0.5


def test_changing_the_hostname_connects_again(qtbot, port, make_actuator):
    """A connection setting changed on an initialized actuator applies: a board the running
    server does not serve is refused, reported as the module's problem, and changes nothing (the
    actuator stays connected); back to the simulated board, it works as before."""
    actuator = make_actuator("PyRPL_ASG_TCP", port, axis="Amplitude")
    assert move(qtbot, actuator, 0.25) == 0.25
    group = actuator.settings.child("actuator_settings", "pyrpl")
    group.child("hostname").setValue("_FAKE_")  # another board: the running server refuses
    qtbot.waitUntil(lambda: "not connected" in actuator.settings["actuator_settings", "problem"],
                    timeout=30000)
    with server_client(port) as observer:
        assert ["asg0"] in [c["leases"] for c in observer.status()["clients"]]  # still there
    group.child("hostname").setValue("")
    qtbot.waitUntil(lambda: actuator.settings["actuator_settings", "problem"] == "",
                    timeout=30000)
    with server_client(port) as observer:
        assert observer.get("asg0", ["amplitude"]) == {"amplitude": 0.25}
        assert ["asg0"] in [c["leases"] for c in observer.status()["clients"]]
    assert move(qtbot, actuator, 0.5) == 0.5
