"""``pymodaq-pyrpl virtual-board`` as a process: its ready line, how it stops (SIGINT, SIGTERM, its
input closing), its usage errors, and the child process a server starts for the hostname
``virtual``."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys

import psutil
import pytest

from pymodaq_plugins_pyrpl.virtual_board.command import Ready, parse_ready_line, ready_line
from pymodaq_plugins_pyrpl.virtual_board.process import (
    VirtualBoardError,
    launch_virtual_board,
    start_virtual_board,
)
from tests.helpers.support import accepts_connections

pytestmark = pytest.mark.timeout(60)

COMMAND = [sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "virtual-board"]


def _start(*args: str, stdin: int = subprocess.DEVNULL) -> tuple[subprocess.Popen, Ready]:
    process = subprocess.Popen([*COMMAND, *args], stdin=stdin, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # bounded by the test's timeout
    ready = parse_ready_line(line)
    assert ready is not None, line + process.stderr.read()
    return process, ready


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ready_line_then_a_signal_stops_it(sig: signal.Signals) -> None:
    process, ready = _start()
    try:
        assert (ready.host, ready.pid) == ("127.0.0.1", process.pid)
        assert accepts_connections(ready.ssh_port) and accepts_connections(ready.port)
        process.send_signal(sig)
        assert process.wait(15) == 0
        assert process.stdout.read() == ""  # exactly one line on stdout
        assert f"sshport={ready.ssh_port}, port={ready.port}" in process.stderr.read()
        assert not accepts_connections(ready.ssh_port) and not accepts_connections(ready.port)
    finally:
        process.kill()
        process.wait()


def test_stops_when_its_input_closes() -> None:
    process, ready = _start("--until-stdin-closes", stdin=subprocess.PIPE)
    try:
        process.stdin.close()
        assert process.wait(15) == 0
    finally:
        process.kill()
        process.wait()


def test_usage_errors() -> None:
    bad_plant = subprocess.run([*COMMAND, "--plant", "aquarium"], capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
    assert bad_plant.returncode == 2 and "aquarium" in bad_plant.stderr
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = subprocess.run([*COMMAND, "--ssh-port", str(taken.getsockname()[1])],
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    assert busy.returncode == 3 and "cannot listen" in busy.stderr and busy.stdout == ""


def test_ready_line_round_trip() -> None:
    ready = Ready("127.0.0.1", 2200, 2300, 42)
    assert parse_ready_line(ready_line(ready) + "\n") == ready
    assert parse_ready_line('PYRPL_VIRTUAL_BOARD_READY {"host": "h", "ssh_port": true}') is None
    assert parse_ready_line("PYRPL_SERVER_READY {}") is None


def test_child_board_for_a_server_stops_with_it() -> None:
    board = start_virtual_board("loopback")
    child = psutil.Process(board.process.pid)
    try:
        assert accepts_connections(board.ssh_port) and accepts_connections(board.port)
    finally:
        board.stop()
    assert not child.is_running()
    board.stop()  # idempotent
    with pytest.raises(VirtualBoardError, match="printed no ready line"):
        start_virtual_board("aquarium")


def test_launched_board_is_ready_later_or_stops_unread() -> None:
    """What the server does for hostname ``virtual``: launch, import PyRPL meanwhile, then wait
    for the ready line; or stop the launched board (PyRPL not importable) before reading it."""
    launched = launch_virtual_board("loopback")
    board = launched.ready()
    try:
        assert accepts_connections(board.ssh_port) and accepts_connections(board.port)
    finally:
        board.stop()
    unread = launch_virtual_board("loopback")
    unread.stop()
    assert unread.process.returncode is not None  # reaped, whether it got to serve or not
    unread.stop()  # idempotent


def test_child_board_outlives_no_killed_parent(tmp_path) -> None:
    """The parent dies by SIGKILL: the board's input closes and it stops by itself."""
    script = ("import sys; from pymodaq_plugins_pyrpl.virtual_board.process import "
              "start_virtual_board; b = start_virtual_board('loopback'); "
              "print(b.process.pid, flush=True); sys.stdin.read()")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        parent.kill()
        parent.wait()
        child.wait(15)
    finally:
        parent.kill()
        parent.wait()


def _imported(code: str, modules: set[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    report = f"import sys\nprint(' '.join(sorted(set(sys.modules) & {modules!r})))"
    done = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_launching_a_board_imports_none_of_it() -> None:
    """A server on the hostname ``virtual`` launches the board's process before PyRPL's import
    and its own board: its path there imports neither the board (its model, paramiko) nor
    ``importlib.metadata`` (the package's version), which the board's process imports itself."""
    code = ("import pymodaq_plugins_pyrpl.hardware.server\n"
            "import pymodaq_plugins_pyrpl.hardware.backends.pyrpl\n"
            "import pymodaq_plugins_pyrpl.virtual_board.process")
    assert _imported(code, {"paramiko", "importlib.metadata", "pyrpl",
                            "pymodaq_plugins_pyrpl.virtual_board.board"}) == []


def test_the_board_command_imports_none_of_the_other_commands() -> None:
    """``pymodaq-pyrpl virtual-board`` (the child process of a server) imports neither the client
    nor the server manager nor the runtime folder of the CLI's other commands."""
    assert _imported("import pymodaq_plugins_pyrpl.cli", {
        "pymodaq_plugins_pyrpl.hardware.client", "pymodaq_plugins_pyrpl.hardware.server_manager",
        "pymodaq_plugins_pyrpl.hardware.runtime", "importlib.metadata"}) == []
