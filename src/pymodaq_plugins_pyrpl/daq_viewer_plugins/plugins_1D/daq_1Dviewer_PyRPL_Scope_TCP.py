from __future__ import annotations

from typing import Any, Callable

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import comon_parameters, main
from pymodaq.utils.data import Axis, DataFromPlugins, DataToExport

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.errors import AcquisitionTimeout
from pymodaq_plugins_pyrpl.plugin_bases import PyRPLViewer
from pymodaq_plugins_pyrpl.plugin_support import connection_params, labelled

SETTINGS = ("input1", "input2", "duration", "trigger_source", "threshold", "hysteresis",
            "trigger_delay", "trace_average")
"""Scope attributes that are plugin settings of the same name (sent at initialization and when
changed; the applied values are written back)."""
_SCOPE = catalogue.MODULES["scope"].attributes


def _number(name: str, title: str, **extra: Any) -> dict[str, Any]:
    attribute = _SCOPE[name]
    return {"title": title, "name": name, "type": attribute.kind, "value": attribute.default,
            "min": attribute.minimum, "max": attribute.maximum, **extra}


class DAQ_1DViewer_PyRPL_Scope_TCP(PyRPLViewer):
    """The Red Pitaya's 2-channel oscilloscope: 16384 samples per channel, in volts, on a time axis
    in seconds (relative to the trigger).

    The blocking server call runs in a background thread: grab_data and stop return at once; Stop
    drops the trace being taken (the server finishes it, its result is ignored). A trace gets
    ``trace_average × duration`` plus "wait for trigger" seconds; without a trigger by then the status
    bar says so (a continuous grab keeps waiting). Averaging: the server averages ``trace_average``
    traces; PyMoDAQ's Naverage > 1 averages that many such traces in the background thread
    (hardware_averaging). The scope is leased: other programs can read it but not change it.
    """

    SETTINGS = SETTINGS
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids
    params = comon_parameters + [
        {"title": "Input 1:", "name": "input1", "type": "list",
         "limits": list(catalogue.DSP_SIGNALS), "value": "in1", "tip": "signal on channel 1"},
        {"title": "Input 2:", "name": "input2", "type": "list",
         "limits": list(catalogue.DSP_SIGNALS), "value": "in2", "tip": "signal on channel 2"},
        {"title": "Duration:", "name": "duration", "type": "list",
         "limits": labelled(catalogue.SCOPE_DURATIONS, "s"), "value": _SCOPE["duration"].default,
         "tip": "length of a trace (16384 samples)"},
        {"title": "Trigger:", "name": "trigger_source", "type": "list",
         "limits": list(catalogue.SCOPE_TRIGGER_SOURCES), "value": "immediately",
         "tip": "what starts a trace: immediately, an edge of a channel, or an ASG"},
        _number("threshold", "Threshold:", step=0.01, suffix="V", siPrefix=True,
                tip="trigger level of the edge triggers"),
        _number("hysteresis", "Hysteresis:", step=0.001, suffix="V", siPrefix=True,
                tip="the signal must go this far back across the threshold before the next edge"),
        _number("trigger_delay", "Trigger delay:", step=1e-6, suffix="s", siPrefix=True,
                tip="time of the trace's centre after the trigger"),
        _number("trace_average", "Traces averaged:",
                tip="the server averages this many traces into one frame"),
        {"title": "Wait for trigger (s):", "name": "trigger_wait", "type": "float", "value": 1.0,
         "min": 0.01, "tip": "a trace fails when no trigger came within this time"},
    ] + connection_params()

    def _module(self) -> str:
        return "scope"

    def _timeout(self) -> float:
        return self.settings["trace_average"] * self.settings["duration"] \
            + self.settings["trigger_wait"]

    def _job(self, naverage: int) -> Callable[[Callable[[], bool]], dict | None]:
        client, timeout = self.controller, self._timeout()

        def acquire(wanted: Callable[[], bool]) -> dict | None:
            traces = []
            for _ in range(naverage):
                if traces and not wanted():
                    return None  # stopped: no more traces
                traces.append(client.acquire("scope", timeout=timeout))
            trace = traces[0]
            if naverage > 1:
                for ch in ("ch1", "ch2"):
                    trace[ch] = np.mean([t[ch] for t in traces], axis=0)
            return trace
        return acquire

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, AcquisitionTimeout):
            return (f"scope: no trace within {self._timeout():.3g} s: no trigger "
                    f"({self.settings['trigger_source']}, threshold {self.settings['threshold']:.3g}"
                    " V)? Check the trigger or raise 'Wait for trigger'")
        return f"scope: {exc}"

    def _emit(self, trace: dict | None) -> None:
        if trace is None:
            return
        samples = len(trace["ch1"])
        axis = Axis("Time", units="s", offset=trace["t0"], scaling=trace["dt"], size=samples,
                    index=0)  # a linear axis: no sample times to build and check per frame
        settings = trace.get("settings", self.settings)
        self.dte_signal.emit(DataToExport("PyRPL scope", data=[DataFromPlugins(
            name="Scope", data=[np.asarray(trace["ch1"]), np.asarray(trace["ch2"])],
            dim="Data1D", labels=[settings["input1"], settings["input2"]], units="V",
            axes=[axis])]))


if __name__ == "__main__":
    main(__file__)
