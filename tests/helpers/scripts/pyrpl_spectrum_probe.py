"""Runs PyRPL's own SpectrumAnalyzer (baseband) against a board and saves what it measured.

Usage: ``python pyrpl_spectrum_probe.py SSH_PORT PORT FOLDER SPAN WINDOW TRACE_AVERAGE REPEATS``,
the board on 127.0.0.1 (a virtual board). Unmodified ``Pyrpl(config="", ...)`` with the ssh
``delay`` the PyRPL backend uses for the virtual board; asg0 plays a 1 kHz sine of 0.5 V on out1;
``p.spectrumanalyzer`` is set up (``span``, ``window``, inputs in1/in2, ``trace_average``) and
``single()`` runs REPEATS times (timed). The scope traces PyRPL's analyzer read are recorded as
they pass (its ``_get_iq_data``, wrapped). FOLDER/pyrpl_sa.npz gets ``frequencies``, ``data``
(the last ``single()``: PyRPL's 4 × 131073 array, Vpk^2) and ``traces`` (the complex ch1 + j ch2
traces of that last ``single()``); the last stdout line starting with ``PROBE_RESULT`` has
``rbw``, ``span``, ``seconds`` (per ``single()``), the owners of iq2 and the scope afterwards.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

import numpy as np
from pyrpl import Pyrpl

from pymodaq_plugins_pyrpl.hardware.backends.pyrpl import VIRTUAL_SSH_DELAY

HOST = "127.0.0.1"


def measure(ssh_port: int, port: int, folder: str, span: float, window: str, average: int,
            repeats: int) -> dict[str, Any]:
    p = Pyrpl(config="", hostname=HOST, sshport=ssh_port, port=port, gui=False,
              delay=VIRTUAL_SSH_DELAY, loglevel="error")
    try:
        p.rp.asg0.setup(waveform="sin", frequency=1000.0, amplitude=0.5, offset=0.0,
                        output_direct="out1", trigger_source="immediately")
        sa = p.spectrumanalyzer
        sa.setup(baseband=True, span=span, window=window, input1_baseband="in1",
                 input2_baseband="in2")
        sa.trace_average = average
        traces: list[np.ndarray] = []
        read = sa._get_iq_data

        def recorded() -> np.ndarray:
            data = read()
            traces.append(np.array(data))
            return data

        sa._get_iq_data = recorded
        started = time.perf_counter()
        for _ in range(repeats):
            traces.clear()
            data = sa.single(timeout=120)
        seconds = (time.perf_counter() - started) / repeats
        np.savez(f"{folder}/pyrpl_sa.npz", frequencies=sa.frequencies, data=data,
                 traces=np.array(traces))
        return {"rbw": sa.rbw, "span": sa.span, "seconds": seconds,
                "owners": {"iq2": p.rp.iq2.owner, "scope": p.rp.scope.owner}}
    finally:
        p.rp.asg0.output_direct = "off"
        p._clear()


def main() -> None:
    ssh_port, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    span, window = float(sys.argv[4]), sys.argv[5]
    average, repeats = int(sys.argv[6]), int(sys.argv[7])
    try:
        result = measure(ssh_port, port, folder, span, window, average, repeats)
    except Exception:
        result = {"error": traceback.format_exc()}
    print("PROBE_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
