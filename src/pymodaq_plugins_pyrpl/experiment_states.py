"""The default states of the shipped experiments: what PyMoDAQ applies right after loading them.

PyMoDAQ 5.3 keeps no plugin settings in an experiment. It keeps them in *states*, files of its
StateManager in ``<PyMoDAQ config>/states/<experiment>/``, and applies the experiment's current
state (``default`` unless one is chosen, e.g. ``dashboard -x EXPERIMENT -s STATE``) as soon as the
experiment is loaded: its steps set settings, initialize modules and move actuators, in order.
Each shipped experiment that needs more than the plugins' defaults gets its ``default`` state here,
written in PyMoDAQ's own format (``pymodaq-pyrpl experiments install`` writes the files):

- ``pyrpl_demo``: the ASG plays a 1 kHz, 0.5 V sine on out1 (the scope's in1 shows it at the first
  grab); the ASG module is left on its Frequency axis, showing the frequency.
- ``pyrpl_resonance``: every module uses the simulated resonator plant (f0 = 100 kHz, Q = 30; a
  real board ignores it) and is initialized after that (the experiment itself does not initialize
  them: a plant chosen after initialization would need another server); the IQ detector excites
  out1 with 0.02 V; the network analyzer sweeps 80–120 kHz linearly with the same excitation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ASG_DEMO_FREQUENCY = 1e3
"""Hz: eight periods in the scope's default 8.4 ms trace."""
ASG_DEMO_AMPLITUDE = 0.5
"""V."""
RESONANCE_PLANT = "resonator"
RESONANCE_EXCITATION = 0.02
"""V: the IQ's excitation amplitude on out1 for the resonance scan (the resonator's peak gain is
Q = 30: 0.6 V at f0, below the board's 1 V range)."""
RESONANCE_SWEEP = {"start_freq": 80e3, "stop_freq": 120e3, "points": 201, "logscale": False,
                   "amplitude": RESONANCE_EXCITATION}
"""The network analyzer's settings in ``pyrpl_resonance``: ±20 % around the resonator's f0, where
its linewidth f0/Q (3.3 kHz) spans 17 points."""


@dataclass(frozen=True)
class Step:
    """One step of a state: ``kind`` is ``"setting"`` (set ``path`` of ``module``'s settings to
    ``value``), ``"move"`` (move the actuator ``module`` on its current axis to ``value`` in
    ``unit``) or ``"init"`` (initialize ``module``)."""

    kind: str
    module: str
    value: Any = None
    path: tuple[str, ...] = ()
    unit: str = ""


def _setting(module: str, path: tuple[str, ...], value: Any) -> Step:
    return Step("setting", module, value, path)


_ASG_AXIS = ("actuator_settings", "controller", "axis")

STATES: dict[str, list[Step]] = {
    "pyrpl_demo": [
        Step("move", "ASG", ASG_DEMO_FREQUENCY, unit="Hz"),
        _setting("ASG", _ASG_AXIS, "Amplitude"),
        Step("move", "ASG", ASG_DEMO_AMPLITUDE, unit="V"),
        _setting("ASG", _ASG_AXIS, "Frequency"),
        Step("move", "ASG", ASG_DEMO_FREQUENCY, unit="Hz"),  # shows the frequency, not 500 mHz
    ],
    "pyrpl_resonance": [
        _setting("IQ frequency", ("actuator_settings", "pyrpl", "plant"), RESONANCE_PLANT),
        _setting("IQ", ("detector_settings", "pyrpl", "plant"), RESONANCE_PLANT),
        _setting("IQ", ("detector_settings", "output_direct"), "out1"),
        _setting("IQ", ("detector_settings", "amplitude"), RESONANCE_EXCITATION),
        _setting("Network analyzer", ("detector_settings", "pyrpl", "plant"), RESONANCE_PLANT),
        *(_setting("Network analyzer", ("detector_settings", name), value)
          for name, value in RESONANCE_SWEEP.items()),
        Step("init", "IQ frequency", True),
        Step("init", "IQ", True),
        Step("init", "Network analyzer", True),
    ],
}
"""experiment → the steps of its ``default`` state, applied in this order."""

STATE_NAME = "default"
"""The state PyMoDAQ applies when an experiment is loaded and no other state was chosen."""


def state_bytes(experiment: str, modules: dict[str, str]) -> bytes:
    """The ``default`` state of ``experiment`` as PyMoDAQ's StateManager writes it (sequential
    execution, each step waiting for its module). ``modules``: module name → ``"actuator"`` or
    ``"detector"``, as in the experiment (imports PyMoDAQ)."""
    from pymodaq.utils.managers.state.subentries import StateSubEntryHandlerTypes as Types
    from pymodaq_gui.managers.settings.subentries import SubEntry
    from pymodaq_gui.parameter import Parameter
    from pymodaq_gui.parameter.utils import ParameterWithPath
    from serializall import SerializableFactory

    serialize = SerializableFactory().get_apply_serializer
    data = serialize(False) + serialize(True)  # not parallel; blocking (PyMoDAQ's header)
    for step in STATES[experiment]:
        if step.kind == "setting":
            kind = modules[step.module]
            index = [n for n, k in modules.items() if k == kind].index(step.module)
            param = Parameter.create(name=step.path[-1], title=step.path[-1],
                                     type=_param_type(step.value), value=step.value)
            path = ["control_modules_settings", kind, f"{kind}_{index:03d}", *step.path]
            entry = SubEntry(Types.SETTINGS, step.module, ParameterWithPath(param, path))
        elif step.kind == "move":
            param = Parameter.create(name="ActuatorValue", title="Actuator Value", type="float",
                                     value=float(step.value), suffix=step.unit, siPrefix=True)
            entry = SubEntry(Types.ACTUATOR_VALUE, step.module, ParameterWithPath(param, []))
        elif step.kind == "init":
            param = Parameter.create(name="InitModule", title="Control Module Init Value",
                                     type="bool", value=bool(step.value))
            entry = SubEntry(Types.INIT, step.module, ParameterWithPath(param))
        else:
            raise ValueError(f"unknown state step {step.kind!r}")
        data += serialize(entry)
    return data


def _param_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float):
        return "float"
    if isinstance(value, int):
        return "int"
    return "str"
