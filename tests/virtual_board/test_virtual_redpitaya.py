"""The whole virtual Red Pitaya (ssh + monitor servers + board) driven by unmodified PyRPL (in a
subprocess) and by paramiko: PyRPL's start-up, ``reloadfpga=True``, the ssh commands that end and
start monitor servers, a reboot, and what a program sees of the board over ssh (boot id, the data
port's connections in ``/proc/net/tcp``) and the log of the commands it ran."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paramiko
import pytest

from pymodaq_plugins_pyrpl.virtual_board.proc_net_tcp import hex_address
from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya
from tests.helpers.pyrpl_ssh import run_probe
from tests.helpers.support import accepts_connections
from tests.helpers.waiting import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.pyrpl]

LEDS = 0x40000030
"""hk register of the 8 LEDs."""


@pytest.fixture
def board() -> Iterator[VirtualRedPitaya]:
    board = VirtualRedPitaya(seed=3)
    board.start(0, 0)
    yield board
    board.close()


@pytest.mark.parametrize("mode", ["shared", "faithful"])
def test_unmodified_pyrpl_starts_against_the_virtual_board(mode: str, tmp_path: Path) -> None:
    board = VirtualRedPitaya(mode=mode, seed=3)  # type: ignore[arg-type]
    board.start(0, 0)
    try:
        result = run_probe("pyrpl", board.ssh_port, board.port, tmp_path)
        # Pyrpl._clear() ended its monitor server over ssh
        assert not accepts_connections(board.port)
    finally:
        board.close()
    assert result["port"] == board.port  # PyRPL started its monitor server where it was told
    assert result["led"] == 0b1010
    assert result["frequency"] == pytest.approx(12345.0, abs=0.06)
    assert board.board.counts.writes > 0


def test_pyrpl_starts_with_the_short_ssh_delay_of_the_virtual_board(board: VirtualRedPitaya,
                                                                    tmp_path: Path) -> None:
    """With the PyRPL backend's ``delay`` for the virtual board, PyRPL reads every answer of its
    start-up in time: the OS version, the loaded bitfile (no flashing: no upload, no
    ``overlay.sh``, no ``cat BITFILE > //dev//xdevcfg``)."""
    result = run_probe("pyrpl_virtual_delay", board.ssh_port, board.port, tmp_path)
    assert result["os_version"] == "2.00"
    assert (result["port"], result["led"]) == (board.port, 0b1010)
    for flashed in ("/opt/pyrpl/fpga.bin", "/tmp/update_fpga.txt", "/dev/xdevcfg"):
        assert not board.files.is_file(flashed), flashed


def test_reloadfpga_true_loads_the_bitfile_and_resets_the_registers(board: VirtualRedPitaya,
                                                                    tmp_path: Path) -> None:
    board.board.write(LEDS, np.array([0b101], dtype=np.uint32))
    result = run_probe("reloadfpga", board.ssh_port, board.port, tmp_path)
    assert result["led"] == 0
    assert board.files.read("/tmp/loaded_fpga.inf") == b"pyrpl"
    assert not board.files.is_file("/opt/pyrpl/fpga.bin")  # removed after a successful load
    assert b"failed" not in (board.files.read("/tmp/update_fpga.txt") or b"failed")


def _login(ssh_port: int) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=ssh_port, username="root", password="root", timeout=5,
                   look_for_keys=False, allow_agent=False)
    return client


def _exec(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, out, _ = client.exec_command(command, timeout=10)
    text = out.read().decode()
    return out.channel.recv_exit_status(), text


def test_ssh_commands_end_and_start_monitor_servers(board: VirtualRedPitaya) -> None:
    client = _login(board.ssh_port)
    data = socket.create_connection(("127.0.0.1", board.port), timeout=5)
    try:
        assert _exec(client, "killall monitor_server") == (0, "")
        assert data.recv(8) == b""  # the power-on server's connection ended
        assert not accepts_connections(board.port)
        assert _exec(client, f"/opt/pyrpl/monitor_server {board.port}") == (0, "")
        socket.create_connection(("127.0.0.1", board.port), timeout=5).close()
        status, text = _exec(client, f"/opt/pyrpl/monitor_server {board.port}")
        assert (status, text) == (1, "ERROR on binding: Address already in use\n")
        assert _exec(client, "killall monitor_server") == (0, "")
        assert _exec(client, "killall monitor_server") == (1, "monitor_server: no process found\n")
    finally:
        data.close()
        client.close()


def test_close_ends_everything(board: VirtualRedPitaya) -> None:
    board.close()
    assert not accepts_connections(board.ssh_port) and not accepts_connections(board.port)


def test_reboot_ends_ssh_too_and_brings_it_back(board: VirtualRedPitaya) -> None:
    client = _login(board.ssh_port)
    key = client.get_transport().get_remote_server_key()
    shell = client.invoke_shell()
    shell.settimeout(5)
    assert shell.recv(100).endswith(b"# ")
    board.files.write("/tmp/mark", b"x")
    board.board.write(LEDS, np.array([0b11], dtype=np.uint32))
    board.reboot(2.0)
    try:
        assert shell.recv(100) == b""  # the session ended with the reboot
        assert not accepts_connections(board.ssh_port) and not accepts_connections(board.port)
        assert board.wait_rebooted(10)
        again = _login(board.ssh_port)
        assert again.get_transport().get_remote_server_key() == key  # the board's own key
        assert _exec(again, "cat /tmp/mark")[0] == 1  # its files are the power-on ones
        again.close()
        assert board.board.read(LEDS, 1)[0] == 0
    finally:
        client.close()


BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


def _tcp_rows(text: str) -> set[tuple[str, str, str]]:
    """(local, remote, state) of every row of a ``/proc/net/tcp`` text."""
    return {tuple(line.split()[1:4]) for line in text.splitlines()[1:]}  # type: ignore[misc]


def test_boot_id_over_ssh_is_new_after_a_reboot_only(board: VirtualRedPitaya) -> None:
    client = _login(board.ssh_port)
    status, first = _exec(client, BOOT_ID)
    client.close()
    assert status == 0 and first == board.boot_id() + "\n" and len(first.strip()) == 36
    board.load_bitfile()  # an FPGA reload is not a reboot
    board.board.write(LEDS, np.array([0b11], dtype=np.uint32))
    board.reboot(0.5)
    assert board.wait_rebooted(10)
    client = _login(board.ssh_port)
    try:
        status, second = _exec(client, BOOT_ID)
    finally:
        client.close()
    assert status == 0 and second != first and second == board.boot_id() + "\n"
    assert board.board.read(LEDS, 1)[0] == 0  # and the registers are back to reset values


def test_proc_net_tcp_shows_the_client_of_the_data_port_until_killall() -> None:
    """Faithful mode: the client being served appears as an ESTABLISHED row of the data port
    (and in ``board.monitor_clients()``), one waiting in the backlog does not; after ``killall``
    the port has no row; the log has that killall under the session that ran it."""
    board = VirtualRedPitaya(mode="faithful", seed=3)
    board.start(0, 0)
    data = socket.create_connection(("127.0.0.1", board.port), timeout=5)
    queued = socket.create_connection(("127.0.0.1", board.port), timeout=5)
    client = _login(board.ssh_port)
    try:
        wait_until(lambda: board.board.monitor_clients() == [data.getsockname()], 5,
                   lambda: f"the served client, saw {board.board.monitor_clients()}")
        ssh_local = client.get_transport().sock.getsockname()
        status, text = _exec(client, "cat /proc/net/tcp")
        assert status == 0 and text == board.net_tcp()
        port, ssh_port = hex_address(("127.0.0.1", board.port)), \
            hex_address(("127.0.0.1", board.ssh_port))
        assert _tcp_rows(text) == {
            (port, "00000000:0000", "0A"), (port, hex_address(data.getsockname()), "01"),
            (ssh_port, "00000000:0000", "0A"), (ssh_port, hex_address(ssh_local), "01")}
        assert _exec(client, "killall monitor_server")[0] == 0
        assert data.recv(8) == b""
        assert board.board.monitor_clients() == []
        rows = _tcp_rows(_exec(client, "cat /proc/net/tcp")[1])
        assert not [row for row in rows if row[0] == port]
        (session,) = {c.session for c in board.commands.entries()}
        assert board.commands.peer(session) == ssh_local
        assert board.commands.killalls(session=session) == 1
        assert [c.line for c in board.commands.entries()] == [
            "cat /proc/net/tcp", "killall monitor_server", "cat /proc/net/tcp"]
    finally:
        for sock in (data, queued):
            sock.close()
        client.close()
        board.close()
