"""The PyRPL backend's board link against a virtual board in this process (its register writes and
ssh command lines counted here), PyRPL and the backend in a subprocess
(``tests/helpers/scripts/board_link_probe.py``): a restart of the backend writes no register
(PyRPL's start-up writes are kept behind the write gate, with or without a named config) and
closing runs no ``killall monitor_server``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya
from tests.helpers.scripts import BOARD_LINK_PROBE

pytestmark = [pytest.mark.pyrpl, pytest.mark.timeout(240)]

PROBE_TIMEOUT = 120.0
"""Seconds one probe run may take (PyRPL's import and start-up on a loaded machine)."""

RUNNING = {
    "asg0": {"waveform": "sin", "frequency": 10e3, "amplitude": 0.4, "offset": 0.0,
             "output_direct": "out1", "trigger_source": "immediately"},
    "pid0": {"setpoint": 0.1, "p": 0.5, "i": 100.0, "input": "in1", "output_direct": "out2"},
}
"""Settings of a running board: an ASG on out1 and a PID on out2."""


def run_probe(folder: Path, *args: str) -> dict[str, Any]:
    """The probe's JSON result; HOME and PyRPL's user folder in ``folder`` (kept across runs)."""
    dirs = {name: folder / name.lower() for name in ("HOME", "PYRPL_USER_DIR", "XDG_RUNTIME_DIR")}
    for path in dirs.values():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDPITAYA_")}
    env.update({k: str(v) for k, v in dirs.items()}, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, str(BOARD_LINK_PROBE), *args], capture_output=True,
                          text=True, timeout=PROBE_TIMEOUT, env=env, stdin=subprocess.DEVNULL,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE_RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(lines[-1].split(" ", 1)[1])


@pytest.fixture
def board() -> Iterator[VirtualRedPitaya]:
    board = VirtualRedPitaya(mode="faithful", seed=3)
    board.start(0, 0)
    yield board
    board.close()


def session(board: VirtualRedPitaya, folder: Path, config: str,
            settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return run_probe(folder, "session", str(board.ssh_port), str(board.port), config,
                     json.dumps(settings))


@pytest.mark.parametrize("config", ["-", "stored"])
def test_a_restart_of_the_backend_writes_no_register(board: VirtualRedPitaya, tmp_path: Path,
                                                     config: str) -> None:
    first = session(board, tmp_path, config, RUNNING)
    assert first["state"] == ["ready", None]
    assert first["modules_use_the_link"]  # PyRPL's client and every module's: the backend's
    assert first["gated_writes"] > 0  # PyRPL's start-up writes (counter_wrap, ...): not sent
    registers = board.board.fpga.read(0x40200000, 16).tolist()
    writes = board.board.counts.writes

    second = session(board, tmp_path, config, {})
    assert second["state"] == ["ready", None]
    # with config "stored", PyRPL's _load_setup_attributes wanted to rewrite every setting
    assert second["gated_writes"] >= first["gated_writes"]
    assert board.board.counts.writes == writes  # none reached the board
    assert board.board.fpga.read(0x40200000, 16).tolist() == registers


def test_closing_runs_no_killall(board: VirtualRedPitaya, tmp_path: Path) -> None:
    session(board, tmp_path, "-", RUNNING)
    # PyRPL's start-up ran its one killall, before our monitor server started; none after
    lines = [c.line for c in board.commands.entries() if "monitor_server" in c.line]
    assert board.commands.killalls() == 1
    assert "killall" not in lines[-1]
    assert board.board.monitor_clients() == []  # our closed connection ended its server


REQUEST_BOUND = 1.5 + 0.4 + 1.0
"""Seconds a register access may take on a failing link: the board client's request timeout,
the allowance for its bytes, and a margin for a loaded machine."""
MARGIN = 1.5
"""Seconds a detection or a recovery may take beyond its bound on a loaded machine."""
HEARTBEAT, LINK_SILENCE, TAKEOVER_QUIET = 1.0, 3.0, 3.0
DETECTION = {"stall": HEARTBEAT + LINK_SILENCE, "fin": HEARTBEAT, "rst": HEARTBEAT,
             "garbage": 0.0, "reboot": HEARTBEAT}
"""The bound of each fault's detection (docs/reliability.md, "Board link")."""
RECOVERY = {"stall": 3.0, "garbage": 3.0, "fin": TAKEOVER_QUIET + 2.0,
            "rst": TAKEOVER_QUIET + 2.0, "reboot": 3.0}
"""The bound of each fault's recovery, from the end of the fault to ``ready``."""
FAULTS = [("faithful", "stall"), ("faithful", "fin"), ("faithful", "rst"),
          ("faithful", "garbage"), ("faithful", "reboot"), ("shared", "stall"),
          ("shared", "reboot")]


def test_a_bitfile_reload_is_seen_and_the_settings_restored(tmp_path: Path) -> None:
    result = run_probe(tmp_path, "fault", "shared", "reload")
    assert result["states"] == ["ready"]  # the link itself never failed
    assert result["detection"] < HEARTBEAT + MARGIN
    assert result["writes_before_first_call"] == result["setting_writes"]
    assert result["link_info"]["board_restarted_at"] is not None
    assert result["after"] == result["before"]


@pytest.mark.parametrize(("mode", "fault"), FAULTS, ids=[f"{m}-{f}" for m, f in FAULTS])
def test_a_lost_link_comes_back_by_itself(tmp_path: Path, mode: str,
                                                          fault: str) -> None:
    result = run_probe(tmp_path, "fault", mode, fault)
    assert result["states"] == ["ready", "lost", "ready"]  # no error, no flapping
    assert result["detection"] < DETECTION[fault] + MARGIN
    assert result["recovery"] < RECOVERY[fault] + MARGIN
    assert result["killalls"] == 0  # recovery ends no monitor_server
    assert result["state"] == ["ready", None]
    info = result["link_info"]
    assert (info["attempts"], info["other"]) == (0, None)
    if fault == "reboot":  # registers at reset values: the settings applied are restored
        # (the same writes as when they were first applied, to a board just powered on)
        assert result["writes_before_first_call"] == result["setting_writes"]
        restarted = datetime.fromisoformat(info["board_restarted_at"])
        assert restarted.tzinfo is not None
        assert abs(datetime.now(timezone.utc) - restarted).total_seconds() < 60
    else:
        assert result["writes_before_first_call"] == 0  # recovery writes no register
        assert info["board_restarted_at"] is None
    call = result["outage_call"]
    if call:  # a call during the fault fails in time, it does not hang
        assert call["error"] == "DeviceNotReady" and call["seconds"] < REQUEST_BOUND
    # the outputs kept running, untouched (or, after a reboot, run again as they were)
    assert result["after"] == result["before"]


TAKEN_STATES = (["ready", "lost", "taken"], ["ready", "taken"])
"""The states seen when another program takes the board: ``lost`` when our connection ends, and
``taken`` at the next look at the board, which may come within the watcher's 5 ms poll."""


@pytest.mark.parametrize("killall_close", ["fin", "rst"])
def test_another_program_takes_the_board_and_is_left_alone(tmp_path: Path,
                                                           killall_close: str) -> None:
    result = run_probe(tmp_path, "taken", killall_close, "take-back")
    other = "{}:{}".format(*result["held"]["data"])
    # seen within the quiet window after the other program's killall ended our connection
    assert result["taken_after_ready"] < TAKEOVER_QUIET + MARGIN
    assert result["states"] in TAKEN_STATES
    assert result["link_info"]["other"] == other
    assert result["reason"] == (f"another program took the Red Pitaya at 127.0.0.1 (its client "
                                f"at {other}); Initialize again to take it back")
    assert result["call"]["error"] == "DeviceNotReady"
    assert result["call"]["message"] == result["reason"]
    # while taken: no killall, no connection of ours, the other program served alone
    assert result["killalls_while_taken"] == 0
    assert result["connections_while_taken"] == 0
    assert result["clients_while_taken"] == [result["held"]["data"]]
    # taking it back is the user's decision: one killall, then ready
    assert result["take_board"]["ok"], result["take_board"]
    assert result["after"] == ["ready", None] and result["get_after"]["ok"]
    assert result["killalls_of_take_board"] == 1
    assert result["other"] == {"data_connection": killall_close}


def test_closing_while_taken_leaves_the_other_program_alone(tmp_path: Path) -> None:
    result = run_probe(tmp_path, "taken", "fin", "close")
    assert result["states"] in TAKEN_STATES
    assert result["killalls_of_close"] == 0
    assert result["other"] == {"data_connection": "open"}


def test_a_board_in_use_is_refused_at_open(tmp_path: Path) -> None:
    result = run_probe(tmp_path, "in-use", "refuse")
    other = "{}:{}".format(*result["held"]["data"])
    assert result["open"]["error"] == "BackendUnavailable"
    message = result["open"]["message"]
    assert f"in use by another program (a client at {other}" in message
    assert "--take-over" in message and "Take over the board" in message
    assert result["state"][0] == "error"
    assert result["killalls"] == 0  # looked at before PyRPL's start-up could end it
    assert result["clients"] == [result["held"]["data"]]
    assert result["other"] == {"data_connection": "open"}


def test_take_over_starts_on_a_board_in_use(tmp_path: Path) -> None:
    result = run_probe(tmp_path, "in-use", "take-over")
    assert result["open"]["ok"], result["open"]
    assert result["state"] == ["ready", None]
    assert result["killalls"] == 1  # PyRPL's start-up's, asked for
    assert result["clients"] != [result["held"]["data"]]
    assert result["other"]["data_connection"] in ("fin", "rst")
