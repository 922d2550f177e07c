"""Clients that stop reading: the server's output is bounded per connection and waits for no one.

A ``--mock`` server subprocess and raw sockets whose receive buffer is made small, so that the
server's writes to them stall as soon as the kernel's buffers are full; the server's memory is read
from /proc.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

from pymodaq_plugins_pyrpl.hardware import protocol
from pymodaq_plugins_pyrpl.hardware.server import Connection
from pymodaq_plugins_pyrpl.hardware.server.core import STATUS_PERIOD
from tests.helpers.support import RawClient, ServerProcess
from tests.helpers.waiting import wait_until

DESCRIBES = 200
"""Pipelined ``describe``s (~29 kB each, ~6 MB in all: more than the kernel buffers of a
non-reading connection, less than protocol.MAX_OUTPUT_BYTES) that make a connection a slow reader."""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakRss:
    """The highest RSS of a process, sampled every 20 ms on a thread until ``stop()``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = self.peak = rss_mib(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except (OSError, AssertionError):
                return  # the process ended

    def stop(self) -> float:
        """The growth of the peak over the RSS at the start, in MiB."""
        self._done.set()
        self._thread.join(5)
        return self.peak - self.base


def non_reader(server: ServerProcess, name: str, **hello: object) -> RawClient:
    """A client whose receive buffer is 4 kB; it says hello, then the test stops reading it."""
    client = RawClient(server.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.hello(server.token, name, **hello)
    return client


def send_in_background(client: RawClient, data: bytes) -> threading.Thread:
    """Send ``data`` on a thread (the server may stop reading a client that does not read)."""
    def send() -> None:
        try:
            client.send_raw(data)
        except OSError:
            pass  # closed by the server
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def requests(method: str, params: dict | None, count: int, first_id: int = 100) -> bytes:
    return b"".join(protocol.dumps_line(protocol.request(first_id + i, method, params))
                    for i in range(count))


def session_state(watcher: RawClient, name: str) -> dict:
    clients = [c for c in watcher.call("status")["clients"] if c["client"] == name]
    assert len(clients) == 1, clients
    return clients[0]


def test_a_subscriber_that_stops_reading_delays_no_one(tmp_path: Path) -> None:
    """Another subscriber still gets its periodic pushes, and auto-stop still happens in time."""
    auto_stop = 6.0
    with ServerProcess(tmp_path, ["--mock", "--auto-stop", str(auto_stop)]) as server:
        started = time.monotonic()
        stalled = non_reader(server, "stalled")
        stalled.call("subscribe", status=True)
        send_in_background(stalled, requests("describe", None, DESCRIBES))
        healthy = server.client("healthy")
        healthy.call("subscribe", status=True)
        assert session_state(healthy, "stalled")["connected"]  # slow, not disconnected
        healthy.notifications.clear()
        first = healthy.wait_notification(timeout=STATUS_PERIOD + 1.5)
        second = healthy.wait_notification(timeout=STATUS_PERIOD + 1.5)
        assert second["params"]["server"]["uptime"] > first["params"]["server"]["uptime"]
        # nobody holds the server: it stops after auto_stop s, stalled subscriber or not
        server.proc.wait(auto_stop + 5 - (time.monotonic() - started))
        assert server.proc.returncode == 0
        stalled.close()
        healthy.close()


def test_a_subscriber_that_does_not_read_holds_one_status_push() -> None:
    """Unsent status pushes are coalesced: the newest replaces the older one not yet written."""
    async def main() -> tuple[int, int, bytes, list[bytes]]:
        release = asyncio.Event()
        written: list[bytes] = []

        async def stuck_send(data: bytes) -> None:
            await release.wait()
            written.append(data)

        connection = Connection(stuck_send)
        pushes = [json.dumps({"push": i, "pad": "x" * 1000}).encode() + b"\n" for i in range(1000)]
        for push in pushes:
            connection.push_status(push)
            await asyncio.sleep(0)
        backlog = connection.backlog
        release.set()
        for _ in range(10):
            await asyncio.sleep(0)
        return backlog, max(map(len, pushes)), pushes[-1], written
    backlog, size, newest, written = asyncio.run(main())
    assert backlog <= 2 * size  # the one being written and the newest
    assert len(written) == 2 and written[-1] == newest


def test_a_slow_reader_holds_one_progress_push_and_one_status_push() -> None:
    """Progress pushes are coalesced as status pushes, each kind on its own: a reader that is
    stuck gets the one being written, then the newest of each kind, each in the place of the
    first of its kind queued after that one."""
    async def main() -> tuple[int, int, list[bytes], list[bytes]]:
        release = asyncio.Event()
        written: list[bytes] = []

        async def stuck_send(data: bytes) -> None:
            await release.wait()
            written.append(data)

        connection = Connection(stuck_send)
        pushes = [json.dumps({"push": i, "pad": "x" * 1000}).encode() + b"\n" for i in range(1000)]
        for i, push in enumerate(pushes):
            if i % 2:
                connection.push_latest("progress", push)
            else:
                connection.push_status(push)
            await asyncio.sleep(0)
        backlog = connection.backlog
        release.set()
        for _ in range(10):
            await asyncio.sleep(0)
        return backlog, max(map(len, pushes)), pushes, written
    backlog, size, pushes, written = asyncio.run(main())
    assert backlog <= 3 * size  # the one being written and the newest of each kind
    assert written == [pushes[0], pushes[-1], pushes[-2]]  # status 0, progress 999, status 998


def test_a_connection_past_its_output_bound_is_closed_and_its_session_resumes(
        tmp_path: Path) -> None:
    with ServerProcess(tmp_path, ["--mock", "--session-grace", "30"]) as server, \
            server.client("watcher") as watcher:
        hog = RawClient(server.port)
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        session = hog.hello(server.token, "hog", hold=True)["session"]
        hog.call("lease", module="asg1")
        send_in_background(hog, requests("acquire", {"module": "scope"}, 100))  # ~35 MB
        wait_until(lambda: not session_state(watcher, "hog")["connected"], 30,
                   "the server to close it")
        assert "does not read its replies" in server.log
        assert session_state(watcher, "hog")["leases"] == ["asg1"]
        hog.close()
        with RawClient(server.port) as again:
            resumed = again.hello(server.token, "hog", session=session, hold=True)
            assert resumed["resumed"] and resumed["leases"] == ["asg1"]
            assert again.call("ping")


def test_non_reading_connection_with_large_error_replies_pins_bounded_memory(
        tmp_path: Path) -> None:
    """``get``s of a 1 MB unknown attribute name, never read: the echoes are truncated and the
    output per connection bounded in bytes (it was ~6 MB per reply, 64 of them pinned)."""
    count = 80
    name = "é" * 500_000  # 1 MB of UTF-8 on the wire; 6 bytes a character once JSON-escaped
    line = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "get",
                       "params": {"module": "asg0", "names": [name]}},
                      ensure_ascii=False).encode() + b"\n"
    with ServerProcess(tmp_path, ["--mock"]) as server:
        reader = non_reader(server, "reader")
        peak = PeakRss(server.pid)
        sender = send_in_background(reader, line * count)
        sender.join(60)
        replies = [reader.read_message(timeout=30) for _ in range(count)]
        growth = peak.stop()
        assert growth < 64, f"server RSS grew by {growth:.0f} MiB"
        for reply in replies:
            assert reply["error"]["code"] == -32602
            assert len(json.dumps(reply)) < 2000
        with server.client() as other:
            assert other.call("ping")
        reader.close()


def test_hello_goodbye_cycles_beside_idle_subscribers(tmp_path: Path) -> None:
    """Subscribed sessions that never read; clients come and go meanwhile (each change is pushed
    to every subscriber): every call is answered within its 2 s timeout and memory stays bounded."""
    subscribers, cycles = 100, 200
    with ServerProcess(tmp_path, ["--mock"]) as server:
        idle = []
        for i in range(subscribers):
            client = non_reader(server, f"idle{i}".ljust(200, "."))  # 200 B a client per push
            client.call("subscribe", status=True)
            idle.append(client)
        peak = PeakRss(server.pid)
        for i in range(cycles):
            with RawClient(server.port, timeout=2.0) as client:
                client.hello(server.token, f"cycle{i}")
                assert client.call("goodbye") == {"bye": True}
        growth = peak.stop()
        assert growth < 48, f"server RSS grew by {growth:.0f} MiB"
        for client in idle:
            client.close()
