"""TCPServerManager with real server subprocesses and real holder processes."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.errors import (
    AuthenticationFailed,
    PortInUse,
    ServerError,
    ServerGone,
    ServerMismatch,
)
from pymodaq_plugins_pyrpl.hardware.server.auth import AUTH_MAX_FAILURES
from pymodaq_plugins_pyrpl.hardware.server_manager import (
    TCPServerManager,
    is_local,
    probe_port,
    stop_local_server,
)
from pymodaq_plugins_pyrpl.hardware.sockets import free_port
from tests.helpers.scripts import HOLDER, PID_REUSE
from tests.helpers.support import RawClient, ServerProcess
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.usefixtures("private_runtime")


class Holder:
    """A holder.py subprocess."""

    def __init__(self, port: int, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HOLDER), str(port), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("HELD"), line + self.proc.stderr.read()
        self.server_pid = int(line.split()[1])

    def command(self, text: str) -> str:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def holders():
    started: list[Holder] = []

    def start(port: int, *args: str) -> Holder:
        holder = Holder(port, *args)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        holder.close()


@pytest.fixture
def cleanup_servers(port: int):
    yield
    stop_local_server(port)


def test_two_processes_share_one_server_until_the_last_releases(port, holders, cleanup_servers):
    first = holders(port)
    second = holders(port)
    assert second.server_pid == first.server_pid
    assert first.command("release") == "RELEASED"
    assert runtime.pid_alive(first.server_pid)
    assert second.command("get") == "GOT"
    assert second.command("release") == "RELEASED"
    wait_until(lambda: not runtime.pid_alive(first.server_pid), 10, "the server to stop")


def test_killed_only_holder_server_stops_within_grace(port, holders, cleanup_servers):
    holder = holders(port, "--session-grace", "1", "--auto-stop", "1")
    holder.kill()
    t0 = time.monotonic()
    wait_until(lambda: not runtime.pid_alive(holder.server_pid), 10, "the orphan server to stop")
    assert time.monotonic() - t0 < 5


def test_in_process_managers_share_one_client(port, cleanup_servers):
    a, b = TCPServerManager(port=port), TCPServerManager(port=port)
    client = a.ensure_server_running()
    assert b.ensure_server_running() is client
    assert a.ensure_server_running() is client  # idempotent per manager
    pid = runtime.read_state(port).pid
    a.release_server()
    assert client.connected and runtime.pid_alive(pid)
    b.release_server()
    wait_until(lambda: not runtime.pid_alive(pid), 10, "the server to stop")
    b.release_server()  # harmless


def test_killed_server_is_restarted_and_the_client_resumes(port, cleanup_servers):
    manager = TCPServerManager(port=port)
    client = manager.ensure_server_running()
    events: list[str] = []
    new_session = threading.Event()

    def on_event(event: str, info: dict) -> None:
        events.append(event)
        if event == "new_session":
            new_session.set()

    client.add_connection_callback(on_event)
    client.lease("asg0")
    old = runtime.read_state(port)
    os.kill(old.pid, signal.SIGKILL)
    assert new_session.wait(20), events
    new = runtime.read_state(port)
    assert new.pid != old.pid and new.token == old.token
    assert client.get("asg0", ["frequency"]) == {"frequency": 0.0}
    holders = {c["client"]: c for c in client.status()["clients"]}
    assert holders[manager.client_name]["leases"] == ["asg0"]
    manager.release_server()


@pytest.mark.parametrize(("hostname", "wanted"), [
    pytest.param("_FAKE_", "Red Pitaya '_FAKE_'", id="fake"),
    pytest.param("virtual", "the virtual Red Pitaya with plant 'loopback", id="virtual")])
def test_another_board_on_the_port_is_a_clear_error(port, holders, cleanup_servers, hostname,
                                                    wanted):
    holders(port)  # the simulated board, in another process
    with pytest.raises(ServerMismatch) as info:
        TCPServerManager(port=port, hostname=hostname).ensure_server_running()
    message = str(info.value)
    assert "simulated board" in message and wanted in message and str(port) in message


def test_mismatch_within_one_process(port, cleanup_servers):
    manager = TCPServerManager(port=port)
    manager.ensure_server_running()
    with pytest.raises(ServerMismatch):
        TCPServerManager(port=port, config="other").ensure_server_running()
    manager.release_server()


def test_foreign_program_on_the_port(port):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        t0 = time.monotonic()
        with pytest.raises(PortInUse) as info:
            TCPServerManager(port=port, startup_timeout=2).ensure_server_running()
        assert str(port) in str(info.value) and "not a PyRPL server" in str(info.value)
        assert time.monotonic() - t0 < 5


def replaces_the_stale_state_file(port: int, process: subprocess.Popen,
                                  start: float) -> TCPServerManager:
    """A state file naming ``process`` (started at ``start``, its recorded start) is replaced by
    that of a new server, whose manager it returns."""
    runtime.write_state(runtime.ServerState(
        pid=process.pid, port=port, token="old", backend="mock", hostname="", config="",
        plant="loopback", version="0", started_at="2026-01-01T00:00:00+00:00",
        process_start=start, ssh_port=0, board_port=0))
    manager = TCPServerManager(port=port)
    manager.ensure_server_running()
    state = runtime.read_state(port)
    assert state.pid != process.pid and state.token != "old" and runtime.pid_alive(state.pid)
    return manager


def test_stale_state_file_of_a_dead_server_is_replaced(port, cleanup_servers):
    process = subprocess.Popen(["sleep", "120"])
    start = runtime.process_start(process.pid)
    process.kill()
    process.wait()
    try:
        replaces_the_stale_state_file(port, process, start).release_server()
    finally:
        process.kill()
        process.wait()


def test_stale_state_file_naming_a_reused_pid_is_replaced(port, cleanup_servers):
    process = subprocess.Popen(["sleep", "120"])
    start = runtime.process_start(process.pid)
    try:
        manager = replaces_the_stale_state_file(port, process, start - 100)
        assert process.poll() is None
        manager.release_server()
    finally:
        process.kill()
        process.wait()


def test_server_that_cannot_start_reports_its_log(port):
    manager = TCPServerManager(port=port, hostname="", server_args=("--plant", "banana"))
    with pytest.raises(ServerError) as info:
        manager.ensure_server_running()
    assert "exited with status 2" in str(info.value) and "banana" in str(info.value)


def test_takeover_kicks_the_old_client_out_for_good(port, cleanup_servers):
    manager = TCPServerManager(port=port)
    client = manager.ensure_server_running()
    failed = threading.Event()
    errors: list[BaseException] = []

    def on_event(event: str, info: dict) -> None:
        if event == "failed":
            errors.append(info["error"])
            failed.set()

    client.add_connection_callback(on_event)
    old_pid = runtime.read_state(port).pid
    result = subprocess.run([sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "takeover",
                             "--port", str(port), "--auto-stop", "30"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "took over" in result.stdout
    new = runtime.read_state(port)
    assert new.pid != old_pid
    assert failed.wait(20)
    assert isinstance(errors[0], AuthenticationFailed)
    with pytest.raises(AuthenticationFailed):
        client.get("asg0")
    log = runtime.log_path(port)
    attempts = log.read_text().count("authentication failed")
    time.sleep(1.0)  # the old client must stay quiet: no reconnect, no restart loop
    assert log.read_text().count("authentication failed") == attempts
    assert runtime.read_state(port).pid == new.pid and runtime.pid_alive(new.pid)
    manager.release_server()
    # a new program uses the taken-over server normally
    newcomer = TCPServerManager(port=port)
    assert newcomer.ensure_server_running().ping() < 1
    assert runtime.read_state(port).pid == new.pid
    newcomer.release_server()


def watch_failure(client) -> tuple[threading.Event, list[BaseException]]:
    """An event set when ``client`` fails for good, and the list its errors are appended to."""
    failed = threading.Event()
    errors: list[BaseException] = []
    client.add_connection_callback(
        lambda event, info: (errors.append(info["error"]), failed.set()) if event == "failed"
        else None)
    return failed, errors


def test_stopped_server_is_not_restarted(port):
    manager = TCPServerManager(port=port)
    client = manager.ensure_server_running()
    failed, errors = watch_failure(client)
    assert stop_local_server(port) is not None
    assert failed.wait(20)
    assert isinstance(errors[0], ServerGone)
    assert runtime.read_state(port) is None
    manager.release_server()


def test_is_local() -> None:
    assert is_local("localhost") and is_local("127.0.0.1") and is_local("::1")
    assert not is_local("192.168.1.100") and not is_local("rp-f0a1b2.local")


def test_runtime_folder_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    monkeypatch.setenv("PYMODAQ_PYRPL_RUNTIME_DIR", str(folder))
    with pytest.raises(ServerError, match="other users"):
        runtime.runtime_dir()


def test_a_taken_over_connection_is_replaced_for_newcomers(port, cleanup_servers):
    stale = TCPServerManager(port=port)
    old_client = stale.ensure_server_running()
    failed = threading.Event()
    old_client.add_connection_callback(
        lambda event, info: failed.set() if event == "failed" else None)
    result = subprocess.run([sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "takeover",
                             "--port", str(port), "--auto-stop", "30"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert failed.wait(20)
    newcomer = TCPServerManager(port=port)  # e.g. the user re-initializes one plugin
    client = newcomer.ensure_server_running()
    assert client is not old_client and client.ping() < 1
    stale.release_server()  # the stale holder leaving does not disturb the newcomer
    assert client.connected and client.get("asg0", ["frequency"])
    newcomer.release_server()


def test_remote_server_is_used_never_spawned(tmp_path, port, monkeypatch):
    from pymodaq_plugins_pyrpl.hardware import server_manager
    from pymodaq_plugins_pyrpl.hardware.errors import ConnectionFailed

    # 127.0.0.1 stands in for another computer: no traffic leaves this machine
    monkeypatch.setattr(server_manager, "is_local", lambda host: False)
    with pytest.raises(ConnectionFailed, match="start it there"):
        TCPServerManager(host="127.0.0.1", port=port, token="x",
                         connect_timeout=2).ensure_server_running()
    assert runtime.read_state(port) is None  # nothing spawned


def test_a_token_connects_to_the_server_at_any_address_loopback_included(tmp_path, port):
    """A server with no state file in this runtime folder (another user's, a container's, one of
    another runtime folder): a manager given its token uses it, on localhost too, and starts none."""
    from pymodaq_plugins_pyrpl.hardware.errors import ConnectionFailed

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    with ServerProcess(tmp_path, ["--mock"],
                       env={"PYMODAQ_PYRPL_RUNTIME_DIR": str(elsewhere)}) as server:
        assert runtime.read_state(server.port) is None
        with pytest.raises(PortInUse, match="Give its token"):
            TCPServerManager(port=server.port).ensure_server_running()
        for host in ("localhost", "127.0.0.1", "::1"):
            manager = TCPServerManager(host=host, port=server.port, token=server.token)
            if host == "::1":  # the server listens on 127.0.0.1 only
                with pytest.raises(ConnectionFailed, match="starts none"):
                    manager.ensure_server_running()
                continue
            assert manager.ensure_server_running().ping() < 1, host
            manager.release_server()
        with pytest.raises(AuthenticationFailed):
            TCPServerManager(host="127.0.0.1", port=server.port,
                             token="wrong").ensure_server_running()
        assert runtime.read_state(server.port) is None  # nothing spawned, nothing written here
        assert server.proc.poll() is None


# -- state files that do not describe a live server of ours (pid reuse) -----------------------------



@pytest.fixture
def sleeper():
    """An unrelated live process (sleep), killed after the test."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait(10)


def test_held_server_killed_and_its_pid_reused_is_revived(port, sleeper, cleanup_servers):
    manager = TCPServerManager(port=port)
    client = manager.ensure_server_running()
    restarted = threading.Event()
    client.add_connection_callback(
        lambda event, info: restarted.set() if event == "new_session" else None)
    with runtime.port_lock(port):  # the client's restart waits until the state names the sleeper
        old = runtime.read_state(port)
        os.kill(old.pid, signal.SIGKILL)
        # as if the kernel had given the dead server's pid to the sleeper
        state = json.loads(runtime.state_path(port).read_text())
        runtime.write_private(runtime.state_path(port), json.dumps({**state, "pid": sleeper.pid}))
    assert restarted.wait(20), "the held server was not restarted"
    new = runtime.read_state(port)
    assert new.pid not in (old.pid, sleeper.pid) and new.token == old.token
    assert client.get("asg0", ["frequency"]) == {"frequency": 0.0}
    assert sleeper.poll() is None
    manager.release_server()


@pytest.mark.pidns
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare: a private pid namespace in which a pid is "
                           "reused on purpose (CI runs as root)")
def test_pid_reuse_in_a_pid_namespace():
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                             str(PID_REUSE)], check=False, capture_output=True, text=True,
                            timeout=150)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


def test_server_removes_its_state_file_when_it_stops_by_itself(port):
    manager = TCPServerManager(port=port)
    manager.ensure_server_running()
    pid = runtime.read_state(port).pid
    manager.release_server()  # the last holder: the server stops (auto-stop)
    wait_until(lambda: not runtime.pid_alive(pid), 10, "the server to stop")
    assert not runtime.state_path(port).exists()


def test_server_stopped_by_a_signal_removes_its_state_file_and_is_not_revived(port):
    manager = TCPServerManager(port=port)
    client = manager.ensure_server_running()
    failed, errors = watch_failure(client)
    pid = runtime.read_state(port).pid
    os.kill(pid, signal.SIGTERM)
    assert failed.wait(20)
    assert isinstance(errors[0], ServerGone)
    wait_until(lambda: not runtime.pid_alive(pid), 10, "the server to exit")
    assert not runtime.state_path(port).exists()
    manager.release_server()


def test_a_server_removes_only_a_state_file_naming_itself(port):
    state = runtime.ServerState(pid=os.getpid(), port=port, token="t", backend="mock", hostname="",
                                config="", plant="", version="0", started_at="",
                                process_start=0.0, ssh_port=0, board_port=0)
    runtime.write_state(dataclasses.replace(state, pid=os.getpid() + 1))  # e.g. after a takeover
    runtime.remove_own_state(port)
    assert runtime.state_path(port).exists()
    runtime.write_state(state)
    runtime.remove_own_state(port)
    assert not runtime.state_path(port).exists()
    runtime.remove_own_state(port)  # none: nothing to do


# -- a server shutting down ------------------------------------------------------------------------

def test_init_right_after_the_last_release_starts_a_new_server(port, cleanup_servers):
    """The released server closes its listener, then exits; an init in between waits for it."""
    for _ in range(20):
        manager = TCPServerManager(port=port, startup_timeout=30)
        assert manager.ensure_server_running().ping() < 5
        manager.release_server()  # the last holder: the server stops


# -- locking per port ------------------------------------------------------------------------------

SLOW_PYTHON = """#!/bin/sh
# an interpreter that starts only once the test creates {go}
touch "{started}"
while [ ! -e "{go}" ]; do sleep 0.02; done
exec "{python}" "$@"
"""


def test_a_slow_start_on_one_port_does_not_block_other_ports(port, tmp_path):
    held_port, new_port = free_port(), free_port()
    started, go = tmp_path / "started", tmp_path / "go"
    slow_python = tmp_path / "slow-python"
    slow_python.write_text(SLOW_PYTHON.format(started=started, go=go, python=sys.executable))
    slow_python.chmod(0o755)
    held = TCPServerManager(port=held_port)
    held.ensure_server_running()
    slow = TCPServerManager(port=port, python=str(slow_python))
    slow_outcome: list[object] = []
    slow_start = threading.Thread(target=lambda: slow_outcome.append(slow.ensure_server_running()),
                                  daemon=True)
    others_done = threading.Event()

    def use_other_ports() -> None:
        held.release_server()
        newcomer = TCPServerManager(port=new_port)
        newcomer.ensure_server_running().ping()
        newcomer.release_server()
        others_done.set()

    slow_start.start()
    try:
        wait_until(started.exists, 30, "the slow start to begin")
        threading.Thread(target=use_other_ports, daemon=True).start()
        assert others_done.wait(30), "release and init on other ports waited for the slow start"
        assert slow_start.is_alive() and not go.exists()  # the slow start was still in progress
    finally:
        go.touch()
        slow_start.join(60)
        for other in (held_port, new_port):
            stop_local_server(other)
    assert slow_outcome and slow_outcome[0].ping() < 5
    slow.release_server()
    stop_local_server(port)


# -- probing a port --------------------------------------------------------------------------------

def test_port_probe_never_counts_as_a_failed_authentication(tmp_path):
    with ServerProcess(tmp_path, ["--mock"]) as server:
        for _ in range(AUTH_MAX_FAILURES + 5):
            assert probe_port(server.port, 5) == "pyrpl"
        with RawClient(server.port) as raw:
            reply = raw.request("hello", {"token": "wrong", "client": "test", "protocol": 1})
        # a token checked (and refused), not an address cooling down after failures
        assert reply["error"]["code"] == -32002
        assert "retry_after" not in (reply["error"].get("data") or {})
        assert PyRPLClient("127.0.0.1", server.port, server.token, timeout=5).connect()


# -- runtime folder problems -----------------------------------------------------------------------

def servers_on(port: int) -> list[psutil.Process]:
    """Server processes running on ``port`` (zombies excluded)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        command = process.info["cmdline"] or []
        if (runtime.SERVER_MODULE in command and str(port) in command
                and process.info["status"] != psutil.STATUS_ZOMBIE):
            found.append(process)
    return found


FULL_DISK_PYTHON = """#!/bin/sh
# the interpreter of a server whose state file lands on /dev/full (exec keeps the pid, $$)
ln -s /dev/full "{folder}/server-{port}.json.$$.tmp"
exec "{python}" "$@"
"""


def fails_for_lack_of_space_leaving_nothing(port: int, folder: Path,
                                             python: Path | None = None) -> None:
    try:
        with pytest.raises(ServerError) as info:
            TCPServerManager(port=port, python=python and str(python)).ensure_server_running()
        assert str(folder) in str(info.value) and "free some space" in str(info.value)
        assert not list(folder.glob("*.tmp")), "a half-written file was left"
        assert not runtime.state_path(port).exists()
        assert not servers_on(port), "a server was left running"
    finally:
        for process in servers_on(port):
            process.kill()


def test_full_disk_for_the_token_file_leaves_nothing_behind(port, private_runtime):
    """/dev/full: every write of the token file fails with ENOSPC (the manager writes it before the
    server starts)."""
    (private_runtime / f"token-{port}.{os.getpid()}.tmp").symlink_to("/dev/full")
    fails_for_lack_of_space_leaving_nothing(port, private_runtime)


def test_full_disk_for_the_state_file_leaves_nothing_behind(port, private_runtime, tmp_path):
    """/dev/full: every write of the state file fails with ENOSPC (the server writes it once it
    listens)."""
    python = tmp_path / "full-disk-python"
    python.write_text(FULL_DISK_PYTHON.format(folder=private_runtime, port=port,
                                              python=sys.executable))
    python.chmod(0o755)
    fails_for_lack_of_space_leaving_nothing(port, private_runtime, python)


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                    reason="root writes in any folder; dropping that privilege needs setpriv")
def test_runtime_folder_without_write_permission(port, tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o700)
    folder.chmod(0o500)
    # root writes in any folder: drop that privilege (CAP_DAC_OVERRIDE) for the plugin's process
    unprivileged = (["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                     "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])
    plugin = ("import sys\n"
              "from pymodaq_plugins_pyrpl.hardware.errors import ServerError\n"
              "from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager\n"
              "try:\n"
              "    TCPServerManager(port=int(sys.argv[1])).ensure_server_running()\n"
              "except ServerError as exc:\n"
              "    print(f'ServerError: {exc}')\n")
    result = subprocess.run([*unprivileged, sys.executable, "-c", plugin, str(port)],
                            check=False, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYMODAQ_PYRPL_RUNTIME_DIR": str(folder)})
    assert result.stdout.startswith("ServerError"), result.stdout + result.stderr
    assert str(folder) in result.stdout and f"chmod 700 {folder}" in result.stdout
    assert not list(folder.iterdir()) and not servers_on(port)
