"""Client and server-manager figures, in one run, on the simulated board.

Usage: ``python bench/client_bench.py [--runs N] [--calls N] [--json]``

- ``ensure_server_running()`` from nothing (no server) to the first reply, median of ``--runs``;
- reconnect after the server is killed (SIGKILL): kill to the next successful call, with the manager
  restarting the server;
- small-call (``get``) round trip p50/p99 with 1 and 8 client threads sharing one client.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

from pymodaq_plugins_pyrpl import __version__
from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def call_latencies(threads: int, calls: int) -> list[float]:
    manager = TCPServerManager(port=free_port())
    client = manager.ensure_server_running()
    latencies: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        mine = []
        for _ in range(calls):
            t0 = time.perf_counter()
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


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the reconnect warnings are expected here
    os.environ.setdefault("PYMODAQ_PYRPL_RUNTIME_DIR", tempfile.mkdtemp(prefix="pyrpl_bench_"))
    start = summary(startup_times(args.runs))
    reconnect = summary(reconnect_times(args.runs))
    calls = {str(n): call_latencies(n, args.calls // n) for n in (1, 8)}
    result = {
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "package": __version__},
        "ensure_server_running_s": start,
        "reconnect_after_server_kill_s": reconnect,
        "get_ms": {str(n): {"p50": float(np.percentile(v, 50)) * 1e3,
                            "p99": float(np.percentile(v, 99)) * 1e3} for n, v in calls.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m = result["machine"]
    print(f"pymodaq_plugins_pyrpl {m['package']} | Python {m['python']} | {m['cpu_count']} cores")
    rows = [
        ("ensure_server_running() to first reply", start, "s", "≤ 1.5 s"),
        ("server killed → next call succeeds", reconnect, "s", "≤ 2 s"),
    ]
    print(f"{'figure':40s} {'median':>9s} {'min–max':>17s}  target")
    for name, s, unit, target in rows:
        print(f"{name:40s} {s['median']:8.3f}{unit} {s['min']:7.3f}–{s['max']:.3f}{unit}  {target}")
    for n, label, target in (("1", "1 thread", "p50 ≤ 0.3 ms"), ("8", "8 threads", "p99 ≤ 2 ms")):
        g = result["get_ms"][n]
        print(f"{'get round trip, ' + label + ', p50 / p99':40s} "
              f"{g['p50']:7.3f} / {g['p99']:.3f} ms  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
