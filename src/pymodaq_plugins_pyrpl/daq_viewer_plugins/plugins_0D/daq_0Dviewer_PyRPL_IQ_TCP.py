from __future__ import annotations

import math
from typing import Callable

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import comon_parameters, main
from pymodaq.utils.data import DataFromPlugins, DataToExport

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.plugin_bases import PyRPLViewer
from pymodaq_plugins_pyrpl.plugin_support import connection_params, labelled, write_back

SETTINGS = ("input", "frequency", "bandwidth", "acbandwidth", "phase", "gain", "amplitude",
            "output_direct")
"""IQ attributes that are plugin settings of the same name (sent at initialization and when
changed; the applied values are written back)."""
SHARED = ("frequency", "phase", "amplitude")
"""Settings an IQ actuator (DAQ_Move_PyRPL_IQ_TCP) on the same module may change: read back with
every reading, so the settings show them and a re-application after a server restart keeps them."""
FIXED = {"output_signal": "quadrature"}
"""Sent at initialization: the module works as a lock-in."""
_IQ = catalogue.MODULES["iq0"].attributes


class DAQ_0DViewer_PyRPL_IQ_TCP(PyRPLViewer):
    """A Red Pitaya IQ module (iq0, iq1 or iq2) as a lock-in amplifier.

    It demodulates its input at ``frequency`` and can excite at the same frequency (``amplitude``
    on ``output_direct``). Channels: I, Q and the amplitude |I + jQ| in volts, the phase
    angle(I + jQ) in degrees. ``bandwidth`` is the cutoff of the first low-pass stage of the
    quadratures (the others are off), ``acbandwidth`` the input high-pass (off: DC-coupled). Setting
    changes show the value the board applied. Readings are taken in a background thread (grab_data
    returns at once); Naverage > 1 averages I and Q there (hardware_averaging). The module is leased:
    other programs can read it but not change it. An IQ actuator of the same process may share the
    module (to scan the frequency): frequency, phase and amplitude are read back with every reading.
    After a change of the module's settings, a reading waits until the quadrature filter has settled
    (docs/protocol.md, ``acquire``).
    """

    SETTINGS = SETTINGS
    FIXED = FIXED
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids
    params = comon_parameters + [
        {"title": "IQ module:", "name": "module", "type": "list", "limits": ["iq0", "iq1", "iq2"],
         "value": "iq0", "tip": "which of the board's three IQ modules (leased while initialized)"},
        {"title": "Input:", "name": "input", "type": "list", "limits": list(catalogue.DSP_SIGNALS),
         "value": "in1", "tip": "the signal demodulated"},
        {"title": "Frequency:", "name": "frequency", "type": "float", "value": 1000.0,
         "min": 0.0, "max": _IQ["frequency"].maximum, "suffix": "Hz", "siPrefix": True,
         "tip": "demodulation (and excitation) frequency"},
        {"title": "Bandwidth:", "name": "bandwidth", "type": "list",
         "limits": labelled([f for f in _IQ["bandwidth"].options if f >= 0], "Hz"),
         "value": 151.7825605610939, "tip": "low-pass cutoff of the quadratures (first stage)"},
        {"title": "AC bandwidth:", "name": "acbandwidth", "type": "list",
         "limits": labelled(_IQ["acbandwidth"].options, "Hz"), "value": 0.0,
         "tip": "high-pass cutoff at the input (off: DC-coupled)"},
        {"title": "Phase (°):", "name": "phase", "type": "float", "value": 0.0, "step": 1.0,
         "tip": "phase of the demodulation reference"},
        {"title": "Gain:", "name": "gain", "type": "float", "value": 0.0,
         "min": _IQ["gain"].minimum, "max": _IQ["gain"].maximum,
         "tip": "gain of the IQ module's own output signal (PyRPL's 'gain'; unused for a plain "
                "lock-in reading: 0)"},
        {"title": "Excitation:", "name": "amplitude", "type": "float", "value": 0.0,
         "min": 0.0, "max": _IQ["amplitude"].maximum, "step": 0.01, "suffix": "V",
         "siPrefix": True,
         "tip": "amplitude of the sine the module puts out at its frequency (0: none)"},
        {"title": "Excitation output:", "name": "output_direct", "type": "list",
         "limits": list(catalogue.OUTPUT_DIRECT_OPTIONS), "value": "off",
         "tip": "analog output the excitation is added to (off: none)"},
    ] + connection_params()

    def _job(self, naverage: int) -> Callable[[Callable[[], bool]], tuple[float, float, dict]]:
        client, module = self.controller, self.link.module

        def acquire(wanted: Callable[[], bool]) -> tuple[float, float, dict]:
            readings = [client.acquire(module) for _ in range(naverage)]
            return (float(np.mean([r["i"] for r in readings])),
                    float(np.mean([r["q"] for r in readings])), client.get(module, list(SHARED)))
        return acquire

    def _emit(self, reading: tuple[float, float, dict]) -> None:
        i, q, shared = reading
        write_back(self, shared)
        self.dte_signal.emit(DataToExport("PyRPL IQ", data=[
            DataFromPlugins(name="Lock-in", data=[np.array([i]), np.array([q]),
                                             np.array([math.hypot(i, q)])],
                            dim="Data0D", labels=["I", "Q", "Amplitude"], units="V"),
            DataFromPlugins(name="Phase", data=[np.array([math.degrees(math.atan2(q, i))])],
                            dim="Data0D", labels=["Phase"], units="°")]))


if __name__ == "__main__":
    main(__file__)
