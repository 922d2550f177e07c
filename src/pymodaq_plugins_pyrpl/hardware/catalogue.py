"""The instrument catalogue: modules, their user-facing attributes, units, ranges, options, quantization.

Names and option strings are PyRPL 0.9.9's. Quantization reproduces PyRPL's register arithmetic, so a
value set on the simulator reads back exactly as it would from a real board. Both backends and the
server's ``set`` validation use this module; ``describe`` serves :func:`describe`.

Validation policy: a value outside the declared range, of the wrong type, non-finite, or not among the
options is refused with :class:`~.errors.InvalidParams` naming the attribute and what is allowed (PyRPL
would silently clamp). Values inside the range are quantized like PyRPL. Phases wrap modulo 360°.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import InvalidParams

FPGA_CLOCK = 125e6

DSP_SIGNALS = ("in1", "in2", "out1", "out2", "iq0", "iq1", "iq2", "iq2_2", "pid0", "pid1", "pid2",
               "asg0", "asg1", "trig", "iir", "off")
"""Signals of the FPGA's DSP bus, usable as inputs of the scope, PID and IQ modules."""
OUTPUT_DIRECT_OPTIONS = ("off", "out1", "out2", "both")
SCOPE_DURATIONS = tuple(8e-9 * 2**n * 2**14 for n in range(17))
"""PyRPL's 17 scope durations: 16384 samples at 8 ns × decimation 1 … 65536."""
SCOPE_SAMPLES = 16384
SCOPE_TRIGGER_SOURCES = ("off", "immediately", "ch1_positive_edge", "ch1_negative_edge",
                         "ch2_positive_edge", "ch2_negative_edge", "ext_positive_edge",
                         "ext_negative_edge", "asg0", "asg1", "dsp")
ASG_WAVEFORMS = ("sin", "cos", "ramp", "halframp", "square", "dc", "noise")
ASG_TRIGGER_SOURCES = ("off", "immediately", "ext_positive_edge", "ext_negative_edge", "ext_raw",
                       "high")
PID_PAUSE_GAINS = ("off", "i", "p", "pi", "d", "id", "pd", "pid")
IQ_OUTPUT_SIGNALS = ("quadrature", "output_direct", "pfd", "off", "quadrature_hf")
SAMPLER_SIGNALS = ("in1", "in2", "out1", "out2", "iq0", "iq1", "iq2", "iq2_2", "pid0", "pid1",
                   "pid2", "asg0", "asg1")


def filter_options(stages_shiftbits_minbw: tuple[int, int, int]) -> tuple[float, ...]:
    """Cutoff frequencies (Hz) of PyRPL's ``FilterRegister`` for the upstream FPGA constants.

    Negative values are high-pass filters, 0 is off (the same list as ``pid0.inputfilter_options``).
    """
    _, shiftbits, minbw = stages_shiftbits_minbw
    maxshift = int(math.floor(math.log2(FPGA_CLOCK / minbw))) + 1
    positive = []
    for shift in range(0, maxshift - 2):
        # filter_block.v: alpha = 2**-shift; cutoff = alpha * clock / 2**shiftbits / (2 pi)
        positive.append(2.0**shift * FPGA_CLOCK / 2**maxshift / (2 * math.pi))
    del shiftbits
    return tuple([-f for f in reversed(positive)] + [0.0] + positive)


PID_FILTER = (4, 5, 10)
IQ_INPUT_FILTER = (1, 5, 50)
IQ_BANDWIDTH_FILTER = (2, 5, 10)
IQ2_BANDWIDTH_FILTER = (4, 5, 10)


def _quantize_signed(value: float, step: float, bits: int) -> float:
    """Round to the register grid of a signed ``bits``-wide register (two's complement)."""
    n = int(round(value / step))
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return min(max(n, lo), hi) * step


@dataclass(frozen=True)
class Attribute:
    """One attribute of a module.

    ``kind`` is ``float``, ``int``, ``bool``, ``select`` (one of ``options``) or ``filter`` (a list of
    ``length`` cutoff frequencies, each snapped to the nearest of ``options``; a number sets the first
    stage and turns the others off, as in PyRPL). ``normalize`` maps a validated value to what the
    board applies.
    """

    name: str
    kind: str
    doc: str
    default: Any
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    options: tuple[Any, ...] = ()
    length: int = 1
    readonly: bool = False
    wraps: float | None = None
    normalize: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)

    def validate(self, value: Any) -> Any:
        """Check ``value`` and return the quantized value the board applies. Raises InvalidParams."""
        if self.readonly:
            raise self._error("is read-only")
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise self._error(f"must be true or false, not {value!r}")
            return value
        if self.kind == "select":
            if not isinstance(value, str) or value not in self.options:
                raise self._error(f"must be one of {list(self.options)}, not {value!r}")
            return value
        if self.kind == "filter":
            values = value if isinstance(value, list) else [value]
            if not 1 <= len(values) <= self.length:
                raise self._error(f"takes 1 to {self.length} cutoff frequencies")
            numbers = [self._number(v) for v in values]
            snapped = [min(self.options, key=lambda o: abs(o - v)) for v in numbers]
            return snapped + [0.0] * (self.length - len(snapped))
        number = self._number(value)
        if self.wraps is not None:
            number = number % self.wraps
        elif not (self.minimum <= number <= self.maximum):  # type: ignore[operator]
            raise self._error(f"must be within [{self.minimum:g}, {self.maximum:g}] {self.unit}"
                              .rstrip() + f", not {number!r}")
        if self.kind == "int":
            if number != int(number):
                raise self._error(f"must be an integer, not {value!r}")
            number = int(number)
        return self.normalize(number) if self.normalize else number

    def _number(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._error(f"must be a number, not {value!r}")
        if isinstance(value, int) and abs(value) > 2**63:
            raise self._error(f"is out of range: {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise self._error(f"must be a finite number, not {value!r}")
        return number

    def _error(self, reason: str) -> InvalidParams:
        return InvalidParams(f"attribute '{self.name}' {reason}", {"attribute": self.name,
                                                                   "allowed": self.allowed()})

    def allowed(self) -> Any:
        if self.kind in ("select", "filter"):
            return list(self.options)
        if self.kind == "bool":
            return [False, True]
        if self.wraps is not None:
            return {"wraps": self.wraps, "unit": self.unit}
        return {"min": self.minimum, "max": self.maximum, "unit": self.unit}

    def describe(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": self.kind, "unit": self.unit, "doc": self.doc,
                                 "default": self.default, "readonly": self.readonly}
        if self.kind in ("float", "int"):
            entry.update(min=self.minimum, max=self.maximum, step=self.step)
            if self.wraps is not None:
                entry["wraps"] = self.wraps
        if self.kind in ("select", "filter"):
            entry["options"] = list(self.options)
        if self.kind == "filter":
            entry["length"] = self.length
        return entry


@dataclass(frozen=True)
class Module:
    """A hardware module: its kind (``scope``, ``asg``, ``pid``, ``iq``, ``sampler``) and attributes."""

    name: str
    kind: str
    doc: str
    attributes: Mapping[str, Attribute]

    def defaults(self) -> dict[str, Any]:
        return {name: a.default for name, a in self.attributes.items() if not a.readonly}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "doc": self.doc,
                "attributes": {n: a.describe() for n, a in self.attributes.items()}}


# ------------------------------------------------------------------------------------------------
# attribute factories, one per PyRPL register type


def _volts(name: str, doc: str, default: float = 0.0, bits: int = 14) -> Attribute:
    step = 2.0 ** -(bits - 1)
    return Attribute(name, "float", doc, default, "V", -1.0, 1.0 - step, step,
                     normalize=lambda v: _quantize_signed(v, step, bits))


def _select(name: str, doc: str, options: tuple[str, ...], default: str) -> Attribute:
    return Attribute(name, "select", doc, default, options=options)


def _bool(name: str, doc: str, default: bool = False) -> Attribute:
    return Attribute(name, "bool", doc, default)


def _frequency(name: str, bits: int, doc: str) -> Attribute:
    step = FPGA_CLOCK / 2**bits
    return Attribute(name, "float", doc, 0.0, "Hz", 0.0, FPGA_CLOCK / 2, step,
                     normalize=lambda v: round(v / step) * step)


def _phase(name: str, bits: int, doc: str) -> Attribute:
    step = 360.0 / 2**bits
    return Attribute(name, "float", doc, 0.0, "°", None, None, step, wraps=360.0,
                     normalize=lambda v: (round(v / step) % 2**bits) * step)


def _filter(name: str, doc: str, constants: tuple[int, int, int]) -> Attribute:
    return Attribute(name, "filter", doc, [0.0] * constants[0], "Hz",
                     options=filter_options(constants), length=constants[0])


# ------------------------------------------------------------------------------------------------
# modules


def _scope() -> Module:
    def duration(v: float) -> float:
        return next(d for d in SCOPE_DURATIONS if d >= v * (1 - 1e-12))

    attributes = [
        _select("input1", "signal recorded on channel 1", DSP_SIGNALS, "in1"),
        _select("input2", "signal recorded on channel 2", DSP_SIGNALS, "in2"),
        Attribute("duration", "float", "trace length (16384 samples); rounded up to one of PyRPL's "
                  "17 durations", SCOPE_DURATIONS[6], "s", 0.0, SCOPE_DURATIONS[-1], None,
                  options=(), normalize=duration),
        _bool("average", "average the samples within each decimation interval (else pick one)",
              True),
        _select("trigger_source", "what starts a trace", SCOPE_TRIGGER_SOURCES, "immediately"),
        Attribute("trigger_delay", "float", "time of the trace centre after the trigger (edge "
                  "triggers only)", 0.0, "s", -10.0, SCOPE_DURATIONS[-1], 8e-9),
        _volts("threshold", "trigger threshold of the edge triggers"),
        _volts("hysteresis", "trigger hysteresis of the edge triggers", 2.0**-13 * 20),
        Attribute("trace_average", "int", "number of traces averaged into one", 1, "", 1, 2**16,
                  1),
        _bool("ch1_active", "channel 1 is returned", True),
        _bool("ch2_active", "channel 2 is returned", True),
        Attribute("sampling_time", "float", "time between two samples (duration / 16384)",
                  SCOPE_DURATIONS[6] / SCOPE_SAMPLES, "s", 8e-9, 8e-9 * 2**16, None, readonly=True),
    ]
    return Module("scope", "scope", "2-channel oscilloscope, 16384 samples per channel",
                  {a.name: a for a in attributes})


def _asg(n: int) -> Module:
    amp_step = 2.0**-13
    attributes = [
        _select("waveform", "waveform", ASG_WAVEFORMS, "sin"),
        Attribute("amplitude", "float", "amplitude (for noise: rms)", 0.0, "V", 0.0, 1.0, amp_step,
                  normalize=lambda v: round(v / amp_step) * amp_step),
        _volts("offset", "DC offset"),
        _frequency("frequency", 30, "frequency"),
        _select("trigger_source", "what starts the output ('immediately': run now; 'off': stop)",
                ASG_TRIGGER_SOURCES, "off"),
        _select("output_direct", "analog output the signal is added to", OUTPUT_DIRECT_OPTIONS,
                "off"),
        _phase("start_phase", 30, "phase at the start of each period or burst"),
        Attribute("cycles_per_burst", "int", "periods per burst (0: continuous)", 0, "", 0,
                  2**32 - 1, 1),
    ]
    return Module(f"asg{n}", "asg", f"arbitrary signal generator {n}",
                  {a.name: a for a in attributes})


def _pid(n: int) -> Module:
    p_step = 2.0**-12
    i_step = 0.004632018480097623  # PyRPL: 2**-12 * 125 MHz / 2**(13+...) (GainRegister norm)
    i_max = 38856.182646276284

    def gain(step: float, bits: int) -> Callable[[float], float]:
        def normalize(v: float) -> float:
            q = _quantize_signed(v, step, bits)
            if q == 0.0 and v != 0.0:  # PyRPL never rounds a non-zero gain to 0
                q = math.copysign(step, v)
            return q
        return normalize

    attributes = [
        _select("input", "error-signal input", DSP_SIGNALS, "in1"),
        _select("output_direct", "analog output the control signal is added to",
                OUTPUT_DIRECT_OPTIONS, "off"),
        _volts("setpoint", "setpoint of the input signal"),
        Attribute("p", "float", "proportional gain", 0.0, "", -2048.0, 2048.0 - p_step, p_step,
                  normalize=gain(p_step, 24)),
        Attribute("i", "float", "integral unity-gain frequency", 0.0, "Hz", -i_max - i_step,
                  i_max, i_step, normalize=gain(i_step, 24)),
        _filter("inputfilter", "input filter cutoffs (negative: high-pass, 0: off)", PID_FILTER),
        _volts("max_voltage", "upper limit of the output", 1.0 - 2.0**-13),
        _volts("min_voltage", "lower limit of the output", -1.0),
        _select("pause_gains", "gains frozen while 'paused'", PID_PAUSE_GAINS, "pi"),
        _bool("paused", "freeze the gains selected by 'pause_gains'"),
        _bool("differential_mode_enabled", "use in1 - in2 as input (pid0/pid1 pair)"),
        Attribute("ival", "float", "current value of the integrator (write to preset it)", 0.0,
                  "V", -4.0, 4.0 - 2.0**-13, 2.0**-13,
                  normalize=lambda v: _quantize_signed(v, 2.0**-13, 16)),
    ]
    return Module(f"pid{n}", "pid", f"PID controller {n}", {a.name: a for a in attributes})


def _iq(n: int) -> Module:
    gain_step = 2.0**-11
    amp_step = 2.0**-17
    attributes = [
        _select("input", "demodulated signal", DSP_SIGNALS, "in1"),
        Attribute("acbandwidth", "float", "high-pass cutoff at the input (0: DC-coupled)",
                  0.0, "Hz", 0.0, max(filter_options(IQ_INPUT_FILTER)), None,
                  normalize=lambda v: min((o for o in filter_options(IQ_INPUT_FILTER) if o >= 0),
                                          key=lambda o: abs(o - v))),
        _frequency("frequency", 32, "demodulation and excitation frequency"),
        _filter("bandwidth", "low-pass cutoffs of the demodulated quadratures",
                IQ2_BANDWIDTH_FILTER if n == 2 else IQ_BANDWIDTH_FILTER),
        Attribute("quadrature_factor", "float", "gain of the quadrature signal on the DSP bus", 1.0,
                  "", -131072.0, 131071.0, 1.0, normalize=lambda v: float(round(v))),
        _select("output_signal", "signal on the DSP bus", IQ_OUTPUT_SIGNALS, "quadrature"),
        Attribute("gain", "float", "gain of the remodulated quadrature output", 0.0, "", -64.0,
                  64.0 - gain_step, gain_step,
                  normalize=lambda v: _quantize_signed(v, gain_step, 18)),
        Attribute("amplitude", "float", "excitation amplitude", 0.0, "V", -1.0, 1.0 - amp_step,
                  amp_step, normalize=lambda v: _quantize_signed(v, amp_step, 18)),
        _phase("phase", 32, "demodulation phase"),
        _select("output_direct", "analog output the excitation is added to",
                OUTPUT_DIRECT_OPTIONS, "off"),
        _select("modulation_at_2f", "excite at twice the frequency", ("off", "on"), "off"),
        _select("demodulation_at_2f", "demodulate at twice the frequency", ("off", "on"), "off"),
    ]
    return Module(f"iq{n}", "iq", f"IQ modulator/demodulator (lock-in) {n}",
                  {a.name: a for a in attributes})


def _sampler() -> Module:
    step = 1.0 / (2**13 - 1)
    attributes = [Attribute(s, "float", f"instantaneous value of {s}", 0.0, "V", -1.0 - step, 1.0,
                            step, readonly=True) for s in SAMPLER_SIGNALS]
    return Module("sampler", "sampler", "instantaneous values of the DSP signals",
                  {a.name: a for a in attributes})


MODULES: dict[str, Module] = {
    m.name: m
    for m in [_scope(), _asg(0), _asg(1), _pid(0), _pid(1), _pid(2), _iq(0), _iq(1), _iq(2),
              _sampler()]
}


def module(name: Any) -> Module:
    """The module called ``name``. Raises InvalidParams naming the known modules."""
    if not isinstance(name, str) or name not in MODULES:
        raise InvalidParams(f"unknown module {name!r}; modules are {list(MODULES)}",
                            {"module": name, "allowed": list(MODULES)})
    return MODULES[name]


def attribute_names(module_name: str, names: Any = None) -> list[str]:
    """Validate a ``names`` list for ``get`` (None: all attributes). Raises InvalidParams."""
    spec = module(module_name)
    if names is None:
        return list(spec.attributes)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidParams("'names' must be a list of attribute names")
    for n in names:
        if n not in spec.attributes:
            raise InvalidParams(f"module '{module_name}' has no attribute {n!r}; attributes are "
                                f"{list(spec.attributes)}", {"attribute": n,
                                                            "allowed": list(spec.attributes)})
    return names


def validate(module_name: str, values: Any) -> dict[str, Any]:
    """Validate and quantize a ``set`` request, all or nothing. Raises InvalidParams."""
    spec = module(module_name)
    if not isinstance(values, dict) or not values:
        raise InvalidParams("'values' must be a non-empty object of attribute: value")
    attribute_names(module_name, list(values))
    return {name: spec.attributes[name].validate(value) for name, value in values.items()}


def describe() -> dict[str, Any]:
    """The whole catalogue, as served by ``describe``."""
    return {"modules": {name: m.describe() for name, m in MODULES.items()},
            "scope": {"samples": SCOPE_SAMPLES, "durations": list(SCOPE_DURATIONS)}}
