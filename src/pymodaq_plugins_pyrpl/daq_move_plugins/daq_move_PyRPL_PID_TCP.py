from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymodaq.control_modules.move_utility_classes import comon_parameters_fun, main
from pymodaq_gui.parameter import Parameter

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.plugin_bases import PyRPLActuator
from pymodaq_plugins_pyrpl.plugin_support import connection_params, si_label

AXES = {"Setpoint": ("setpoint", "V"), "P": ("p", ""), "I": ("i", "Hz")}
"""PyMoDAQ axis → (PID attribute, unit); P is a dimensionless gain."""
SETTINGS = ("input", "output_direct", "inputfilter", "min_voltage", "max_voltage", "pause_gains",
            "paused")
"""PID attributes that are plugin settings (sent at initialization and when changed)."""
_PID = catalogue.MODULES["pid0"].attributes


def _cutoff_label(cutoff: float) -> str:
    """``-2428.66`` → ``"high-pass 2.43 kHz"``; 0 → ``"off"``."""
    if cutoff == 0:
        return "off"
    return f"{'low-pass' if cutoff > 0 else 'high-pass'} {si_label(abs(cutoff), 'Hz')}"


INPUT_FILTERS = {_cutoff_label(f): f for f in catalogue.filter_options(catalogue.PID_FILTER)}
"""Choices of the input filter's first stage: label → cutoff (Hz; negative: high-pass, 0: off)."""


class DAQ_Move_PyRPL_PID_TCP(PyRPLActuator):
    """A Red Pitaya PID controller (pid0, pid1 or pid2) as an actuator with three axes.

    Axes: Setpoint (V), P (proportional gain, dimensionless) and I (integral unity-gain frequency,
    Hz, as in PyRPL). Moves are instant and report the value the board applied (PyRPL's
    quantization: 2**-13 V, 2**-12, 0.0046 Hz). Input, output, input filter (first stage), output
    limits and pause are settings; 'Reset integrator' sets the integrator (ival) to 0.

    Sign convention (PyRPL's FPGA): error = input - setpoint, so a loop through a plain cable or a
    plant of positive DC gain is stable with NEGATIVE p and i (e.g. P = -0.1, I = -1000 Hz).
    The PID is leased: other programs can read it but not change it while this plugin is
    initialized. After a server restart, the settings and the last moves are applied again.
    """

    AXES = AXES
    SETTINGS = SETTINGS
    _axis_names = list(AXES)
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids
    _controller_units = [unit for _, unit in AXES.values()]
    _epsilons = [2.5e-4, 5e-4, 0.01]

    params = [
        {"title": "PID:", "name": "module", "type": "list", "limits": ["pid0", "pid1", "pid2"],
         "value": "pid0", "tip": "which of the three PID controllers (leased while initialized)"},
        {"title": "Input:", "name": "input", "type": "list", "limits": list(catalogue.DSP_SIGNALS),
         "value": "in1", "tip": "error signal = input - setpoint"},
        {"title": "Output:", "name": "output_direct", "type": "list",
         "limits": list(catalogue.OUTPUT_DIRECT_OPTIONS), "value": "off",
         "tip": "analog output the control signal is added to"},
        {"title": "Input filter:", "name": "inputfilter", "type": "list", "limits": INPUT_FILTERS,
         "value": 0.0, "tip": "first stage of the input filter"},
        {"title": "Min. output (V):", "name": "min_voltage", "type": "float",
         "value": _PID["min_voltage"].default, "min": _PID["min_voltage"].minimum,
         "max": _PID["min_voltage"].maximum, "tip": "lower limit of the PID's output"},
        {"title": "Max. output (V):", "name": "max_voltage", "type": "float",
         "value": _PID["max_voltage"].default, "min": _PID["max_voltage"].minimum,
         "max": _PID["max_voltage"].maximum, "tip": "upper limit of the PID's output"},
        {"title": "Pause:", "name": "paused", "type": "bool", "value": False,
         "tip": "freeze the gains chosen in 'Paused gains'"},
        {"title": "Paused gains:", "name": "pause_gains", "type": "list",
         "limits": list(catalogue.PID_PAUSE_GAINS), "value": "pi",
         "tip": "which gains 'Pause' freezes: p (proportional), i (integrator holds its value), "
                "d, or combinations; off: none"},
        {"title": "Reset integrator:", "name": "reset_ival", "type": "bool_push", "value": False,
         "label": "Reset", "tip": "set the integrator value (ival) to 0 V"},
    ] + connection_params() + comon_parameters_fun(axis_names=_axis_names, epsilon=_epsilons)

    def _settings_values(self, names: Sequence[str]) -> dict[str, Any]:
        values = super()._settings_values(names)
        if "inputfilter" in values:
            values["inputfilter"] = [values["inputfilter"]]  # first stage; the others off
        return values

    def _commit(self, param: Parameter) -> bool:
        if param.name() != "reset_ival":
            return super()._commit(param)
        if not param.value():
            return False
        param.setValue(False)  # a push button: ready for the next reset, even after a refusal
        self._apply({"ival": 0.0})
        return True


if __name__ == "__main__":
    main(__file__)
