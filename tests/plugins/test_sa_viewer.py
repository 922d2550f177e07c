"""The spectrum analyzer viewer through PyMoDAQ's real DAQ_Viewer, against an auto-started simulated
board (cables out1→in1, out2→in2, ~1 mV of input noise)."""
from __future__ import annotations

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.analysis import spectrum
from pymodaq_plugins_pyrpl.hardware.physics.plants import Loopback
from tests.helpers.plugins import (
    failed_init_messages,
    move,
    select_axis,
    server_client,
    set_setting,
    snap,
)

NAME = "PyRPL_SA_TCP"
SA = catalogue.module("sa").attributes
SINE_SPAN = catalogue.SA_SPANS[12]
"""30.5 kHz: the band 0–15 kHz in 0.54 s traces, rbw ≈ 3 Hz with the default window."""
NOISE_SPAN = catalogue.SA_SPANS[4]
"""7.8 MHz (decimation 16): the averaged input noise (0.25 mV) is still well above an LSB."""


def spectra_of(dte) -> dict:
    return {d.name: d for d in dte.get_data_from_dim("Data1D")}


def test_a_1_khz_sine_peaks_at_1_khz_with_its_amplitude(qtbot, port, make_viewer, make_actuator):
    asg = make_actuator("PyRPL_ASG_TCP", port, axis="Frequency", output_direct="out1",
                        waveform="sin")
    frequency = move(qtbot, asg, 1e3)
    select_axis(qtbot, asg, "Amplitude", "V")
    amplitude = move(qtbot, asg, 0.5)
    viewer = make_viewer(NAME, port, dim="DAQ1D", span=SINE_SPAN, unit="dBm")
    rbw = viewer.settings["detector_settings", "rbw"]
    assert rbw == pytest.approx(spectrum.rbw(SINE_SPAN, "blackman"))
    channels = spectra_of(snap(qtbot, viewer, timeout=15000))
    assert set(channels) == {"Spectrum", "Cross-spectrum"}
    spectra = channels["Spectrum"]
    assert spectra.labels == ["in1", "in2"] and spectra.units == "dBm"
    f = spectra.axes[0].get_data()
    assert f[0] == 0 and f[-1] == pytest.approx(SINE_SPAN / 2)
    in1 = spectra.data[0]
    peak = int(np.argmax(in1))
    print(f"peak {f[peak]:.2f} Hz, {in1[peak]:.2f} dBm (expected "
          f"{spectrum.sine_peak(amplitude, 'dBm', rbw):.2f} dBm)")
    assert f[peak] == pytest.approx(frequency, abs=rbw)
    assert in1[peak] == pytest.approx(spectrum.sine_peak(amplitude, "dBm", rbw), abs=0.5)
    assert np.max(spectra.data[1]) < in1[peak] - 40  # nothing on in2
    cross = channels["Cross-spectrum"]
    assert cross.units == "V^2/Hz" and cross.labels == ["|in1 × in2|"]


def test_the_input_noise_floor(qtbot, port, make_viewer):
    viewer = make_viewer(NAME, port, dim="DAQ1D", span=NOISE_SPAN, unit="V^2/Hz",
                         trace_average=4)
    spectra = spectra_of(snap(qtbot, viewer, timeout=15000))["Spectrum"]
    f = spectra.axes[0].get_data()
    band = (f > 0.01 * NOISE_SPAN) & (f < 0.4 * NOISE_SPAN)  # away from DC and the band's edge
    expected = spectrum.input_noise_density(Loopback().noise, NOISE_SPAN)
    for channel in spectra.data:
        floor = float(np.mean(channel[band]))
        print(f"noise floor {floor:.3g} V^2/Hz, expected {expected:.3g}")
        assert 10 * np.log10(floor / expected) == pytest.approx(0, abs=2)


def test_span_and_window_set_the_rbw(qtbot, port, make_viewer):
    viewer = make_viewer(NAME, port, dim="DAQ1D", span=SINE_SPAN)
    set_setting(qtbot, viewer, "window", "flattop")
    qtbot.waitUntil(lambda: viewer.settings["detector_settings", "rbw"]
                    == pytest.approx(spectrum.rbw(SINE_SPAN, "flattop")), timeout=5000)
    with server_client(port) as observer:
        assert observer.get("sa", ["window", "span"]) == {"window": "flattop",
                                                          "span": pytest.approx(SINE_SPAN)}
        leases = [set(c["leases"]) for c in observer.status()["clients"]]
        assert any({"sa", "scope"} <= held for held in leases), leases


def test_the_scope_viewer_is_refused_while_the_sa_holds_the_scope(qtbot, port, make_viewer):
    make_viewer(NAME, port, dim="DAQ1D")
    failed_init_messages(qtbot, "PyRPL_Scope_TCP", "DAQ1D", port,
                         "busy: the scope is used by PyRPL_SA_TCP test, which needs it alone")


def test_the_sa_is_refused_while_a_scope_viewer_holds_the_scope(qtbot, port, make_viewer):
    make_viewer("PyRPL_Scope_TCP", port, dim="DAQ1D")
    failed_init_messages(qtbot, NAME, "DAQ1D", port,
                         "busy: the scope is used by PyRPL_Scope_TCP test")
