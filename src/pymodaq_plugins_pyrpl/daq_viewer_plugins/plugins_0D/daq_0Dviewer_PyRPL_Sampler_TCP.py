from __future__ import annotations

from typing import Callable

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import comon_parameters, main
from pymodaq.utils.data import DataFromPlugins, DataToExport

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.errors import PyrplPluginError
from pymodaq_plugins_pyrpl.plugin_bases import PyRPLViewer
from pymodaq_plugins_pyrpl.plugin_support import connection_params

DEFAULT_SIGNALS = ("in1", "in2", "out1", "out2")


class DAQ_0DViewer_PyRPL_Sampler_TCP(PyRPLViewer):
    """A multichannel voltmeter: the instantaneous values of the Red Pitaya's DSP signals (inputs,
    outputs, IQ, PID and ASG signals), in volts.

    Tick the signals to record under "Signals" (default in1, in2, out1, out2); one channel each.
    Readings are taken in a background thread (grab_data returns at once); Naverage > 1 averages
    that many readings there (hardware_averaging). Read-only: nothing is leased or changed.
    """

    LEASE = False  # read-only
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids
    params = comon_parameters + [
        {"title": "Signals:", "name": "signals", "type": "group",
         "tip": "the signals read, one channel each", "children": [
            {"title": f"{signal}:", "name": signal, "type": "bool",
             "value": signal in DEFAULT_SIGNALS, "tip": f"read {signal} (V)"}
            for signal in catalogue.SAMPLER_SIGNALS]},
    ] + connection_params()

    def _module(self) -> str:
        return "sampler"

    def selected(self) -> list[str]:
        """The signals ticked in the settings, in the catalogue's order."""
        return [s for s in catalogue.SAMPLER_SIGNALS if self.settings["signals", s]]

    def _job(self, naverage: int) -> Callable[[Callable[[], bool]], dict[str, float]]:
        client, signals = self.controller, self.selected()

        def acquire(wanted: Callable[[], bool]) -> dict[str, float]:
            if not signals:
                raise PyrplPluginError("no signal selected (tick some under 'Signals')")
            readings = [client.acquire("sampler") for _ in range(naverage)]
            return {s: float(np.mean([r[s] for r in readings])) for s in signals}
        return acquire

    def _emit(self, values: dict[str, float]) -> None:
        self.dte_signal.emit(DataToExport("PyRPL sampler", data=[DataFromPlugins(
            name="Sampler", data=[np.array([v]) for v in values.values()], dim="Data0D",
            labels=list(values), units="V")]))


if __name__ == "__main__":
    main(__file__)
