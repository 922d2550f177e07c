from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import comon_parameters, main
from pymodaq.utils.data import Axis, DataFromPlugins, DataToExport
from pymodaq_gui.parameter import Parameter

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.errors import PyrplPluginError
from pymodaq_plugins_pyrpl.plugin_bases import PyRPLViewer
from pymodaq_plugins_pyrpl.plugin_support import (CallInThread, connection_params, labelled,
                                                  write_back)

logger = logging.getLogger(__name__)

SETTINGS = ("iq", "input", "output_direct", "start_freq", "stop_freq", "points", "rbw",
            "average_per_point", "trace_average", "amplitude", "acbandwidth", "logscale")
"""Attributes of the server's ``na`` module that are plugin settings of the same name (sent at
initialization and when changed; the applied values are written back)."""
_NA = catalogue.module("na").attributes


def _number(name: str, title: str, tip: str, **extra: Any) -> dict[str, Any]:
    attribute = _NA[name]
    return {"title": title, "name": name, "type": attribute.kind, "value": attribute.default,
            "min": attribute.minimum, "max": attribute.maximum, "tip": tip, **extra}


def _options(name: str, title: str, tip: str, unit: str = "") -> dict[str, Any]:
    attribute = _NA[name]
    limits = labelled(attribute.options, unit) if unit else list(attribute.options)
    return {"title": title, "name": name, "type": "list", "limits": limits,
            "value": attribute.default, "tip": tip}


def transfer_function_channels(frequencies: np.ndarray, data: np.ndarray, input_: str,
                               ) -> list[DataFromPlugins]:
    """The viewer's channels of a (maybe partial) sweep: magnitude (linear, and in dB) and phase
    (°) of the transfer function ``data`` on the frequency axis (explicit values: a log sweep
    is not linear)."""
    def axis() -> Axis:
        return Axis("Frequency", units="Hz", data=np.asarray(frequencies, dtype=float), index=0)

    magnitude = np.abs(data)
    with np.errstate(divide="ignore"):  # a zero reads -inf dB
        decibels = 20 * np.log10(magnitude)
    return [DataFromPlugins(name="Magnitude", data=[magnitude], dim="Data1D", labels=[input_],
                            units="", axes=[axis()]),
            DataFromPlugins(name="Magnitude (dB)", data=[decibels], dim="Data1D",
                            labels=[input_], units="dB", axes=[axis()]),
            DataFromPlugins(name="Phase", data=[np.degrees(np.angle(data))], dim="Data1D",
                            labels=[input_], units="°", axes=[axis()])]


class DAQ_1DViewer_PyRPL_NA_TCP(PyRPLViewer):
    """The Red Pitaya's network analyzer, run by the PyRPL server as PyRPL's NetworkAnalyzer: one
    IQ module (``iq``, default iq2) puts out a sine of ``amplitude`` on ``output_direct`` and
    demodulates ``input`` at each of ``points`` frequencies from ``start_freq`` to ``stop_freq``
    (log-spaced if ``logscale``), averaging ``average_per_point`` samples at the resolution
    bandwidth ``rbw``; ``trace_average`` sweeps are averaged into one frame.

    Channels, on a frequency axis in Hz: the magnitude of the transfer function (linear and in
    dB; normalised as PyRPL's, so a direct cable reads 1, 0 dB) and its phase in degrees. A
    sweep takes about 'Sweep time' (an estimate from the settings); while it runs, the points
    measured so far are shown (PyMoDAQ's temporary data: displayed, not saved). Stop ends the
    sweep on the server within a fraction of a second (its output turned off); a continuous grab
    repeats sweeps. Naverage > 1 averages that many frames in the background thread
    (hardware_averaging).

    The ``na`` module and its IQ module are leased while initialized, and used alone in this
    program: an IQ actuator or viewer of this program on the same IQ module is refused ("busy"),
    and so is this viewer if one holds it.
    """

    SETTINGS = SETTINGS
    EXCLUSIVE = True
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids
    params = comon_parameters + [
        _options("iq", "IQ module:", "the IQ module that sweeps (leased and used alone while "
                                     "initialized)"),
        _options("input", "Input:", "the signal demodulated (the response)"),
        _options("output_direct", "Output:", "analog output the excitation is added to"),
        _number("start_freq", "Start frequency:", "first frequency of the sweep", suffix="Hz",
                siPrefix=True),
        _number("stop_freq", "Stop frequency:", "last frequency of the sweep", suffix="Hz",
                siPrefix=True),
        _number("points", "Points:", "frequencies in a sweep"),
        {"title": "Log scale:", "name": "logscale", "type": "bool",
         "value": _NA["logscale"].default,
         "tip": "frequencies spaced logarithmically (else linearly)"},
        _options("rbw", "RBW:", "resolution bandwidth: the IQ's low-pass cutoff (a point takes "
                                "(0.5 + average per point) / rbw)", unit="Hz"),
        _number("average_per_point", "Average per point:",
                "samples averaged per point, in units of 1/rbw"),
        _number("trace_average", "Sweeps averaged:",
                "the server averages this many sweeps into one frame"),
        _number("amplitude", "Amplitude:", "amplitude of the excitation", step=0.01, suffix="V",
                siPrefix=True),
        _options("acbandwidth", "AC bandwidth:", "high-pass cutoff at the input (off: "
                                                 "DC-coupled)", unit="Hz"),
        {"title": "Sweep time:", "name": "sweep_time", "type": "float",
         "value": _NA["sweep_time"].default or 0.0, "readonly": True, "suffix": "s",
         "siPrefix": True,
         "tip": "estimated duration of one sweep with these settings (the server's); a frame "
                "takes 'Sweeps averaged' of them"},
    ] + connection_params()

    def ini_attributes(self) -> None:
        super().ini_attributes()
        self._partial: CallInThread | None = None
        """Shows a partial sweep in the plugin's thread (made there, at the first grab)."""

    def _module(self) -> str:
        return "na"

    def _companions(self) -> list[str]:
        return [self.settings["iq"]]

    def _apply(self, values: dict[str, Any]) -> dict[str, Any]:
        """Set ``na`` attributes; the values applied, with the new sweep time estimate."""
        applied = super()._apply(values)
        return {**applied, **self.controller.get("na", ["sweep_time"])}

    def _commit(self, param: Parameter) -> bool:
        """Another IQ module: held alone first (refused if busy), then given to the ``na``."""
        if param.name() != "iq":
            return super()._commit(param)
        old, new = self.link.companions[0], param.value()
        if new == old:
            return False
        self.link.move_companion(old, new)
        try:
            write_back(self, self._apply({"iq": new}))
        except PyrplPluginError:
            self.link.move_companion(new, old)
            raise
        return True

    def _job(self, naverage: int) -> Callable[[Callable[[], bool]], dict | None]:
        if self._partial is None:
            self._partial = CallInThread(self._show_partial)
        client, partial = self.controller, self._partial

        def acquire(wanted: Callable[[], bool]) -> dict | None:
            stopping = []

            def progress(params: dict[str, Any]) -> None:  # on the client's events thread
                if wanted():
                    partial.post(params)
                elif not stopping:  # Stop came before the sweep started: end it now
                    stopping.append(True)
                    _stop_sweep(client)

            sweeps = []
            for _ in range(naverage):
                if sweeps and not wanted():
                    return None  # stopped: no more sweeps
                sweeps.append(client.acquire("na", progress=progress))  # server's timeout
                if not sweeps[-1]["complete"]:
                    break
            sweep = sweeps[-1]
            if len(sweeps) > 1 and sweep["complete"]:
                sweep["data"] = np.mean([s["data"] for s in sweeps], axis=0)
            return sweep
        return acquire

    def stop(self) -> str:
        """Drop the frame on its way and end the sweep running on the server (its output off)."""
        running = self.acquisition is not None and self.acquisition.busy
        super().stop()
        if running and self.controller is not None:
            _stop_sweep(self.controller)
        return ""

    def _show_partial(self, progress: dict[str, Any]) -> None:
        """The points of the running sweep measured so far, displayed (not saved)."""
        if self.link is None:
            return
        self.dte_signal_temp.emit(DataToExport("PyRPL NA", data=transfer_function_channels(
            progress["frequencies"], progress["data"], self.settings["input"])))

    def _emit(self, sweep: dict | None) -> None:
        if sweep is None:
            return
        settings = sweep.get("settings", self.settings)
        self.dte_signal.emit(DataToExport("PyRPL NA", data=transfer_function_channels(
            sweep["frequencies"], sweep["data"], settings["input"])))


def _stop_sweep(client: Any) -> None:
    """End this session's sweep on the server (nothing if none runs); a failure is logged: the
    server turns the output off at the end of the sweep anyway."""
    try:
        client.stop("na")
    except PyrplPluginError as exc:
        logger.info("stopping the sweep: %s", exc)


if __name__ == "__main__":
    main(__file__)
