"""What the bench's sections share: the server under test, free ports, summaries."""
from __future__ import annotations

import statistics

import numpy as np
import psutil

from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager
from pymodaq_plugins_pyrpl.hardware.sockets import free_port

SHORTEST = 131.072e-6
"""The scope's shortest trace duration (s): 16384 samples at 125 MS/s."""


def summary(values: list[float], scale: float = 1.0) -> dict[str, float]:
    """Median, min and max of ``values`` times ``scale``."""
    values = [v * scale for v in values]
    return {"median": float(statistics.median(values)), "min": float(min(values)),
            "max": float(max(values))}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


class Server:
    """A ``--mock`` server auto-started by the server manager on a free port, and its process."""

    def __init__(self) -> None:
        self.manager = TCPServerManager(port=free_port())
        self.client = self.manager.ensure_server_running()
        self.state = runtime.read_state(self.manager.port)
        self.process = psutil.Process(self.state.pid)

    def new_client(self, name: str) -> PyRPLClient:
        client = PyRPLClient("127.0.0.1", self.manager.port, self.state.token, name)
        client.connect()
        return client

    def close(self) -> None:
        self.manager.release_server()
