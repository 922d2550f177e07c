from __future__ import annotations

from typing import Any, Callable

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import DAQ_Viewer_base, comon_parameters, main
from pymodaq.utils.data import DataFromPlugins, DataToExport

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.errors import PyrplPluginError
from pymodaq_plugins_pyrpl.plugin_support import (BackgroundAcquisition, PyRPLLink,
                                                  connection_params, init_failed)

DEFAULT_SIGNALS = ("in1", "in2", "out1", "out2")


class DAQ_0DViewer_PyRPL_Sampler_TCP(DAQ_Viewer_base):
    """A multichannel voltmeter: the instantaneous values of the Red Pitaya's DSP signals (inputs,
    outputs, IQ, PID and ASG signals), in volts.

    Tick the signals to record under "Signals" (default in1, in2, out1, out2); one channel each.
    Readings are taken in a background thread (grab_data returns at once); Naverage > 1 averages
    that many readings there (hardware_averaging). Read-only: nothing is leased or changed.
    """

    hardware_averaging = True
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids
    params = comon_parameters + [
        {"title": "Signals:", "name": "signals", "type": "group", "children": [
            {"title": f"{signal}:", "name": signal, "type": "bool",
             "value": signal in DEFAULT_SIGNALS} for signal in catalogue.SAMPLER_SIGNALS]},
    ] + connection_params()

    def ini_attributes(self) -> None:
        self.controller: PyRPLClient | None = None
        self.link: PyRPLLink | None = None
        self.acquisition: BackgroundAcquisition | None = None

    def ini_detector(self, controller: PyRPLClient | None = None) -> tuple[str, bool]:
        self.link = PyRPLLink(self, "sampler", lease=False)
        try:
            self.controller = self.link.open(None if self.is_master else controller)
        except Exception as exc:
            self.controller = None
            return init_failed(self, self.link, exc), False
        self.acquisition = BackgroundAcquisition(self, self._job, self._emit,
                                                 lambda exc: f"sampler: {exc}")
        return self.link.info(), True

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

    def grab_data(self, Naverage: int = 1, **kwargs: Any) -> None:
        if self.acquisition is not None:
            self.acquisition.grab(Naverage, live=kwargs.get("live", False))

    def stop(self) -> str:
        if self.acquisition is not None:
            self.acquisition.stop()
        return ""

    def close(self) -> None:
        if self.acquisition is not None:
            self.acquisition.close()
            self.acquisition = None
        if self.link is not None:
            self.link.close()
            self.link = None


if __name__ == "__main__":
    main(__file__)
