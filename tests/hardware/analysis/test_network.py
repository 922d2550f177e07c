"""The network analyzer's arithmetic (``analysis/network.py``) against PyRPL 0.9.9's own
``NetworkAnalyzer`` code (run in a subprocess on a stand-in without a board), and the simulator's
set-up of the IQ module against what PyRPL's NA writes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.analysis import network
from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend
from tests.helpers.scripts import PYRPL_NETWORK_PROBE

NA = catalogue.INSTRUMENTS["na"]
RBW = NA.attributes["rbw"]
ACBANDWIDTH = NA.attributes["acbandwidth"]


def settings(**values: Any) -> dict[str, Any]:
    """The ``na`` defaults with ``values`` applied as a ``set`` would (validated)."""
    return {**NA.defaults(), **catalogue.validate("na", values)} if values else NA.defaults()


CASES = [
    settings(),
    settings(rbw=1000, average_per_point=3, points=301, logscale=False, start_freq=10e3,
             stop_freq=1e6, amplitude=0.37, acbandwidth=0),
    settings(rbw=1.2, average_per_point=1, points=11, start_freq=0.5, stop_freq=80.0,
             acbandwidth=3e6),
    settings(start_freq=123456.7, stop_freq=123456.7, points=7, rbw=77e3, amplitude=0.0),
    settings(start_freq=5e6, stop_freq=1e3, points=51, input="out2", output_direct="both"),
]


@pytest.fixture(scope="module")
def pyrpl_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    if importlib.util.find_spec("pyrpl") is None:
        pytest.skip("PyRPL is not installed")
    home = tmp_path_factory.mktemp("pyrpl")
    rng = np.random.default_rng(5)
    cases = [{"settings": {k: s[k] for k in ("start_freq", "stop_freq", "points", "logscale",
                                             "rbw", "average_per_point", "amplitude",
                                             "acbandwidth", "input", "output_direct")},
              "totals": rng.normal(0, 1e9, (4, 2)).tolist()} for s in CASES]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYRPL_USER_DIR=str(home),
               HOME=str(home), XDG_RUNTIME_DIR=str(home))
    completed = subprocess.run([sys.executable, str(PYRPL_NETWORK_PROBE)],
                               input=json.dumps({"cases": cases}), capture_output=True, text=True,
                               env=env, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])["results"]
    for case, result in zip(cases, results, strict=True):
        result["totals"] = case["totals"]
    return results


@pytest.mark.pyrpl
@pytest.mark.parametrize("index", range(len(CASES)))
def test_arithmetic_is_pyrpls(pyrpl_results: list[dict[str, Any]], index: int) -> None:
    s, pyrpl = CASES[index], pyrpl_results[index]
    frequencies = network.frequencies(s["start_freq"], s["stop_freq"], s["points"],
                                      s["logscale"])
    np.testing.assert_array_equal(frequencies, pyrpl["frequencies"])
    averaging = network.averaging(s["rbw"], s["average_per_point"])
    assert (averaging.averages, averaging.sleepcycles) == (pyrpl["averages"],
                                                           pyrpl["sleepcycles"])
    assert averaging.time_per_point == pytest.approx(pyrpl["time_per_point"], rel=1e-15)
    assert network.RESCALE == pyrpl["rescale"]
    tf = network.transfer_function(frequencies, -s["acbandwidth"])
    np.testing.assert_allclose(tf, [complex(*z) for z in pyrpl["tf"]], rtol=1e-13)
    totals = np.array([complex(*t) for t in pyrpl["totals"]])
    np.testing.assert_allclose(network.normalise(totals, averaging.averages, s["amplitude"],
                                                 tf[:len(totals)]),
                               [complex(*z) for z in pyrpl["points"]], rtol=1e-13)
    assert network.settings_sweep_time(s) == pytest.approx(
        (s["points"] + 2) * pyrpl["time_per_point"], rel=1e-15)


@pytest.mark.pyrpl
@pytest.mark.parametrize("index", range(len(CASES)))
def test_simulator_sets_the_iq_up_as_pyrpls_na(pyrpl_results: list[dict[str, Any]],
                                              index: int) -> None:
    s, pyrpl = CASES[index], pyrpl_results[index]
    backend = SimulatorBackend(seed=0)
    sweep = backend.na_start(s)
    iq = backend.get(s["iq"], list(catalogue.MODULES[s["iq"]].attributes))
    setup = pyrpl["setup"]
    np.testing.assert_array_equal(sweep.frequencies, pyrpl["frequencies"])
    assert sweep.time_per_point == pytest.approx(pyrpl["time_per_point"], rel=1e-15)
    assert sweep.rbw == setup["bandwidth"][0]
    assert iq["bandwidth"] == [*setup["bandwidth"], 0.0, 0.0]
    assert iq["frequency"] == pytest.approx(setup["frequency"], abs=1e-9)
    for name in ("gain", "phase", "acbandwidth", "input", "output_direct", "output_signal"):
        assert iq[name] == setup[name], name
    # amplitude 0 first, the amplitude on last (the writes after the set-up)
    assert pyrpl["writes"][0] == ["amplitude", 0] and pyrpl["writes"][-2][0] == "amplitude"
    assert iq["amplitude"] == pytest.approx(s["amplitude"], abs=1e-12)
    backend.na_stop()
    assert backend.get(s["iq"], ["amplitude"]) == {"amplitude": 0.0}
