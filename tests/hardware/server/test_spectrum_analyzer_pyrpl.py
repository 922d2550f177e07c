"""The spectrum analyzer on the PyRPL path, compared with PyRPL's own SpectrumAnalyzer: a server
with ``--hostname virtual`` (real PyRPL driving a virtual board) against PyRPL 0.9.9's
``p.spectrumanalyzer.single()`` run in its own process against another virtual board with the same
plant (the loopback), both with asg0 playing a 1 kHz sine of 0.5 V on out1.

Agreement: from the same scope traces, our arithmetic gives PyRPL's spectra bit for bit
(frequencies, both spectra, the cross-spectrum, rbw); between the two boards (independent noise),
the frequency points and rbw are identical, the sine's peak is within one point (its frequency
is half-way between two) and 0.05 dB, and the noise floors agree within 0.5 dB."""
from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware.analysis import spectrum
from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya
from tests.helpers.pyrpl_ssh import pyrpl_environment, run_script
from tests.helpers.scripts import PYRPL_SPECTRUM_PROBE
from tests.helpers.support import ServerProcess

pytestmark = [pytest.mark.pyrpl, pytest.mark.timeout(300)]

SPAN = spectrum.SPANS[10]  # decimation 1024: 0 … 61 kHz, rbw 12.9 Hz with blackman
WINDOW = "blackman"
SINE = {"waveform": "sin", "frequency": 1000.0, "amplitude": 0.5, "offset": 0.0,
        "output_direct": "out1", "trigger_source": "immediately"}
AVERAGE = 8
"""Spectra averaged on both sides (trace_average): the floors' scatter is then about 0.1 dB."""
PEAK_DB = 0.05
FLOOR_DB = 0.5


@pytest.fixture(scope="module")
def pyrpl_sa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """PyRPL's own analyzer, one ``single()`` of AVERAGE spectra: its result and its arrays."""
    folder = tmp_path_factory.mktemp("pyrpl_sa")
    board = VirtualRedPitaya(seed=5)
    board.start(0, 0)
    try:
        result = run_script([sys.executable, str(PYRPL_SPECTRUM_PROBE), str(board.ssh_port),
                             str(board.port), str(folder), repr(SPAN), WINDOW, str(AVERAGE), "1"],
                            pyrpl_environment(folder), timeout=180)
    finally:
        board.close()
    with np.load(folder / "pyrpl_sa.npz") as arrays:
        result.update({name: arrays[name] for name in arrays.files})
    yield result


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Our analyzer through a server on a virtual board: the spectrum in V^2/Hz, and iq2's
    settings and the sessions' leases before and after."""
    with ServerProcess(tmp_path_factory.mktemp("server"), ["--hostname", "virtual"],
                       startup_timeout=90) as server, server.client() as c:
        c.call("set", module="asg0", values=SINE)
        c.call("set", module="sa", values={"span": SPAN, "window": WINDOW, "unit": "V^2/Hz",
                                           "trace_average": AVERAGE})
        iq2 = c.call("get", module="iq2")
        result = c.call("acquire", module="sa", timeout=60)
        result.update(iq2_before=iq2, iq2_after=c.call("get", module="iq2"),
                      clients=c.call("status")["clients"])
        c.call("set", module="asg0", values={"output_direct": "off"})
        yield result


def decibels(ratio: float) -> float:
    return 10.0 * math.log10(ratio)


def test_our_arithmetic_gives_pyrpls_spectra_from_the_same_traces(
        pyrpl_sa: dict[str, Any]) -> None:
    traces = pyrpl_sa["traces"]  # PyRPL's ch1 + j ch2
    assert len(traces) == AVERAGE
    average = np.zeros((4, spectrum.POINTS))
    for n, trace in enumerate(traces, start=1):  # PyRPL's running average (_do_average_single)
        mine = spectrum.spectra(trace.real, trace.imag, SPAN, WINDOW)
        one = np.array([mine.in1, mine.in2, mine.cross.real, mine.cross.imag])
        average = (average * (n - 1) + one) / n
    assert np.array_equal(pyrpl_sa["frequencies"], spectrum.frequencies(SPAN))
    for k in range(4):
        assert np.array_equal(average[k], pyrpl_sa["data"][k]), k
    assert pyrpl_sa["rbw"] == spectrum.rbw(SPAN, WINDOW)
    assert pyrpl_sa["span"] == SPAN


def test_the_server_on_a_virtual_board_agrees_with_pyrpls_analyzer(
        pyrpl_sa: dict[str, Any], ours: dict[str, Any]) -> None:
    assert np.array_equal(ours["frequencies"], pyrpl_sa["frequencies"])
    assert ours["rbw"] == pyrpl_sa["rbw"] and ours["span"] == pyrpl_sa["span"]
    theirs = {"in1": pyrpl_sa["data"][0] / 2 / pyrpl_sa["rbw"],
              "in2": pyrpl_sa["data"][1] / 2 / pyrpl_sa["rbw"]}
    peak, our_peak = int(np.argmax(theirs["in1"])), int(np.argmax(ours["in1"]))
    assert abs(our_peak - peak) <= 1  # 1000.0076 Hz is half-way between two points
    assert abs(decibels(ours["in1"][our_peak] / theirs["in1"][peak])) < PEAK_DB
    f = ours["frequencies"]
    band = (f > 5e3) & (f < SPAN / 8)  # away from the sine, where the boxcar correction is small
    for channel in ("in1", "in2"):
        floor = decibels(np.mean(ours[channel][band]) / np.mean(theirs[channel][band]))
        assert abs(floor) < FLOOR_DB, (channel, floor)


def test_pyrpls_analyzer_takes_iq2_and_ours_leaves_it_alone(pyrpl_sa: dict[str, Any],
                                                             ours: dict[str, Any]) -> None:
    assert pyrpl_sa["owners"] == {"iq2": "spectrumanalyzer", "scope": None}
    assert ours["iq2_after"] == ours["iq2_before"]
    assert [client["leases"] for client in ours["clients"]] == [[]]
