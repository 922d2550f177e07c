"""The instrument catalogue: modules, their user-facing attributes, units, ranges, options and
quantization.

Names and option strings are PyRPL 0.9.9's. Quantization reproduces PyRPL's register arithmetic, so
a value set on the simulator reads back exactly as it would from a real board. Both backends and the
server's ``set`` validation use this module; ``describe`` serves :func:`describe`.

Validation policy: a value outside the declared range, of the wrong type, non-finite, or not among
the options is refused with :class:`~.errors.InvalidParams` naming the attribute and what is allowed
(PyRPL would silently clamp). A value inside the range is returned exactly as PyRPL reads it back
after setting it (same rounding, same floating-point operations). Phases wrap modulo 360°. Integers
accept floats and round them half-to-even, as PyRPL's ``IntProperty`` does.

The register classes below (:class:`FloatRegister`, :class:`FrequencyRegister`,
:class:`PhaseRegister`, :class:`FilterRegister`) are operation-by-operation ports of the classes of
the same name in ``pyrpl/attributes.py`` (0.9.9.1), with ``frequency_correction = 1`` (PyRPL's
default). Their methods are named after PyRPL's: ``validate`` is ``validate_and_normalize``,
``word`` is ``from_python`` and ``value`` is ``to_python``; ``read_back`` chains the three.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .errors import InvalidParams, echoed

FPGA_CLOCK = 125e6

DSP_SIGNALS = ("in1", "in2", "out1", "out2", "iq0", "iq1", "iq2", "iq2_2", "pid0", "pid1", "pid2",
               "asg0", "asg1", "trig", "iir", "off")
"""Signals of the FPGA's DSP bus, usable as inputs of the scope, PID and IQ modules."""
OUTPUT_DIRECT_OPTIONS = ("off", "out1", "out2", "both")
SCOPE_SAMPLES = 16384
SCOPE_SAMPLING_TIMES = tuple(8e-9 * 2**n for n in range(17))
"""PyRPL's 17 scope sampling times: 8 ns × decimation 1 … 65536 (``Scope.sampling_times``)."""
SCOPE_DURATIONS = tuple(t * SCOPE_SAMPLES for t in SCOPE_SAMPLING_TIMES)
"""PyRPL's 17 scope durations (``Scope.durations``): 16384 samples × the sampling times."""
SCOPE_TRIGGER_DELAY_MAX = 8e-9 * 2**30
"""Upper limit of PyRPL's ``Scope.trigger_delay`` (s); the lower one is -10 s."""
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

PID_FILTER = (4, 5, 10)
"""(stages, shift bits, minimum bandwidth in Hz) of the PID input filter (upstream Verilog)."""
IQ_INPUT_FILTER = (1, 5, 50)
"""The same constants for the IQ input filter (``acbandwidth``)."""
IQ_BANDWIDTH_FILTER = (2, 5, 10)
"""The same constants for the quadrature low-pass filters of iq0 and iq1 (``bandwidth``)."""
IQ2_BANDWIDTH_FILTER = (4, 5, 10)
"""The same constants for iq2's quadrature filters, which have 4 stages."""


# ------------------------------------------------------------------------------------------------
# PyRPL's register arithmetic


def _clamp(value: float, minimum: float, maximum: float) -> float:
    """``NumberProperty.validate_and_normalize``: ``max(min(value, max), min)``, in that order."""
    return max(min(value, maximum), minimum)


@dataclass(frozen=True)
class FloatRegister:
    """PyRPL's fixed-point ``FloatRegister`` (not inverted); with ``avoid_zero``, ``GainRegister``.

    The register holds ``round(value * norm)`` on ``bits`` bits (two's complement if ``signed``).
    ``max_value`` replaces PyRPL's default upper limit, as the ``max=`` keyword does. ``bitmask``
    keeps only those bits of the word, as a masked register does on the FPGA.
    """

    bits: int
    norm: float
    signed: bool = True
    avoid_zero: bool = False
    max_value: float | None = None
    bitmask: int | None = None

    @property
    def increment(self) -> float:
        """The register step, ``1 / norm``."""
        return 1.0 / self.norm

    @property
    def minimum(self) -> float:
        """PyRPL's lower limit: the most negative word (0 if unsigned)."""
        return -float(2 ** (self.bits - 1)) / self.norm if self.signed else 0.0

    @property
    def maximum(self) -> float:
        """PyRPL's upper limit: ``max_value`` or the largest word."""
        if self.max_value is not None:
            return self.max_value
        return float(2 ** (self.bits - int(self.signed)) - 1) / self.norm

    def validate(self, value: float) -> float:
        """Round to the increment grid (absolute value if unsigned), then clamp to the limits.

        With ``avoid_zero`` a non-zero value that rounds to 0 becomes ± one increment.
        """
        rounded = self._round(value)
        if self.avoid_zero and rounded == 0 and value != 0:
            rounded = self._round(abs(self.increment) * math.copysign(1.0, value))
        return rounded

    def _round(self, value: float) -> float:
        if not self.signed:
            value = abs(value)
        return _clamp(round(value / self.increment) * self.increment, self.minimum, self.maximum)

    def word(self, value: float) -> int:
        """The register word for a validated value (rounded, saturated, two's complement)."""
        word = int(round(float(value) * self.norm))
        if word == 0 and value != 0:
            word = 1 if value > 0 else -1
        if not self.signed:
            return min(abs(word), 2**self.bits - 1)
        word = min(max(word, -(2 ** (self.bits - 1))), 2 ** (self.bits - 1) - 1)
        return word + 2**self.bits if word < 0 else word

    def value(self, word: int) -> float:
        """The value a register word reads as (after the bitmask, if any)."""
        if self.bitmask is not None:
            word &= self.bitmask
        if self.signed and word >= 2 ** (self.bits - 1):
            word -= 2**self.bits
        return float(word) / self.norm

    def read_back(self, value: float) -> float:
        """What PyRPL reads after ``attribute = value``."""
        return self.value(self.word(self.validate(value)))


_EPSILON = 2.220446049250313e-16  # sys.float_info.epsilon, compared with in FrequencyRegister


@dataclass(frozen=True)
class FrequencyRegister:
    """PyRPL's ``FrequencyRegister``: a phase increment per FPGA clock cycle on ``bits`` bits."""

    bits: int

    minimum = 0.0
    maximum = FPGA_CLOCK / 2.0

    @property
    def increment(self) -> float:
        """The frequency step, ``125 MHz / 2**bits``."""
        return FPGA_CLOCK / 2**self.bits

    def validate(self, value: float) -> float:
        """Round to the increment grid, then clamp to [0, 62.5 MHz]."""
        return _clamp(round(value / self.increment) * self.increment, self.minimum, self.maximum)

    def word(self, value: float) -> int:
        """The register word of a validated frequency."""
        value = abs(float(value))
        if value == _EPSILON:
            return 1
        return int(round(value / FPGA_CLOCK * 2**self.bits))

    def value(self, word: int) -> float:
        """The frequency a register word reads as."""
        return FPGA_CLOCK / 2**self.bits * float(word)

    def read_back(self, value: float) -> float:
        """What PyRPL reads after ``attribute = value``."""
        return self.value(self.word(self.validate(value)))


@dataclass(frozen=True)
class PhaseRegister:
    """PyRPL's ``PhaseRegister``: degrees on ``bits`` bits, modulo 360; ``invert`` negates it."""

    bits: int
    invert: bool = False

    @property
    def increment(self) -> float:
        """The phase step in degrees, ``360 / 2**bits``."""
        return 360.0 / 2**self.bits

    def validate(self, value: float) -> float:
        """Round to the increment grid, modulo 360. Raises OverflowError for huge values."""
        return ((int(round(float(value) / 360 * 2**self.bits)) / 2**self.bits) * 360.0) % 360.0

    def word(self, value: float) -> int:
        """The register word of a validated phase."""
        if self.invert:
            value = float(value) * (-1)
        return int(round(float(value) / 360 * 2**self.bits) % 2**self.bits)

    def value(self, word: int) -> float:
        """The phase a register word reads as, in [0, 360)."""
        phase = float(word) / 2**self.bits * 360
        if self.invert:
            phase *= -1
        return phase % 360.0

    def read_back(self, value: float) -> float:
        """What PyRPL reads after ``attribute = value``."""
        return self.value(self.word(self.validate(value)))


# PyRPL's "empirical correction factors" of FilterRegister, keyed by alpha = 2**shift / 2**maxshift
_FILTER_CORRECTIONS = {0.5: 0.7, 0.25: 1.65, 0.125: 1.17, 0.0625: 1.08, 0.03125: 1.04,
                       0.015625: 1.02, 0.0078125: 1.01, 0.001953125: 1.0, 0.00390625: 1.0}


def _clog2(x: float) -> int:
    """``FilterRegister._MAXSHIFT.clog2``, which mirrors Verilog's ``$clog2``."""
    if x < 2:
        return 1
    if x > 2**32:
        return -1
    if x > 2**31:
        return 32
    return int(math.floor(math.log2(float(x)))) + 1


@dataclass(frozen=True)
class FilterRegister:
    """PyRPL's ``FilterRegister``: up to 4 first-order low/high-pass stages (``filter_block.v``).

    Each stage is one byte of the word: bit 7 on, bit 6 high-pass, the low ``shiftbits`` bits the
    shift ``s``, giving ``alpha = 2**s / 2**maxshift`` and a cutoff
    ``-ln(1 - alpha) / 2π × 125 MHz`` times PyRPL's correction factor. Cutoffs are lists of
    ``stages`` values in Hz; negative means high-pass, 0 off.
    """

    stages: int
    shiftbits: int
    minbw: int

    @property
    def maxshift(self) -> int:
        """``_MAXSHIFT``: the number of bits of alpha."""
        return _clog2(125000000.0 / float(self.minbw))

    def valid_frequencies(self) -> list[float]:
        """The cutoffs one stage can take: negatives (high-pass), 0, positives, ascending."""
        positive = [self.value(shift | 0x1 << 7)[0] for shift in range(0, self.maxshift - 2)]
        return [-f for f in reversed(positive)] + [0.0] + positive

    def validate(self, cutoffs: Sequence[float]) -> list[float]:
        """Snap each cutoff to the nearest valid frequency (the first one on a tie)."""
        valid = self.valid_frequencies()
        return [min(valid, key=lambda f: abs(f - cutoff)) for cutoff in cutoffs]

    def word(self, cutoffs: Sequence[float]) -> int:
        """The register word of validated cutoffs; missing stages are off, extra ones dropped."""
        word = 0
        for i, cutoff in enumerate(list(cutoffs)[: self.stages]):
            bandwidth = float(cutoff)
            if bandwidth != 0:
                word += self._stage_byte(bandwidth) * 2 ** (8 * i)
        return word

    def _stage_byte(self, bandwidth: float) -> int:
        alpha = 1.0 - math.exp(-abs(bandwidth) * 2.0 * math.pi / 125e6)
        if alpha in _FILTER_CORRECTIONS:
            bandwidth /= _FILTER_CORRECTIONS[alpha]
            alpha = 1.0 - math.exp(-abs(bandwidth) * 2.0 * math.pi / 125e6)
        shift = int(round(math.log2(alpha * (2**self.maxshift))))
        shift = min(max(shift, 0), 2**self.shiftbits - 1)
        return shift + 2**7 + (2**6 if bandwidth < 0 else 0)

    def value(self, word: int) -> list[float]:
        """The cutoffs of all stages a register word reads as."""
        cutoffs = []
        for i in range(self.stages):
            byte = (word >> (i * 8)) & 0xFF
            cutoffs.append(self._stage_cutoff(byte) if byte >> 7 == 0x1 else 0.0)
        return cutoffs

    def _stage_cutoff(self, byte: int) -> float:
        alpha = float(2 ** (byte & (2**self.shiftbits - 1))) / (2**self.maxshift)
        bandwidth = -math.log(1.0 - alpha) / 2.0 / math.pi * 125e6
        if alpha in _FILTER_CORRECTIONS:
            bandwidth *= _FILTER_CORRECTIONS[alpha]
        return -bandwidth if (byte >> 6) & 0x1 else bandwidth

    def read_back(self, cutoffs: Sequence[float]) -> list[float]:
        """What PyRPL reads after ``attribute = cutoffs``: one cutoff per stage."""
        return self.value(self.word(self.validate(cutoffs)))


def filter_options(stages_shiftbits_minbw: tuple[int, int, int]) -> tuple[float, ...]:
    """Cutoff frequencies (Hz) of PyRPL's ``FilterRegister`` for these FPGA constants.

    Negative values are high-pass filters, 0 is off (``pid0.inputfilter_options`` for
    ``PID_FILTER``).
    """
    return tuple(FilterRegister(*stages_shiftbits_minbw).valid_frequencies())


SETTLE_FRACTION = 2.0**-13
"""A filter has settled when its response to a step is within this fraction of the step: one LSB
of the 14-bit inputs, for a step of their full scale (1 V)."""


def filter_settle_time(cutoffs: Sequence[float], fraction: float = SETTLE_FRACTION) -> float:
    """Seconds after a step until a cascade of first-order stages (PyRPL's filter lists: cutoff in
    Hz, > 0 low-pass, < 0 high-pass, 0 off) is within ``fraction`` of its final value; 0 with no
    stage.

    The n stages are all taken at the lowest |cutoff| fc (an upper bound for low-passes: each faster
    stage only shortens the delay): the step error of n equal first-order low-passes is
    ``exp(-x) * sum(x**k / k!, k < n)`` with ``x = 2 pi fc t``, solved for x. One stage settles in
    ``ln(2**13) / (2 pi fc)`` = 1.43 / fc (9.4 ms at 151.8 Hz), two in 1.84 / fc, four in 2.49 / fc
    (iq2's four stages at 10 Hz: 0.25 s).
    """
    stages = [abs(float(c)) for c in cutoffs if c]
    if not stages:
        return 0.0

    def error(x: float) -> float:
        return math.exp(-x) * sum(x**k / math.factorial(k) for k in range(len(stages)))

    low, high = 0.0, 1.0
    while error(high) > fraction:
        high *= 2.0
    for _ in range(60):  # bisection to double precision
        middle = (low + high) / 2.0
        low, high = (middle, high) if error(middle) > fraction else (low, middle)
    return high / (2.0 * math.pi * min(stages))


# ------------------------------------------------------------------------------------------------
# attributes


@dataclass(frozen=True)
class Attribute:
    """One attribute of a module.

    ``kind`` is ``float``, ``int``, ``bool``, ``select`` (one of ``options``) or ``filter`` (a list
    of at most ``length`` cutoff frequencies within the extreme ``options``, each snapped to the
    nearest option; missing stages are off, as in PyRPL; a single number sets the first stage). A
    float may also list ``options``: the values it snaps to. ``normalize`` maps a validated value to
    what PyRPL reads back; ``wraps`` (phases) replaces the range check by a modulo done by
    ``normalize``.
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
        """Check ``value`` and return what the board reads back after it is set.

        Raises InvalidParams (read-only attribute, wrong type, out of range, not an option).
        """
        if self.readonly:
            raise self._error("is read-only")
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise self._error(f"must be true or false, not {echoed(repr(value))}")
            return value
        if self.kind == "select":
            if not isinstance(value, str) or value not in self.options:
                raise self._error(f"must be one of {list(self.options)}, "
                                  f"not {echoed(repr(value))}")
            return value
        if self.kind == "filter":
            return self._validate_filter(value)
        return self._validate_number(value)

    def _validate_filter(self, value: Any) -> list[float]:
        values = value if isinstance(value, list) else [value]
        if len(values) > self.length:
            raise self._error(f"takes at most {self.length} cutoff frequencies, not {len(values)}")
        numbers = [self._in_range(self._number(v), self.options[0], self.options[-1])
                   for v in values]
        return self._normalized(numbers)

    def _validate_number(self, value: Any) -> Any:
        number = self._number(value)
        if self.wraps is None:
            self._in_range(number, self.minimum, self.maximum)
        if self.kind == "int":
            return int(round(value))
        return self._normalized(number)

    def _normalized(self, value: Any) -> Any:
        if self.normalize is None:
            return value
        try:
            return self.normalize(value)
        except OverflowError:
            raise self._error(f"is too large: {echoed(repr(value))}") from None

    def _number(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._error(f"must be a number, not {echoed(repr(value))}")
        if isinstance(value, int) and abs(value) > 2**63:
            raise self._error(f"is out of range: {echoed(repr(value))}")
        number = float(value)
        if not math.isfinite(number):
            raise self._error(f"must be a finite number, not {echoed(repr(value))}")
        return number

    def _in_range(self, number: float, minimum: Any, maximum: Any) -> float:
        if not minimum <= number <= maximum:
            raise self._error(f"must be within [{minimum:g}, {maximum:g}] {self.unit}".rstrip()
                              + f", not {number!r}")
        return number

    def _error(self, reason: str) -> InvalidParams:
        return InvalidParams(f"attribute '{self.name}' {reason}", {"attribute": self.name,
                                                                   "allowed": self.allowed()})

    def allowed(self) -> Any:
        """What the attribute accepts, as put in the ``allowed`` field of an error."""
        if self.kind in ("select", "filter"):
            return list(self.options)
        if self.kind == "bool":
            return [False, True]
        if self.wraps is not None:
            return {"wraps": self.wraps, "unit": self.unit}
        allowed: dict[str, Any] = {"min": self.minimum, "max": self.maximum, "unit": self.unit}
        if self.options:
            allowed["options"] = list(self.options)
        return allowed

    def describe(self) -> dict[str, Any]:
        """The attribute as listed by ``describe``."""
        entry: dict[str, Any] = {"type": self.kind, "unit": self.unit, "doc": self.doc,
                                 "default": self.default, "readonly": self.readonly}
        if self.kind in ("float", "int"):
            entry.update(min=self.minimum, max=self.maximum, step=self.step)
            if self.wraps is not None:
                entry["wraps"] = self.wraps
        if self.options:
            entry["options"] = list(self.options)
        if self.kind == "filter":
            entry["length"] = self.length
        return entry


@dataclass(frozen=True)
class Module:
    """A module: its kind (scope, asg, pid, iq or sampler; na for the network analyzer, sa for the
    spectrum analyzer) and its attributes."""

    name: str
    kind: str
    doc: str
    attributes: Mapping[str, Attribute]

    def defaults(self) -> dict[str, Any]:
        """The default of every writable attribute."""
        return {name: a.default for name, a in self.attributes.items() if not a.readonly}

    def describe(self) -> dict[str, Any]:
        """The module as listed by ``describe``."""
        return {"kind": self.kind, "doc": self.doc,
                "attributes": {n: a.describe() for n, a in self.attributes.items()}}


# ------------------------------------------------------------------------------------------------
# attribute factories, one per PyRPL register type


def _register(name: str, doc: str, register: FloatRegister, default: float = 0.0,
              unit: str = "") -> Attribute:
    """A float backed by a FloatRegister/GainRegister; its range is PyRPL's limits."""
    return Attribute(name, "float", doc, default, unit, register.minimum, register.maximum,
                     register.increment, normalize=register.read_back)


VOLTS = FloatRegister(bits=14, norm=2**13)
"""A 14-bit voltage register (±1 V full scale): setpoints, limits, thresholds, bus samples."""


def _volts(name: str, doc: str, default: float = 0.0) -> Attribute:
    """A 14-bit voltage register (±1 V full scale)."""
    return _register(name, doc, VOLTS, default, "V")


def _select(name: str, doc: str, options: tuple[str, ...], default: str) -> Attribute:
    return Attribute(name, "select", doc, default, options=options)


def _bool(name: str, doc: str, default: bool = False) -> Attribute:
    return Attribute(name, "bool", doc, default)


def _frequency(name: str, register: FrequencyRegister, doc: str) -> Attribute:
    return Attribute(name, "float", doc, 0.0, "Hz", register.minimum, register.maximum,
                     register.increment, normalize=register.read_back)


def _phase(name: str, register: PhaseRegister, doc: str) -> Attribute:
    return Attribute(name, "float", doc, 0.0, "°", None, None, register.increment, wraps=360.0,
                     normalize=register.read_back)


def _filter(name: str, doc: str, constants: tuple[int, int, int]) -> Attribute:
    register = FilterRegister(*constants)
    return Attribute(name, "filter", doc, [0.0] * register.stages, "Hz",
                     options=tuple(register.valid_frequencies()), length=register.stages,
                     normalize=register.read_back)


# ------------------------------------------------------------------------------------------------
# modules


def _scope_duration(duration: float) -> float:
    """``scope.duration = duration``, read back: PyRPL's duration → sampling_time → decimation.

    The duration goes to the next-higher option, the sampling time to the next-lower one.
    """
    duration = min((d for d in SCOPE_DURATIONS if d >= duration), key=lambda d: abs(d - duration))
    sampling_time = float(duration) / SCOPE_SAMPLES
    sampling_time = min((t for t in SCOPE_SAMPLING_TIMES if t <= sampling_time),
                        key=lambda t: abs(t - sampling_time))
    decimation = float(sampling_time) / 8e-9
    return 8e-9 * float(decimation) * float(SCOPE_SAMPLES)


def _scope() -> Module:
    attributes = [
        _select("input1", "signal recorded on channel 1", DSP_SIGNALS, "in1"),
        _select("input2", "signal recorded on channel 2", DSP_SIGNALS, "in2"),
        Attribute("duration", "float", "trace length (16384 samples); rounded up to one of PyRPL's "
                  "17 durations", SCOPE_DURATIONS[6], "s", 0.0, SCOPE_DURATIONS[-1], None,
                  options=SCOPE_DURATIONS, normalize=_scope_duration),
        _bool("average", "average the samples within each decimation interval (else pick one)",
              True),
        _select("trigger_source", "what starts a trace", SCOPE_TRIGGER_SOURCES, "immediately"),
        # a python-side FloatProperty in PyRPL: read back unquantized
        Attribute("trigger_delay", "float", "time of the trace centre after the trigger (edge "
                  "triggers only)", 0.0, "s", -10.0, SCOPE_TRIGGER_DELAY_MAX, None),
        _volts("threshold", "trigger threshold of the edge triggers"),
        _volts("hysteresis", "trigger hysteresis of the edge triggers", 2.0**-13 * 20),
        Attribute("trace_average", "int", "number of traces averaged into one", 1, "", 1, 2**16,
                  1),
        _bool("ch1_active", "channel 1 is returned", True),
        _bool("ch2_active", "channel 2 is returned", True),
        Attribute("sampling_time", "float", "time between two samples (duration / 16384)",
                  SCOPE_SAMPLING_TIMES[6], "s", SCOPE_SAMPLING_TIMES[0], SCOPE_SAMPLING_TIMES[-1],
                  None, readonly=True),
    ]
    return Module("scope", "scope", "2-channel oscilloscope, 16384 samples per channel",
                  {a.name: a for a in attributes})


ASG_AMPLITUDE = FloatRegister(bits=14, norm=2.0**13, signed=False, max_value=1.0, bitmask=0x3FFF)
"""``Asg.amplitude``: unsigned 14 bits, norm 2**13, limited to 1 V."""
ASG_OFFSET = FloatRegister(bits=14 + 16, norm=2**16 * 2**13, bitmask=0x3FFF << 16)
"""``Asg._offset_masked``: a 30-bit value of which the FPGA keeps bits 29..16 (truncation)."""
ASG_FREQUENCY = FrequencyRegister(30)
"""``Asg.frequency``: the phase step of the 30-bit table pointer (14 bits + 16 fractional)."""
ASG_START_PHASE = PhaseRegister(30)
"""``Asg.start_phase``: the table pointer's start offset."""


def _asg_offset(offset: float) -> float:
    """``asg.offset = offset``, read back: a FloatProperty clamped to ±1 V, then ``ASG_OFFSET``."""
    return ASG_OFFSET.read_back(_clamp(float(offset), -1.0, 1.0))


def _asg(n: int) -> Module:
    attributes = [
        _select("waveform", "waveform", ASG_WAVEFORMS, "sin"),
        _register("amplitude", "amplitude (for noise: rms)", ASG_AMPLITUDE, unit="V"),
        Attribute("offset", "float", "DC offset (truncated down to the 2**-13 V grid)", 0.0, "V",
                  -1.0, 1.0, 2.0**-13, normalize=_asg_offset),
        _frequency("frequency", ASG_FREQUENCY, "frequency"),
        _select("trigger_source", "what starts the output ('immediately': run now; 'off': stop)",
                ASG_TRIGGER_SOURCES, "off"),
        _select("output_direct", "analog output the signal is added to", OUTPUT_DIRECT_OPTIONS,
                "off"),
        _phase("start_phase", ASG_START_PHASE, "phase at the start of each period or burst"),
        Attribute("cycles_per_burst", "int", "periods per burst (0: continuous)", 0, "", 0,
                  2**32 - 1, 1),
    ]
    return Module(f"asg{n}", "asg", f"arbitrary signal generator {n}",
                  {a.name: a for a in attributes})


PID_P = FloatRegister(bits=24, norm=2**12, avoid_zero=True)
"""``Pid.p``: GainRegister, 24 bits, norm 2**PSR with PSR = 12."""
PID_I = FloatRegister(bits=24, norm=2**32 * 2.0 * math.pi * 8e-9, avoid_zero=True)
"""``Pid.i`` (unity-gain frequency, Hz): GainRegister, 24 bits, norm 2**32 × 2π × 8 ns."""
PID_IVAL_STEP = 2.0**-13


def _pid_ival(ival: float) -> float:
    """``pid.ival = ival``, read back: ``round(ival * 2**13)`` on a 16-bit two's complement word.

    4.0 would wrap to -4.0, hence the declared maximum 4 - 2**-13.
    """
    word = int(round(ival * 2**13))
    if word < 0:
        word += 2**16
    word &= 2**16 - 1
    if word >> 15:
        word -= 2**16
    return float(word) / 2**13


def _pid(n: int) -> Module:
    attributes = [
        _select("input", "error-signal input", DSP_SIGNALS, "in1"),
        _select("output_direct", "analog output the control signal is added to",
                OUTPUT_DIRECT_OPTIONS, "off"),
        _volts("setpoint", "setpoint of the input signal"),
        _register("p", "proportional gain (a non-zero gain never rounds to 0)", PID_P),
        _register("i", "integral unity-gain frequency (a non-zero gain never rounds to 0)", PID_I,
                  unit="Hz"),
        _filter("inputfilter", "input filter cutoffs (negative: high-pass, 0: off)", PID_FILTER),
        _volts("max_voltage", "upper limit of the output", 1.0 - 2.0**-13),
        _volts("min_voltage", "lower limit of the output", -1.0),
        _select("pause_gains", "gains frozen while 'paused'", PID_PAUSE_GAINS, "pi"),
        _bool("paused", "freeze the gains selected by 'pause_gains'"),
        _bool("differential_mode_enabled", "use in1 - in2 as input (pid0/pid1 pair)"),
        Attribute("ival", "float", "current value of the integrator (write to preset it)", 0.0,
                  "V", -4.0, 4.0 - PID_IVAL_STEP, PID_IVAL_STEP, normalize=_pid_ival),
    ]
    return Module(f"pid{n}", "pid", f"PID controller {n}", {a.name: a for a in attributes})


IQ_G1 = FloatRegister(bits=18, norm=2**8, avoid_zero=True)
"""``Iq._g1`` and ``_g4``: GainRegister, 18 bits, norm 2**SHIFTBITS with SHIFTBITS = 8."""
IQ_AMPLITUDE = FloatRegister(bits=18, norm=2**17, avoid_zero=True)
"""``Iq.amplitude``: GainRegister, 18 bits, norm 2**17."""
IQ_QUADRATURE_FACTOR = FloatRegister(bits=18, norm=1.0, avoid_zero=True)
"""``Iq.quadrature_factor``: GainRegister, 18 bits, norm 1 (integers)."""
IQ_FREQUENCY = FrequencyRegister(32)
"""``Iq.frequency``: the phase step of the 32-bit oscillator."""
IQ_PHASE = PhaseRegister(32, invert=True)
"""``Iq.phase``: the demodulation phase, inverted on the FPGA."""
IQ_ACBANDWIDTH = FilterRegister(*IQ_INPUT_FILTER)
"""The IQ input filter, of which ``acbandwidth`` is the high-pass side."""


def _iq_gain(gain: float) -> float:
    """``iq.gain = gain``, read back: ``_g1 = _g4 = 8 × gain``, read as ``_g1 / 8``."""
    return IQ_G1.read_back(float(gain) * 2**3) / 2**3


def _iq_acbandwidth(cutoff: float) -> float:
    """``iq.acbandwidth = cutoff``, read back: nearest non-negative option, set as ``inputfilter =
    -cutoff`` and read as ``-inputfilter``."""
    cutoff = min((f for f in IQ_ACBANDWIDTH.valid_frequencies() if f >= 0),
                 key=lambda f: abs(f - cutoff))
    inputfilter = IQ_ACBANDWIDTH.read_back([-float(cutoff)])[0]
    return -inputfilter if inputfilter else 0.0  # PyRPL's off stage is the int 0, never -0.0


def _iq(n: int) -> Module:
    gain_step = IQ_G1.increment / 2**3
    acbandwidths = tuple(f for f in IQ_ACBANDWIDTH.valid_frequencies() if f >= 0)
    attributes = [
        _select("input", "demodulated signal", DSP_SIGNALS, "in1"),
        Attribute("acbandwidth", "float", "high-pass cutoff at the input (0: DC-coupled); snapped "
                  "to the nearest option", 0.0, "Hz", 0.0, acbandwidths[-1], None,
                  options=acbandwidths, normalize=_iq_acbandwidth),
        _frequency("frequency", IQ_FREQUENCY, "demodulation and excitation frequency"),
        _filter("bandwidth", "low-pass cutoffs of the demodulated quadratures",
                IQ2_BANDWIDTH_FILTER if n == 2 else IQ_BANDWIDTH_FILTER),
        _register("quadrature_factor", "gain of the quadrature signal on the DSP bus (an integer; "
                  "a non-zero factor never rounds to 0)", IQ_QUADRATURE_FACTOR, 1.0),
        _select("output_signal", "signal on the DSP bus", IQ_OUTPUT_SIGNALS, "quadrature"),
        Attribute("gain", "float", "gain of the remodulated quadrature output (a non-zero gain "
                  "never rounds to 0)", 0.0, "", IQ_G1.minimum / 2**3, IQ_G1.maximum / 2**3,
                  gain_step, normalize=_iq_gain),
        _register("amplitude", "excitation amplitude (a non-zero amplitude never rounds to 0)",
                  IQ_AMPLITUDE, unit="V"),
        _phase("phase", IQ_PHASE, "demodulation phase"),
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


SA_SPANS = tuple(1.0 / t for t in SCOPE_SAMPLING_TIMES)
"""The spectrum analyzer's spans, the scope sample rates 125 MHz / 2**n (``SpectrumAnalyzer.spans``
of PyRPL 0.9.9), descending."""
SA_WINDOWS = ("blackman", "flattop", "boxcar", "hamming", "gaussian")
SA_UNITS = ("V^2/Hz", "Vrms/sqrt(Hz)", "dBm")


def _sa_span(span: float) -> float:
    """``spectrumanalyzer.span = span``, read back: the nearest span, as ``125 MHz / decimation``."""
    nearest = min(SA_SPANS, key=lambda option: abs(option - span))
    return 1.0 / (8e-9 * round(1.0 / nearest / 8e-9))


def _sa() -> Module:
    attributes = [
        Attribute("span", "float", "analysed band 0 … span/2: the scope's sample rate, one of "
                  "PyRPL's spans (snapped to the nearest)", SA_SPANS[0], "Hz",
                  FPGA_CLOCK / 2**16, FPGA_CLOCK, None, options=SA_SPANS, normalize=_sa_span),
        _select("window", "filter window of the FFT", SA_WINDOWS, "blackman"),
        _select("input1", "signal analysed as channel 1 (the scope's input1)", DSP_SIGNALS, "in1"),
        _select("input2", "signal analysed as channel 2 (the scope's input2)", DSP_SIGNALS, "in2"),
        _select("unit", "unit of the two spectra (the cross-spectrum is in V^2/Hz)", SA_UNITS,
                "Vrms/sqrt(Hz)"),
        Attribute("trace_average", "int", "number of spectra averaged into one", 1, "", 1, 2**16,
                  1),
        Attribute("rbw", "float", "residual bandwidth: the window's noise bandwidth times the "
                  "span (depends on both; read it with 'get')", None, "Hz", None, None, None,
                  readonly=True),
    ]
    return Module("sa", "sa", "spectrum analyzer in baseband (PyRPL's): spectra of two inputs "
                  "and their cross-spectrum from the scope; settings kept by the server",
                  {a.name: a for a in attributes})


MODULES: dict[str, Module] = {
    m.name: m
    for m in [_scope(), _asg(0), _asg(1), _pid(0), _pid(1), _pid(2), _iq(0), _iq(1), _iq(2),
              _sampler()]
}
"""The board's (hardware) modules, which the backends serve."""

NA_POINTS_MAX = 100001
NA_AVERAGES_MAX = 2**32 - 1
"""The IQ averager's registers (``_na_averages``, ``_na_sleepcycles``) are 32-bit counts of cycles:
``average_per_point / rbw`` is at most 34.4 s."""
NA_DEFAULTS = {"start_freq": 1e3, "stop_freq": 1e6, "rbw": 500.0, "amplitude": 0.1,
               "acbandwidth": 50.0}
"""The network analyzer's defaults (PyRPL's) before their quantization."""


def _nearest(options: Sequence[float]) -> Callable[[float], float]:
    """Snap a value to the nearest of ``options`` (the first one on a tie), as PyRPL's
    ``FilterProperty``."""
    return lambda value: min(options, key=lambda option: abs(option - value))


def _na() -> Module:
    """PyRPL's ``NetworkAnalyzer`` (its attributes but the auto-bandwidth and auto-amplitude ones):
    a software instrument of the server that sweeps an IQ module's frequency."""
    rbws = tuple(f for f in FilterRegister(*IQ_BANDWIDTH_FILTER).valid_frequencies() if f > 0)
    acbandwidth = _iq(0).attributes["acbandwidth"]
    frequency = IQ_FREQUENCY
    attributes = [
        _select("iq", "IQ module the sweep runs on (leased by the sweep while it runs)",
                ("iq0", "iq1", "iq2"), "iq2"),
        _select("input", "signal measured", DSP_SIGNALS, "in1"),
        _select("output_direct", "analog output the excitation is added to",
                OUTPUT_DIRECT_OPTIONS, "out1"),
        # not quantized, as PyRPL's FrequencyProperty: the points between them are spaced from
        # these values, then each put on the IQ frequency grid (analysis.network.frequencies)
        Attribute("start_freq", "float", "first frequency of the sweep (each point is put on "
                  "the IQ frequency grid)", NA_DEFAULTS["start_freq"], "Hz",
                  frequency.increment, frequency.maximum),
        Attribute("stop_freq", "float", "last frequency of the sweep (each point is put on the "
                  "IQ frequency grid)", NA_DEFAULTS["stop_freq"], "Hz", frequency.increment,
                  frequency.maximum),
        Attribute("points", "int", "frequencies per sweep", 1001, "", 1, NA_POINTS_MAX, 1),
        Attribute("rbw", "float", "resolution bandwidth: the cutoff of the IQ's first two "
                  "quadrature filter stages; snapped to the nearest option",
                  _nearest(rbws)(NA_DEFAULTS["rbw"]), "Hz", rbws[0], rbws[-1], None,
                  options=rbws, normalize=_nearest(rbws)),
        Attribute("average_per_point", "int", "averaging time of each point, in units of 1/rbw "
                  "(at most 34.4 s: average_per_point / rbw)", 1, "", 1,
                  int(NA_AVERAGES_MAX / FPGA_CLOCK * rbws[-1]), 1),
        Attribute("trace_average", "int", "sweeps averaged into one", 1, "", 1, 2**16, 1),
        Attribute("amplitude", "float", "excitation amplitude (0: none, the data are then not "
                  "divided by it)", IQ_AMPLITUDE.read_back(NA_DEFAULTS["amplitude"]), "V", 0.0,
                  IQ_AMPLITUDE.maximum, IQ_AMPLITUDE.increment, normalize=IQ_AMPLITUDE.read_back),
        Attribute("acbandwidth", "float", "high-pass cutoff at the IQ's input (0: DC-coupled); "
                  "snapped to the nearest option", acbandwidth.validate(NA_DEFAULTS["acbandwidth"]),
                  "Hz", acbandwidth.minimum, acbandwidth.maximum, None, options=acbandwidth.options,
                  normalize=acbandwidth.normalize),
        _bool("logscale", "log-spaced frequencies (else linear)", True),
        Attribute("sweep_time", "float", "the shortest time one sweep takes: (points + 2) x "
                  "(0.5 + average_per_point) / rbw", None, "s", 0.0, None, None, readonly=True),
    ]
    return Module("na", "na", "network analyzer (PyRPL's NetworkAnalyzer), on an IQ module",
                  {a.name: a for a in attributes})


INSTRUMENTS: dict[str, Module] = {m.name: m for m in [_na(), _sa()]}
"""The server's software instruments (PyRPL's software modules): their settings live in the
server, identical for both backends, and they drive the board's modules."""
ALL_MODULES: dict[str, Module] = {**MODULES, **INSTRUMENTS}
"""Every module of the catalogue: what ``describe``, ``get``, ``set`` and ``lease`` know."""


def module(name: Any) -> Module:
    """The module called ``name``. Raises InvalidParams naming the known modules."""
    if not isinstance(name, str):
        raise InvalidParams(f"'module' must be a module name, one of {list(ALL_MODULES)}",
                            {"allowed": list(ALL_MODULES)})
    if name not in ALL_MODULES:
        shown = echoed(name)
        raise InvalidParams(f"unknown module {shown!r}; modules are {list(ALL_MODULES)}",
                            {"module": shown, "allowed": list(ALL_MODULES)})
    return ALL_MODULES[name]


def attribute_names(module_name: str, names: Any = None) -> list[str]:
    """Validate a ``names`` list for ``get`` (None: all attributes). Raises InvalidParams."""
    spec = module(module_name)
    if names is None:
        return list(spec.attributes)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidParams("'names' must be a list of attribute names",
                            {"allowed": list(spec.attributes)})
    for n in names:
        if n not in spec.attributes:
            shown = echoed(n)
            raise InvalidParams(f"module '{module_name}' has no attribute {shown!r}; attributes "
                                f"are {list(spec.attributes)}", {"attribute": shown,
                                                                "allowed": list(spec.attributes)})
    return names


def validate(module_name: str, values: Any) -> dict[str, Any]:
    """Validate a ``set`` request, all or nothing: a new dict of the values PyRPL reads back.

    Raises InvalidParams on the first bad name or value; ``values`` is never modified.
    """
    spec = module(module_name)
    if not isinstance(values, dict) or not values:
        raise InvalidParams("'values' must be a non-empty object of attribute: value",
                            {"allowed": list(spec.attributes)})
    attribute_names(module_name, list(values))
    return {name: spec.attributes[name].validate(value) for name, value in values.items()}


def describe() -> dict[str, Any]:
    """The whole catalogue, as served by ``describe``."""
    return {"modules": {name: m.describe() for name, m in ALL_MODULES.items()},
            "scope": {"samples": SCOPE_SAMPLES, "durations": list(SCOPE_DURATIONS)}}
