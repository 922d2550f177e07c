from __future__ import annotations

from typing import Any, Callable

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import comon_parameters, main
from pymodaq.utils.data import Axis, DataFromPlugins, DataToExport

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.analysis import spectrum
from pymodaq_plugins_pyrpl.hardware.errors import AcquisitionTimeout
from pymodaq_plugins_pyrpl.plugin_bases import PyRPLViewer
from pymodaq_plugins_pyrpl.plugin_support import connection_params, labelled

SETTINGS = ("span", "window", "input1", "input2", "unit", "trace_average")
"""Attributes of the server's ``sa`` module that are plugin settings of the same name (sent at
initialization and when changed; the applied values are written back)."""
TIMEOUT_MARGIN_S = 10.0
"""A spectrum may take twice its traces' duration plus this (the scope re-arms between
traces)."""
DISPLAY_UNITS = {"V^2/Hz": "V^2/Hz", "Vrms/sqrt(Hz)": "V/Hz^0.5", "dBm": "dBm"}
"""The server's unit of a spectrum → its spelling for PyMoDAQ (pint: "sqrt(Hz)" is not
understood and PyMoDAQ would show no unit)."""
_SA = catalogue.module("sa").attributes


def _options(name: str, title: str, tip: str, unit: str = "") -> dict[str, Any]:
    attribute = _SA[name]
    limits = labelled(attribute.options, unit) if unit else list(attribute.options)
    return {"title": title, "name": name, "type": "list", "limits": limits,
            "value": attribute.default, "tip": tip}


class DAQ_1DViewer_PyRPL_SA_TCP(PyRPLViewer):
    """The Red Pitaya's spectrum analyzer in baseband, run by the PyRPL server as PyRPL's
    SpectrumAnalyzer: the spectra of ``input1`` and ``input2`` from one scope trace each
    (``window`` applied), in ``unit``, from 0 to ``span``, and the magnitude of their
    cross-spectrum (V²/Hz), on a frequency axis in Hz; ``trace_average`` spectra are averaged
    into one frame. The resolution bandwidth ``rbw`` follows from the span and the window
    (read-only). Naverage > 1 averages that many frames in the background thread
    (hardware_averaging).

    It takes its traces with the board's scope, which it leases and uses alone while initialized:
    a scope viewer of this program is refused ("busy: the scope is used by …"), and so is this
    viewer if a scope viewer holds the scope; other programs can read the scope but not change
    it. The scope keeps the spectrum analyzer's settings afterwards.
    """

    SETTINGS = SETTINGS
    EXCLUSIVE = True
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids
    params = comon_parameters + [
        _options("span", "Span:", "highest frequency shown; sets the scope's sampling time",
                 unit="Hz"),
        _options("window", "Window:", "window applied to each trace before its FFT"),
        _options("input1", "Input 1:", "signal of the first spectrum"),
        _options("input2", "Input 2:", "signal of the second spectrum"),
        _options("unit", "Unit:", "unit of the two spectra (the cross-spectrum is in V²/Hz)"),
        {"title": "Spectra averaged:", "name": "trace_average", "type": "int",
         "value": _SA["trace_average"].default, "min": _SA["trace_average"].minimum,
         "max": _SA["trace_average"].maximum,
         "tip": "the server averages this many spectra into one frame"},
        {"title": "RBW:", "name": "rbw", "type": "float", "value": _SA["rbw"].default or 0.0,
         "readonly": True, "suffix": "Hz", "siPrefix": True,
         "tip": "resolution bandwidth, from the span and the window"},
    ] + connection_params()

    def _module(self) -> str:
        return "sa"

    def _companions(self) -> list[str]:
        return ["scope"]

    def _apply(self, values: dict[str, Any]) -> dict[str, Any]:
        """Set ``sa`` attributes; the values applied, with the resulting rbw."""
        applied = super()._apply(values)
        return {**applied, **self.controller.get("sa", ["rbw"])}

    def _timeout(self) -> float:
        trace = spectrum.scope_duration(self.settings["span"])
        return 2 * trace * self.settings["trace_average"] + TIMEOUT_MARGIN_S

    def _job(self, naverage: int) -> Callable[[Callable[[], bool]], dict | None]:
        client, timeout = self.controller, self._timeout()

        def acquire(wanted: Callable[[], bool]) -> dict | None:
            spectra = []
            for _ in range(naverage):
                if spectra and not wanted():
                    return None  # stopped: no more spectra
                spectra.append(client.acquire("sa", timeout=timeout))
            spectrum = spectra[0]
            if naverage > 1:
                for name in ("in1", "in2", "cross"):
                    spectrum[name] = np.mean([s[name] for s in spectra], axis=0)
            return spectrum
        return acquire

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, AcquisitionTimeout):
            return f"sa: no spectrum within {self._timeout():.3g} s: {exc}"
        return f"sa: {exc}"

    def _emit(self, spectrum: dict | None) -> None:
        if spectrum is None:
            return
        frequencies = np.asarray(spectrum["frequencies"], dtype=float)
        settings = spectrum.get("settings", self.settings)

        def axis() -> Axis:
            return Axis("Frequency", units="Hz", data=frequencies, index=0)

        self.dte_signal.emit(DataToExport("PyRPL SA", data=[
            DataFromPlugins(name="Spectrum", data=[np.asarray(spectrum["in1"]),
                                                   np.asarray(spectrum["in2"])],
                            dim="Data1D", labels=[settings["input1"], settings["input2"]],
                            units=DISPLAY_UNITS[spectrum["unit"]], axes=[axis()]),
            DataFromPlugins(name="Cross-spectrum", data=[np.abs(spectrum["cross"])],
                            dim="Data1D", units="V^2/Hz", axes=[axis()],
                            labels=[f"|{settings['input1']} × {settings['input2']}|"])]))


if __name__ == "__main__":
    main(__file__)
