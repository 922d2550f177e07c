"""(2) Small calls and (3) start-up: ``get`` round trips with 1 to 32 threads and while another client
streams traces; ``ensure_server_running()`` from nothing; the restart after the server is killed."""
from __future__ import annotations

import os
import signal
import threading
import time

from bench.common import SHORTEST, Server
from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager
from pymodaq_plugins_pyrpl.hardware.sockets import free_port


def startup_times(runs: int, hostname: str | None = None) -> list[float]:
    """``ensure_server_running()`` to first reply, from no server; ``hostname`` as the manager's
    (None: the simulated board, ``"_FAKE_"``: PyRPL's own fake board)."""
    times = []
    for _ in range(runs):
        manager = TCPServerManager(port=free_port(), hostname=hostname)
        t0 = time.perf_counter()
        manager.ensure_server_running().ping()
        times.append(time.perf_counter() - t0)
        manager.release_server()
    return times


def reconnect_times(runs: int) -> list[float]:
    times = []
    manager = TCPServerManager(port=free_port())
    client = manager.ensure_server_running()
    for _ in range(runs):
        back = threading.Event()
        callback = (lambda event, info: back.set() if event == "new_session" else None)
        client.add_connection_callback(callback)
        t0 = time.perf_counter()
        os.kill(runtime.read_state(manager.port).pid, signal.SIGKILL)
        client.get("asg0", ["frequency"], timeout=20)
        back.wait(20)
        times.append(time.perf_counter() - t0)
        client.remove_connection_callback(callback)
    manager.release_server()
    return times


def ping_latencies(calls: int) -> list[float]:
    """``ping`` round trips through a client (the link and the server, no board)."""
    manager = TCPServerManager(port=free_port())
    client = manager.ensure_server_running()
    latencies = [client.ping() for _ in range(calls)]
    manager.release_server()
    return latencies


def call_latencies(threads: int, calls: int, method: str = "get") -> list[float]:
    """Round trips of ``get`` (or ``set``) of ``pid0.setpoint``, ``threads`` threads sharing one
    client, ``calls`` each."""
    manager = TCPServerManager(port=free_port())
    client = manager.ensure_server_running()
    latencies: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        mine = []
        for i in range(calls):
            t0 = time.perf_counter()
            if method == "set":
                client.set("pid0", {"setpoint": 0.1 if i % 2 else 0.2})
            else:
                client.get("pid0", ["setpoint"])
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    manager.release_server()
    return latencies


def get_latencies_while_streaming(calls: int) -> tuple[list[float], int]:
    server = Server()
    streamer = server.new_client("bench streamer")
    streamer.set("scope", {"duration": SHORTEST})
    stop, traces = threading.Event(), [0]

    def stream() -> None:
        while not stop.is_set():
            streamer.acquire("scope")
            traces[0] += 1

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(0.1)
        latencies = []
        for _ in range(calls):
            t0 = time.perf_counter()
            server.client.get("pid0", ["setpoint"])
            latencies.append(time.perf_counter() - t0)
    finally:
        stop.set()
        thread.join(10)
        streamer.close()
        server.close()
    return latencies, traces[0]
