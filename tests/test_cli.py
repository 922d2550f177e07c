"""The ``pymodaq-pyrpl`` console script."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pymodaq_plugins_pyrpl import __version__
from pymodaq_plugins_pyrpl import cli as cli_module
from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.client.device import local_time
from pymodaq_plugins_pyrpl.hardware.errors import ServerError
from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager, stop_local_server
from pymodaq_plugins_pyrpl.hardware.server_process import start_server

pytestmark = pytest.mark.usefixtures("private_runtime")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_console_script_is_installed() -> None:
    script = shutil.which("pymodaq-pyrpl", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and __version__ in result.stdout


def test_usage_error_exits_2() -> None:
    assert cli("frobnicate").returncode == 2
    assert cli().returncode == 2


def test_status_without_servers() -> None:
    result = cli("status")
    assert result.returncode == 0 and "no local PyRPL server" in result.stdout
    assert json.loads(cli("status", "--json").stdout) == []


def test_status_stop_with_a_held_server(port: int) -> None:
    manager = TCPServerManager(port=port, client_name="my scope")
    client = manager.ensure_server_running()
    client.lease("scope")
    try:
        table = cli("status")
        assert table.returncode == 0
        assert str(port) in table.stdout and "mock" in table.stdout and "ready" in table.stdout
        assert "my scope*" in table.stdout and "scope:my scope" in table.stdout
        rows = json.loads(cli("status", "--json").stdout)
        assert rows[0]["port"] == port and rows[0]["device"] == "ready"
        assert rows[0]["reason"] is None and rows[0]["since"].endswith("+00:00")
        assert rows[0]["clients"][0]["leases"] == ["scope"]
        assert runtime.read_state(port).token not in table.stdout + json.dumps(rows)
        pid = runtime.read_state(port).pid
        stopped = cli("stop", "--port", str(port))
        assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
        assert not runtime.pid_alive(pid) and runtime.read_state(port) is None
    finally:
        manager.release_server()
        stop_local_server(port)


def test_the_status_table_says_since_when_and_why_a_board_is_not_ready(
        capsys: pytest.CaptureFixture[str]) -> None:
    since = "2026-12-06T16:00:00.000000+00:00"
    row = {"port": 6341, "pid": 4242, "backend": "pyrpl", "board": "rp-f0a1b2.local", "plant": "",
           "ssh_port": 22, "board_port": 2222, "config": "", "started_at": since,
           "device": "lost", "reason": "no answer from the board for 3.0 s", "since": since,
           "uptime": 12.0, "clients": []}
    cli_module._print_table([row, {**row, "port": 6342, "device": "ready", "reason": None}])
    out = capsys.readouterr().out
    assert (f"port 6341: lost since {local_time(since)}: no answer from the board for 3.0 s"
            in out)
    assert "port 6342:" not in out


def test_stop_without_server_exits_1(port: int) -> None:
    result = cli("stop", "--port", str(port))
    assert result.returncode == 1 and f"port {port}" in result.stdout


def test_takeover_without_server_exits_1(port: int) -> None:
    result = cli("takeover", "--port", str(port))
    assert result.returncode == 1 and "nothing to take over" in result.stderr


def test_server_subcommand_passes_its_flags() -> None:
    result = cli("server", "--help")
    assert result.returncode == 0 and "--auto-stop" in result.stdout and "--mock" in result.stdout


def _foreign_state(port: int, pid: int, kind: str) -> dict:
    """A state file's contents naming the live, unrelated process ``pid``: written by an older
    version (no process start), or recording another start (the pid was reused), or recording
    the right start but of a process that is not our server on that port."""
    state = {"pid": pid, "port": port, "token": "t", "backend": "mock", "hostname": "",
             "config": "", "version": "0", "started_at": "2026-01-01T00:00:00+00:00"}
    start = runtime.process_start(pid)
    if kind != "older version":
        state.update(plant="loopback", ssh_port=0, board_port=0)
    if kind == "reused":
        state["process_start"] = start - 100
    elif kind == "other program":
        state["process_start"] = start
    return state


@pytest.mark.parametrize("kind", ["older version", "reused", "other program"])
def test_state_file_naming_an_unrelated_process_is_not_obeyed(port: int, kind: str) -> None:
    sleeper = subprocess.Popen(["sleep", "120"])
    path = runtime.state_path(port)
    try:
        for command in (["status", "--json"], ["stop", "--port", str(port)],
                        ["takeover", "--port", str(port)]):
            runtime.write_private(path, json.dumps(_foreign_state(port, sleeper.pid, kind)))
            result = cli(*command)
            if command[0] == "status":
                assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout
            else:
                assert result.returncode == 1, result.stdout + result.stderr
                assert "no local PyRPL server runs" in result.stdout + result.stderr
            assert sleeper.poll() is None, f"{command} signalled an unrelated process"
            assert not path.exists(), f"{command} left the stale state file"
    finally:
        sleeper.kill()
        sleeper.wait(10)


@pytest.mark.parametrize("contents", [
    ('{"pid": "123", "port": PORT, "token": "t", "backend": "mock", "hostname": "", "config": "", '
     '"version": "0", "started_at": ""}'),
    ('{"pid": 123, "port": PORT, "token": null, "backend": "mock", "hostname": "", "config": "", '
     '"version": "0", "started_at": "", "process_start": 1.5}'),
    '{"pid": 123, "port": PORT, "tok',
    '[1, 2]',
])
def test_damaged_state_file_is_a_clear_error(port: int, contents: str) -> None:
    contents = contents.replace("PORT", str(port))
    path = runtime.state_path(port)
    runtime.write_private(path, contents)
    with pytest.raises(ServerError) as info:
        TCPServerManager(port=port).ensure_server_running()
    assert f"state file {path} is damaged" in str(info.value) and f"rm {path}" in str(info.value)
    for command in (["status"], ["stop", "--port", str(port)]):
        result = cli(*command)
        assert result.returncode == 1 and f"rm {path}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert path.read_text() == contents  # nothing changed, nothing started
    assert not any(p.name.startswith("server-") and p.suffix == ".log"
                   for p in runtime.runtime_dir().iterdir())


SERVER_COMMANDS = {
    "pymodaq-pyrpl": [str(Path(sys.executable).with_name("pymodaq-pyrpl")), "server"],
    "-m pymodaq_plugins_pyrpl.cli": [sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "server"],
    "-m pymodaq_plugins_pyrpl.hardware.server": [sys.executable, "-m",
                                                 "pymodaq_plugins_pyrpl.hardware.server"],
}
"""The three ways to start a server by hand, by name."""


@pytest.mark.parametrize("command", SERVER_COMMANDS.values(), ids=SERVER_COMMANDS.keys())
def test_status_and_stop_see_a_server_started_by_hand(port: int, command: list[str]) -> None:
    """A server started by hand registers like an auto-started one: listed with its plant, and
    stopped, by the CLI."""
    server, ready = start_server([*command, "--mock", "--plant", "resonator:q=50", "--port",
                                  str(port)], 30, stderr=subprocess.DEVNULL)
    try:
        assert (ready.port, ready.pid) == (port, server.pid)
        rows = json.loads(cli("status", "--json").stdout)
        plant = "resonator:f0=100000,q=50,gain=1,noise=0.001"
        assert [(r["port"], r["pid"], r["plant"], r["device"]) for r in rows] == [
            (port, server.pid, plant, "ready")]
        assert plant in cli("status").stdout
        stopped = cli("stop", "--port", str(port))
        assert stopped.returncode == 0 and f"pid {server.pid}" in stopped.stdout, stopped.stdout
        assert server.wait(10) == 0
        assert runtime.read_state(port) is None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        server.stdout.close()


@pytest.mark.parametrize("command", [["stop", "--port", "70000"], ["takeover", "--port", "-1"],
                                     ["takeover", "--auto-stop", "nan"],
                                     ["status", "--timeout", "0"], ["virtual-board", "--seed", "-1"]])
def test_out_of_range_options_are_usage_errors(command: list[str]) -> None:
    result = cli(*command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "usage:" in result.stderr
