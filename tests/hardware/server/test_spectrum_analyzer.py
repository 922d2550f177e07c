"""The spectrum analyzer (module ``sa``) of a real ``--mock`` server subprocess, spoken to over raw
sockets as docs/protocol.md says: spectra of the simulated board's inputs, the scope lease it
takes, its settings."""
from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.analysis import spectrum
from tests.helpers.support import RawClient, ServerProcess
from tests.helpers.waiting import wait_until

NOISE = 1e-3
"""The simulated inputs' ADC noise, V rms per clock sample (the loopback plant's default)."""
SINE = {"waveform": "sin", "frequency": 1000.0, "amplitude": 0.5, "output_direct": "out1",
        "trigger_source": "immediately"}


def span_of(decimation: int) -> float:
    """The span of a scope decimation, as the server reads it back."""
    return catalogue.SA_SPANS[int(math.log2(decimation))]


def decibels(ratio: float) -> float:
    return 10.0 * math.log10(ratio)


def test_settings_start_at_the_catalogue_defaults_and_snap_as_pyrpl(
        mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        described = c.call("describe")["modules"]["sa"]
        assert described["kind"] == "sa"
        assert described["attributes"]["span"]["options"] == list(catalogue.SA_SPANS)
        assert described["attributes"]["rbw"]["readonly"] is True
        values = c.call("get", module="sa")
        assert values == {"span": span_of(1), "window": "blackman", "input1": "in1", "input2": "in2",
                          "unit": "Vrms/sqrt(Hz)", "trace_average": 1,
                          "rbw": pytest.approx(spectrum.rbw(span_of(1), "blackman"))}
        # the round spans a user types are accepted (PyRPL reads them back as 1 / (8 ns × d))
        assert c.call("set", module="sa", values={"span": 125e6}) == {"span": span_of(1)}
        assert c.call("set", module="sa", values={"span": 125e6 / 2**16}) == {
            "span": span_of(2**16)}
        applied = c.call("set", module="sa", values={"span": 130e3, "window": "flattop"})
        assert applied == {"span": span_of(1024), "window": "flattop"}
        assert c.call("get", module="sa", names=["rbw"]) == {
            "rbw": pytest.approx(spectrum.equivalent_noise_bandwidth("flattop") * 125e6 / 1024)}


@pytest.mark.parametrize("values", [{"span": 1000.0}, {"span": "wide"}, {"window": "hann"},
                                    {"unit": "dBV"}, {"trace_average": 0}, {"rbw": 10.0},
                                    {"input1": "in3"}, {"points": 100},
                                    {"span": 1e6, "window": "bartlett"}])
def test_bad_settings_are_refused_and_change_nothing(mock_server: ServerProcess,
                                                     values: dict) -> None:
    with mock_server.client() as c:
        before = c.call("get", module="sa")
        reply = c.request("set", {"module": "sa", "values": values})
        assert reply["error"]["code"] == -32602
        assert c.call("get", module="sa") == before


def test_bad_acquire_timeout_is_refused_and_changes_nothing(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        scope = c.call("get", module="scope")
        reply = c.request("acquire", {"module": "sa", "timeout": -1})
        assert reply["error"]["code"] == -32602
        assert c.call("get", module="scope") == scope


def test_sine_of_1khz_peaks_at_1khz_with_its_amplitude_in_every_unit(
        mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        sine = c.call("set", module="asg0", values=SINE)
        span = span_of(1024)
        c.call("set", module="sa", values={"span": span})
        for unit in catalogue.SA_UNITS:
            c.call("set", module="sa", values={"unit": unit})
            result = c.call("acquire", module="sa")
            assert result["unit"] == unit and result["span"] == span
            rbw = result["rbw"]
            assert rbw == pytest.approx(spectrum.rbw(span, "blackman"))
            frequencies = result["frequencies"]
            assert np.array_equal(frequencies, spectrum.frequencies(span))
            peak = int(np.argmax(result["in1"]))
            assert abs(frequencies[peak] - sine["frequency"]) <= frequencies[1]
            expected = spectrum.sine_peak(sine["amplitude"], unit, rbw)
            measured = result["in1"][peak]
            error_db = (measured - expected if unit == "dBm"
                        else decibels(measured / expected) * (2 if unit == "Vrms/sqrt(Hz)" else 1))
            assert abs(error_db) < 0.5, (unit, measured, expected)
        # the scope keeps the spectrum analyzer's settings
        scope = c.call("get", module="scope")
        assert scope["duration"] == pytest.approx(spectrum.scope_duration(span))
        assert (scope["input1"], scope["input2"], scope["trigger_source"], scope["average"],
                scope["trace_average"]) == ("in1", "in2", "immediately", True, 1)


def test_input_noise_reads_the_simulated_noise_floor(mock_server: ServerProcess) -> None:
    span = span_of(16)
    with mock_server.client() as c:
        c.call("set", module="sa", values={"span": span, "unit": "V^2/Hz", "trace_average": 4})
        result = c.call("acquire", module="sa")
    frequencies = result["frequencies"]
    band = (frequencies > span / 100) & (frequencies < span / 8)
    expected = spectrum.input_noise_density(NOISE, span)
    for channel in ("in1", "in2"):
        floor = float(np.mean(result[channel][band]))
        assert abs(decibels(floor / expected)) < 2.0, (channel, floor, expected)
    # the two inputs' noises are independent: their cross-spectrum averages far below the floor
    assert abs(np.mean(result["cross"][band])) < 0.1 * expected


def test_the_cross_spectrum_of_an_input_with_itself_is_its_spectrum(
        mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        c.call("set", module="asg0", values=SINE)
        c.call("set", module="sa", values={"span": span_of(1024), "input2": "in1",
                                           "unit": "V^2/Hz"})
        result = c.call("acquire", module="sa")
    assert np.array_equal(result["in1"], result["in2"])
    np.testing.assert_allclose(result["cross"].real, result["in1"], rtol=1e-12)
    assert np.all(np.abs(result["cross"].imag) <= 1e-12 * result["in1"])


def test_a_scope_leased_by_another_session_makes_the_analyzer_busy(
        mock_server: ServerProcess) -> None:
    with mock_server.client("alice") as alice, mock_server.client("bob") as bob:
        bob.call("lease", module="scope", owner="scope viewer")
        alice.call("set", module="sa", values={"span": span_of(64)})
        scope = bob.call("get", module="scope")
        reply = alice.request("acquire", {"module": "sa"})
        assert reply["error"]["code"] == -32003
        message = reply["error"]["message"]
        assert "scope is busy" in message and "'scope viewer' of client 'bob'" in message
        assert bob.call("get", module="scope") == scope
        leases = {s["client"]: s["leases"] for s in alice.call("status")["clients"]}
        assert leases == {"alice": [], "bob": ["scope"]}


def test_the_scope_is_leased_while_the_analyzer_runs_and_released_after(
        mock_server: ServerProcess) -> None:
    span = span_of(4096)  # 0.54 s traces
    with mock_server.client("alice") as alice, mock_server.client("bob") as bob:
        alice.call("set", module="sa", values={"span": span, "trace_average": 3})
        outcome: dict = {}
        worker = threading.Thread(
            target=lambda: outcome.update(alice.request("acquire", {"module": "sa"})))
        worker.start()
        try:
            def owners() -> dict:
                return {s["client"]: s["owners"] for s in bob.call("status")["clients"]}

            wait_until(lambda: owners()["alice"] == {"scope": "spectrum analyzer"}, 10,
                       "the spectrum analyzer's lease on the scope")
            refused = bob.request("set", {"module": "scope", "values": {"duration": 1e-3}})
            assert refused["error"]["code"] == -32003
            assert "'spectrum analyzer' of client 'alice'" in refused["error"]["message"]
        finally:
            worker.join(30)
        assert "result" in outcome, outcome
        assert owners()["alice"] == {}


def test_a_scope_lease_the_session_held_is_kept(mock_server: ServerProcess) -> None:
    with mock_server.client("alice") as alice:
        alice.call("lease", module="scope", owner="scope viewer")
        alice.call("set", module="sa", values={"span": span_of(64)})
        alice.call("acquire", module="sa")
        [client] = alice.call("status")["clients"]
        assert client["leases"] == ["scope"] and client["owners"] == {"scope": "scope viewer"}


def test_a_timeout_too_short_for_the_traces_is_an_acquisition_timeout(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--seed", "1"]) as server, server.client() as c:
        c.call("set", module="sa", values={"span": span_of(8192)})  # 1.07 s traces
        reply = c.request("acquire", {"module": "sa", "timeout": 0.2})
        assert reply["error"]["code"] == -32005
        assert c.call("status")["clients"][0]["leases"] == []
        with RawClient(server.port) as other:
            other.hello(server.token, "other")
            assert other.call("lease", module="scope")["leased"]
