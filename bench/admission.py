"""Admission under attack: what connections that never authenticate cost the server (not part of
the test suite).

Usage: ``python bench/admission.py [--connections 600] [--failures 6000]``

Each part starts its own ``--mock`` server subprocess (token file in a temporary folder) and
measures it with psutil:

- ``parked``: ``--connections`` connections each send a 1 MB line without its newline and stay
  open, from one source address, then from as many source addresses (127.0.x.y: Linux routes all
  of 127/8 to the loopback). Server RSS before, the peak within 3 s, and the open file descriptors.
- ``limiter``: ``--failures`` hellos with a wrong token, each from its own source address
  127.1.x.y (every address fails once: none reaches the cool-down, so each failure is checked and
  recorded). Server CPU time per 1000 failures over the first and the last thousand.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from pymodaq_plugins_pyrpl.hardware import protocol
from pymodaq_plugins_pyrpl.hardware.server_process import start_server

LINE = b'{"jsonrpc":"2.0","id":1,"method":"hello","params":{"client":"' + b"x" * 1_000_000
"""A 1 MB request line that never ends."""


class MockServer:
    """``python -m ...server --mock --port 0 --token-file TMP``; stopped on exit."""

    def __init__(self, *args: str) -> None:
        self.folder = tempfile.TemporaryDirectory()
        cmd = [sys.executable, "-m", "pymodaq_plugins_pyrpl.hardware.server", "--mock",
               "--port", "0", "--token-file", str(Path(self.folder.name) / "token"),
               "--log-file", str(Path(self.folder.name) / "log"), *args]
        self.proc, ready = start_server(cmd, 60)
        self.port = ready.port
        self.process = psutil.Process(self.proc.pid)

    def rss_mib(self) -> float:
        return self.process.memory_info().rss / 2**20

    def __enter__(self) -> MockServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.folder.cleanup()


def source(i: int, prefix: int = 0) -> str:
    return f"127.{prefix}.{1 + i // 250}.{1 + i % 250}"


def park(port: int, count: int, many_sources: bool) -> list[socket.socket]:
    """``count`` connections, each with a 1 MB line without newline sent (as far as it goes)."""
    socks = []
    for i in range(count):
        sock = socket.socket()
        if many_sources:
            sock.bind((source(i), 0))
        try:
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            sock.send(LINE)
        except OSError:
            pass
        socks.append(sock)
    return socks


def parked(connections: int) -> None:
    for many in (False, True):
        with MockServer() as server:
            time.sleep(0.5)
            before = server.rss_mib()
            socks = park(server.port, connections, many)
            peak, fds, end = before, 0, time.monotonic() + 3.0
            while time.monotonic() < end:
                peak = max(peak, server.rss_mib())
                fds = max(fds, server.process.num_fds())
                time.sleep(0.05)
            for sock in socks:
                sock.close()
            print(f"parked: {connections} connections from "
                  f"{connections if many else 1} source address(es): RSS {before:.0f} -> "
                  f"peak {peak:.0f} MiB within 3 s; open fds peak {fds}", flush=True)


def wrong_hello(port: int, address: str) -> None:
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(protocol.dumps_line(protocol.request(
            1, "hello", {"token": "wrong", "client": "bench", "protocol": 1})))
        while sock.recv(4096):
            pass


def limiter(failures: int) -> None:
    with MockServer() as server:
        cpu = []
        with ThreadPoolExecutor(4) as pool:
            for start in range(0, failures, 1000):
                t0 = sum(server.process.cpu_times()[:2])
                list(pool.map(lambda i: wrong_hello(server.port, source(i, 1)),
                              range(start, min(start + 1000, failures))))
                cpu.append(sum(server.process.cpu_times()[:2]) - t0)
        print(f"limiter: {failures} failed hellos from {failures} addresses: server CPU per "
              f"1000 failures {cpu[0] * 1000:.0f} ms (first thousand) -> {cpu[-1] * 1000:.0f} ms "
              f"(last thousand); total {sum(cpu):.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=600)
    parser.add_argument("--failures", type=int, default=6000)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    parked(args.connections)
    limiter(args.failures)


if __name__ == "__main__":
    main()
