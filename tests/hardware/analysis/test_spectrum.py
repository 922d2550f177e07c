"""The spectrum analyzer's arithmetic (PyRPL 0.9.9's SpectrumAnalyzer in baseband) on synthetic
traces; its agreement with PyRPL's own code is tested in test_spectrum_pyrpl.py."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.analysis import spectrum

SAMPLES = catalogue.SCOPE_SAMPLES


def test_spans_are_the_scope_sample_rates_and_give_the_trace_duration() -> None:
    assert len(spectrum.SPANS) == 17
    assert spectrum.SPANS[0] == pytest.approx(125e6)
    assert spectrum.SPANS[-1] == pytest.approx(125e6 / 65536)
    for n, span in enumerate(spectrum.SPANS):
        assert spectrum.decimation(span) == 2**n
        assert spectrum.scope_duration(span) == pytest.approx(catalogue.SCOPE_DURATIONS[n])


@pytest.mark.parametrize("name", spectrum.WINDOWS)
def test_windows_sum_to_two_so_a_sine_peaks_at_its_amplitude_squared(name: str) -> None:
    w = spectrum.window(name)
    assert w.shape == (SAMPLES,) and np.sum(w) == pytest.approx(2.0)
    assert not w.flags.writeable
    span = spectrum.SPANS[10]
    f = spectrum.frequencies(span)
    k = 4000  # a frequency of the padded grid
    t = np.arange(SAMPLES) * spectrum.decimation(span) / 125e6
    amplitude = 0.3
    trace = amplitude * np.cos(2 * np.pi * f[k] * t)
    result = spectrum.spectra(trace, trace, span, name)
    correction = spectrum.scope_response(span, f[k:k + 1])[0] ** 2
    assert abs(int(np.argmax(result.in1)) - k) <= 4  # the flat top's ripple: within 4 bins
    assert result.in1[k] * correction == pytest.approx(amplitude**2, rel=1e-3)


def test_rbw_is_the_window_noise_bandwidth_times_the_sample_rate() -> None:
    w = spectrum.window("boxcar")
    assert spectrum.equivalent_noise_bandwidth("boxcar") == pytest.approx(1 / SAMPLES)
    assert np.sum(w**2) / np.sum(w) ** 2 == pytest.approx(1 / SAMPLES)
    span = spectrum.SPANS[4]
    assert spectrum.rbw(span, "blackman") == pytest.approx(
        spectrum.equivalent_noise_bandwidth("blackman") * 125e6 / 16)
    assert spectrum.rbw(span, "blackman") == pytest.approx(1.727 * span / SAMPLES, rel=1e-3)


def test_frequencies_run_from_zero_to_half_the_span_on_a_16_times_padded_grid() -> None:
    span = spectrum.SPANS[6]
    f = spectrum.frequencies(span)
    assert len(f) == spectrum.POINTS == 131073
    assert f[0] == 0 and f[-1] == pytest.approx(span / 2)
    assert f[1] == pytest.approx(span / (16 * SAMPLES))


def test_white_noise_reads_its_density_in_every_window() -> None:
    rng = np.random.default_rng(3)
    span = spectrum.SPANS[0]  # no decimation: no boxcar correction
    rms = 1e-3
    for name in spectrum.WINDOWS:
        total = np.zeros(spectrum.POINTS)
        for _ in range(8):
            trace = rng.normal(0, rms, SAMPLES)
            total += spectrum.spectra(trace, trace, span, name).in1
        density = spectrum.to_unit(total / 8, "V^2/Hz", spectrum.rbw(span, name))
        assert np.mean(density[1000:-1000]) == pytest.approx(rms**2 / 62.5e6, rel=0.05), name


def test_the_boxcar_response_is_divided_out_as_pyrpl_does() -> None:
    span = spectrum.SPANS[3]
    f = np.array([0.0, span / 4, span / 2])
    np.testing.assert_allclose(spectrum.scope_response(span, f),
                               np.sinc(8 * f / 125e6))
    assert spectrum.scope_response(spectrum.SPANS[0], f).tolist() == [1.0, 1.0, 1.0]


def test_units_of_a_sine_and_of_a_density() -> None:
    rbw = 10.0
    vpk2 = np.array([1.0, 0.25, 0.0])
    np.testing.assert_allclose(spectrum.to_unit(vpk2, "V^2/Hz", rbw), [0.05, 0.0125, 0.0])
    np.testing.assert_allclose(spectrum.to_unit(vpk2, "Vrms/sqrt(Hz)", rbw),
                               np.sqrt([0.05, 0.0125, 0.0]))
    dbm = spectrum.to_unit(vpk2, "dBm", rbw)
    assert dbm[0] == pytest.approx(10.0)  # 1 V amplitude: 10 mW into 50 ohm
    assert dbm[1] == pytest.approx(10.0 + 20 * math.log10(0.5))
    assert np.isfinite(dbm[2])
    assert spectrum.sine_peak(0.5, "dBm", rbw) == pytest.approx(dbm[1])
    cross = spectrum.density(np.array([2.0 + 2.0j]), rbw)
    assert cross[0] == pytest.approx(0.1 + 0.1j)
    with pytest.raises(ValueError, match="units are"):
        spectrum.to_unit(vpk2, "dBV", rbw)
    with pytest.raises(ValueError, match="windows are"):
        spectrum.window("hann")


def test_the_input_noise_density_keeps_the_clock_density_plus_the_rounding() -> None:
    assert spectrum.input_noise_density(1e-3, spectrum.SPANS[0]) == pytest.approx(
        (1e-6 + 2.0**-26 / 12) / 62.5e6)
    assert spectrum.input_noise_density(0.0, spectrum.SPANS[4]) == pytest.approx(
        2.0**-26 / 12 * 16 / 62.5e6)
