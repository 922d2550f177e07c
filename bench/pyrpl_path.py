"""(7) The real PyRPL path on the virtual board: the server's start-up to its ready line, scope
traces/s through PyRPLClient next to ``--mock`` and next to PyRPL called in-process on the same
virtual board, and the virtual board's CPU while idle with a client connected."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

from bench.common import SHORTEST
from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.server_process import start_server
from pymodaq_plugins_pyrpl.virtual_board.process import VirtualBoardProcess, start_virtual_board

START_TIMEOUT = 60.0
"""Seconds a server (or the in-process PyRPL script) has to be ready."""


class ServerProcess:
    """A server started from its command line on a free port, ready (its ready line read)."""

    def __init__(self, *board: str) -> None:
        command = [sys.executable, "-m", "pymodaq_plugins_pyrpl.hardware.server", "--port", "0",
                   "-q", "-q", *board]
        t0 = time.perf_counter()
        self.process, ready = start_server(command, START_TIMEOUT, stderr=subprocess.DEVNULL)
        self.startup = time.perf_counter() - t0
        """Seconds from the start of the process to the end of its ready line."""
        self.port = ready.port

    def client(self) -> PyRPLClient:
        client = PyRPLClient("127.0.0.1", self.port, runtime.read_state(self.port).token,
                             "bench pyrpl path")
        client.connect()
        return client

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def board_ports(board: VirtualBoardProcess) -> tuple[str, ...]:
    """The server's options for ``board`` reached by its ports, as a network board."""
    return ("--hostname", board.host, "--ssh-port", str(board.ssh_port), "--board-port",
            str(board.port))


def startup_times(runs: int, board: VirtualBoardProcess) -> dict[str, list[float]]:
    """Seconds from the server's start to its ready line: ``--mock``, ``_FAKE_``, ``virtual`` (its
    own virtual board started too) and ``board`` reached by its ports."""
    options = {"mock": ("--mock",), "fake": ("--hostname", "_FAKE_"),
               "virtual": ("--hostname", "virtual"), "ports": board_ports(board)}
    times: dict[str, list[float]] = {name: [] for name in options}
    for _ in range(runs):
        for name, board_options in options.items():
            server = ServerProcess(*board_options)
            times[name].append(server.startup)
            server.close()
    return times


def client_rate(client: PyRPLClient, seconds: float, duration: float = SHORTEST) -> float:
    """Scope traces/s of ``client.acquire("scope")`` (immediate trigger, ``duration``)."""
    client.set("scope", {"duration": duration, "trigger_source": "immediately"})
    client.acquire("scope")
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        client.acquire("scope")
        count += 1
    return count / (time.perf_counter() - t0)


def server_rate(seconds: float, *board: str) -> float:
    """:func:`client_rate` through a server of ``board``."""
    server = ServerProcess(*board)
    try:
        client = server.client()
        try:
            return client_rate(client, seconds)
        finally:
            client.close()
    finally:
        server.close()


_IN_PROCESS = """\
import sys, time
from pyrpl import Pyrpl, pyrpl as pyrpl_main
pyrpl_main.default_pyrpl_config["modules"] = []
host, sshport, port, seconds, duration = sys.argv[1], *map(int, sys.argv[2:4]), *map(float, sys.argv[4:6])
p = Pyrpl(config="", hostname=host, sshport=sshport, port=port, gui=False, loglevel="error")
s = p.rp.scope
s.setup(duration=duration, trigger_source="immediately", trace_average=1, running_state="stopped")
s.single()
count, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    s.single()
    count += 1
print(count / (time.perf_counter() - t0), flush=True)
p._clear()
"""


def in_process_rate(board: VirtualBoardProcess, seconds: float,
                    duration: float = SHORTEST) -> float:
    """Scope traces/s of PyRPL's own ``scope.single()`` in a process of its own (Qt offscreen) on
    ``board``."""
    done = subprocess.run(
        [sys.executable, "-c", _IN_PROCESS, board.host, str(board.ssh_port), str(board.port),
         str(seconds), str(duration)], check=False, capture_output=True, text=True,
        timeout=START_TIMEOUT + seconds)
    if done.returncode != 0:
        raise RuntimeError(f"PyRPL in-process failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def idle_cpu(board: VirtualBoardProcess, seconds: float) -> float:
    """% of one core the virtual board's process used over ``seconds`` while a server's PyRPL was
    connected to it and idle."""
    server = ServerProcess(*board_ports(board))
    try:
        process = psutil.Process(board.process.pid)
        before, t0 = process.cpu_times(), time.monotonic()
        time.sleep(seconds)  # the measurement window: nothing to wait for
        after, elapsed = process.cpu_times(), time.monotonic() - t0
    finally:
        server.close()
    return 100 * max(0.0, after.user + after.system - before.user - before.system) / elapsed


def figures(runs: int, seconds: float, idle_seconds: float) -> dict[str, list[float]]:
    """Every figure of section (7), as lists of samples: start-up times (s), rates (/s), idle CPU
    (%)."""
    board = start_virtual_board("loopback")
    try:
        out = {f"startup_{k}": v for k, v in startup_times(runs, board).items()}
        rates: dict[str, list[float]] = {"mock": [], "server": [], "in_process": []}
        for _ in range(runs):
            rates["mock"].append(server_rate(seconds, "--mock"))
            rates["server"].append(server_rate(seconds, *board_ports(board)))
            rates["in_process"].append(in_process_rate(board, seconds))
        out.update({f"rate_{k}": v for k, v in rates.items()})
        out["idle_cpu"] = [idle_cpu(board, idle_seconds)]
    finally:
        board.stop()
    return out
