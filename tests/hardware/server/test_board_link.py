"""The server with the PyRPL backend on the real PyRPL path: a virtual board at non-default ports
(``--hostname 127.0.0.1 --ssh-port N --board-port M``) and the hostname ``virtual`` (a virtual
board the server starts and stops), as subprocesses; the server manager's board identity."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.errors import ServerMismatch
from pymodaq_plugins_pyrpl.hardware.physics.plants import plant_spec
from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager, stop_local_server
from pymodaq_plugins_pyrpl.hardware.sockets import free_port
from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya
from tests.helpers.support import ServerProcess

pytestmark = [pytest.mark.pyrpl, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def board() -> Iterator[VirtualRedPitaya]:
    board = VirtualRedPitaya(seed=5)
    board.start(0, 0)
    yield board
    board.close()


@pytest.fixture(scope="module")
def board_server(board: VirtualRedPitaya, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[ServerProcess]:
    args = ["--hostname", "127.0.0.1", "--ssh-port", str(board.ssh_port), "--board-port",
            str(board.port)]
    with ServerProcess(tmp_path_factory.mktemp("board"), args, startup_timeout=60) as server:
        assert server.ready_line, server.log
        yield server


def _tone(x: np.ndarray, dt: float) -> tuple[float, float]:
    """Frequency (FFT peak) and amplitude of a sampled sine."""
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:])) + 1
    return k / (len(x) * dt), float(np.std(x)) * 2**0.5


def test_the_board_at_its_ports(board_server: ServerProcess, board: VirtualRedPitaya) -> None:
    with board_server.client() as c:
        device = c.call("status")["device"]
        assert (device["state"], device["hostname"]) == ("ready", "127.0.0.1")
        assert (device["ssh_port"], device["board_port"]) == (board.ssh_port, board.port)
    state = runtime.read_state(board_server.port)
    assert (state.ssh_port, state.board_port) == (board.ssh_port, board.port)


def test_scope_trace_of_an_asg_sine(board_server: ServerProcess) -> None:
    with board_server.client() as c:
        c.call("set", module="asg0", values={"waveform": "sin", "frequency": 20e3,
                                              "amplitude": 0.5, "offset": 0.0,
                                              "output_direct": "out1",
                                              "trigger_source": "immediately"})
        c.call("set", module="scope", values={"input1": "in1", "duration": 0.001,
                                              "trigger_source": "immediately"})
        trace = c.call("acquire", module="scope", timeout=10)
    frequency, amplitude = _tone(np.asarray(trace["ch1"], dtype=float), trace["dt"])
    assert frequency == pytest.approx(20e3, rel=0.01)
    assert amplitude == pytest.approx(0.5, abs=0.02)


def test_board_ports_are_for_network_boards(tmp_path: Path) -> None:
    for args in (["--mock", "--ssh-port", "2200"], ["--hostname", "virtual", "--board-port", "1"],
                 ["--hostname", "_FAKE_", "--ssh-port", "2200"]):
        server = ServerProcess(tmp_path, args, startup_timeout=60)
        assert server.ready_line == "" and server.proc.wait(30) == 2, args
        assert "--ssh-port and --board-port are for a network board" in server.log


def test_nobody_at_the_ssh_port_is_a_clear_error(tmp_path: Path) -> None:
    ssh_port = free_port()
    server = ServerProcess(tmp_path, ["--hostname", "127.0.0.1", "--ssh-port", str(ssh_port)],
                           startup_timeout=90)
    assert server.ready_line == "" and server.proc.wait(30) == 2
    assert f"(ssh port {ssh_port}, monitor port 2222)" in server.log


@pytest.fixture
def own_board() -> Iterator[VirtualRedPitaya]:
    """A board of the test's own: a server refuses a board another client is on (the
    module's ``board_server`` is on ``board``)."""
    board = VirtualRedPitaya(seed=6)
    board.start(0, 0)
    yield board
    board.close()


@pytest.mark.usefixtures("private_runtime")
def test_board_ports_identify_the_board(own_board: VirtualRedPitaya) -> None:
    board = own_board
    port = free_port()
    manager = TCPServerManager(port=port, hostname="127.0.0.1", ssh_port=board.ssh_port,
                               board_port=board.port, startup_timeout=90)
    try:
        assert manager.ensure_server_running().hello_info["board_port"] == board.port
        other = TCPServerManager(port=port, hostname="127.0.0.1", ssh_port=board.ssh_port + 1,
                                 board_port=board.port)
        with pytest.raises(ServerMismatch, match=f"ssh port {board.ssh_port + 1}, monitor port"):
            other.ensure_server_running()
    finally:
        manager.release_server()
        stop_local_server(port)


@pytest.mark.usefixtures("private_runtime")
def test_hostname_virtual_starts_and_stops_its_board() -> None:
    port = free_port()
    manager = TCPServerManager(port=port, hostname="virtual", plant="loopback",
                               startup_timeout=90, auto_stop=0.5)
    try:
        hello = manager.ensure_server_running().hello_info
        assert (hello["backend"], hello["hostname"]) == ("pyrpl", "virtual")
        assert hello["plant"] == plant_spec("loopback") and hello["ssh_port"] > 0
        server = psutil.Process(runtime.read_state(port).pid)
        boards = [p for p in server.children() if "virtual-board" in p.cmdline()]
        assert len(boards) == 1
        with pytest.raises(ServerMismatch, match="virtual Red Pitaya with plant 'resonator"):
            TCPServerManager(port=port, hostname="virtual", plant="resonator"
                             ).ensure_server_running()
    finally:
        manager.release_server()
    gone, alive = psutil.wait_procs([server, *boards], timeout=30)
    assert not alive  # the server stopped with its last holder, and its board with it
    stop_local_server(port)
