"""(8) The analyzers: figures of the server's network and spectrum analyzers on the simulated board
and on a virtual board driven by real PyRPL."""
from __future__ import annotations

import subprocess
import sys
import time

from bench.common import SHORTEST
from bench.pyrpl_path import START_TIMEOUT, ServerProcess, board_ports, client_rate
from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.virtual_board.process import VirtualBoardProcess, start_virtual_board

# --- spectrum analyzer -----------------------------------------------------------------------------

SA_SHORTEST_SPAN = catalogue.SA_SPANS[0]
"""The spectrum analyzer's widest span, 125 MHz: the shortest scope traces (131 µs)."""


def sa_client_rate(client: PyRPLClient, seconds: float) -> float:
    """Spectra/s of ``client.acquire("sa")`` at the widest span (trace_average 1)."""
    client.set("sa", {"span": SA_SHORTEST_SPAN, "trace_average": 1})
    client.acquire("sa")
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        client.acquire("sa")
        count += 1
    return count / (time.perf_counter() - t0)


def sa_server_rates(seconds: float, *board: str) -> tuple[float, float]:
    """(spectra/s, scope traces/s of the same 131 µs traces) through one server of ``board``, one
    after the other in the same run."""
    server = ServerProcess(*board)
    try:
        client = server.client()
        try:
            spectra = sa_client_rate(client, seconds)
            return spectra, client_rate(client, seconds, SHORTEST)
        finally:
            client.close()
    finally:
        server.close()


_SA_IN_PROCESS = """\
import sys, time
from pyrpl import Pyrpl
host, sshport, port, seconds = sys.argv[1], *map(int, sys.argv[2:4]), float(sys.argv[4])
p = Pyrpl(config="", hostname=host, sshport=sshport, port=port, gui=False, loglevel="error")
sa = p.spectrumanalyzer
sa.setup(baseband=True, span=125e6, window="blackman", input1_baseband="in1",
         input2_baseband="in2")
sa.trace_average = 1
sa.single()
count, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    sa.single()
    count += 1
print(count / (time.perf_counter() - t0), flush=True)
p._clear()
"""


def sa_in_process_rate(board: VirtualBoardProcess, seconds: float) -> float:
    """Spectra/s of PyRPL's own ``spectrumanalyzer.single()`` (widest span) in a process of its
    own (Qt offscreen) on ``board``."""
    done = subprocess.run(
        [sys.executable, "-c", _SA_IN_PROCESS, board.host, str(board.ssh_port), str(board.port),
         str(seconds)], check=False, capture_output=True, text=True,
        timeout=START_TIMEOUT + seconds)
    if done.returncode != 0:
        raise RuntimeError(f"PyRPL's spectrum analyzer in-process failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def sa_figures(runs: int, seconds: float) -> dict[str, list[float]]:
    """The spectrum analyzer's figures, as lists of samples (/s): spectra and scope traces through
    a ``--mock`` server and a server on a virtual board (loopback), and PyRPL's own analyzer on the
    same virtual board."""
    board = start_virtual_board("loopback")
    try:
        out: dict[str, list[float]] = {k: [] for k in (
            "sa_mock", "scope_mock", "sa_virtual", "scope_virtual", "sa_pyrpl_in_process")}
        for _ in range(runs):
            for key, options in (("mock", ("--mock",)), ("virtual", board_ports(board))):
                spectra, traces = sa_server_rates(seconds, *options)
                out[f"sa_{key}"].append(spectra)
                out[f"scope_{key}"].append(traces)
            out["sa_pyrpl_in_process"].append(sa_in_process_rate(board, seconds))
    finally:
        board.stop()
    return out
