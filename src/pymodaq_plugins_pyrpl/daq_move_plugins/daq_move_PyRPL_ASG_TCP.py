from __future__ import annotations

from pymodaq.control_modules.move_utility_classes import (DAQ_Move_base, DataActuator,
                                                          DataActuatorType, comon_parameters_fun,
                                                          main)
from pymodaq_gui.parameter import Parameter

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.errors import PyrplPluginError
from pymodaq_plugins_pyrpl.plugin_support import PyRPLLink, connection_params

AXES = {"Frequency": ("frequency", "Hz"), "Amplitude": ("amplitude", "V"),
        "Offset": ("offset", "V"), "Phase": ("start_phase", "°")}
"""PyMoDAQ axis → (ASG attribute, unit)."""
SETTINGS = ("waveform", "output_direct", "trigger_source")
"""ASG attributes that are plugin settings (sent at initialization and when changed)."""
_ASG = catalogue.MODULES["asg0"].attributes


class DAQ_Move_PyRPL_ASG_TCP(DAQ_Move_base):
    """A Red Pitaya signal generator (asg0 or asg1) as an actuator with four axes.

    Axes: Frequency (Hz), Amplitude (V), Offset (V), Phase (° at the start of each period). Moves are
    instant and report the value the board applied (PyRPL's quantization, e.g. 0.116 Hz steps).
    Waveform, output and trigger are settings. The ASG is leased: other programs can read it but not
    change it while this plugin is initialized.
    """

    is_multiaxes = True
    _axis_names = list(AXES)
    _controller_units = [unit for _, unit in AXES.values()]
    _epsilons = [0.2, 2.5e-4, 2.5e-4, 1e-3]
    data_actuator_type = DataActuatorType.DataActuator
    supported_platforms = ("linux",)  # the server manager needs fcntl and POSIX user ids

    params = [
        {"title": "ASG:", "name": "module", "type": "list", "limits": ["asg0", "asg1"],
         "value": "asg0"},
        {"title": "Waveform:", "name": "waveform", "type": "list",
         "limits": list(catalogue.ASG_WAVEFORMS), "value": "sin"},
        {"title": "Output:", "name": "output_direct", "type": "list",
         "limits": list(catalogue.OUTPUT_DIRECT_OPTIONS), "value": "out1"},
        {"title": "Trigger:", "name": "trigger_source", "type": "list",
         "limits": list(catalogue.ASG_TRIGGER_SOURCES), "value": "immediately",
         "tip": "'immediately': output runs; 'off': output stopped"},
    ] + connection_params() + comon_parameters_fun(axis_names=_axis_names, epsilon=_epsilons)

    def ini_attributes(self) -> None:
        self.controller: PyRPLClient | None = None
        self.link: PyRPLLink | None = None
        self._targets: dict[str, float] = {}

    def ini_stage(self, controller: PyRPLClient | None = None) -> tuple[str, bool]:
        self.link = PyRPLLink(self, self.settings["module"], reapply=self._reapply)
        self.controller = self.link.open(None if self.is_master else controller)
        self._apply({name: self.settings[name] for name in SETTINGS})
        return self.link.info(), True

    def _apply(self, values: dict) -> dict:
        assert self.controller is not None and self.link is not None
        return self.controller.set(self.link.module, values)

    def _reapply(self) -> None:
        self._apply({**{name: self.settings[name] for name in SETTINGS}, **self._targets})

    def get_actuator_value(self) -> DataActuator:
        attribute, unit = AXES[self.axis_name]
        value = self.controller.get(self.link.module, [attribute])[attribute]
        return self.get_position_with_scaling(DataActuator(data=value, units=unit))

    def move_abs(self, value: DataActuator) -> None:
        value = self.check_bound(value)
        self.target_value = value
        self._move(self.set_position_with_scaling(value))

    def move_rel(self, value: DataActuator) -> None:
        value = self.check_bound(self.current_value + value) - self.current_value
        self.target_value = value + self.current_value
        self._move(self.set_position_with_scaling(self.target_value))

    def _move(self, value: DataActuator) -> None:
        attribute, unit = AXES[self.axis_name]
        self.ispolling = False  # instant: poll_moving reads the applied value once
        try:
            applied = self._apply({attribute: value.value(unit)})
        except PyrplPluginError as exc:  # nothing changed: poll_moving reports the board's value
            self.link.status(f"{self.link.module}: move refused: {exc}")
            return
        self._targets[attribute] = applied[attribute]

    def move_home(self) -> None:
        attribute, _ = AXES[self.axis_name]
        applied = self._apply({attribute: _ASG[attribute].default})
        self._targets[attribute] = applied[attribute]
        self.move_done()

    def stop_motion(self) -> None:
        self.move_done()

    def commit_settings(self, param: Parameter) -> None:
        if self.link is None:
            return
        if param.name() == "module":
            self.link.switch(param.value())
            self._targets.clear()
            self._apply({name: self.settings[name] for name in SETTINGS})
        elif param.name() in SETTINGS:
            self._apply({param.name(): param.value()})

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None


if __name__ == "__main__":
    main(__file__)
