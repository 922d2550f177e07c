"""(8) The analyzers. Spectrum analyzer: spectra/s at its widest span next to the scope traces/s
of the same server, on --mock and on a virtual board, and PyRPL's own analyzer on that board.

Network analyzer: one sweep of 1001 points at rbw 1 kHz (log, 1 kHz to 1 MHz, one average per
point) on one virtual board (loopback plant), in one run side by side:

* through our server and a client (``client.acquire("na")``, as the NA viewer asks for it),
* through the PyRPL backend alone (``na_start`` / ``na_points`` from one thread, no server),
* through PyRPL's own ``NetworkAnalyzer.single()`` in a process of its own,
* the physical minimum, ``Σ (0.5 + average_per_point) / rbw`` over the points, the first one three
  times (:func:`.network.sweep_time` of the rbw applied),

and on the simulated board (``--mock``) the sweep through a server and a client next to its
physical minimum. A sweep's time runs from the request to its last point. The PyRPL sweeps run
``tests/helpers/scripts/pyrpl_na_sweep_probe.py`` (PyRPL imported in its own process only).

Next to the ``--mock`` sweep's time per point, the time per point of the same kind of sweep through
PyMoDAQ's real DAQ_Scan (IQ actuator + IQ viewer, the experiment ``pyrpl_resonance`` on a
``--mock`` server's resonator), headless, run by ``tests/helpers/scripts/daq_scan_sweep.py`` in a
process of its own with PyMoDAQ's folders (``~/.pymodaq``, ``/etc/.pymodaq``) isolated.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import SHORTEST
from bench.pyrpl_path import START_TIMEOUT, ServerProcess, board_ports, client_rate
from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.analysis import network
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.sockets import free_port
from pymodaq_plugins_pyrpl.virtual_board.process import VirtualBoardProcess, start_virtual_board
from tests.helpers.pyrpl_probe import run_probe
from tests.helpers.scripts import DAQ_SCAN_SWEEP, PYRPL_NA_SWEEP_PROBE

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

# --- network analyzer -------------------------------------------------------------------------------

NA_SWEEP = {"iq": "iq2", "start_freq": 1e3, "stop_freq": 1e6, "points": 1001, "rbw": 1000.0,
            "average_per_point": 1, "amplitude": 0.1, "input": "in1", "output_direct": "out1",
            "acbandwidth": 50.0, "logscale": True, "trace_average": 1}
"""The ``na`` settings of every sweep of this section."""
NA_PROBE_TIMEOUT = 120.0


def na_probe_seconds(who: str, board: VirtualBoardProcess, folder: Path) -> dict[str, Any]:
    """One sweep by the probe (``backend`` or ``pyrpl``) on ``board``: its seconds and rbw."""
    result = run_probe(PYRPL_NA_SWEEP_PROBE, folder, who, board.host, str(board.ssh_port),
                       str(board.port), json.dumps(NA_SWEEP), timeout=NA_PROBE_TIMEOUT)
    return {"seconds": result["seconds"], "rbw": result["rbw"]}


def na_client_seconds(*board: str) -> tuple[float, float]:
    """One sweep through a server of ``board`` and a client (the settings set first, one sweep
    before the one timed): (seconds, rbw applied)."""
    server = ServerProcess(*board)
    try:
        client = server.client()
        try:
            applied = client.set("na", NA_SWEEP)
            client.acquire("na")
            t0 = time.perf_counter()
            reply = client.acquire("na")
            seconds = time.perf_counter() - t0
            if not reply["complete"]:
                raise RuntimeError("the bench's NA sweep did not complete")
            return seconds, applied["rbw"]
        finally:
            client.close()
    finally:
        server.close()


def na_minimum(rbw: float) -> float:
    """The physical minimum of :data:`NA_SWEEP` at the rbw applied (s)."""
    return network.sweep_time(NA_SWEEP["points"], rbw, NA_SWEEP["average_per_point"])


def na_figures(runs: int) -> dict[str, list[float]]:
    """Every NA figure of section (8), as lists of samples (s, and ratios)."""
    out: dict[str, list[float]] = {k: [] for k in (
        "server", "backend", "pyrpl", "minimum", "server_over_pyrpl", "backend_over_pyrpl",
        "pyrpl_over_minimum", "server_over_minimum", "mock", "mock_minimum",
        "mock_over_minimum", "mock_per_point")}
    board = start_virtual_board("loopback")
    folder = Path(tempfile.mkdtemp(prefix="pyrpl_bench_na_"))
    try:
        for _ in range(runs):
            server, rbw = na_client_seconds(*board_ports(board))
            backend = na_probe_seconds("backend", board, folder)["seconds"]
            pyrpl = na_probe_seconds("pyrpl", board, folder)
            minimum = na_minimum(pyrpl["rbw"])
            if rbw != pyrpl["rbw"]:
                raise RuntimeError(f"rbw {rbw} through the server, {pyrpl['rbw']} in PyRPL")
            out["server"].append(server)
            out["backend"].append(backend)
            out["pyrpl"].append(pyrpl["seconds"])
            out["minimum"].append(minimum)
            out["server_over_pyrpl"].append(server / pyrpl["seconds"])
            out["backend_over_pyrpl"].append(backend / pyrpl["seconds"])
            out["pyrpl_over_minimum"].append(pyrpl["seconds"] / minimum)
            out["server_over_minimum"].append(server / minimum)
            mock, mock_rbw = na_client_seconds("--mock")
            out["mock"].append(mock)
            out["mock_minimum"].append(na_minimum(mock_rbw))
            out["mock_over_minimum"].append(mock / na_minimum(mock_rbw))
            out["mock_per_point"].append(mock / NA_SWEEP["points"])
    finally:
        board.stop()
    return out

# --- the same kind of sweep through DAQ_Scan ---------------------------------------------------------

SCAN_SWEEP = {"start": 50e3, "stop": 150e3, "points": 21,
              "bandwidth": min(catalogue.MODULES["iq0"].attributes["bandwidth"].options,
                               key=lambda f: abs(f - NA_SWEEP["rbw"]))}
"""DAQ_Scan's sweep: 21 points across the resonator's peak (100 kHz), the IQ filter's cutoff the
NA's rbw applied (1214 Hz)."""
SCAN_TIMEOUT = 180.0
_ISOLATION = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "isolation"
"""sitecustomize.py there moves PyMoDAQ's /etc/.pymodaq to ``$PYMODAQ_PYRPL_TEST_ETC``."""


def daq_scan_seconds_per_point(folder: Path) -> float:
    """Seconds per point of one DAQ_Scan sweep (:data:`SCAN_SWEEP`) by
    ``tests/helpers/scripts/daq_scan_sweep.py``, with HOME, XDG_RUNTIME_DIR and PyMoDAQ's system
    folder in fresh folders under ``folder``. Raises RuntimeError if the script fails or makes
    another number of points, subprocess.TimeoutExpired after :data:`SCAN_TIMEOUT` s."""
    run = Path(tempfile.mkdtemp(prefix="scan_", dir=folder))
    dirs = {name: run / name.lower() for name in (
        "HOME", "PYRPL_USER_DIR", "XDG_RUNTIME_DIR", "PYMODAQ_PYRPL_TEST_ETC", "DATA")}
    for path in dirs.values():
        path.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDPITAYA_")}
    env.update({k: str(v) for k, v in dirs.items() if k != "DATA"}, QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=os.pathsep.join(filter(None, [str(_ISOLATION),
                                                        os.environ.get("PYTHONPATH")])))
    done = subprocess.run(
        [sys.executable, str(DAQ_SCAN_SWEEP), str(free_port()), str(SCAN_SWEEP["start"]),
         str(SCAN_SWEEP["stop"]), str(SCAN_SWEEP["points"]), str(SCAN_SWEEP["bandwidth"]),
         str(dirs["DATA"])], capture_output=True, text=True, timeout=SCAN_TIMEOUT, env=env,
        stdin=subprocess.DEVNULL, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE_RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the DAQ_Scan sweep failed: {done.stderr[-3000:]}")
    result = json.loads(lines[-1].split(" ", 1)[1])
    if result["points"] != SCAN_SWEEP["points"]:
        raise RuntimeError(f"DAQ_Scan made {result['points']} points, not {SCAN_SWEEP['points']}")
    return result["seconds"] / result["points"]


def daq_scan_figures(runs: int) -> list[float]:
    """Seconds per point of ``runs`` DAQ_Scan sweeps, each in a process of its own."""
    folder = Path(tempfile.mkdtemp(prefix="pyrpl_bench_scan_"))
    return [daq_scan_seconds_per_point(folder) for _ in range(runs)]
