"""The PID actuator through PyMoDAQ's real DAQ_Move, against an auto-started simulated board.

The server is checked through a separate PyRPLClient observer. A PID loop closed through the
loopback cable, on the simulated and the virtual board: test_physics.py.
"""
from __future__ import annotations

import os
import signal

import pytest
from pymodaq.utils.data import DataActuator

from pymodaq_plugins_pyrpl.daq_move_plugins.daq_move_PyRPL_PID_TCP import INPUT_FILTERS
from pymodaq_plugins_pyrpl.hardware import catalogue, runtime
from tests.helpers.plugins import move, plugin_of, select_axis, server_client

PID = catalogue.MODULES["pid0"].attributes










def test_pid_input_filter_choices_are_labelled_with_si_prefixes():
    """The input filter's choices: 'off', then each cutoff as a low- or high-pass with an SI prefix
    and 3 digits, like the other list settings (plugin_support.si_label)."""
    labels = list(INPUT_FILTERS)
    assert labels[:3] == ["high-pass 3.11 MHz", "high-pass 1.39 MHz", "high-pass 657 kHz"]
    assert labels[-3:] == ["low-pass 657 kHz", "low-pass 1.39 MHz", "low-pass 3.11 MHz"]
    assert INPUT_FILTERS["off"] == 0.0
    assert INPUT_FILTERS["low-pass 2.43 kHz"] == pytest.approx(2428.66, abs=0.01)
    assert INPUT_FILTERS["high-pass 1.19 Hz"] == pytest.approx(-1.1858, abs=1e-4)
    assert len(labels) == len(catalogue.filter_options(catalogue.PID_FILTER))


def test_pid_init_applies_settings_and_leases(port, make_actuator):
    make_actuator("PyRPL_PID_TCP", port, axis="Setpoint", module="pid1", input="in2",
                  output_direct="out2")
    with server_client(port) as observer:
        values = observer.get("pid1", ["input", "output_direct", "inputfilter", "min_voltage",
                                       "max_voltage", "pause_gains", "paused"])
        assert values == {"input": "in2", "output_direct": "out2", "inputfilter": [0.0] * 4,
                          "min_voltage": -1.0, "max_voltage": PID["max_voltage"].default,
                          "pause_gains": "pi", "paused": False}
        leases = [c["leases"] for c in observer.status()["clients"]]
        assert ["pid1"] in leases


def test_pid_axes_move_quantized_rel_and_home(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_PID_TCP", port, axis="Setpoint")
    expected = {"setpoint": PID["setpoint"].validate(0.123456),
                "p": PID["p"].validate(-0.1234567), "i": PID["i"].validate(-1234.5678)}
    assert move(qtbot, actuator, 0.123456) == pytest.approx(expected["setpoint"], abs=0)
    select_axis(qtbot, actuator, "P", "")
    assert move(qtbot, actuator, DataActuator(data=-0.1234567)) == pytest.approx(expected["p"],
                                                                                abs=0)
    assert move(qtbot, actuator, 5000.0) == expected["p"]  # beyond ±2048: refused, unchanged
    select_axis(qtbot, actuator, "I", "Hz")
    assert move(qtbot, actuator, -1234.5678) == pytest.approx(expected["i"], abs=0)
    with server_client(port) as observer:
        assert observer.get("pid0", ["setpoint", "p", "i"]) == expected
        # relative move on I, then home (I = 0), seen by the server
        assert move(qtbot, actuator, 234.5678, relative=True) == pytest.approx(
            PID["i"].validate(expected["i"] + 234.5678), abs=0.01)
        with qtbot.waitSignal(actuator.move_done_signal, timeout=10000) as done:
            actuator.move_home()
        assert done.args[0].value() == 0.0
        assert observer.get("pid0", ["i", "p", "setpoint"]) == {"i": 0.0, "p": expected["p"],
                                                                "setpoint": expected["setpoint"]}


def test_pid_settings_round_trip(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_PID_TCP", port, axis="Setpoint")
    plugin = plugin_of(actuator)
    cutoff = [f for f in INPUT_FILTERS.values() if 1000 < f < 3000][0]
    changes = {"input": "in2", "output_direct": "both", "inputfilter": cutoff,
               "min_voltage": -0.5, "max_voltage": 0.4, "pause_gains": "p", "paused": True}
    with server_client(port) as observer:
        for name, value in changes.items():
            actuator.settings.child("actuator_settings", name).setValue(value)
        expected = {**changes, "inputfilter": [cutoff, 0.0, 0.0, 0.0],
                    "min_voltage": PID["min_voltage"].validate(-0.5),
                    "max_voltage": PID["max_voltage"].validate(0.4)}
        qtbot.waitUntil(lambda: observer.get("pid0", list(changes)) == expected, timeout=5000)
        # the plugin shows the quantized limits
        qtbot.waitUntil(lambda: plugin.settings["max_voltage"] == expected["max_voltage"],
                        timeout=5000)

        # reset integrator: a push button that releases itself
        actuator.settings.child("actuator_settings", "reset_ival").setValue(True)
        qtbot.waitUntil(lambda: plugin.settings["reset_ival"] is False, timeout=5000)
        qtbot.waitUntil(lambda: actuator.settings["actuator_settings", "reset_ival"] is False,
                        timeout=5000)

        # module switch: the lease moves, the settings go to the new PID
        actuator.settings.child("actuator_settings", "module").setValue("pid2")
        qtbot.waitUntil(lambda: ["pid2"] in [c["leases"] for c in observer.status()["clients"]],
                        timeout=5000)
        qtbot.waitUntil(lambda: observer.get("pid2", ["input", "paused"])
                        == {"input": "in2", "paused": True}, timeout=5000)
        assert not any("pid0" in c["leases"] for c in observer.status()["clients"])


def test_pid_reset_integrator_zeroes_a_wound_up_integrator(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_PID_TCP", port, axis="I", input="in1", output_direct="off")
    with server_client(port) as observer:
        assert move(qtbot, actuator, 1000.0) == pytest.approx(1000.0, abs=0.01)
        # in1 ~ 0 V (no output), setpoint -0.5 V: error +0.5 V, ival grows at 2π·1000·0.5 V/s
        select_axis(qtbot, actuator, "Setpoint", "V")
        move(qtbot, actuator, -0.5)
        qtbot.waitUntil(lambda: observer.get("pid0", ["ival"])["ival"] > 1.0, timeout=5000)
        select_axis(qtbot, actuator, "I", "Hz")
        move(qtbot, actuator, 0.0)  # stop integrating
        assert observer.get("pid0", ["ival"])["ival"] > 1.0
        actuator.settings.child("actuator_settings", "reset_ival").setValue(True)
        qtbot.waitUntil(lambda: observer.get("pid0", ["ival"])["ival"] == 0.0, timeout=5000)


def test_pid_settings_and_moves_reapplied_after_a_server_restart(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_PID_TCP", port, axis="Setpoint", input="in2",
                             output_direct="out2", paused=True)
    move(qtbot, actuator, 0.25)
    select_axis(qtbot, actuator, "P", "")
    move(qtbot, actuator, -0.5)
    old = runtime.read_state(port)
    os.kill(old.pid, signal.SIGKILL)  # the manager restarts it; the plugin applies its values again
    expected = {"input": "in2", "output_direct": "out2", "paused": True,
                "setpoint": PID["setpoint"].validate(0.25), "p": -0.5}

    def reapplied() -> bool:
        state = runtime.read_state(port)
        if state is None or state.pid == old.pid or not runtime.pid_alive(state.pid):
            return False
        with server_client(port) as observer:
            return observer.get("pid0", list(expected)) == expected

    qtbot.waitUntil(reapplied, timeout=20000)
    assert move(qtbot, actuator, -0.25) == -0.25  # and the plugin works on
