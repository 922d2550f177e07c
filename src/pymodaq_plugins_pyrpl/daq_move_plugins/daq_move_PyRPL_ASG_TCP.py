from __future__ import annotations

from pymodaq.control_modules.move_utility_classes import comon_parameters_fun, main

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.plugin_bases import PyRPLActuator
from pymodaq_plugins_pyrpl.plugin_support import connection_params

AXES = {"Frequency": ("frequency", "Hz"), "Amplitude": ("amplitude", "V"),
        "Offset": ("offset", "V"), "Phase": ("start_phase", "°")}
"""PyMoDAQ axis → (ASG attribute, unit)."""
SETTINGS = ("waveform", "output_direct", "trigger_source")
"""ASG attributes that are plugin settings (sent at initialization and when changed)."""


class DAQ_Move_PyRPL_ASG_TCP(PyRPLActuator):
    """A Red Pitaya signal generator (asg0 or asg1) as an actuator with four axes.

    Axes: Frequency (Hz), Amplitude (V), Offset (V), Phase (° at the start of each period). Moves are
    instant and report the value the board applied (PyRPL's quantization, e.g. 0.116 Hz steps).
    Waveform, output and trigger are settings. The ASG is leased: other programs can read it but not
    change it while this plugin is initialized.
    """

    AXES = AXES
    SETTINGS = SETTINGS
    _axis_names = list(AXES)
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids
    _controller_units = [unit for _, unit in AXES.values()]
    _epsilons = [0.2, 2.5e-4, 2.5e-4, 1e-3]

    params = [
        {"title": "ASG:", "name": "module", "type": "list", "limits": ["asg0", "asg1"],
         "value": "asg0", "tip": "which of the two signal generators (leased while initialized)"},
        {"title": "Waveform:", "name": "waveform", "type": "list",
         "limits": list(catalogue.ASG_WAVEFORMS), "value": "sin", "tip": "shape of the signal"},
        {"title": "Output:", "name": "output_direct", "type": "list",
         "limits": list(catalogue.OUTPUT_DIRECT_OPTIONS), "value": "out1",
         "tip": "analog output the signal is added to (off: none)"},
        {"title": "Trigger:", "name": "trigger_source", "type": "list",
         "limits": list(catalogue.ASG_TRIGGER_SOURCES), "value": "immediately",
         "tip": "'immediately': output runs; 'off': output stopped"},
    ] + connection_params() + comon_parameters_fun(axis_names=_axis_names, epsilon=_epsilons)


if __name__ == "__main__":
    main(__file__)
