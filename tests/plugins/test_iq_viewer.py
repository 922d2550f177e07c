"""The IQ (lock-in) viewer through PyMoDAQ's real DAQ_Viewer, against an auto-started simulated board."""
from __future__ import annotations

import math

import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from tests.helpers.plugins import (
    continuous_frames,
    failed_init_messages,
    quit_stops_server,
    server_client,
    set_setting,
    snap,
)

NAME = "PyRPL_IQ_TCP"
IQ = catalogue.MODULES["iq0"].attributes
BANDWIDTH = [f for f in IQ["bandwidth"].options if f > 0]


def test_snap_settings_and_quit(qtbot, port, make_viewer):
    viewer = make_viewer(NAME, port)
    dte = snap(qtbot, viewer)
    [iq, phase] = dte.get_data_from_dim("Data0D")
    assert iq.name == "Lock-in" and iq.labels == ["I", "Q", "Amplitude"] and iq.units == "V"
    assert [a.shape for a in iq.data] == [(1,)] * 3
    i, q, amplitude = (float(a[0]) for a in iq.data)
    assert amplitude == pytest.approx(math.hypot(i, q))
    assert phase.labels == ["Phase"] and phase.units == "°"
    assert float(phase.data[0][0]) == pytest.approx(math.degrees(math.atan2(q, i)))

    # settings round trip: the server gets the quantized values, the settings show them
    set_setting(qtbot, viewer, "frequency", 12345.678, IQ["frequency"].validate(12345.678))
    set_setting(qtbot, viewer, "phase", -30.3, IQ["phase"].validate(-30.3))
    set_setting(qtbot, viewer, "gain", 0.1001, IQ["gain"].validate(0.1001))
    set_setting(qtbot, viewer, "bandwidth", BANDWIDTH[10])
    with server_client(port) as observer:
        values = observer.get("iq0", ["frequency", "phase", "gain", "bandwidth", "output_signal",
                                      "input", "amplitude", "output_direct"])
        assert values == {"frequency": IQ["frequency"].validate(12345.678),
                          "phase": IQ["phase"].validate(-30.3),
                          "gain": IQ["gain"].validate(0.1001),
                          "bandwidth": [BANDWIDTH[10], 0.0], "output_signal": "quadrature",
                          "input": "in1", "amplitude": 0.0, "output_direct": "off"}
        assert ["iq0"] in [c["leases"] for c in observer.status()["clients"]]

        # switching the module moves the lease and applies the settings to the new module
        viewer.settings.child("detector_settings", "module").setValue("iq2")
        frequency = IQ["frequency"].validate(12345.678)
        qtbot.waitUntil(lambda: observer.get("iq2", ["frequency"])["frequency"] == frequency,
                        timeout=5000)  # the lease moves first, then the settings are applied
        assert ["iq2"] in [c["leases"] for c in observer.status()["clients"]]
    snap(qtbot, viewer)
    quit_stops_server(qtbot, viewer, port)


def test_switch_to_a_module_leased_elsewhere_is_refused(qtbot, port, make_viewer):
    viewer = make_viewer(NAME, port)
    messages = []
    viewer.status_sig.connect(messages.append)
    with server_client(port) as other:
        other.lease("iq1")
        viewer.settings.child("detector_settings", "module").setValue("iq1")
        qtbot.waitUntil(lambda: any("module not changed" in m for m in messages), timeout=5000)
        qtbot.waitUntil(lambda: viewer.settings["detector_settings", "module"] == "iq0",
                        timeout=5000)
        assert ["iq0"] in [c["leases"] for c in other.status()["clients"]]
    snap(qtbot, viewer)


def test_continuous_grab_and_stop(qtbot, port, make_viewer):
    continuous_frames(qtbot, make_viewer(NAME, port))


def test_module_leased_elsewhere_fails_init_with_a_message(qtbot, port, make_viewer):
    make_viewer("PyRPL_Sampler_TCP", port)  # starts the server
    with server_client(port) as other:
        other.lease("iq0")
        messages = failed_init_messages(qtbot, NAME, "DAQ0D", port, "leased")
    assert "leased" in messages[-1]
