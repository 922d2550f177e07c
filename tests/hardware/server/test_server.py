"""The server as a real subprocess on a free port, spoken to over raw sockets as docs/protocol.md says."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import protocol
from tests.helpers.support import RawClient, ServerProcess, acquire_while_scope_settings_change
from tests.helpers.waiting import wait_until


def test_ready_line_token_file_and_hello(mock_server: ServerProcess) -> None:
    assert mock_server.ready_line.startswith("PYRPL_SERVER_READY {")
    info = json.loads(mock_server.ready_line.split(" ", 1)[1])
    assert info == {"port": mock_server.port, "pid": mock_server.proc.pid}
    assert stat.S_IMODE(mock_server.token_path.stat().st_mode) == 0o600
    assert len(mock_server.token) == 64
    with mock_server.client("first") as c:
        assert c.call("ping")["time"] > 0
        status = c.call("status")
        assert status["server"]["port"] == mock_server.port
        assert status["device"] == {"state": "ready", "reason": None, "backend": "mock",
                                    "since": status["device"]["since"], "attempts": 0,
                                    "board_restarted_at": None, "other": None,
                                    "hostname": "", "session": status["device"]["session"],
                                    "ssh_port": 0, "board_port": 0,
                                    "plant": "loopback:delay=1.6e-08,bandwidth=60000000,noise=0.001"}
    assert mock_server.stdout_lines() == []  # exactly one line on stdout


def test_existing_token_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("my-token\n")
    (tmp_path / "token").chmod(0o600)
    with ServerProcess(tmp_path, ["--mock"]) as server:
        assert server.token == "my-token"
        with server.client() as c:
            assert c.call("ping")
        with RawClient(server.port) as c:
            reply = c.request("hello", {"token": "other", "client": "x", "protocol": 1})
            assert reply["error"]["code"] == -32002
            with pytest.raises(ConnectionError):
                c.read_message()  # the server closes after an authentication failure


def test_wrong_token_never_in_log_and_status(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        status = json.dumps(c.call("status"))
    assert mock_server.token not in status
    mock_server.stop()
    assert mock_server.token not in mock_server.log


def test_leases_between_two_clients_end_with_session(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--session-grace", "0.3"]) as server:
        alice, bob = server.client("alice"), server.client("bob")
        assert alice.call("lease", module="asg0")["leased"]
        reply = bob.request("set", {"module": "asg0", "values": {"amplitude": 0.3}})
        assert reply["error"]["code"] == -32003
        assert "alice" in reply["error"]["message"]
        alice.close()
        # the lease ends with alice's session, after the grace
        reply = wait_until(
            lambda: r if "result" in (r := bob.request("set", {"module": "asg0",
                                                              "values": {"amplitude": 0.3}}))
            else None, 5, "the lease to end with alice's session")
        assert reply["result"] == {"amplitude": pytest.approx(0.3, abs=1e-4)}
        bob.close()


def test_lease_refusal_says_the_holder_vanished_and_when_the_module_frees(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--session-grace", "3"]) as server:
        alice, bob = server.client("alice"), server.client("bob")
        assert alice.call("lease", module="asg0")["leased"]
        error = bob.request("lease", {"module": "asg0"})["error"]
        assert error["code"] == -32003 and "vanished" not in error["message"]
        assert error["data"] == {"module": "asg0", "holder": "alice", "owner": None,
                                 "holder_connected": True, "frees_in": None}
        alice.close()
        error = wait_until(
            lambda: e if not (e := bob.request("set", {"module": "asg0", "values": {
                "amplitude": 0.3}})["error"])["data"]["holder_connected"] else None,
            5, "the server to see alice gone")
        closed = time.monotonic()
        assert error["code"] == -32003 and error["data"]["holder_connected"] is False
        assert 2 < error["data"]["frees_in"] <= 3
        assert "'alice', which vanished" in error["message"] and "frees in" in error["message"]

        def leased() -> dict | None:
            reply = bob.request("lease", {"module": "asg0"})
            if "error" not in reply:
                return reply
            assert 0 < reply["error"]["data"]["frees_in"] <= 3 - (time.monotonic() - closed) + 0.2
            return None

        reply = wait_until(leased, closed + 5 - time.monotonic(), "the lease to end with the grace",
                           interval=0.05)
        assert reply["result"]["leased"]
        bob.close()


def test_status_push_on_change_and_periodically(mock_server: ServerProcess) -> None:
    with mock_server.client("watcher") as watcher:
        watcher.call("subscribe", status=True)
        with mock_server.client("newcomer") as newcomer:
            push = watcher.wait_notification(
                lambda m: any(c["client"] == "newcomer" for c in m["params"]["clients"]))
            assert push["method"] == "status"
            newcomer.call("lease", module="pid1")
            watcher.wait_notification(lambda m: any(
                c["leases"] == ["pid1"] for c in m["params"]["clients"]))
        watcher.notifications.clear()
        first = watcher.wait_notification(timeout=3)
        second = watcher.wait_notification(timeout=3)  # nothing changes: still pushed every 2 s
        assert second["params"]["server"]["uptime"] > first["params"]["server"]["uptime"]
        watcher.call("subscribe", status=False)


def test_64_concurrent_clients(mock_server: ServerProcess) -> None:
    clients = [mock_server.client(f"c{i}") for i in range(64)]
    errors: list[BaseException] = []

    def work(c: RawClient, i: int) -> None:
        try:
            for _ in range(5):
                assert c.call("ping")
                assert c.call("get", module="pid0", names=["setpoint"])
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    with mock_server.client() as c:
        assert len(c.call("status")["clients"]) == 65
    for c in clients:
        c.close()


def test_long_acquisition_does_not_block_others(mock_server: ServerProcess) -> None:
    with mock_server.client("slow") as slow, mock_server.client("fast") as fast:
        slow.call("set", module="scope", values={"duration": 1.0})
        done = threading.Event()
        result: dict = {}

        def acquire() -> None:
            result.update(slow.call("acquire", module="scope", timeout=10))
            done.set()

        thread = threading.Thread(target=acquire)
        t_start = time.monotonic()
        thread.start()
        time.sleep(0.1)  # let the acquisition start
        latencies = []
        while not done.is_set() and len(latencies) < 40:
            t0 = time.perf_counter()
            fast.call("ping")
            fast.call("get", module="asg0", names=["frequency"])
            latencies.append(time.perf_counter() - t0)
        thread.join(15)
        elapsed = time.monotonic() - t_start
        assert result["ch1"].shape == (16384,)
        assert elapsed >= 1.0  # the trace takes its duration in real time
        assert latencies and max(latencies) < 0.05 * 2  # ping + get, each well under 50 ms


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (Linux ``VmHWM``), MiB."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status")
def test_trace_average_memory_does_not_grow_with_the_count(mock_server: ServerProcess) -> None:
    """600 traces averaged at the shortest duration: the server's peak memory grows by far less
    than the 150 MiB that keeping them would take, and the average is the mean of the traces."""
    with mock_server.client() as c:
        c.call("set", module="asg0", values={"waveform": "dc", "offset": 0.25,
                                             "trigger_source": "immediately",
                                             "output_direct": "out1"})
        c.call("set", module="scope", values={"duration": 131.072e-6, "trace_average": 600,
                                              "input1": "in1"})
        before = _peak_rss_mib(mock_server.pid)
        trace = c.call("acquire", module="scope", timeout=60)
        grown = _peak_rss_mib(mock_server.pid) - before
        assert grown < 30, f"peak RSS grew by {grown:.0f} MiB"
        assert trace["settings"]["trace_average"] == 600
        assert np.mean(trace["ch1"]) == pytest.approx(0.25, abs=2e-4)
        assert np.std(trace["ch1"]) < 2e-4  # 1 mV of noise averaged over 600 traces: 41 µV


def test_acquire_timeout_counts_the_wait_behind_another_acquisition(
        mock_server: ServerProcess) -> None:
    """B's timeout runs from its request's arrival, also while A's 2 s acquisition holds the
    scope."""
    with mock_server.client("a") as a, mock_server.client("b") as b:
        a.call("set", module="scope", values={"duration": 1.073741824, "trace_average": 2})
        a.send_raw(protocol.dumps_line(protocol.request("long", "acquire",
                                                        {"module": "scope", "timeout": 30})))
        assert a.call("ping")  # answered after the server started A's acquisition
        t0 = time.monotonic()
        reply = b.request("acquire", {"module": "scope", "timeout": 0.5})
        elapsed = time.monotonic() - t0
        assert reply["error"]["code"] == -32005, reply
        assert "another client" in reply["error"]["message"]
        assert elapsed < 0.5 + 1.0, f"answered after {elapsed:.2f} s"


def test_acquire_timeout_holds_while_settings_keep_changing(mock_server: ServerProcess) -> None:
    """An acquisition that settings changes keep restarting ends at its timeout, saying why."""
    with mock_server.client() as c:
        c.call("set", module="scope", values={"duration": 131.072e-6, "trace_average": 200})
    reply, elapsed, changes = acquire_while_scope_settings_change(mock_server, timeout=1.0)
    assert changes > 10
    assert reply["error"]["code"] == -32005, reply
    assert "settings changed" in reply["error"]["message"]
    assert elapsed < 1.0 + 1.0, f"answered after {elapsed:.2f} s"


def test_oversize_request_and_malformed_lines(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        c.send_raw(b"garbage\n")
        assert c.read_message()["error"]["code"] == -32700
        c.send_raw(b'{"jsonrpc": "2.0", "id": 5, "method": "nope"}\n')
        reply = c.read_message()
        assert reply["id"] == 5 and reply["error"]["code"] == -32601
        assert c.call("ping")  # still served
        c.send_raw(b'{"jsonrpc": "2.0", "id": 6, "method": "ping", "params": {"x": "'
                   + b"x" * (protocol.MAX_REQUEST_BYTES + 10) + b'"}}\n')
        reply = c.read_message()
        assert reply["error"]["code"] == -32006
        with pytest.raises((ConnectionError, OSError)):
            c.read_message()
    with mock_server.client() as c:
        assert c.call("ping")  # the server survived


def test_hello_timeout_closes_silent_connections(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--hello-timeout", "0.3"]) as server:
        with RawClient(server.port) as silent:
            t0 = time.monotonic()
            with pytest.raises(ConnectionError):
                silent.read_message(timeout=5)
            assert time.monotonic() - t0 < 3


def test_sigterm_with_clients_connected_exits_zero(mock_server: ServerProcess) -> None:
    clients = [mock_server.client(f"c{i}") for i in range(3)]
    clients[0].call("subscribe", status=True)
    assert mock_server.stop(timeout=10) == 0
    assert "stopping: signal SIGTERM" in mock_server.log
    assert "Traceback" not in mock_server.log and " ERROR " not in mock_server.log, mock_server.log
    for c in clients:
        c.close()


def test_sigint_exits_zero(mock_server: ServerProcess) -> None:
    mock_server.proc.send_signal(signal.SIGINT)
    assert mock_server.proc.wait(10) == 0


def test_auto_stop_when_last_holder_says_goodbye(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--auto-stop", "30"]) as server:
        holder = server.client("holder", hold=True)
        watcher = server.client("watcher")
        assert holder.call("goodbye") == {"bye": True}
        assert server.proc.wait(10) == 0
        watcher.close()
        holder.close()


def test_auto_stop_when_last_holder_vanishes(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--auto-stop", "30", "--session-grace", "0.5"]) as srv:
        holder = srv.client("holder", hold=True)
        holder.sock.close()  # like a killed process: no goodbye
        t0 = time.monotonic()
        assert srv.proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
        assert "vanished" in srv.log


def test_auto_stop_without_any_holder(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--auto-stop", "0.5"]) as server:
        assert server.proc.wait(10) == 0


def test_shutdown_over_the_wire(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        assert c.request("shutdown", {"token": "x"})["error"]["code"] == -32602
        assert c.call("shutdown", token=mock_server.token) == {"stopping": True}
    assert mock_server.proc.wait(10) == 0


def test_non_loopback_bind_needs_token_file(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, ["--mock", "--bind", "0.0.0.0"], token_file=False)
    assert server.ready_line == ""
    assert server.proc.wait(10) == 2
    wait_until(lambda: "--token-file" in server.log, 5, "the reason in the log")


def test_port_in_use_exits_non_zero(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        server = ServerProcess(tmp_path, ["--mock", "--port", str(taken)])
        assert server.ready_line == "" and server.proc.wait(10) == 3


def test_unknown_plant_exits_non_zero(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, ["--mock", "--plant", "banana"])
    assert server.ready_line == "" and server.proc.wait(10) == 2


@pytest.mark.parametrize("args", [
    ["--port", "70000"], ["--port", "-1"], ["--hello-timeout", "0"], ["--hello-timeout", "nan"],
    ["--auth-cooldown", "nan"], ["--session-grace", "-1"], ["--auto-stop", "inf"],
    ["--seed", "-3"],
])
def test_invalid_options_exit_2_with_a_usage_message(tmp_path: Path, args: list[str]) -> None:
    with ServerProcess(tmp_path, ["--mock", *args]) as server:
        assert server.ready_line == "" and server.proc.wait(10) == 2
    assert "usage:" in server.log and f"argument {args[0]}" in server.log, server.log
    assert "Traceback" not in server.log


def test_mock_server_imports_neither_pymodaq_nor_qt(tmp_path: Path) -> None:
    import subprocess
    import sys
    code = ("import sys, runpy; sys.argv=['x','--help'];\n"
            "from pymodaq_plugins_pyrpl.hardware import server\n"
            "from pymodaq_plugins_pyrpl.hardware.backends import simulator\n"
            "bad=[m for m in sys.modules if m.split('.')[0] in "
            "('pymodaq','pymodaq_utils','PyQt5','PyQt6','PySide6','qtpy','pyrpl')]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_expiry_of_a_non_holding_session_does_not_stop_an_auto_stop_server(
        tmp_path: Path) -> None:
    """Only a holding session's end stops the server at once; a script's does not."""
    with ServerProcess(tmp_path, ["--mock", "--auto-stop", "60", "--session-grace", "0.2"]) as srv:
        script = srv.client("script")
        script.close()  # dropped without goodbye: its session expires after the grace
        with srv.client("watcher") as watcher:
            wait_until(lambda: all(c["client"] != "script"
                                   for c in watcher.call("status")["clients"]),
                       10, "the script's session to expire")
            status = watcher.call("status")
        assert not status["server"]["stopping"] and srv.proc.poll() is None
        assert "auto-stop" not in srv.log


def test_half_close_answers_the_requests_already_sent(mock_server: ServerProcess) -> None:
    """hello + set + get, then shutdown(SHUT_WR) (as ``nc -N`` does): all three are answered and
    the set is applied before the server closes."""
    requests = [protocol.request(1, "hello", {"token": mock_server.token, "client": "one-shot",
                                              "protocol": 1}),
                protocol.request(2, "set", {"module": "asg1", "values": {"offset": 0.25}}),
                protocol.request(3, "get", {"module": "asg1", "names": ["offset"]})]
    with socket.create_connection(("127.0.0.1", mock_server.port), timeout=10) as sock:
        sock.sendall(b"".join(protocol.dumps_line(r) for r in requests))
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(1 << 16):  # until the server closes
            received += chunk
    replies = {m["id"]: m for m in map(json.loads, received.splitlines()) if "id" in m}
    assert sorted(replies) == [1, 2, 3], replies
    assert replies[2]["result"] == {"offset": 0.25}
    assert replies[3]["result"] == {"offset": 0.25}
    with mock_server.client() as c:
        assert c.call("get", module="asg1", names=["offset"]) == {"offset": 0.25}
