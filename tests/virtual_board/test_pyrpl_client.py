"""PyRPL's hardware modules against the virtual board, over a real socket (no ssh), on PyRPL's real
``MonitorClient`` and on the PyRPL backend's own ``BoardClient``: register read-back, a sine through the loopback on the scope, the IQ amplitude, the
sampler, a PID loop settling, an IIR filter against PyRPL's prediction, and PyRPL's own
``test_registers`` check on all 219 registers.

PyRPL runs in a subprocess (``tests/helpers/scripts/pyrpl_client_probe.py``: importing PyRPL
creates a QApplication); the board runs here, in threads, so the test sees its counters.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pymodaq_plugins_pyrpl.virtual_board import MonitorServer, VirtualBoard
from tests.helpers.scripts import PYRPL_CLIENT_PROBE

pytestmark = pytest.mark.pyrpl


CLIENTS = {"pyrpl": "MonitorClient", "board": "BoardClient"}
"""The probe's client argument -> the class PyRPL's modules then use."""


@pytest.fixture(scope="module", params=list(CLIENTS))
def client(request: pytest.FixtureRequest) -> str:
    """Which client PyRPL's modules run on (each one gets a fresh board)."""
    return request.param


@pytest.fixture(scope="module")
def board(client: str) -> VirtualBoard:
    return VirtualBoard(seed=7)


@pytest.fixture(scope="module")
def probe(client: str, board: VirtualBoard, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, Any]]:
    server = MonitorServer(board)
    port = server.start(0)
    folder = tmp_path_factory.mktemp("pyrpl_client")
    dirs = {name: folder / name.lower() for name in ("HOME", "PYRPL_USER_DIR", "XDG_RUNTIME_DIR")}
    for path in dirs.values():
        path.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDPITAYA_")}
    env.update({k: str(v) for k, v in dirs.items()}, QT_QPA_PLATFORM="offscreen")
    try:
        proc = subprocess.run([sys.executable, str(PYRPL_CLIENT_PROBE), str(port), client],
                              check=False, capture_output=True, text=True, timeout=180, env=env,
                              stdin=subprocess.DEVNULL)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE_RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    yield json.loads(lines[-1].split(" ", 1)[1])


def scenario(probe: dict[str, Any], name: str) -> dict[str, Any]:
    result = probe[name]
    assert "error" not in result, result.get("error")
    return result


def test_pyrpl_modules_use_the_client_given(probe: dict[str, Any], client: str) -> None:
    assert probe["client"] == CLIENTS[client]
    assert probe["modules_share_it"]
    reads, writes = probe["counters"]  # PyRPL's own test_na reads these two counters
    assert reads > 500 and writes > 100


def test_asg_settings_read_back_as_set(probe: dict[str, Any]) -> None:
    asg = scenario(probe, "asg_readback")
    assert asg["frequency"] == pytest.approx(12345.0, abs=0.06)
    assert asg["amplitude"] == pytest.approx(0.4, abs=2**-13)
    assert asg["offset"] == pytest.approx(-0.1, abs=2**-13)
    assert (asg["waveform"], asg["trigger_source"], asg["output_direct"]) == (
        "sin", "immediately", "out1")


def test_scope_shows_the_asg_sine_through_the_loopback(probe: dict[str, Any]) -> None:
    scope = scenario(probe, "scope_sine")
    for channel in ("in1", "asg0"):
        assert scope[channel]["frequency"] == pytest.approx(50e3, rel=1e-3), channel
        assert scope[channel]["amplitude"] == pytest.approx(0.5, abs=0.01), channel
        assert scope[channel]["mean"] == pytest.approx(0.0, abs=0.01), channel


def test_scope_edge_trigger_is_at_the_trace_centre(probe: dict[str, Any]) -> None:
    """in1 crosses the 0.2 V threshold between the samples before and after t = 0 (18 mV apart;
    the ADC noise is 1 mV rms)."""
    edge = scenario(probe, "scope_edge")
    noise = 0.004
    assert edge["t_centre"] == 0.0
    assert max(edge["before"]) < 0.2 + noise and min(edge["after"]) >= 0.2 - noise
    assert edge["before"] == sorted(edge["before"]) and edge["after"] == sorted(edge["after"])


def test_iq_reads_the_asg_amplitude(probe: dict[str, Any]) -> None:
    iq = scenario(probe, "iq_amplitude")
    assert iq["amplitude"] == pytest.approx(0.3, abs=3e-3)


def test_sampler_reads_the_outputs(probe: dict[str, Any]) -> None:
    sampled = scenario(probe, "sampler")
    scale = 8192 / 8191  # PyRPL's sampler divides by 2**13 - 1
    assert sampled["out1"] == sampled["asg0"] == pytest.approx(0.25 * scale)
    assert sampled["out2"] == sampled["asg1"] == pytest.approx(-0.5 * scale)


def test_pid_through_the_loopback_settles_on_its_setpoint(probe: dict[str, Any]) -> None:
    pid = scenario(probe, "pid_settles")
    assert pid["in1"] == pytest.approx(0.3, abs=0.01)
    assert pid["ival"] == pytest.approx(0.3, abs=0.02)


def test_iir_filter_measures_as_pyrpl_predicts(probe: dict[str, Any]) -> None:
    """PyRPL's IIR design (loops = 35) measured through the board matches PyRPL's own prediction
    within 1 % up to 200 kHz; at 1 MHz the hold of 35 cycles, which PyRPL counts as a delay
    only, takes 12 % off (sin(pi f T) / (35 sin(pi f 8 ns)), T = 280 ns)."""
    result = scenario(probe, "iir_filter")
    assert result["loops"] == 35
    measured = [complex(*z) for z in result["measured"]]
    theory = [complex(*z) for z in result["theory"]]
    for f, m, t in zip((10e3, 50e3, 200e3), measured, theory):
        assert abs(m / t - 1) < 0.01, f
    hold = math.sin(math.pi * 1e6 * 280e-9) / (35 * math.sin(math.pi * 1e6 * 8e-9))
    assert abs(measured[3]) / abs(theory[3]) == pytest.approx(hold, abs=0.01)
    assert result["overflow"] == 0  # 0.05 V through the resonance (x 6) stays far from 1 V
    assert abs(complex(*result["bypassed"]) - 1) < 0.01


def test_pyrpls_register_test_passes_on_every_register(probe: dict[str, Any]) -> None:
    registers = scenario(probe, "registers")
    assert registers["checked"] >= 200
    assert registers["failures"] == []


def test_the_board_counted_pyrpls_requests(probe: dict[str, Any], board: VirtualBoard) -> None:
    scenario(probe, "round_trip")
    assert board.counts.writes > 100 and board.counts.reads > 500
