"""Server figures side by side, in one run: the link against the backend called in-process.

Usage: ``python bench/server_bench.py [--traces N] [--pings N] [--json]``

Prints, for the ``--mock`` server on loopback:
- start-up: spawn to ready line (s), and whether PyMoDAQ/Qt were imported;
- ``ping`` round trip p50/p99 (ms);
- one 2×16384-sample trace at the shortest duration: the backend called in-process (the limit) vs.
  through the server, median per trace, the difference = protocol + transport overhead (ms);
- full traces per second from one client;
- server RSS after the run (MB).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from pymodaq_plugins_pyrpl import __version__
from pymodaq_plugins_pyrpl.hardware import protocol
from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend

SHORTEST = 131.072e-6


class Link:
    """A blocking raw-socket client: the cost a client library adds on top is not counted."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.id = 0
        self.call("hello", token=token, client="bench", protocol=1)

    def call(self, method: str, **params):
        self.id += 1
        self.sock.sendall(protocol.dumps_line(protocol.request(self.id, method, params)))
        while b"\n" not in self.buffer:
            self.buffer += self.sock.recv(1 << 20)
        end = self.buffer.index(b"\n")
        reply = json.loads(bytes(self.buffer[:end]))
        del self.buffer[:end + 1]
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]


def decode_trace(result: dict) -> tuple[np.ndarray, np.ndarray]:
    decoded = protocol.decode_value(result)
    return decoded["ch1"], decoded["ch2"]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def in_process_trace_times(n: int) -> list[float]:
    """The limit: arm, wait (spinning, the most precise wait there is), fetch, in-process."""
    backend = SimulatorBackend(seed=1)
    backend.open()
    backend.set("scope", {"duration": SHORTEST})
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend.scope_arm()
        while not backend.scope_ready():
            pass
        backend.scope_fetch()
        times.append(time.perf_counter() - t0)
    return times


def run(traces: int, pings: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="pyrpl_bench_"))
    t_spawn = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pymodaq_plugins_pyrpl.hardware.server", "--mock",
                             "--port", "0", "--token-file", str(tmp / "token"), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline().decode()
        ready_s = time.perf_counter() - t_spawn
        port = json.loads(line.split(" ", 1)[1])["port"]
        server = psutil.Process(proc.pid)
        qt_loaded = any("libQt" in m.path for m in server.memory_maps())
        link = Link(port, (tmp / "token").read_text().strip())
        ping = []
        for _ in range(pings):
            t0 = time.perf_counter()
            link.call("ping")
            ping.append(time.perf_counter() - t0)
        link.call("set", module="scope", values={"duration": SHORTEST})
        link.call("acquire", module="scope")  # warm-up
        remote = []
        t_all = time.perf_counter()
        for _ in range(traces):
            t0 = time.perf_counter()
            ch1, ch2 = decode_trace(link.call("acquire", module="scope"))
            remote.append(time.perf_counter() - t0)
        rate = traces / (time.perf_counter() - t_all)
        rss = server.memory_info().rss / 1e6
        local = in_process_trace_times(traces)
        link.call("shutdown", token=(tmp / "token").read_text().strip())
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform(), "package": __version__},
        "startup_ready_s": ready_s,
        "qt_loaded_in_mock_server": qt_loaded,
        "ping_ms": {"p50": percentile(ping, 50) * 1e3, "p99": percentile(ping, 99) * 1e3},
        "trace_ms": {"in_process_p50": statistics.median(local) * 1e3,
                     "server_p50": statistics.median(remote) * 1e3,
                     "overhead_p50": (statistics.median(remote) - statistics.median(local)) * 1e3},
        "traces_per_s": rate,
        "server_rss_mb": rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=300)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    r = run(args.traces, args.pings)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    m = r["machine"]
    print(f"pymodaq_plugins_pyrpl {m['package']} | Python {m['python']} | {m['cpu_count']} cores | "
          f"{m['platform']}")
    rows = [
        ("mock server ready after spawn", f"{r['startup_ready_s']:.3f} s", "≤ 1 s"),
        ("Qt loaded in the mock server", str(r["qt_loaded_in_mock_server"]), "False"),
        ("ping round trip p50 / p99", f"{r['ping_ms']['p50']:.3f} / {r['ping_ms']['p99']:.3f} ms",
         "p50 ≤ 0.3 ms"),
        ("trace, backend in-process (limit)", f"{r['trace_ms']['in_process_p50']:.3f} ms", ""),
        ("trace, through the server", f"{r['trace_ms']['server_p50']:.3f} ms", ""),
        ("  overhead (server − in-process)", f"{r['trace_ms']['overhead_p50']:.3f} ms", "≤ 1.5 ms"),
        ("full traces per second, 1 client", f"{r['traces_per_s']:.0f} /s", "≥ 300 /s"),
        ("server RSS after the run", f"{r['server_rss_mb']:.1f} MB", "≤ 80 MB"),
    ]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'figure':{width}s}  {'measured':>18s}  target")
    for name, value, target in rows:
        print(f"{name:{width}s}  {value:>18s}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
