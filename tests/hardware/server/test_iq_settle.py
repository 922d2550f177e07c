"""An IQ acquisition waits until the demodulator's filter has settled after a change of the module
(a real server subprocess on the simulated resonator, whose readings show the transient)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from tests.helpers.support import ServerProcess

RESONATOR = ["--mock", "--seed", "1", "--plant", "resonator:noise=0"]


def amplitude(reading: dict[str, float]) -> float:
    return math.hypot(reading["i"], reading["q"])


def test_acquire_after_a_frequency_step_reads_the_settled_value(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, RESONATOR) as server, server.client() as c:
        applied = c.call("set", module="iq0", values={
            "input": "in1", "output_direct": "out1", "amplitude": 0.02, "frequency": 90e3,
            "bandwidth": [151.8, 0.0]})
        assert amplitude(c.call("acquire", module="iq0")) == pytest.approx(
            applied["amplitude"] * abs(1 / (1 - 0.81 + 0.9j / 30)), rel=1e-3)
        c.call("set", module="iq0", values={"frequency": 100e3})  # onto the resonance: gain 30
        # read at once, the filter would still show ~0.1 V (its time constant is 1 ms)
        assert amplitude(c.call("acquire", module="iq0")) == pytest.approx(
            30 * applied["amplitude"], rel=2 * catalogue.SETTLE_FRACTION)


def test_acquire_times_out_if_the_filter_settles_later(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, RESONATOR) as server, server.client() as c:
        applied = c.call("set", module="iq0", values={"frequency": 100e3, "bandwidth": [10.0, 0.0]})
        assert catalogue.filter_settle_time(applied["bandwidth"]) > 0.1
        reply = c.request("acquire", {"module": "iq0", "timeout": 0.05})
        assert reply["error"]["code"] == -32005
        assert "has not settled within 0.05 s" in reply["error"]["message"]
        assert set(c.call("acquire", module="iq0", timeout=5)) == {"i", "q"}
