"""Admission (docs/protocol.md, *Limits*): what connections that have not said hello may cost the
server (memory, file descriptors, log), the cap on sessions, the hello deadline under TLS, and how
the client takes a RetryLater refusal.

Source addresses 127.0.0.x stand for distinct peers: Linux routes all of 127/8 to the loopback.
"""
from __future__ import annotations

import json
import logging
import os
import select
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from pymodaq_plugins_pyrpl.hardware import protocol
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.server.auth import (
    MAX_PENDING,
    MAX_PENDING_PER_ADDRESS,
    Admission,
)
from pymodaq_plugins_pyrpl.hardware.server.sessions import MAX_SESSIONS
from pymodaq_plugins_pyrpl.hardware.server_process import start_server
from tests.helpers.certificates import make_certificate
from tests.helpers.support import RawClient, ServerProcess
from tests.helpers.waiting import wait_until

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="needs 127/8 routed to the loopback and /proc (Linux)")


def connect_from(port: int, source: str, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the local server from ``source`` (an address of 127/8)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    return sock


def read_line(sock: socket.socket, timeout: float = 5.0) -> dict[str, Any]:
    """The first line the server sends (ConnectionError if it closes first)."""
    sock.settimeout(timeout)
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed by the server after {data!r}")
        data += chunk
    return json.loads(data.split(b"\n", 1)[0])


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the server has closed the connection (EOF or reset), reading what it sent."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def said_hello(server: ServerProcess) -> bool:
    """A hello from 127.0.0.1 with the right token: True if it was accepted, False if the
    connection was refused (-32009)."""
    with RawClient(server.port) as c:
        c.send_raw(hello_line(server.token))
        reply = c.read_message()
    assert "result" in reply or reply["error"]["code"] == -32009, reply
    return "result" in reply


def hello_line(token: str, client: str = "admission test", id_: int = 1) -> bytes:
    return protocol.dumps_line(protocol.request(id_, "hello", {"token": token, "client": client,
                                                               "protocol": 1}))


def limit_files(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn: the child starts with these limits of open files."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def many_files() -> None:
    """This test process may open a few thousand sockets."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if wanted < 1500:
        pytest.skip(f"the hard limit of open files ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- the line limit before hello (memory) ---------------------------------------------------------

def test_a_line_before_hello_is_limited_to_4_kib(mock_server: ServerProcess) -> None:
    limit = protocol.MAX_LINE_BEFORE_HELLO
    start, end = b'{"jsonrpc":"2.0","id":1,"method":"ping","pad":"', b'"}\n'
    with RawClient(mock_server.port) as c:  # right at the limit (the newline counts): answered
        c.send_raw(start + b"x" * (limit - len(start) - len(end)) + end)
        assert c.read_message()["error"]["code"] == -32001
    with RawClient(mock_server.port) as c:
        c.send_raw(start + b"x" * (limit + 1 - len(start) - len(end)) + end)
        reply = c.read_message()
        assert reply["error"]["code"] == -32006 and reply["id"] is None
        assert "4096 bytes before hello" in reply["error"]["message"]
        assert closed_by_server(c.sock)
    with mock_server.client("long lines after hello") as c:  # after hello: up to 1 MiB
        reply = c.request("get", {"module": "asg0", "names": ["x" * 100_000]})
        assert reply["error"]["code"] == -32602


@linux_only
def test_partial_lines_before_hello_cost_little_memory(mock_server: ServerProcess) -> None:
    """96 connections (12 from each of 8 addresses: within every cap) each send 1 MB without a
    newline; before, each such line stayed in the server's memory until the hello timeout."""
    server = psutil.Process(mock_server.pid)
    before = server.memory_info().rss
    socks = []
    try:
        for i in range(96):
            sock = connect_from(mock_server.port, f"127.0.0.{2 + i // 12}")
            sock.setblocking(False)
            try:
                sock.send(b'{"jsonrpc":"2.0","id":1,"method":"hello","params":{"client":"'
                          + b"x" * 1_000_000)
            except OSError:
                pass  # refused meanwhile: the server closed it
            socks.append(sock)
        for sock in socks:
            sock.setblocking(True)
            assert read_line(sock)["error"]["code"] == -32006
        grown = (server.memory_info().rss - before) / 2**20
        assert grown < 24, f"server RSS grew by {grown:.0f} MiB"
    finally:
        for sock in socks:
            sock.close()


# -- caps on connections that have not said hello --------------------------------------------------

def test_admission_caps_per_address_and_in_total() -> None:
    now = [0.0]
    admission = Admission(total=5, per_address=2, hello_timeout=10, clock=lambda: now[0])
    first = admission.enter("a")
    now[0] = 1.0
    admission.enter("a")
    assert admission.wait_for("a") == 9.0  # the oldest of "a" is closed at 10 s at the latest
    assert admission.wait_for("b") is None
    admission.enter("b")
    admission.enter("c")
    admission.enter("d")
    assert admission.wait_for("e") == 9.0 and len(admission) == 5
    admission.leave(first)
    admission.leave(first)  # idempotent
    assert admission.wait_for("a") is None and admission.wait_for("e") is None
    assert len(admission) == 4


@linux_only
def test_connections_without_hello_are_capped_per_address_and_in_total(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--hello-timeout", "30"]) as server:
        admitted: list[socket.socket] = []
        try:
            admitted += [connect_from(server.port, "127.0.0.2")
                         for _ in range(MAX_PENDING_PER_ADDRESS)]
            with connect_from(server.port, "127.0.0.2") as extra:  # one more from that address
                refusal = read_line(extra)
                assert refusal["id"] is None and refusal["error"]["code"] == -32009
                assert 0 < refusal["error"]["data"]["retry_after"] <= 30
                assert closed_by_server(extra)
            source = 3
            while len(admitted) < MAX_PENDING:
                admitted += [connect_from(server.port, f"127.0.0.{source}")
                             for _ in range(min(MAX_PENDING_PER_ADDRESS,
                                                MAX_PENDING - len(admitted)))]
                source += 1
            with connect_from(server.port, f"127.0.0.{source + 1}") as extra:  # one too many
                assert read_line(extra)["error"]["code"] == -32009
            readable, _, _ = select.select(admitted, [], [], 0.5)
            assert readable == []  # those were admitted: nothing sent, still open
            for sock in admitted[:4]:  # places free up: a client gets in
                sock.close()
            assert wait_until(lambda: said_hello(server), 5, "a place for a client")
        finally:
            for sock in admitted:
                sock.close()
        server.stop()
        assert server.log.count("refusing connections") == 1  # once per burst, not per refusal


@linux_only
def test_silent_connections_cannot_take_every_file_descriptor(tmp_path: Path,
                                                              many_files: None) -> None:
    """With a limit of 256 open files, 400 silent connections from one address; before, they
    took every file descriptor and a legitimate client waited for the hello timeout."""
    with ServerProcess(tmp_path, ["--mock", "--hello-timeout", "20"],
                       preexec_fn=limit_files(256, 256)) as server:
        silent = []
        try:
            for _ in range(400):
                silent.append(connect_from(server.port, "127.0.0.2"))
            process = psutil.Process(server.pid)
            assert process.num_fds() < 256 - 64
            with RawClient(server.port, timeout=3) as c:
                assert "session" in c.hello(server.token)
        finally:
            for sock in silent:
                sock.close()


@linux_only
def test_the_open_files_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock"], preexec_fn=limit_files(256, 2048)) as server:
        assert psutil.Process(server.pid).rlimit(psutil.RLIMIT_NOFILE) == (2048, 2048)


@linux_only
def test_failed_accepts_are_logged_once_per_burst(tmp_path: Path) -> None:
    """The server runs out of file descriptors with authenticated connections (limit 100): the
    failed accepts are one warning, not a traceback each; accepting resumes afterwards."""
    with ServerProcess(tmp_path, ["--mock"], preexec_fn=limit_files(100, 100)) as server:
        clients: list[RawClient] = []
        waiting: list[socket.socket] = []
        try:
            for _ in range(100):
                c = RawClient(server.port, timeout=1)
                clients.append(c)
                try:
                    c.hello(server.token)
                except TimeoutError:
                    break  # not accepted: the server is out of file descriptors
            else:
                pytest.fail("100 connections were all accepted with a limit of 100 open files")
            waiting = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
            wait_until(lambda: "cannot accept connections" in server.log, 5, "the warning")
            # the server keeps retrying meanwhile (every 0.1 s): a second of failures
            readable, _, _ = select.select(waiting, [], [], 1.0)
            assert readable == []
        finally:
            for c in clients:
                c.close()
            for sock in waiting:
                sock.close()
        assert wait_until(lambda: said_hello(server), 10, "accepting again")
        server.stop()
        assert server.log.count("cannot accept connections") == 1
        assert "Traceback" not in server.log and "out of system resource" not in server.log


# -- the log file ---------------------------------------------------------------------------------

@linux_only
def test_the_log_file_is_size_bounded_and_stderr_follows_it(tmp_path: Path) -> None:
    """A server as the manager starts it (its stderr appended to its --log-file), with the
    rotation size made 8 kB: wrong tokens from 300 addresses (a log line each) rotate the file."""
    log = tmp_path / "server.log"
    code = ("import sys; from pymodaq_plugins_pyrpl.hardware.server import command; "
            "command.LOG_MAX_BYTES = 8192; sys.exit(command.main(sys.argv[1:]))")
    with open(log, "ab") as stderr:
        proc, ready = start_server(
            [sys.executable, "-c", code, "--mock", "--port", "0", "--token-file",
             str(tmp_path / "token"), "--log-file", str(log)], 30, stderr=stderr)
    try:
        port = ready.port
        for i in range(300):
            with connect_from(port, f"127.0.{1 + i // 200}.{1 + i % 200}") as sock:
                sock.sendall(hello_line("wrong"))
                assert read_line(sock)["error"]["code"] == -32002
        files = sorted(tmp_path.glob("server.log*"))
        assert [f.name for f in files] == ["server.log", "server.log.1", "server.log.2"]
        for f in files:
            assert f.stat().st_size <= 8192 and f.stat().st_mode & 0o777 == 0o600, f
        assert os.readlink(f"/proc/{proc.pid}/fd/2") == str(log)  # stderr: the current file
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# -- sessions -------------------------------------------------------------------------------------

def test_sessions_are_capped(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--session-grace", "60"]) as server:
        sessions = []
        for i in range(MAX_SESSIONS):  # each connection drops: its session waits to be resumed
            with server.client(f"client {i}", hello=False) as c:
                sessions.append(c.hello(server.token, f"client {i}")["session"])
        with RawClient(server.port) as c:
            refused = c.request("hello", {"token": server.token, "client": "one too many",
                                          "protocol": 1})
            assert refused["error"]["code"] == -32009
            assert 0 < refused["error"]["data"]["retry_after"] <= 60
            assert closed_by_server(c.sock)
        with server.client("resume", session=sessions[0]) as c:  # resuming is not a new session
            status = c.call("status")
        assert len(status["clients"]) == MAX_SESSIONS


# -- TLS ------------------------------------------------------------------------------------------

def test_with_tls_one_hello_deadline_covers_the_handshake(tmp_path: Path) -> None:
    cert, key, _ = make_certificate(tmp_path)
    with ServerProcess(tmp_path, ["--mock", "--tls-cert", str(cert), "--tls-key", str(key),
                                  "--hello-timeout", "2"]) as server:
        context = ssl.create_default_context(cafile=str(cert))
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            readable, _, _ = select.select([sock], [], [], 1.5)  # a slow start of the handshake
            assert readable == []
            with context.wrap_socket(sock, server_hostname="localhost") as tls:
                assert closed_by_server(tls, timeout=10)
                lived = time.monotonic() - started
        finally:
            sock.close()
        assert lived < 2 + 1.0, f"the connection lived {lived:.1f} s with --hello-timeout 2"


# -- the client takes a RetryLater refusal ---------------------------------------------------------

def test_client_connect_waits_out_a_retry_later_refusal(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with ServerProcess(tmp_path, ["--mock", "--hello-timeout", "1"]) as server:
        silent = [socket.create_connection(("127.0.0.1", server.port))
                  for _ in range(MAX_PENDING_PER_ADDRESS)]
        client = PyRPLClient("127.0.0.1", server.port, server.token, timeout=6)
        try:
            with caplog.at_level(logging.INFO, logger="pymodaq_plugins_pyrpl.hardware.client"):
                assert client.connect()["session"]
            assert "asks to retry" in caplog.text
            assert client.call("ping")
        finally:
            client.close()
            for sock in silent:
                sock.close()
