"""Pid reuse, for real: run as pid 1 of a private pid namespace (needs root), by
``test_server_manager.py::test_pid_reuse_in_a_pid_namespace``::

    unshare --pid --fork --mount-proc python pid_reuse.py

A local server is SIGKILLed (its state file stays behind) and its pid is given to an unrelated
``sleep`` by writing the namespace's ``/proc/sys/kernel/ns_last_pid``. Then ``pymodaq-pyrpl status``
must not list it, ``stop`` and ``takeover`` must not signal it, the stale state file must be
removed, a plugin must start a new server, and a held server whose pid was reused must be
restarted. Prints ``OK``; an AssertionError otherwise. Leaving the namespace kills what is left.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import subprocess
import threading
from pathlib import Path

from pymodaq_plugins_pyrpl import cli
from pymodaq_plugins_pyrpl.hardware import runtime, server_manager
from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager
from pymodaq_plugins_pyrpl.hardware.sockets import free_port


def kill_and_reap(pid: int) -> None:
    """SIGKILL a server this process started, and reap it: its pid is free again."""
    os.kill(pid, signal.SIGKILL)
    child = next(p for p in server_manager._children if p.pid == pid)
    child.wait(10)


def reuse_pid(pid: int) -> subprocess.Popen:
    """An unrelated process (sleep) that gets ``pid``."""
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
    sleeper = subprocess.Popen(["sleep", "120"])
    assert sleeper.pid == pid, f"the pid was not reused: {sleeper.pid} != {pid}"
    return sleeper


def run_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = cli.main(list(args))
    return status, out.getvalue()


def stale_file_is_not_obeyed() -> None:
    port = free_port()
    state = TCPServerManager(port=port)._spawn(secrets.token_hex(32))
    kill_and_reap(state.pid)
    sleeper = reuse_pid(state.pid)
    assert runtime.state_path(port).exists()

    status, out = run_cli("status", "--json")
    assert status == 0 and json.loads(out) == [], out
    assert not runtime.state_path(port).exists(), "status left the stale state file"

    for command in (["stop", "--port", str(port)], ["takeover", "--port", str(port)]):
        runtime.write_state(state)
        status, out = run_cli(*command)
        assert status == 1 and "no local PyRPL server runs" in out, (command, out)
        assert sleeper.poll() is None, f"{command} signalled the unrelated process"
        assert not runtime.state_path(port).exists(), f"{command} left the stale state file"

    runtime.write_state(state)
    manager = TCPServerManager(port=port, startup_timeout=30)
    assert manager.ensure_server_running().ping() < 5
    assert runtime.read_state(port).pid != state.pid
    manager.release_server()
    assert sleeper.poll() is None
    sleeper.kill()
    sleeper.wait()


def held_server_is_revived() -> None:
    port = free_port()
    manager = TCPServerManager(port=port, startup_timeout=30)
    client = manager.ensure_server_running()
    restarted = threading.Event()
    client.add_connection_callback(
        lambda event, info: restarted.set() if event == "new_session" else None)
    with runtime.port_lock(port):  # the client's restart waits until the pid is reused
        old = runtime.read_state(port)
        kill_and_reap(old.pid)
        sleeper = reuse_pid(old.pid)
    assert restarted.wait(30), "the held server was not restarted"
    new = runtime.read_state(port)
    assert new.pid != old.pid and new.token == old.token
    assert client.get("asg0", ["frequency"]) == {"frequency": 0.0}
    assert sleeper.poll() is None
    manager.release_server()
    sleeper.kill()
    sleeper.wait()


def main() -> None:
    assert os.getpid() == 1, "run me in a new pid namespace: unshare --pid --fork --mount-proc"
    stale_file_is_not_obeyed()
    held_server_is_revived()
    print("OK", flush=True)


if __name__ == "__main__":
    main()
