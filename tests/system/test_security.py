"""Security (docs/protocol.md, *Security*): the rate limit of failed hellos, where the token may
never appear, private state and token files, and TLS for servers on a lab network."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.errors import (
    AuthenticationFailed,
    CertificateMismatch,
    ConnectionFailed,
    ServerError,
)
from pymodaq_plugins_pyrpl.hardware.server.auth import AUTH_MAX_FAILURES, AuthLimiter
from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager
from tests.helpers.certificates import make_certificate
from tests.helpers.support import RawClient, ServerProcess
from tests.helpers.waiting import wait_until

NOBODY = 65534
"""uid of 'nobody': the other user whose files must be refused (chown needs root)."""
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def hello(port: int, token: str) -> dict[str, Any]:
    """One hello on a new connection: its reply message (the server closes after an error)."""
    with RawClient(port) as c:
        return c.request("hello", {"token": token, "client": "security test", "protocol": 1})


def cooling_down(reply: dict[str, Any]) -> bool:
    """A retryable refusal of a wrong token: the address is cooling down."""
    error = reply.get("error", {})
    return error.get("code") == -32009 and "retry_after" in (error.get("data") or {})


# -- rate limit of failed hellos ------------------------------------------------------------------

def test_limiter_counts_failures_per_ip_within_the_window() -> None:
    now = [0.0]
    limiter = AuthLimiter(cooldown=30, max_failures=5, window=10, clock=lambda: now[0])
    for _ in range(4):
        limiter.failed("10.0.0.1")
    now[0] = 10.5  # the first four are out of the window
    limiter.failed("10.0.0.1")
    assert limiter.refused_for("10.0.0.1") == 0
    for _ in range(4):
        limiter.failed("10.0.0.1")
        limiter.failed("10.0.0.2")
    assert limiter.refused_for("10.0.0.1") == 30 and limiter.refused_for("10.0.0.2") == 0
    now[0] = 40.0
    assert limiter.refused_for("10.0.0.1") == pytest.approx(0.5)
    now[0] = 41.0
    assert limiter.refused_for("10.0.0.1") == 0  # cooled down: starts afresh
    limiter.failed("10.0.0.1")
    assert limiter.refused_for("10.0.0.1") == 0


def test_limiter_memory_is_bounded_whatever_the_addresses() -> None:
    """Rotating source addresses (each fails once) cannot make the limiter grow without bound,
    and the addresses whose window is over are forgotten as new failures come."""
    now = [0.0]
    limiter = AuthLimiter(cooldown=30, max_failures=5, window=10, max_tracked=100,
                          clock=lambda: now[0])
    for _ in range(5):
        limiter.failed("10.0.0.1")  # cooling down
    for i in range(10_000):
        limiter.failed(f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(limiter) == 100  # the least recently failed were forgotten, 10.0.0.1 first
    now[0] = 10.5  # every window is over
    limiter.failed("10.0.0.3")
    assert len(limiter) == 1


def test_brute_force_is_cut_off_and_logged_once(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--auth-cooldown", "600"]) as server:
        replies = [hello(server.port, f"guess-{i:04d}") for i in range(1000)]
        checked = replies[:AUTH_MAX_FAILURES]
        assert all(r["error"]["code"] == -32002 and not cooling_down(r) for r in checked)
        assert all(cooling_down(r) for r in replies[AUTH_MAX_FAILURES:])
        assert "too many failed authentications from 127.0.0.1" in replies[-1]["error"]["message"]
        assert replies[-1]["error"]["data"]["retry_after"] > 500
        wait_until(lambda: "refused for 600 s" in server.log, 10, "the cool-down warning")
        server.stop()
        assert server.log.count("authentication failed from 127.0.0.1") == AUTH_MAX_FAILURES
        assert server.log.count("its wrong tokens are refused") == 1
        assert "WARNING" in next(line for line in server.log_lines if "refused for" in line)
        assert "guess-" not in server.log and server.token not in server.log


def test_right_token_is_accepted_during_a_cooldown(tmp_path: Path) -> None:
    """Someone without the token cannot lock out the programs that have it."""
    with ServerProcess(tmp_path, ["--mock", "--auth-cooldown", "600"]) as server:
        for i in range(AUTH_MAX_FAILURES + 5):
            hello(server.port, f"wrong-{i}")
        assert cooling_down(hello(server.port, "wrong-again"))
        assert hello(server.port, server.token)["result"]["backend"] == "mock"
        client = PyRPLClient("127.0.0.1", server.port, server.token, timeout=5)
        try:
            assert client.connect()["session"] and client.call("ping")
        finally:
            client.close()


def test_a_wrong_token_is_final_again_after_the_cooldown(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--auth-cooldown", "0.5"]) as server:
        for i in range(AUTH_MAX_FAILURES):
            assert not cooling_down(hello(server.port, f"wrong-{i}"))
        assert cooling_down(hello(server.port, "wrong-during"))
        reply = wait_until(lambda: (r := hello(server.port, "wrong-after")) and not cooling_down(r)
                           and r, 10, "the end of the cool-down")
        assert reply["error"]["code"] == -32002


# -- the token never shows ------------------------------------------------------------------------

@pytest.mark.usefixtures("private_runtime")
def test_token_of_a_spawned_server_not_on_command_lines_nor_in_its_log(port: int) -> None:
    manager = TCPServerManager(port=port, server_args=("-v",))  # -v: debug log too
    client = manager.ensure_server_running()
    state = runtime.read_state(port)
    assert hello(port, "guess-not-logged")["error"]["code"] == -32002
    client.get("asg0")
    assert state.token not in json.dumps(client.status())
    assert state.token not in " ".join(psutil.Process(state.pid).cmdline())
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True,
                        check=True).stdout
    assert str(runtime.token_path(port)) in ps and state.token not in ps
    manager.release_server()
    wait_until(lambda: not runtime.pid_alive(state.pid), 10, "the server to stop")
    log = runtime.log_path(port).read_text()
    assert "authentication failed" in log and "guess-not-logged" not in log
    assert state.token not in log


def test_tokens_never_in_replies_errors_or_status(mock_server: ServerProcess) -> None:
    guess = "guess-" + mock_server.token[:20]
    refused = json.dumps(hello(mock_server.port, guess))
    assert guess not in refused and mock_server.token not in refused
    with mock_server.client() as c:
        greeting = c.request("hello", {"token": mock_server.token, "client": "again",
                                       "protocol": 1})  # a second hello: -32600
        shutdown = c.request("shutdown", {"token": guess})
        status = c.call("status")
    for message in (json.dumps(greeting), json.dumps(shutdown), json.dumps(status)):
        assert mock_server.token not in message and guess not in message
    client = PyRPLClient("127.0.0.1", mock_server.port, guess, timeout=5)
    with pytest.raises(AuthenticationFailed) as info:
        client.connect()
    assert guess not in str(info.value) and guess not in repr(client)
    client.close()
    mock_server.stop()
    assert guess not in mock_server.log and mock_server.token not in mock_server.log


# -- private files --------------------------------------------------------------------------------

@pytest.mark.usefixtures("private_runtime")
def test_files_of_a_spawned_server_are_owner_only(port: int) -> None:
    manager = TCPServerManager(port=port)
    manager.ensure_server_running()
    try:
        folder = runtime.runtime_dir()
        assert os.stat(folder).st_mode & 0o777 == 0o700
        for path in (runtime.state_path(port), runtime.token_path(port), runtime.log_path(port)):
            assert path.stat().st_mode & 0o777 == 0o600, path
            assert path.stat().st_uid == os.getuid()
    finally:
        manager.release_server()


@pytest.mark.usefixtures("private_runtime")
def test_log_files_left_readable_by_others_are_made_owner_only(port: int, tmp_path: Path) -> None:
    """A log file that others can read (written by hand, or by an older version) is made
    owner-only when a server appends to it: the one the manager gives a spawned server, and the
    one a server is given with --log-file."""
    own_log = tmp_path / "own.log"
    for path in (runtime.log_path(port), own_log):
        path.write_text("an older run\n")
        path.chmod(0o644)
    manager = TCPServerManager(port=port)
    manager.ensure_server_running()
    try:
        assert runtime.log_path(port).stat().st_mode & 0o777 == 0o600
    finally:
        manager.release_server()
    with ServerProcess(tmp_path, ["--mock", "--log-file", str(own_log)]) as server:
        assert server.ready_line, own_log.read_text()
        assert own_log.stat().st_mode & 0o777 == 0o600


def _state(port: int) -> runtime.ServerState:
    return runtime.ServerState(pid=os.getpid(), port=port, token="t", backend="mock", hostname="",
                               config="", plant="", version="0", started_at="",
                               process_start=runtime.process_start(os.getpid()), ssh_port=0,
                               board_port=0)


@pytest.mark.usefixtures("private_runtime")
def test_state_file_readable_by_others_is_refused(port: int) -> None:
    runtime.write_state(_state(port))
    runtime.state_path(port).chmod(0o644)
    with pytest.raises(ServerError, match=f"other users.*chmod go-rwx {runtime.state_path(port)}"):
        TCPServerManager(port=port).ensure_server_running()


@pytest.mark.usefixtures("private_runtime")
def test_state_file_as_symbolic_link_is_refused(port: int, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    runtime.state_path(port).symlink_to(target)
    with pytest.raises(ServerError, match="symbolic link"):
        runtime.read_state(port)


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o770, 0o777])
def test_runtime_folder_open_to_group_or_others_is_refused(
        tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    monkeypatch.setenv("PYMODAQ_PYRPL_RUNTIME_DIR", str(folder))
    with pytest.raises(ServerError, match="other users"):
        runtime.runtime_dir()


@as_root
@pytest.mark.usefixtures("private_runtime")
def test_state_file_of_another_user_is_refused(port: int) -> None:
    runtime.write_state(_state(port))
    os.chown(runtime.state_path(port), NOBODY, NOBODY)
    with pytest.raises(ServerError, match=f"another user \\(uid {NOBODY}\\)"):
        TCPServerManager(port=port).ensure_server_running()


@as_root
def test_runtime_folder_of_another_user_is_refused(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, NOBODY, NOBODY)
    monkeypatch.setenv("PYMODAQ_PYRPL_RUNTIME_DIR", str(folder))
    with pytest.raises(ServerError, match="another user.*PYMODAQ_PYRPL_RUNTIME_DIR"):
        runtime.runtime_dir()


def _server_refuses_token_file(tmp_path: Path, reason: str) -> None:
    server = ServerProcess(tmp_path, ["--mock"])
    assert server.ready_line == "" and server.proc.wait(10) == 2
    wait_until(lambda: reason in server.log, 10, f"{reason!r} in the log")
    assert "token file refused" in server.log


def test_server_refuses_a_token_file_readable_by_others(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("visible-token\n")
    (tmp_path / "token").chmod(0o644)
    _server_refuses_token_file(tmp_path, "can be read by other users")


@as_root
def test_server_refuses_a_token_file_of_another_user(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("their-token\n")
    (tmp_path / "token").chmod(0o600)
    os.chown(tmp_path / "token", NOBODY, NOBODY)
    _server_refuses_token_file(tmp_path, "belongs to another user")


# -- TLS ------------------------------------------------------------------------------------------

@pytest.fixture
def tls_server(tmp_path: Path):
    """A --mock server with TLS: (server, cert file, fingerprint)."""
    cert, key, fingerprint = make_certificate(tmp_path)
    with ServerProcess(tmp_path, ["--mock", "--tls-cert", str(cert), "--tls-key", str(key)]) as srv:
        yield srv, cert, fingerprint


def test_tls_with_the_ca_file(tls_server) -> None:
    server, cert, fingerprint = tls_server
    wait_until(lambda: f"fingerprint {fingerprint}" in server.log, 10, "the fingerprint in the log")
    with PyRPLClient("127.0.0.1", server.port, server.token, tls=True, tls_ca=str(cert),
                     timeout=5) as client:
        assert client.set("asg0", {"frequency": 1000})["frequency"] == pytest.approx(1000, abs=1)
        trace = client.acquire("scope")  # a 130 kB reply in many TLS records
        assert trace["ch1"].shape == (16384,)
        assert client.status()["device"]["state"] == "ready"


def test_tls_with_a_pinned_fingerprint_and_concurrent_calls(tls_server) -> None:
    server, _, fingerprint = tls_server
    pinned = ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
    errors: list[BaseException] = []
    with PyRPLClient("localhost", server.port, server.token, tls_fingerprint=pinned,
                     timeout=10) as client:
        def work(i: int) -> None:
            try:
                for k in range(30):
                    value = round(0.01 * (i + 1) + 0.0001 * k, 4)
                    client.set(f"pid{i % 3}", {"setpoint": value})
                    client.acquire("scope") if k % 10 == 0 else client.get("asg1")
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors and client.ping() < 1


def test_tls_client_resumes_its_session_after_a_drop(tls_server) -> None:
    from tests.helpers.faultproxy import FaultProxy

    server, _, fingerprint = tls_server
    with FaultProxy(server.port) as proxy, PyRPLClient(
            "127.0.0.1", proxy.port, server.token, tls_fingerprint=fingerprint,
            timeout=5) as client:
        session = client.connect()["session"]
        client.lease("asg1")
        resumed = threading.Event()
        client.add_connection_callback(
            lambda event, info: resumed.set() if event == "resumed" else None)
        proxy.set_mode("drop")
        wait_until(lambda: not client.connected, 10, "the drop")
        proxy.set_mode("pass")
        assert resumed.wait(10) and client.session == session
        assert client.set("asg1", {"amplitude": 0.25})["amplitude"] == pytest.approx(0.25, abs=1e-3)


def test_wrong_fingerprint_is_a_final_connection_failure(tls_server) -> None:
    server, _, fingerprint = tls_server
    wrong = "00" * 32
    client = PyRPLClient("127.0.0.1", server.port, server.token, tls_fingerprint=wrong, timeout=5)
    with pytest.raises(CertificateMismatch, match=f"fingerprint {fingerprint}, not the pinned"):
        client.connect()
    assert isinstance(client.failure, CertificateMismatch)
    with pytest.raises(CertificateMismatch):
        client.connect()  # final: not tried again
    client.close()


def test_certificate_not_from_the_ca_file_is_refused(tls_server, tmp_path: Path) -> None:
    server, _, _ = tls_server
    other_cert, _, _ = make_certificate(tmp_path, "other")
    client = PyRPLClient("127.0.0.1", server.port, server.token, tls_ca=str(other_cert),
                         timeout=5)
    with pytest.raises(CertificateMismatch, match="refusing.*fails verification"):
        client.connect()
    client.close()


def test_plain_client_to_a_tls_server_fails_within_its_timeout(tls_server) -> None:
    server, _, _ = tls_server
    client = PyRPLClient("127.0.0.1", server.port, server.token, timeout=2)
    t0 = time.monotonic()
    with pytest.raises(ConnectionFailed, match="a TLS server"):
        client.connect()
    assert time.monotonic() - t0 < 2 + 0.5
    client.close()
    with PyRPLClient("127.0.0.1", server.port, server.token, tls_fingerprint=tls_server[2],
                     timeout=5) as client:
        assert client.ping() < 1  # the server is not disturbed


def test_tls_client_to_a_plain_server_fails_within_its_timeout(mock_server: ServerProcess,
                                                                tmp_path: Path) -> None:
    cert, _, _ = make_certificate(tmp_path)
    client = PyRPLClient("127.0.0.1", mock_server.port, mock_server.token, tls_ca=str(cert),
                         timeout=1)
    t0 = time.monotonic()
    with pytest.raises(ConnectionFailed, match="TLS handshake"):
        client.connect()
    assert time.monotonic() - t0 < 1 + 0.5
    client.close()


@pytest.mark.parametrize("flag", ["--tls-cert", "--tls-key"])
def test_server_needs_both_tls_cert_and_key(tmp_path: Path, flag: str) -> None:
    cert, key, _ = make_certificate(tmp_path)
    server = ServerProcess(tmp_path, ["--mock", flag, str(cert if flag == "--tls-cert" else key)])
    assert server.ready_line == "" and server.proc.wait(10) == 2
    wait_until(lambda: "give both --tls-cert and --tls-key" in server.log, 10, "the reason")


def test_server_refuses_a_tls_key_readable_by_others(tmp_path: Path) -> None:
    cert, key, _ = make_certificate(tmp_path)
    key.chmod(0o644)
    server = ServerProcess(tmp_path, ["--mock", "--tls-cert", str(cert), "--tls-key", str(key)])
    assert server.ready_line == "" and server.proc.wait(10) == 2
    wait_until(lambda: "can be read by other users" in server.log, 10, "the reason")


def test_manager_passes_tls_settings_to_a_remote_server(tls_server, monkeypatch) -> None:
    from pymodaq_plugins_pyrpl.hardware import server_manager

    server, cert, fingerprint = tls_server
    monkeypatch.setattr(server_manager, "is_local", lambda host: False)  # 127.0.0.1 plays remote
    manager = TCPServerManager(host="127.0.0.1", port=server.port, hostname=None,
                               token=server.token, tls_ca=str(cert), tls_fingerprint=fingerprint)
    assert manager.ensure_server_running().ping() < 1
    manager.release_server()
    with pytest.raises(CertificateMismatch):
        TCPServerManager(host="127.0.0.1", port=server.port, token=server.token,
                         tls_fingerprint="ab" * 32).ensure_server_running()


def test_plugin_uses_the_tls_settings_of_a_remote_server(qtbot, tls_server) -> None:
    from pymodaq.control_modules.daq_move import DAQ_Move

    server, _, fingerprint = tls_server  # on 127.0.0.1: a plugin given a token uses it as it is
    actuator = DAQ_Move(parent=None, title="TLS test")
    actuator.actuator = "PyRPL_ASG_TCP"
    for name, value in (("server_ip", "127.0.0.1"), ("server_port", server.port),
                        ("token", server.token), ("tls_fingerprint", fingerprint)):
        actuator.settings.child("actuator_settings", "pyrpl", name).setValue(value)
    try:
        with qtbot.waitSignal(actuator.init_signal, timeout=30000) as init:
            actuator.init_hardware(True)
        assert init.args[0] is True
        with qtbot.waitSignal(actuator.move_done_signal, timeout=10000) as done:
            actuator.move_abs(1000.0)
        assert done.args[0].value() == pytest.approx(1000.00761449337)
    finally:
        actuator.quit_fun()
    assert runtime.read_state(server.port).pid == server.pid  # nothing spawned
