"""The virtual board's ssh server alone, driven by PyRPL's own ssh code (``SshShell``,
``RedPitaya``'s start-up and server start, in a subprocess) and by paramiko's client; the board
control records what it is asked."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from pymodaq_plugins_pyrpl.virtual_board.files import BoardFiles
from pymodaq_plugins_pyrpl.virtual_board.scp_sink import MAX_FILE_SIZE
from pymodaq_plugins_pyrpl.virtual_board.ssh_server import MAX_CONNECTIONS, SshServer
from tests.helpers.pyrpl_ssh import run_probe
from tests.helpers.recording_control import RecordingControl
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ssh() -> Iterator[SshServer]:
    server = SshServer(BoardFiles(), RecordingControl())
    server.start(0)
    yield server
    server.close()


def _client(server: SshServer, password: str = "root") -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=server.port, username="root", password=password,
                   timeout=5, look_for_keys=False, allow_agent=False)
    return client


def test_pyrpl_starts_its_monitor_server_over_ssh(ssh: SshServer, tmp_path: Path) -> None:
    """PyRPL's RedPitaya start-up and startserver(): every answer is understood (OS version,
    loaded bitfile, no "sh" in the start's answer, so no reinstall on another port)."""
    result = run_probe("startserver", ssh.port, 2345, tmp_path)
    assert (result["os_version"], result["reload"]) == ("2.00", False)
    assert (result["started"], result["running"], result["port"]) == (2345, True, 2345)
    assert "sh" not in result["second_answer"]
    # endserver: Ctrl-C ends the server started last in the session, then killall
    assert ssh.control.calls == [("killall",), ("start", 2345), ("start", 2346), ("stop", 2346),
                                 ("killall",)]


def test_connections_are_interactive_tcp_without_nagle(ssh: SshServer) -> None:
    """As OpenSSH's sshd: TCP_NODELAY (else each small answer waits for the client's delayed
    ACK, ~40 ms) and keepalive on every accepted connection."""
    client = _client(ssh)
    try:
        wait_until(lambda: len(ssh._transports) == 1, 5, "the connection's transport")
        (transport,) = ssh._transports
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert transport.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    finally:
        client.close()


def test_the_answer_to_a_line_arrives_whole(ssh: SshServer) -> None:
    """The echo, the output and the prompt of a typed line leave in one packet, so a client that
    reads what has arrived as soon as something has (PyRPL's ``SshShell.read``) gets all of it."""
    client = _client(ssh)
    try:
        shell = client.invoke_shell()
        shell.settimeout(5)
        assert shell.recv(4096).endswith(b"# ")
        for _ in range(5):
            shell.send("cat /root/.version\n")
            wait_until(shell.recv_ready, 5, "an answer", interval=0.001)
            assert shell.recv(65536) == (b"cat /root/.version\r\n2.00-35\r\n"
                                         b"root@rp-virtual:~# ")
    finally:
        client.close()


def test_scp_sink_receives_files(ssh: SshServer, tmp_path: Path) -> None:
    bitfile = tmp_path / "red_pitaya.bin"
    bitfile.write_bytes(bytes(range(256)) * 8000)
    result = run_probe("scp", ssh.port, 0, tmp_path)
    assert ssh.files.read("/opt/pyrpl/fpga.bin") == bitfile.read_bytes()
    assert ssh.files.read("/tmp/red_pitaya.bin") == bitfile.read_bytes()  # into a folder
    assert "No such file" not in result["listed"]
    assert "No such file or directory" in result["missing"]
    assert not ssh.files.is_folder("/nowhere")


def test_scp_sink_refuses_a_file_too_large(ssh: SshServer) -> None:
    client = _client(ssh)
    try:
        channel = client.get_transport().open_session()
        channel.exec_command("scp -t /tmp/big")
        assert channel.recv(1) == b"\0"
        channel.sendall(f"C0644 {MAX_FILE_SIZE + 1} big\n".encode())
        assert channel.recv(512).startswith(b"\1scp: big: file too large")
        assert channel.recv_exit_status() == 1
    finally:
        client.close()
    assert not ssh.files.is_file("/tmp/big")


def test_exec_runs_a_command_with_its_exit_status(ssh: SshServer) -> None:
    client = _client(ssh)
    try:
        _, out, _ = client.exec_command("cat /root/.version")
        assert out.read() == b"2.00-35\n" and out.channel.recv_exit_status() == 0
        _, out, _ = client.exec_command("reboot-the-lab")
        assert out.channel.recv_exit_status() == 127
    finally:
        client.close()


def test_wrong_password_is_refused(ssh: SshServer) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        _client(ssh, password="wrong")


def test_close_ends_sessions_and_stops_listening(ssh: SshServer) -> None:
    client = _client(ssh)
    channel = client.invoke_shell()
    channel.settimeout(5)
    assert channel.recv(100).endswith(b"# ")
    ssh.close()
    assert channel.recv(100) == b""  # the session ended
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ssh.port), timeout=2).close()
    client.close()


def test_connections_beyond_the_limit_are_closed(ssh: SshServer) -> None:
    held = [socket.create_connection(("127.0.0.1", ssh.port), timeout=5)
            for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:
            assert sock.recv(4).startswith(b"SSH-")  # each one served: the server's banner
        with socket.create_connection(("127.0.0.1", ssh.port), timeout=5) as extra:
            assert extra.recv(4) == b""  # closed at once
    finally:
        for sock in held:
            sock.close()
