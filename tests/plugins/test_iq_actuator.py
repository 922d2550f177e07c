"""The IQ actuator through PyMoDAQ's real DAQ_Move, alone and with the IQ viewer on the same module,
against an auto-started simulated board (observed through a separate PyRPLClient)."""
from __future__ import annotations

import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.errors import ModuleLeased
from tests.helpers.plugins import move, select_axis, server_client, snap

NAME = "PyRPL_IQ_TCP"
IQ = catalogue.MODULES["iq0"].attributes
AXES = {"Frequency": ("frequency", "Hz", 12345.678), "Phase": ("phase", "°", -30.3),
        "Amplitude": ("amplitude", "V", 0.123456)}
"""axis → (IQ attribute, unit, a value to move to)."""


def leases(observer) -> list[list[str]]:
    return [c["leases"] for c in observer.status()["clients"] if c["client"] != "test observer"]


def test_every_axis_moves_and_reads_back_quantized(qtbot, port, make_actuator):
    actuator = make_actuator(NAME, port, axis="Frequency")
    with server_client(port) as observer:
        before = observer.get("iq0")
        for axis, (attribute, unit, value) in AXES.items():
            select_axis(qtbot, actuator, axis, unit)
            expected = IQ[attribute].validate(value)
            assert expected != value  # the value is really quantized
            assert move(qtbot, actuator, value) == pytest.approx(expected), axis
            assert observer.get("iq0", [attribute]) == {attribute: pytest.approx(expected)}
        # the actuator changed its three attributes and nothing else (the viewer's settings)
        after = observer.get("iq0")
        assert {k for k in after if after[k] != before[k]} == {a for a, _, _ in AXES.values()}
        assert ["iq0"] in leases(observer)


def test_actuator_and_viewer_share_the_module(qtbot, port, make_viewer, make_actuator):
    viewer = make_viewer(NAME, port, input="in1", output_direct="out1")
    actuator = make_actuator(NAME, port, axis="Frequency")  # same process, same module: no fight
    target = IQ["frequency"].validate(54321.0)
    assert move(qtbot, actuator, 54321.0) == pytest.approx(target)
    snap(qtbot, viewer)  # the viewer's settings follow the actuator's moves
    qtbot.waitUntil(lambda: viewer.settings["detector_settings", "frequency"] == target,
                    timeout=5000)
    with server_client(port) as other:  # another client (a program of its own) is refused
        with pytest.raises(ModuleLeased, match="iq0.*leased by 'PyRPL_IQ_TCP test' of client 'PyMoDAQ"):
            other.lease("iq0")
        thread = actuator.controller_and_thread.thread
        actuator.quit_fun()  # its plugin lets the module go; the viewer still holds it
        qtbot.waitUntil(thread.isFinished, timeout=10000)
        with pytest.raises(ModuleLeased, match="iq0"):
            other.lease("iq0")
        assert ["iq0"] in leases(other)
        snap(qtbot, viewer)
