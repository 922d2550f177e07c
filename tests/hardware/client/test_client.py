"""PyRPLClient against real server subprocesses, with a fault-injecting proxy in between.

Waits are bounded (deadlines, events); the only plain waits observe that nothing happens (no more
connection attempts after a final error).
"""
from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import errors
from pymodaq_plugins_pyrpl.hardware.client import ACQUIRE_MARGIN, PyRPLClient
from pymodaq_plugins_pyrpl.hardware.sockets import free_port
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.support import ServerProcess
from tests.helpers.waiting import wait_until

MARGIN = 0.5
"""A call may return this much later than its timeout."""


class Recorder:
    """Connection (or status) callback that records its calls and lets tests wait for them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, kind: str, info: Any = None) -> None:
        with self._cond:
            self.items.append((kind, info))
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def status(self, status: dict[str, Any]) -> None:
        self("status", status)

    def count(self, kind: str) -> int:
        with self._cond:
            return sum(1 for k, _ in self.items if k == kind)

    def wait(self, kind: str, count: int = 1, timeout: float = 10.0,
             where: Callable[[Any], bool] = lambda info: True) -> Any:
        """The ``count``-th recorded ``kind`` item matching ``where``; AssertionError after
        ``timeout``."""
        def matches() -> list[Any]:
            return [info for k, info in self.items if k == kind and where(info)]

        with self._cond:
            assert self._cond.wait_for(lambda: len(matches()) >= count, timeout), (
                f"no {kind!r} #{count} within {timeout} s; got {[k for k, _ in self.items]}")
            return matches()[count - 1]


@pytest.fixture
def make_client() -> Iterator[Callable[..., PyRPLClient]]:
    """``make_client(port, token, **kwargs)``: a client closed after the test."""
    clients: list[PyRPLClient] = []

    def make(port: int, token: str, **kwargs: Any) -> PyRPLClient:
        client = PyRPLClient("127.0.0.1", port, token, kwargs.pop("name", "pytest"), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def proxy(mock_server: ServerProcess) -> Iterator[FaultProxy]:
    with FaultProxy(mock_server.port) as p:
        yield p


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``fn`` in a thread; the dict gets ``result`` or ``error`` and ``elapsed``."""
    out: dict[str, Any] = {}

    def target() -> None:
        t0 = time.monotonic()
        try:
            out["result"] = fn()
        except BaseException as exc:  # handed to the test's assertions
            out["error"] = exc
        out["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def session_entry(server: ServerProcess, name: str) -> dict[str, Any]:
    """The ``status`` entry of the client called ``name``, asked through another connection."""
    with server.client("observer") as observer:
        entries = [c for c in observer.call("status")["clients"] if c["client"] == name]
    assert len(entries) == 1, entries
    return entries[0]


def kill(server: ServerProcess) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)


# -- basics ---------------------------------------------------------------------------------------


def test_connect_and_every_method(mock_server: ServerProcess, make_client) -> None:
    client = make_client(mock_server.port, mock_server.token, name="basics")
    assert not client.connected and client.session is None and client.hello_info is None
    hello = client.connect()
    assert client.connected and client.session == hello["session"]
    assert hello["backend"] == "mock" and hello["protocol"] == 1 and hello["resumed"] is False
    assert client.hello_info == hello
    assert isinstance(client.ping(), float)
    assert [c["client"] for c in client.status()["clients"]] == ["basics"]
    assert client.describe()["scope"]["samples"] == 16384

    applied = client.set("asg0", {"frequency": 1000, "output_direct": "out1"})
    assert applied == {"frequency": pytest.approx(1000, abs=0.2), "output_direct": "out1"}
    assert client.get("asg0", ["frequency"]) == {"frequency": applied["frequency"]}
    assert "waveform" in client.get("asg0")
    with pytest.raises(errors.InvalidParams) as info:
        client.set("asg0", {"amplitude": 5})
    assert info.value.data["attribute"] == "amplitude"
    with pytest.raises(errors.MethodNotFound):
        client.call("no_such_method")
    with pytest.raises(errors.RequestTooLarge):
        client.get("asg0", ["x" * (1 << 20)])

    trace = client.acquire("scope", timeout=5)
    assert isinstance(trace["ch1"], np.ndarray) and trace["ch1"].shape == (16384,)
    assert trace["ch2"].dtype == np.float32 and trace["dt"] > 0
    assert set(client.acquire("iq0")) >= {"i", "q"}
    assert set(client.acquire("sampler")) >= {"in1", "in2", "out1", "out2"}

    assert client.lease("asg0") == {"module": "asg0", "leased": True}
    other = make_client(mock_server.port, mock_server.token, name="other")
    other.connect()
    with pytest.raises(errors.ModuleLeased):
        other.set("asg0", {"amplitude": 0.1})
    assert client.release("asg0") == {"module": "asg0", "released": True}
    assert other.set("asg0", {"amplitude": 0.25}) == {"amplitude": pytest.approx(0.25, abs=1e-3)}


def test_status_pushes_reach_callbacks_off_the_reader_thread(mock_server: ServerProcess,
                                                            make_client) -> None:
    client = make_client(mock_server.port, mock_server.token, name="watcher")
    client.connect()
    gate = threading.Event()
    entered = threading.Event()
    recorder = Recorder()

    def raising(status: dict[str, Any]) -> None:
        raise RuntimeError("a buggy callback")

    def slow(status: dict[str, Any]) -> None:
        entered.set()
        gate.wait(5)

    client.add_status_callback(raising)
    client.add_status_callback(slow)
    client.add_status_callback(recorder.status)
    assert client.subscribe()["server"]["port"] == mock_server.port
    newcomer = mock_server.client("newcomer")  # a change: pushed at once
    assert entered.wait(5)
    for _ in range(20):  # the slow callback holds the events thread, not the replies
        client.ping(timeout=2)
    gate.set()
    push = recorder.wait("status", timeout=5, where=lambda s: len(s["clients"]) == 2)
    assert [c["client"] for c in push["clients"]] == ["watcher", "newcomer"]
    newcomer.close()
    assert recorder.threads == {"pyrpl-client-events"}
    client.remove_status_callback(slow)
    client.subscribe(False)


# -- connecting -----------------------------------------------------------------------------------


def test_connect_timeout_covers_hello() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        port = silent.getsockname()[1]
        client = PyRPLClient("127.0.0.1", port, "t", timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(errors.ConnectionFailed, match=f"127.0.0.1:{port}.*hello"):
            client.connect()
        assert time.monotonic() - t0 <= 0.5 + MARGIN
        client.close()


def test_refused_port_fails_fast_and_names_the_address() -> None:
    port = free_port()
    client = PyRPLClient("localhost", port, "t", timeout=5)
    with pytest.raises(errors.ConnectionFailed, match="call connect"):
        client.ping()
    t0 = time.monotonic()
    with pytest.raises(errors.ConnectionFailed) as info:
        client.connect()
    assert time.monotonic() - t0 < 2  # well before the 5 s timeout
    assert f"localhost:{port}" in str(info.value) and "refused" in str(info.value)
    client.close()


def test_wrong_token_is_final(mock_server: ServerProcess, make_client) -> None:
    client = make_client(mock_server.port, "not-the-token")
    recorder = Recorder()
    client.add_connection_callback(recorder)
    with pytest.raises(errors.AuthenticationFailed, match="taken over"):
        client.connect()
    assert isinstance(recorder.wait("failed")["error"], errors.AuthenticationFailed)
    t0 = time.monotonic()
    with pytest.raises(errors.AuthenticationFailed):
        client.connect()
    with pytest.raises(errors.AuthenticationFailed):
        client.get("asg0")
    assert time.monotonic() - t0 < 0.5
    wait_until(lambda: mock_server.log.count("authentication failed") == 1, 5.0,
               "one 'authentication failed' in the log")


# -- concurrency ----------------------------------------------------------------------------------

ATTRIBUTES = [(module, name, lo, hi) for module in ("asg0", "asg1")
              for name, lo, hi in (("amplitude", 0.0, 1.0), ("offset", -1.0, 1.0),
                                   ("frequency", 0.0, 1e6))]
ATTRIBUTES += [(module, name, lo, hi) for module in ("pid0", "pid1", "pid2")
               for name, lo, hi in (("setpoint", -1.0, 0.99), ("p", -100.0, 100.0),
                                    ("i", -1000.0, 1000.0))]
ATTRIBUTES += [("iq0", "frequency", 0.0, 1e6)]


def test_many_threads_get_only_their_own_replies(mock_server: ServerProcess, make_client) -> None:
    """16 threads, each setting and reading back its own attribute with values no other thread uses:
    a reply handed to the wrong caller would show a wrong key or value."""
    client = make_client(mock_server.port, mock_server.token)
    client.connect()
    threads, iterations = 16, 50
    failures: list[str] = []

    def work(index: int) -> None:
        module, name, lo, hi = ATTRIBUTES[index]
        acquired = ("iq1", "iq2", "sampler")[index % 3]
        try:
            for k in range(iterations):
                value = lo + (hi - lo) * (index + threads * k + 1) / (threads * iterations + 2)
                applied = client.set(module, {name: value})
                assert list(applied) == [name]
                assert applied[name] == pytest.approx(value, rel=1e-2, abs=1e-3)
                assert client.get(module, [name]) == applied, (module, name)
                if k % 5 == 0:
                    data = client.acquire(acquired)
                    assert ("in1" in data) == (acquired == "sampler"), (acquired, data)
                if k % 7 == 0:
                    client.ping()
        except BaseException as exc:  # collected for the assertion below
            failures.append(f"{module}.{name}: {exc!r}")

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not failures
    assert not any(worker.is_alive() for worker in workers)


# -- reconnecting ---------------------------------------------------------------------------------


def test_server_restart_gives_new_session_with_leases_restored(tmp_path: Path,
                                                               make_client) -> None:
    port = free_port()
    first = ServerProcess(tmp_path, ["--mock", "--port", str(port)])
    client = make_client(port, first.token, name="survivor", timeout=5, hold=True)
    recorder = Recorder()
    client.add_connection_callback(recorder)
    client.add_status_callback(recorder.status)
    old_session = client.connect()["session"]
    client.lease("asg0", owner="ASG")  # the owner is restored with the lease
    client.lease("pid1")
    client.subscribe()

    kill(first)
    assert "closed" in recorder.wait("lost")["reason"]
    t0 = time.monotonic()
    with pytest.raises(errors.CallTimeout, match="reconnecting") as info:
        client.get("asg0", timeout=0.5)  # the server is down longer than the call's timeout
    assert time.monotonic() - t0 <= 0.5 + MARGIN
    assert f"127.0.0.1:{port}" in str(info.value)
    waiting, out = run_in_thread(lambda: client.get("asg0", ["amplitude"], timeout=10))

    with ServerProcess(tmp_path, ["--mock", "--port", str(port)]) as second:  # same token file
        info = recorder.wait("new_session")
        assert info["session"] != old_session and client.session == info["session"]
        assert info["leases"] == ["asg0", "pid1"] and info["lost_leases"] == []
        entry = session_entry(second, "survivor")
        assert entry["leases"] == ["asg0", "pid1"] and entry["connected"] and entry["hold"]
        assert entry["owners"] == {"asg0": "ASG"}
        waiting.join(10)
        assert out.get("result") == {"amplitude": 0.0}, out  # waited for the restart, then sent
        assert client.set("pid1", {"setpoint": 0.1}) == {"setpoint": pytest.approx(0.1, abs=1e-3)}
        client.release("pid1")  # a change, pushed at once: the client subscribed again
        recorder.wait("status", where=lambda s: s["server"]["pid"] == second.pid)


def test_lease_taken_during_the_outage_is_reported(tmp_path: Path, make_client) -> None:
    port = free_port()
    first = ServerProcess(tmp_path, ["--mock", "--port", str(port)])
    with FaultProxy(port) as proxy:
        client = make_client(proxy.port, first.token, name="late", timeout=5)
        recorder = Recorder()
        client.add_connection_callback(recorder)
        client.connect()
        client.lease("asg0")
        client.lease("asg1")
        proxy.set_mode("drop")  # keeps the client away while another one takes asg0
        kill(first)
        with ServerProcess(tmp_path, ["--mock", "--port", str(port)]) as second:
            with second.client("quick") as quick:
                quick.call("lease", module="asg0")
                proxy.set_mode("pass")
                info = recorder.wait("new_session")
                assert info["leases"] == ["asg1"] and info["lost_leases"] == ["asg0"]
                with pytest.raises(errors.ModuleLeased, match="quick"):
                    client.set("asg0", {"amplitude": 0.1})
                assert session_entry(second, "late")["leases"] == ["asg1"]


def test_liveness_probe_reply_is_not_a_late_reply(mock_server: ServerProcess, make_client,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A trace longer than the probe delay: the client pings the silent server, and the ping's
    reply is taken as the probe's own, not dropped as the late reply of a timed-out call."""
    client = make_client(mock_server.port, mock_server.token, name="prober")
    client.connect()
    before = client.get("scope", ["duration"])
    try:
        applied = client.set("scope", {"duration": 2.0})
        assert applied["duration"] >= 1.5  # longer than the probe delay (1 s) with some margin
        with caplog.at_level(logging.DEBUG, logger="pymodaq_plugins_pyrpl.hardware.client"):
            trace = client.acquire("scope", timeout=10)
        assert trace["ch1"].shape == (16384,)
        assert client.connected
        late = [r.getMessage() for r in caplog.records if "late reply" in r.getMessage()]
        assert late == []
    finally:
        client.set("scope", before)


def test_dropped_connection_resumes_the_session(mock_server: ServerProcess, proxy: FaultProxy,
                                               make_client) -> None:
    client = make_client(proxy.port, mock_server.token, name="resumer", timeout=5)
    recorder = Recorder()
    client.add_connection_callback(recorder)
    client.add_status_callback(recorder.status)
    session = client.connect()["session"]
    client.lease("asg1")
    client.subscribe()
    proxy.set_mode("drop")
    recorder.wait("lost")
    proxy.set_mode("pass")
    info = recorder.wait("resumed")
    assert info["session"] == session == client.session and info["leases"] == ["asg1"]
    entry = session_entry(mock_server, "resumer")
    assert entry["leases"] == ["asg1"] and entry["connected"]
    pushes = recorder.count("status")
    recorder.wait("status", count=pushes + 1, timeout=5)  # subscribed again on the new connection
    assert recorder.count("new_session") == 0


def test_set_in_flight_is_lost_get_in_flight_is_resent(mock_server: ServerProcess,
                                                       proxy: FaultProxy, make_client) -> None:
    client = make_client(proxy.port, mock_server.token, timeout=5)
    recorder = Recorder()
    client.add_connection_callback(recorder)
    client.connect()
    before = client.get("asg0", ["frequency"])
    proxy.set_mode("stall")
    sent = proxy.lines_from_client
    set_thread, set_out = run_in_thread(lambda: client.set("asg0", {"frequency": 1234}))
    get_thread, get_out = run_in_thread(lambda: client.get("asg0", ["frequency"]))
    assert proxy.wait_until(lambda p: p.lines_from_client >= sent + 2)  # both are in flight
    proxy.set_mode("drop")
    recorder.wait("lost")
    proxy.set_mode("pass")
    set_thread.join(10)
    get_thread.join(10)
    assert isinstance(set_out.get("error"), errors.ConnectionLost), set_out
    assert "outcome" in str(set_out["error"]) and "get" in str(set_out["error"])
    assert get_out.get("result") == before, get_out  # re-sent after reconnecting
    assert client.get("asg0", ["frequency"]) == before  # the lost set never reached the server


def test_without_reconnect_a_drop_fails_calls_until_connect(mock_server: ServerProcess,
                                                           proxy: FaultProxy,
                                                           make_client) -> None:
    client = make_client(proxy.port, mock_server.token, timeout=5, reconnect=False)
    recorder = Recorder()
    client.add_connection_callback(recorder)
    session = client.connect()["session"]
    proxy.set_mode("stall")
    sent = proxy.lines_from_client
    thread, out = run_in_thread(lambda: client.get("asg0"))
    assert proxy.wait_until(lambda p: p.lines_from_client >= sent + 1)
    proxy.set_mode("drop")
    thread.join(5)
    assert isinstance(out.get("error"), errors.ConnectionLost), out
    recorder.wait("lost")
    with pytest.raises(errors.ConnectionFailed, match="connect"):
        client.ping()
    proxy.set_mode("pass")
    assert client.connect()["session"] == session
    assert recorder.wait("resumed")["session"] == session
    assert client.ping() > 0


def test_auth_failure_after_restart_is_final(tmp_path: Path, make_client) -> None:
    port = free_port()
    first = ServerProcess(tmp_path / "a", ["--mock", "--port", str(port)])
    with FaultProxy(port) as proxy:
        client = make_client(proxy.port, first.token, timeout=5)
        recorder = Recorder()
        client.add_connection_callback(recorder)
        client.connect()
        kill(first)
        recorder.wait("lost")
        with ServerProcess(tmp_path / "b", ["--mock", "--port", str(port)]) as taker:
            assert taker.token != first.token
            error = recorder.wait("failed")["error"]
            assert isinstance(error, errors.AuthenticationFailed)
            text = str(error)
            assert "taken over" in text and "wrong token" in text  # ours, then the server's
            assert time.strftime("%Y-%m-%d") in text  # when the client noticed
            attempts = proxy.accepted
            threading.Event().wait(1.0)  # observe: no more connection attempts
            assert proxy.accepted == attempts
            wait_until(lambda: taker.log.count("authentication failed") == 1, 5.0,
                       "one 'authentication failed' in the log")
            t0 = time.monotonic()
            with pytest.raises(errors.AuthenticationFailed, match="taken over"):
                client.ping()
            with pytest.raises(errors.AuthenticationFailed):
                client.connect()
            assert time.monotonic() - t0 < 0.5
            assert not client.connected


def test_revive_hook_restarts_the_server(tmp_path: Path, make_client) -> None:
    port = free_port()
    servers = [ServerProcess(tmp_path, ["--mock", "--port", str(port)])]
    calls: list[str] = []

    def revive() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 2:  # like the server manager: restart the crashed local server
            servers.append(ServerProcess(tmp_path, ["--mock", "--port", str(port)]))

    try:
        client = make_client(port, servers[0].token, timeout=5, revive=revive)
        recorder = Recorder()
        client.add_connection_callback(recorder)
        client.connect()
        client.lease("pid0")
        kill(servers[0])
        info = recorder.wait("new_session")
        assert info["leases"] == ["pid0"]
        assert len(calls) == 2 and set(calls) == {"pyrpl-client-io"}
        assert client.get("pid0", ["setpoint"]) == {"setpoint": 0.0}
    finally:
        for server in servers:
            server.stop()


def test_revive_hook_raising_stops_the_client(tmp_path: Path, make_client) -> None:
    port = free_port()
    server = ServerProcess(tmp_path, ["--mock", "--port", str(port)])
    calls: list[int] = []

    def revive() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise errors.ServerGone("stopped on purpose by `pymodaq-pyrpl stop`")

    client = make_client(port, server.token, timeout=5, revive=revive)
    recorder = Recorder()
    client.add_connection_callback(recorder)
    client.connect()
    kill(server)
    pending, out = run_in_thread(lambda: client.get("asg0", timeout=10))
    assert isinstance(recorder.wait("failed")["error"], errors.ServerGone)
    pending.join(5)
    assert isinstance(out.get("error"), errors.ServerGone), out
    assert out["elapsed"] < 5
    with pytest.raises(errors.ServerGone, match="on purpose"):
        client.ping()
    threading.Event().wait(0.5)  # observe: the hook is not called again
    assert len(calls) == 3


# -- faults ---------------------------------------------------------------------------------------


FAULT_CALL_TIMEOUT = 1.0


def connected_through(proxy: FaultProxy, mock_server: ServerProcess,
                      make_client) -> tuple[PyRPLClient, Recorder]:
    """A client connected through ``proxy`` (call timeout 5 s) and the recorder of its events."""
    client = make_client(proxy.port, mock_server.token, timeout=5)
    recorder = Recorder()
    client.add_connection_callback(recorder)
    client.connect()
    return client, recorder


def calls_under_fault(client: PyRPLClient) -> dict[str, dict[str, Any]]:
    """Five calls at once, each in its own thread, with a 1 s timeout: each one ends within its
    timeout (plus the acquisition margin for ``acquire``), with a result or a CallTimeout or
    ConnectionLost. Their outcomes by name."""
    timeout = FAULT_CALL_TIMEOUT
    calls = {
        "ping": lambda: client.ping(timeout=timeout),
        "get": lambda: client.get("asg0", ["frequency"], timeout=timeout),
        "describe": lambda: client.describe(timeout=timeout),  # 29 kB: too long for 'slow'
        "set": lambda: client.set("asg1", {"offset": 0.25}, timeout=timeout),
        "acquire": lambda: client.acquire("scope", timeout=timeout),
    }
    started = {name: run_in_thread(fn) for name, fn in calls.items()}
    for name, (thread, out) in started.items():
        thread.join(timeout + ACQUIRE_MARGIN + 5)
        assert "elapsed" in out, name
        limit = timeout + (ACQUIRE_MARGIN if name == "acquire" else 0) + MARGIN
        assert out["elapsed"] <= limit, (name, out)
        error = out.get("error")
        assert error is None or isinstance(error, (errors.CallTimeout, errors.ConnectionLost)), (
            name, error)
    return {name: out for name, (_, out) in started.items()}


def assert_all_failed(outcomes: dict[str, dict[str, Any]]) -> None:
    assert all(isinstance(out.get("error"), (errors.CallTimeout, errors.ConnectionLost))
               for out in outcomes.values())


def assert_recovers(client: PyRPLClient, proxy: FaultProxy) -> None:
    """Once the proxy passes again, the client answers right, with no late reply mixed in."""
    proxy.set_mode("pass")
    assert client.get("asg1", ["amplitude"], timeout=10) == {"amplitude": 0.0}  # no late reply
    assert client.get("asg0", ["waveform"]) == {"waveform": "sin"}
    assert client.describe()["scope"]["samples"] == 16384
    assert client.connected


def assert_resumed_once(recorder: Recorder) -> None:
    assert recorder.count("resumed") == 1 and recorder.count("new_session") == 0


def test_calls_never_hang_when_the_connection_drops_and_recover(
        mock_server: ServerProcess, proxy: FaultProxy, make_client) -> None:
    client, recorder = connected_through(proxy, mock_server, make_client)
    proxy.set_mode("drop")
    assert_all_failed(calls_under_fault(client))
    assert "closed by the server" in recorder.wait("lost")["reason"]
    assert_recovers(client, proxy)
    assert_resumed_once(recorder)


def test_calls_never_hang_when_the_link_stalls_and_recover(
        mock_server: ServerProcess, proxy: FaultProxy, make_client) -> None:
    client, _ = connected_through(proxy, mock_server, make_client)
    proxy.set_mode("stall")
    assert_all_failed(calls_under_fault(client))
    assert_recovers(client, proxy)


def test_calls_never_hang_when_a_reply_is_truncated_and_recover(
        mock_server: ServerProcess, proxy: FaultProxy, make_client) -> None:
    client, recorder = connected_through(proxy, mock_server, make_client)
    proxy.set_mode("truncate")
    calls_under_fault(client)
    assert "in the middle of a reply" in recorder.wait("lost")["reason"]
    assert_recovers(client, proxy)
    assert_resumed_once(recorder)


def test_calls_never_hang_when_replies_trickle_and_recover(
        mock_server: ServerProcess, proxy: FaultProxy, make_client) -> None:
    client, _ = connected_through(proxy, mock_server, make_client)
    proxy.set_mode("slow")
    assert client.ping(timeout=10) > 0.2  # a short reply still gets through, byte by byte (~60 B)
    outcomes = calls_under_fault(client)
    assert isinstance(outcomes["describe"].get("error"), errors.CallTimeout)  # 29 kB
    assert_recovers(client, proxy)


def test_calls_never_hang_when_a_line_is_garbled_and_recover(
        mock_server: ServerProcess, proxy: FaultProxy, make_client) -> None:
    client, recorder = connected_through(proxy, mock_server, make_client)
    proxy.set_mode("garble")
    assert_all_failed(calls_under_fault(client))
    assert "garbled line" in recorder.wait("lost")["reason"]
    assert_recovers(client, proxy)
    assert_resumed_once(recorder)


# -- closing --------------------------------------------------------------------------------------


def client_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pyrpl-client")]


def test_close_is_bounded_idempotent_and_final(mock_server: ServerProcess,
                                               proxy: FaultProxy) -> None:
    before = client_threads()
    client = PyRPLClient("127.0.0.1", proxy.port, mock_server.token, timeout=10)
    client.connect()
    proxy.set_mode("stall")  # the server is gone silently: no EOF, no reply to goodbye
    pending, out = run_in_thread(lambda: client.get("asg0"))
    assert proxy.wait_until(lambda p: p.lines_from_client >= 2)  # hello, get
    t0 = time.monotonic()
    client.close()
    assert time.monotonic() - t0 <= 1.0 + MARGIN
    pending.join(2)
    assert isinstance(out.get("error"), errors.ClientClosed), out
    t0 = time.monotonic()
    client.close()
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(errors.ClientClosed):
        client.ping()
    with pytest.raises(errors.ClientClosed):
        client.connect()
    assert not client.connected
    assert client_threads() == before


def test_close_says_goodbye(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--auto-stop", "30"]) as server:
        client = PyRPLClient("127.0.0.1", server.port, server.token, "holder", hold=True)
        with client:
            assert session_entry(server, "holder")["hold"]
        assert server.proc.wait(10) == 0  # the last holder said goodbye: auto-stop at once
        wait_until(lambda: "the last holding client said goodbye" in server.log, 5.0,
                   "the goodbye in the log")


def test_close_while_reconnecting_to_a_dead_server(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(tmp_path, ["--mock", "--port", str(port)])
    before = client_threads()
    client = PyRPLClient("127.0.0.1", port, server.token, timeout=5)
    recorder = Recorder()
    client.add_connection_callback(recorder)
    client.connect()
    kill(server)
    recorder.wait("lost")
    t0 = time.monotonic()
    client.close()
    assert time.monotonic() - t0 <= 1.0 + MARGIN
    with pytest.raises(errors.ClientClosed):
        client.get("asg0")
    assert client_threads() == before
