"""One network-analyzer sweep on a board reached at its ports, through PyRPL in this process, and
its result as JSON.

Run by ``tests/hardware/backends/test_pyrpl_na.py`` and ``bench/analyzers.py``; PyRPL is never
imported in their own process. Usage: ``python pyrpl_na_sweep_probe.py WHO HOST SSH_PORT PORT SETTINGS``
with WHO ``backend`` (:class:`PyrplBackend`'s ``na_start`` / ``na_points`` / ``na_stop`` from one
dedicated thread, in chunks of about 50 ms of points as the server calls them) or ``pyrpl``
(PyRPL 0.9.9's own ``NetworkAnalyzer.single()``, its software module loaded, trace_average 1),
``contract`` (the backend's answers to calls out of order, the IQ after a sweep, the restore
after an FPGA reset: ``{"name": {"ok": ..., "error": ..., "value": ...}}``),
SETTINGS a JSON object of the ``na`` values (catalogue names: start_freq, stop_freq, points, rbw,
average_per_point, amplitude, input, output_direct, acbandwidth, logscale; iq: iq2, PyRPL's NA's).
The last stdout line starting with ``PROBE_RESULT`` holds ``{"frequencies": [...], "re": [...],
"im": [...], "seconds": s (the sweep, start to last point), "rbw": Hz, "time_per_point": s}``.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

CHUNK_SECONDS = 0.05
"""The points per ``na_points`` call: as many as take this long (the server's chunk)."""


def through_backend(host: str, ssh_port: int, port: int, settings: dict[str, Any]
                    ) -> dict[str, Any]:
    from pymodaq_plugins_pyrpl.hardware.backends.pyrpl import PyrplBackend

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backend")

    def run(function: Any, *args: Any) -> Any:
        return executor.submit(function, *args).result(timeout=600)

    backend = PyrplBackend(host, ssh_port=ssh_port, board_port=port)
    run(backend.open)
    try:
        started = time.perf_counter()
        sweep = run(backend.na_start, settings)
        chunk = max(1, int(CHUNK_SECONDS / sweep.time_per_point))
        values = []
        for first in range(0, len(sweep.frequencies), chunk):
            data, wait = run(backend.na_points, first, min(chunk, len(sweep.frequencies) - first))
            assert wait == 0.0
            values.append(data)
        seconds = time.perf_counter() - started
        run(backend.na_stop)
        data = np.concatenate(values)
        return {"frequencies": sweep.frequencies.tolist(), "re": data.real.tolist(),
                "im": data.imag.tolist(), "seconds": seconds, "rbw": sweep.rbw,
                "time_per_point": sweep.time_per_point}
    finally:
        run(backend.close)
        executor.shutdown()


def outcome(run: Any, function: Any, *args: Any) -> dict[str, Any]:
    """``run(function, *args)``: its value (na_points': the magnitudes and the wait; na_start's:
    None), or the exception's class and message."""
    try:
        value = run(function, *args)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    if isinstance(value, tuple):  # na_points: (values, wait)
        return {"ok": True, "value": [np.abs(value[0]).tolist(), value[1]]}
    return {"ok": True, "value": None if hasattr(value, "frequencies") else value}


USER_IQ2 = {"frequency": 5000.0, "amplitude": 0.2, "output_direct": "off", "input": "in2",
            "bandwidth": [9716.4, 0.0, 0.0, 0.0]}
"""iq2's settings applied through ``set`` before the sweeps of ``contract``."""


def contract(host: str, ssh_port: int, port: int, settings: dict[str, Any]) -> dict[str, Any]:
    from pymodaq_plugins_pyrpl.hardware.backends.pyrpl import PyrplBackend

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backend")

    def run(function: Any, *args: Any) -> Any:
        return executor.submit(function, *args).result(timeout=600)

    backend = PyrplBackend(host, ssh_port=ssh_port, board_port=port)
    run(backend.open)
    names = list(USER_IQ2)
    try:
        out: dict[str, Any] = {"user": run(backend.set, "iq2", USER_IQ2)}
        out["points_before_start"] = outcome(run, backend.na_points, 0, 1)
        out["stop_before_start"] = outcome(run, backend.na_stop)
        out["start_other_module"] = outcome(run, backend.na_start, {**settings, "iq": "pid0"})
        out["start"] = outcome(run, backend.na_start, settings)
        out["points_out_of_order"] = outcome(run, backend.na_points, 1, 1)
        out["points_past_the_end"] = outcome(run, backend.na_points, 0, settings["points"] + 1)
        out["first_point"] = outcome(run, backend.na_points, 0, 1)
        out["iq2_during"] = run(backend.get, "iq2", names + ["output_signal"])
        out["stop"] = outcome(run, backend.na_stop)
        out["stop_again"] = outcome(run, backend.na_stop)
        out["points_after_stop"] = outcome(run, backend.na_points, 1, 1)
        out["iq2_after"] = run(backend.get, "iq2", names)
        # the FPGA was reset during a sweep: the keeper has the applied settings restored
        run(backend.na_start, settings)
        run(backend.na_points, 0, 1)
        out["restored"] = run(backend._restore_settings, True)
        out["points_after_reset"] = outcome(run, backend.na_points, 1, 1)
        out["stop_after_reset"] = outcome(run, backend.na_stop)
        out["iq2_restored"] = run(backend.get, "iq2", names)
        return out
    finally:
        run(backend.close)
        executor.shutdown()


def through_pyrpl(host: str, ssh_port: int, port: int, settings: dict[str, Any]
                  ) -> dict[str, Any]:
    from pyrpl import Pyrpl
    from pyrpl import pyrpl as pyrpl_main

    pyrpl_main.default_pyrpl_config["modules"] = ["NetworkAnalyzer"]
    p = Pyrpl(config="", hostname=host, sshport=ssh_port, port=port, gui=False,
              loglevel="error")
    try:
        na = p.networkanalyzer
        assert na.iq.name == settings.get("iq", "iq2"), na.iq.name
        na.setup(start_freq=settings["start_freq"], stop_freq=settings["stop_freq"],
                 points=settings["points"], rbw=settings["rbw"],
                 average_per_point=settings["average_per_point"],
                 amplitude=settings["amplitude"], input=settings["input"],
                 output_direct=settings["output_direct"], acbandwidth=settings["acbandwidth"],
                 logscale=settings["logscale"], trace_average=1, running_state="stopped")
        started = time.perf_counter()
        data = np.asarray(na.single(), dtype=complex)
        seconds = time.perf_counter() - started
        return {"frequencies": np.asarray(na.frequencies, dtype=float).tolist(),
                "re": data.real.tolist(), "im": data.imag.tolist(), "seconds": seconds,
                "rbw": float(na.rbw), "time_per_point": float(na.time_per_point)}
    finally:
        p._clear()


def main() -> None:
    who, host, ssh_port, port, settings = sys.argv[1:6]
    sweep = {"backend": through_backend, "pyrpl": through_pyrpl, "contract": contract}[who]
    result = sweep(host, int(ssh_port), int(port), json.loads(settings))
    print("PROBE_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
