"""The network analyzer on the PyRPL backend (``na_start`` / ``na_points`` / ``na_stop``) against
PyRPL 0.9.9's own ``NetworkAnalyzer``, both driving one virtual board over its ports
(``tests/helpers/scripts/pyrpl_na_sweep_probe.py``, one subprocess each: PyRPL is never imported here).

The same settings through both give the same frequency points exactly and the same transfer
function within the board's noise (the ADC's 1 mV rms averaged over a point: about 1e-4 of a
0.1 V excitation, 0.001 dB and 0.005°) and, on the resonator, its filter's settling; the bounds
below are several times the largest difference measured over 101 points. Both read the plant: a
cable (0 dB, the phase of its 16 ns delay and 60 MHz bandwidth) or the resonator (its f0 and Q).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware.physics.plants import Resonator, parse_plant
from pymodaq_plugins_pyrpl.virtual_board.process import VirtualBoardProcess, start_virtual_board
from tests.helpers.pyrpl_probe import run_probe
from tests.helpers.scripts import PYRPL_NA_SWEEP_PROBE
from tests.helpers.support import ServerProcess

pytestmark = pytest.mark.pyrpl

NA = {"iq": "iq2", "points": 101, "rbw": 1000.0, "average_per_point": 1, "amplitude": 0.1,
      "input": "in1", "output_direct": "out1", "acbandwidth": 50.0}
SWEEPS = {
    "loopback": {**NA, "start_freq": 1e3, "stop_freq": 1e6, "logscale": True},
    "resonator": {**NA, "start_freq": 90e3, "stop_freq": 110e3, "logscale": False},
}
"""The ``na`` settings swept on each plant: a log sweep over three decades on the cable, a linear
one across the resonance (f0 100 kHz, linewidth 3.3 kHz)."""
AGREEMENT = {"loopback": (0.02, 0.1), "resonator": (0.1, 1.0)}
"""dB and degrees two sweeps on one board may be apart, per point. Measured: 0.002 dB and 0.012°
on the cable (the noise); 0.016 dB and 0.16° on the resonator, where the quadrature filter still
settles from the previous points when a point's average starts (half an rbw period after its
frequency step, as on a board) and so depends on how long each point took: ours take their time
per point plus two register round trips, PyRPL's about 1 ms more."""
PLANT_READING = {"loopback": (0.02, 0.1), "resonator": (0.2, 2.0)}
"""dB and degrees a sweep may be off its plant's transfer function, per point. Measured: 0.0014 dB
and 0.05° on the cable; 0.06 dB and 0.52° on the resonator (the filter's settling above)."""


def complex_data(result: dict[str, Any]) -> np.ndarray:
    return np.array(result["re"]) + 1j * np.array(result["im"])


def assert_close(measured: np.ndarray, expected: np.ndarray, bounds: tuple[float, float]
                 ) -> None:
    ratio = measured / expected
    assert np.max(np.abs(20 * np.log10(np.abs(ratio)))) < bounds[0]
    assert np.max(np.abs(np.degrees(np.angle(ratio)))) < bounds[1]


@pytest.fixture(scope="module", params=list(SWEEPS))
def plant(request: pytest.FixtureRequest) -> Iterator[tuple[str, VirtualBoardProcess]]:
    board = start_virtual_board(request.param)
    try:
        yield request.param, board
    finally:
        board.stop()


@pytest.fixture(scope="module")
def sweeps(plant: tuple[str, VirtualBoardProcess], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Any]:
    """The plant's sweep through our backend, then through PyRPL's NA, on the same board."""
    name, board = plant
    folder = tmp_path_factory.mktemp(f"na-{name}")
    ports = (board.host, str(board.ssh_port), str(board.port))
    settings = json.dumps(SWEEPS[name])
    return {"plant": name,
            "ours": run_probe(PYRPL_NA_SWEEP_PROBE, folder, "backend", *ports, settings),
            "pyrpl": run_probe(PYRPL_NA_SWEEP_PROBE, folder, "pyrpl", *ports, settings)}


def test_the_same_frequency_points_as_pyrpl(sweeps: dict[str, Any]) -> None:
    ours, pyrpl = sweeps["ours"], sweeps["pyrpl"]
    assert len(ours["frequencies"]) == SWEEPS[sweeps["plant"]]["points"]
    assert ours["frequencies"] == pyrpl["frequencies"]
    assert (ours["rbw"], ours["time_per_point"]) == (pyrpl["rbw"], pyrpl["time_per_point"])


def test_the_same_transfer_function_as_pyrpl(sweeps: dict[str, Any]) -> None:
    assert_close(complex_data(sweeps["ours"]), complex_data(sweeps["pyrpl"]),
                 AGREEMENT[sweeps["plant"]])


@pytest.mark.parametrize("who", ["ours", "pyrpl"])
def test_the_sweep_reads_the_plant(sweeps: dict[str, Any], who: str) -> None:
    result = sweeps[who]
    plant = parse_plant(sweeps["plant"])
    expected = np.array([plant.transfer(f) for f in result["frequencies"]])
    assert_close(complex_data(result), expected, PLANT_READING[sweeps["plant"]])


def test_a_sweep_through_the_server_agrees_with_pyrpl(
        plant: tuple[str, VirtualBoardProcess], sweeps: dict[str, Any],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The server on the same board by its ports, a client's ``acquire`` of ``na``."""
    name, board = plant
    options = ["--hostname", board.host, "--ssh-port", str(board.ssh_port), "--board-port",
               str(board.port)]
    with ServerProcess(tmp_path_factory.mktemp(f"na-server-{name}"), options,
                       startup_timeout=60) as server, server.client() as c:
        c.call("set", module="na", values={**SWEEPS[name], "trace_average": 1})
        reply = c.call("acquire", module="na", timeout=60)
    pyrpl = sweeps["pyrpl"]
    assert reply["complete"] and reply["done"] == SWEEPS[name]["points"]
    assert reply["frequencies"].tolist() == pyrpl["frequencies"]
    assert_close(reply["data"], complex_data(pyrpl), AGREEMENT[name])


@pytest.mark.parametrize("plant", ["resonator"], indirect=True)
def test_the_resonance_gives_f0_and_q(sweeps: dict[str, Any]) -> None:
    f = np.array(sweeps["ours"]["frequencies"])
    # 1/H = (1 - (f/f0)**2 + j f/(f0 q)) / gain: linear in 1/gain, f**2 and f
    inverse = 1 / complex_data(sweeps["ours"])
    (a, b), *_ = np.linalg.lstsq(np.column_stack([np.ones_like(f), f**2]), inverse.real,
                                 rcond=None)
    c = np.sum(inverse.imag * f) / np.sum(f * f)
    f0 = np.sqrt(-a / b)
    expected = Resonator()
    assert f0 == pytest.approx(expected.f0, rel=5e-3)
    assert a / (c * f0) == pytest.approx(expected.q, rel=0.05)


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    board = start_virtual_board("loopback")
    try:
        return run_probe(PYRPL_NA_SWEEP_PROBE, tmp_path_factory.mktemp("na-contract"), "contract",
                         board.host, str(board.ssh_port), str(board.port),
                         json.dumps({**SWEEPS["loopback"], "points": 11}))
    finally:
        board.stop()


def test_calls_out_of_order_are_refused(contract: dict[str, Any]) -> None:
    for call in ("points_before_start", "points_out_of_order", "points_past_the_end",
                 "points_after_stop", "start_other_module"):
        assert contract[call]["error"] == "InvalidParams", call
    assert contract["stop_before_start"]["ok"] and contract["stop_again"]["ok"]
    assert contract["start"]["ok"] and contract["first_point"]["ok"]
    (magnitude,), wait = contract["first_point"]["value"]
    assert magnitude == pytest.approx(1.0, abs=1e-3) and wait == 0.0


def test_the_sweep_drives_its_iq_and_stop_ends_the_excitation(contract: dict[str, Any]) -> None:
    during = contract["iq2_during"]
    assert (during["input"], during["output_direct"], during["output_signal"]) == (
        "in1", "out1", "output_direct")
    assert during["amplitude"] == pytest.approx(0.1, abs=1e-4)
    assert contract["iq2_after"]["amplitude"] == 0.0


def test_a_restore_after_an_fpga_reset_replays_the_users_settings_not_the_sweep(
        contract: dict[str, Any]) -> None:
    assert contract["restored"] is True
    assert contract["iq2_restored"] == contract["user"]
    # the sweep under way when the FPGA was reset ends with a clear error
    assert contract["points_after_reset"]["error"] == "DeviceNotReady"
    assert "restarted during the network-analyzer sweep" in (
        contract["points_after_reset"]["message"])
    assert contract["stop_after_reset"]["ok"]
