"""Drives a virtual board through PyRPL's real ``MonitorClient`` and hardware modules, without ssh,
and prints what it observed as JSON (the last stdout line starting with ``PROBE_RESULT``).

Usage: ``python pyrpl_client_probe.py PORT [board]`` (the board serves on 127.0.0.1:PORT, with
the ``loopback`` plant). Run by ``tests/virtual_board/test_pyrpl_client.py`` in a subprocess:
importing PyRPL creates a QApplication and configures logging. PyRPL's client is reached without
ssh: ``RedPitaya(hostname="_FAKE_")``, then ``parameters.update(hostname, port)`` and
``startclient()``. With ``board``, PyRPL's modules run on the PyRPL backend's own
``BoardClient`` instead (``rp.client`` replaced, then ``makemodules()``; run by
``tests/hardware/backends/test_board_client.py``).
"""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

import numpy as np

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

from pyrpl.attributes import BaseRegister
from pyrpl.modules import Module
from pyrpl.redpitaya import RedPitaya
from pyrpl.test.test_registers import TestRegisters

from pymodaq_plugins_pyrpl.hardware.backends.board_link.client import BoardClient

DEADLINE = 10.0
"""Seconds any wait for the board may take."""


def connect(port: int, client: str = "pyrpl") -> RedPitaya:
    """PyRPL's ``RedPitaya`` on 127.0.0.1:``port`` without ssh, its modules on PyRPL's
    ``MonitorClient`` (``client="pyrpl"``) or the backend's ``BoardClient`` (``"board"``)."""
    rp = RedPitaya(hostname="_FAKE_")
    if client == "board":
        rp.client = BoardClient.connect("127.0.0.1", port)
        rp.makemodules()
        return rp
    rp.parameters.update(hostname="127.0.0.1", port=port)
    rp.startclient()
    return rp


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.001)


def trace(rp: RedPitaya) -> np.ndarray:
    """One scope trace through PyRPL's low-level path (as the server's PyRPL backend does)."""
    rp.scope._start_trace_acquisition()
    wait_for(rp.scope.curve_ready, "scope trace")
    return np.asarray(rp.scope._get_trace(), dtype=float)


def tone(x: np.ndarray, dt: float) -> dict[str, float]:
    """Frequency (interpolated FFT peak), amplitude and mean of a sampled sine."""
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1:k + 2])
    shift = 0.5 * (a - c) / (a - 2 * b + c)
    return {"frequency": (k + shift) / (len(x) * dt), "amplitude": float(np.std(x)) * 2**0.5,
            "mean": float(x.mean())}


def asg_readback(rp: RedPitaya) -> dict[str, Any]:
    asg = rp.asg0
    asg.setup(waveform="sin", frequency=12345.0, amplitude=0.4, offset=-0.1,
              trigger_source="immediately", output_direct="out1")
    return {"frequency": asg.frequency, "amplitude": asg.amplitude, "offset": asg.offset,
            "waveform": asg.waveform, "trigger_source": asg.trigger_source,
            "output_direct": asg.output_direct}


def scope_sine(rp: RedPitaya) -> dict[str, Any]:
    rp.asg0.setup(waveform="sin", frequency=50e3, amplitude=0.5, offset=0.0,
                  trigger_source="immediately", output_direct="out1")
    scope = rp.scope
    scope.input1, scope.input2 = "in1", "asg0"
    scope.duration = 8e-9 * 2**4 * 2**14  # 2.1 ms: 100 periods
    scope.trigger_source = "immediately"
    data = trace(rp)
    dt = float(scope.sampling_time)
    return {"in1": tone(data[0], dt), "asg0": tone(data[1], dt)}


def scope_edge(rp: RedPitaya) -> dict[str, Any]:
    scope = rp.scope
    scope.input1, scope.input2 = "in1", "asg0"
    scope.trigger_source = "ch1_positive_edge"
    scope.threshold, scope.hysteresis, scope.trigger_delay = 0.2, 0.01, 0.0
    data = trace(rp)
    times = np.asarray(scope.times)
    centre = int(np.argmin(np.abs(times)))
    return {"before": data[0][centre - 3:centre].tolist(), "after": data[0][centre:centre + 3]
            .tolist(), "t_centre": float(times[centre])}


def iq_amplitude(rp: RedPitaya) -> dict[str, Any]:
    rp.asg0.setup(waveform="sin", frequency=50e3, amplitude=0.3, offset=0.0,
                  trigger_source="immediately", output_direct="out1")
    iq = rp.iq0
    iq.setup(frequency=50e3, bandwidth=[1e3, 1e3], gain=0.0, phase=0.0, acbandwidth=0.0,
             amplitude=0.0, input="in1", output_direct="off", output_signal="quadrature")
    averages = 125000
    iq._na_averages, iq._na_sleepcycles = averages, 0
    iq.frequency = 50e3  # starts the accumulation
    wait_for(lambda: not any(int(v) >> 31 for v in iq._reads(0x140, 4)), "IQ accumulators")
    z = iq._nadata_total / averages * 2.0**-22
    return {"amplitude": abs(z)}


def quadratures(iq: Any, settle: float = 0.01, averages: int = 12500) -> complex:
    """iq's accumulators over ``averages`` cycles after ``settle`` seconds (a write of its
    frequency starts them, as PyRPL's network analyzer does), in volts."""
    iq._na_averages, iq._na_sleepcycles = averages, int(settle * 125e6)
    iq.frequency = iq.frequency
    wait_for(lambda: not any(int(v) >> 31 for v in iq._reads(0x140, 4)), "IQ accumulators")
    return complex(iq._nadata_total / averages * 2.0**-22)


IIR_FREQUENCIES = (10e3, 50e3, 200e3, 1e6)


def iir_filter(rp: RedPitaya) -> dict[str, Any]:
    """PyRPL designs and writes an IIR filter (the design of its ``test_iirsimple_na_generator``)
    fed by iq0's excitation; iq0 measures its output against the excitation itself, as PyRPL's
    network analyzer does; then the same with the filter bypassed. Returns the measured and
    PyRPL's predicted (``tf_final``) transfer functions and the overflow register."""
    iir, iq = rp.iir, rp.iq0
    iir.setup(zeros=[1e5j - 3e3], poles=[5e4j - 3e3], gain=1.0, loops=35, input="iq0",
              output_direct="off", inputfilter=0, bypass=False)

    def measure(f: float) -> complex:
        iq.setup(frequency=f, bandwidth=[1e3, 1e3], gain=0.0, phase=0.0, acbandwidth=0.0,
                 amplitude=0.05, input="iir", output_direct="off", output_signal="output_direct")
        through = quadratures(iq)
        iq.input = "iq0"
        return through / quadratures(iq)

    measured = [measure(f) for f in IIR_FREQUENCIES]
    theory = iir.transfer_function_by_kind(np.array(IIR_FREQUENCIES), kind="final")
    overflow = int(iir.overflow_bitfield)
    iir.bypass = True
    bypassed = measure(50e3)
    return {"loops": int(iir.loops), "measured": [[z.real, z.imag] for z in measured],
            "theory": [[complex(z).real, complex(z).imag] for z in theory],
            "overflow": overflow, "bypassed": [bypassed.real, bypassed.imag]}


def sampler(rp: RedPitaya) -> dict[str, Any]:
    rp.asg0.setup(waveform="dc", offset=0.25, amplitude=0.0, trigger_source="immediately",
                  output_direct="out1")
    rp.asg1.setup(waveform="dc", offset=-0.5, amplitude=0.0, trigger_source="immediately",
                  output_direct="out2")
    s = rp.sampler
    return {"out1": s.out1, "out2": s.out2, "asg0": s.asg0, "asg1": s.asg1}


def pid_settles(rp: RedPitaya) -> dict[str, Any]:
    rp.asg0.setup(waveform="dc", offset=0.0, amplitude=0.0, trigger_source="off",
                  output_direct="off")
    rp.asg1.output_direct = "off"
    pid = rp.pid0
    pid.setup(input="in1", output_direct="out1", setpoint=0.3, p=-0.1, i=-1000.0,
              max_voltage=1.0, min_voltage=-1.0, pause_gains="off", paused=False)
    pid.ival = 0.0
    deadline = time.monotonic() + DEADLINE
    while abs(rp.sampler.in1 - 0.3) > 0.01 and time.monotonic() < deadline:
        time.sleep(0.005)
    return {"in1": rp.sampler.in1, "ival": pid.ival, "out1": rp.sampler.out1}


def registers(rp: RedPitaya) -> dict[str, Any]:
    """PyRPL's own ``test_registers`` check on every register of every module."""
    checked, failures = 0, []
    for name, module in rp.__dict__.items():
        if not isinstance(module, Module):
            continue
        for key, register in type(module).__dict__.items():
            if isinstance(register, BaseRegister):
                checked += 1
                try:
                    TestRegisters.register_validation(None, module, name, register, key)
                except Exception as exc:  # noqa: BLE001 - reported, not hidden
                    failures.append(f"{name}.{key}: {type(exc).__name__} {exc}")
    return {"checked": checked, "failures": failures}


def round_trip(rp: RedPitaya) -> dict[str, Any]:
    count = 500
    start = time.perf_counter()
    for _ in range(count):
        _ = rp.hk.led
    register = (time.perf_counter() - start) / count
    start = time.perf_counter()
    rp.scope._get_trace()
    return {"register_s": register, "scope_read_s": time.perf_counter() - start}


SCENARIOS = (asg_readback, scope_sine, scope_edge, iq_amplitude, sampler, pid_settles, iir_filter,
             registers, round_trip)


def main() -> None:
    rp = connect(int(sys.argv[1]), *sys.argv[2:3])
    result: dict[str, Any] = {"client": type(rp.client).__name__,
                              "modules_share_it": all(m._client is rp.client
                                                      for m in rp.modules.values())}
    for scenario in SCENARIOS:
        try:
            result[scenario.__name__] = scenario(rp)
        except Exception:  # noqa: BLE001 - reported to the test
            result[scenario.__name__] = {"error": traceback.format_exc()}
    result["counters"] = [rp.client._read_counter, rp.client._write_counter]
    print("PROBE_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
