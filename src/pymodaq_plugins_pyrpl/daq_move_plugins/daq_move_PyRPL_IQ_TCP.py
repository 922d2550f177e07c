from __future__ import annotations

from pymodaq.control_modules.move_utility_classes import comon_parameters_fun, main

from pymodaq_plugins_pyrpl.plugin_bases import PyRPLActuator
from pymodaq_plugins_pyrpl.plugin_support import connection_params

AXES = {"Frequency": ("frequency", "Hz"), "Phase": ("phase", "°"),
        "Amplitude": ("amplitude", "V")}
"""PyMoDAQ axis → (IQ attribute, unit)."""


class DAQ_Move_PyRPL_IQ_TCP(PyRPLActuator):
    """A Red Pitaya IQ module (iq0, iq1 or iq2) as an actuator: the lock-in's frequency, for scans.

    Axes: Frequency (Hz, demodulation and excitation), Phase (° of the demodulation) and Amplitude
    (V, of the excitation). Moves are instant and report the value the board applied (PyRPL's
    quantization, 0.029 Hz steps). The plugin sends nothing else: input, bandwidth and output are
    the IQ viewer's settings (DAQ_0DViewer_PyRPL_IQ_TCP). Used together with that viewer on the same
    module, in the same PyMoDAQ process, both hold the module's lease (it stays leased until the
    last of them quits); another program can read the module but not change it. After a frequency
    step the viewer's next reading waits until the demodulator's filter has settled (the server
    does; docs/protocol.md, ``acquire``).
    """

    AXES = AXES
    _axis_names = list(AXES)
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids
    _controller_units = [unit for _, unit in AXES.values()]
    _epsilons = [0.1, 1e-3, 1e-4]

    params = [
        {"title": "IQ module:", "name": "module", "type": "list", "limits": ["iq0", "iq1", "iq2"],
         "value": "iq0", "tip": "which IQ module (leased while initialized, shared with an IQ "
                                "viewer of this PyMoDAQ on the same module)"},
    ] + connection_params() + comon_parameters_fun(axis_names=_axis_names, epsilon=_epsilons)


if __name__ == "__main__":
    main(__file__)
