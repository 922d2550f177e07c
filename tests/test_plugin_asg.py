"""The ASG actuator through PyMoDAQ's real DAQ_Move, against an auto-started simulated board."""
from __future__ import annotations

import pytest

from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient


def server_client(port: int) -> PyRPLClient:
    state = runtime.read_state(port)
    client = PyRPLClient("127.0.0.1", port, state.token, "test observer", reconnect=False)
    client.connect()
    return client


def test_asg_moves_are_instant_and_quantized(qtbot, port, make_actuator):
    actuator = make_actuator("PyRPL_ASG_TCP", port, axis="Frequency")
    with qtbot.waitSignal(actuator.move_done_signal, timeout=10000) as done:
        actuator.move_abs(1000.0)
    assert done.args[0].value() == pytest.approx(1000.00761449337)
    with server_client(port) as observer:
        values = observer.get("asg0", ["frequency", "output_direct", "trigger_source"])
        assert values == {"frequency": pytest.approx(1000.00761449337), "output_direct": "out1",
                          "trigger_source": "immediately"}
        leases = {c["client"]: c["leases"] for c in observer.status()["clients"]}
        assert ["asg0"] in leases.values()
