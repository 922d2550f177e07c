"""Register words → the catalogue's module settings, with the catalogue's register arithmetic (the
ports of PyRPL's ``FloatRegister``, ``FrequencyRegister``, ``PhaseRegister``, ``FilterRegister``).

Each function reads the registers of one module and returns its settings as
:data:`..hardware.catalogue.MODULES` names them, the form :class:`..hardware.physics.board.Board`
takes. The register layout is PyRPL 0.9.9.1's (``hardware_modules/*.py``) and its FPGA's.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from ..hardware import catalogue
from ..hardware.physics import iir as iir_physics
from ..hardware.physics.asg import WAVEFORMS

logger = logging.getLogger(__name__)

DSP_NUMBERS = {"in1": 10, "in2": 11, "out1": 12, "out2": 13, "iq0": 5, "iq1": 6, "iq2": 7,
               "iq2_2": 14, "pid0": 0, "pid1": 1, "pid2": 2, "asg0": 8, "asg1": 9, "trig": 3,
               "iir": 4, "off": 15}
"""PyRPL's ``dsp.DSP_INPUTS``: the number of each signal on the DSP bus (and of the module whose
registers sit at ``0x40300000 + number * 0x10000``)."""
DSP_NAMES = {number: name for name, number in DSP_NUMBERS.items()}

TABLE_SIZE = 2**14
"""Samples of an ASG waveform table (``Asg.data_length``)."""
TABLE_FULL_SCALE = 2**13 - 1
"""PyRPL writes ``round((2**13 - 1) * y)`` for a waveform ``y`` in [-1, 1] (``Asg.data``)."""
TABLE_SCALE = 2**13
"""A table sample of ``2**13`` would output the amplitude itself (``red_pitaya_asg_ch.v``)."""

IQ_GAIN_SCALE = 2**3
"""``Iq.gain`` is written as ``_g1 = _g4 = gain * 2**3`` (``IqGain``)."""


def signal(select: int) -> str:
    """The DSP bus signal an input-select value names (``off`` for none)."""
    return DSP_NAMES.get(select, "off")


def output_direct(select: int) -> str:
    """The ``output_direct`` option of an output-select value (2 bits: out1, out2)."""
    return catalogue.OUTPUT_DIRECT_OPTIONS[select & 0x3]


def bus_words(volts: np.ndarray) -> np.ndarray:
    """Samples of the 14-bit DSP bus (volts) as register words: ``{18'b0, two's complement}``."""
    bits, norm = catalogue.VOLTS.bits, catalogue.VOLTS.norm
    codes = np.clip(np.round(volts * norm), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return (codes.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint32)


def to_signed(word: int, bits: int) -> int:
    """``word`` as a two's complement number of ``bits`` bits."""
    word &= (1 << bits) - 1
    return word - (1 << bits) if word >> (bits - 1) else word


# ------------------------------------------------------------------------------------------------
# ASG


def _standard_tables() -> dict[str, np.ndarray]:
    """The table PyRPL writes for each deterministic waveform, as signed sample values."""
    x = np.arange(TABLE_SIZE) / TABLE_SIZE
    tables = {name: np.round(TABLE_FULL_SCALE * shape(x)) for name, shape in WAVEFORMS.items()}
    tables["dc"] = np.zeros(TABLE_SIZE)
    return tables


STANDARD_TABLES = _standard_tables()


def waveform(table: np.ndarray, random_phase: bool) -> tuple[str, float]:
    """The catalogue waveform of an ASG table (signed 14-bit samples) and the factor its
    amplitude register is multiplied by to give the catalogue's ``amplitude``.

    The FPGA outputs ``table * amplitude / 2**13``: a standard table (within one LSB of PyRPL's)
    is that waveform with factor ``(2**13 - 1) / 2**13`` (its peak); with PyRPL's random read
    pointer on, the table is noise and the factor its rms / 2**13. Any other table is not modelled
    by the physics: the nearest standard waveform stands in for it (logged).
    """
    if random_phase:
        return "noise", float(np.sqrt(np.mean(table.astype(float) ** 2))) / TABLE_SCALE
    distances = {name: float(np.max(np.abs(table - ref))) for name, ref in STANDARD_TABLES.items()}
    name = min(distances, key=distances.__getitem__)
    if distances[name] > 1.0:
        logger.info("ASG table is not one of PyRPL's waveforms: modelled as %r", name)
    return name, TABLE_FULL_SCALE / TABLE_SCALE


def asg(config: int, amplitude_word: int, step: int, start_offset: int, cycles: int,
        table: np.ndarray, output_select: int) -> dict[str, Any]:
    """Settings of one ASG channel from its 13 configuration bits (``0x0`` bits 12:0 for channel A,
    28:16 for B), its amplitude/offset word, phase step, start offset, burst cycles, table and
    DSP output select.

    The output runs only with ``trigger_source`` 1 (immediately) and neither the ``zero`` nor the
    state-machine ``rst`` bit set: otherwise the decoded ``trigger_source`` is not 'immediately'.
    """
    source = config & 0x7
    trigger = catalogue.ASG_TRIGGER_SOURCES[source] if source < 6 else "off"
    if config >> 7 & 1 or config >> 6 & 1:  # zero (output off) or state machine reset
        trigger = "off"
    name, factor = waveform(table, bool(config >> 12 & 1))
    return {
        "waveform": name,
        "amplitude": catalogue.ASG_AMPLITUDE.value(amplitude_word) * factor,
        "offset": catalogue.ASG_OFFSET.value(amplitude_word),
        "frequency": catalogue.ASG_FREQUENCY.value(step),
        "trigger_source": trigger,
        "output_direct": output_direct(output_select),
        "start_phase": catalogue.ASG_START_PHASE.value(start_offset),
        "cycles_per_burst": cycles,
    }


def cutoffs(register: catalogue.FilterRegister, word: int) -> list[float]:
    """The cutoffs of a filter word, a stage whose shift reaches the filter's width (alpha >= 1,
    which PyRPL never writes) counted as off."""
    return list(_cutoffs(register, word))


@functools.lru_cache(maxsize=1024)
def _cutoffs(register: catalogue.FilterRegister, word: int) -> tuple[float, ...]:
    for stage in range(register.stages):
        byte = word >> 8 * stage & 0xFF
        if byte & (2**register.shiftbits - 1) >= register.maxshift:
            word &= ~(0xFF << 8 * stage)
    return tuple(register.value(word))


# ------------------------------------------------------------------------------------------------
# PID and IQ

PID_FILTER = catalogue.FilterRegister(*catalogue.PID_FILTER)


def pid(input_select: int, output_select: int, running: bool, setpoint: int, p: int, i: int,
        inputfilter: int, minimum: int, maximum: int, pause_bits: int) -> dict[str, Any]:
    """Settings of one PID from its DSP selects, its sync bit (``running``; clear = paused) and
    the words of its registers 0x104 … 0x12C."""
    return {
        "input": signal(input_select),
        "output_direct": output_direct(output_select),
        "setpoint": catalogue.VOLTS.value(setpoint),
        "p": catalogue.PID_P.value(p),
        "i": catalogue.PID_I.value(i),
        "inputfilter": cutoffs(PID_FILTER, inputfilter),
        "max_voltage": catalogue.VOLTS.value(maximum),
        "min_voltage": catalogue.VOLTS.value(minimum),
        "pause_gains": catalogue.PID_PAUSE_GAINS[pause_bits & 0x7],
        "paused": not running,
        "differential_mode_enabled": bool(pause_bits >> 3 & 1),
    }


def ival_volts(word: int) -> float:
    """The integrator preset of a write to a PID's 0x100 (16-bit two's complement, 2**13 per V)."""
    return to_signed(word, 16) / 2**13


def ival_word(volts: float) -> int:
    """What a PID's 0x100 reads for an integrator at ``volts``: its top 16 bits (floored)."""
    return int(np.floor(volts * 2**13)) & 0xFFFF


IQ_QUADRATURE_FILTERS = (catalogue.FilterRegister(*catalogue.IQ_BANDWIDTH_FILTER),) * 2 + (
    catalogue.FilterRegister(*catalogue.IQ2_BANDWIDTH_FILTER),)
"""The quadrature filters of iq0, iq1 (2 stages) and iq2 (4 stages)."""


def iq(n: int, input_select: int, output_select: int, flags: int, phase: int, frequency: int,
       signal_select: int, g1: int, g2: int, g3: int, inputfilter: int, bandwidth: int
       ) -> dict[str, Any]:
    """Settings of iq ``n`` from its DSP selects and the words of its registers 0x100 … 0x124.

    The input filter is modelled as the ``acbandwidth`` high-pass only (a low-pass stage there is
    ignored); ``gain`` is read from g1 (PyRPL writes g1 = g4).
    """
    stage = cutoffs(catalogue.IQ_ACBANDWIDTH, inputfilter)[0]
    outputs = catalogue.IQ_OUTPUT_SIGNALS
    return {
        "input": signal(input_select),
        "acbandwidth": -stage if stage < 0 else 0.0,
        "frequency": catalogue.IQ_FREQUENCY.value(frequency),
        "bandwidth": cutoffs(IQ_QUADRATURE_FILTERS[n], bandwidth),
        "quadrature_factor": catalogue.IQ_QUADRATURE_FACTOR.value(g3),
        "output_signal": outputs[signal_select] if signal_select < len(outputs) else "off",
        "gain": catalogue.IQ_G1.value(g1) / IQ_GAIN_SCALE,
        "amplitude": catalogue.IQ_AMPLITUDE.value(g2),
        "phase": catalogue.IQ_PHASE.value(phase),
        "output_direct": output_direct(output_select),
        "modulation_at_2f": "on" if flags >> 2 & 0x3 == 0x3 else "off",
        "demodulation_at_2f": "on" if flags >> 4 & 0x3 == 0x3 else "off",
    }


# ------------------------------------------------------------------------------------------------
# IIR

IIR_INPUT_FILTER = catalogue.FilterRegister(1, 3, 1000)
"""The IIR's input filter (``FILTERSTAGES``, ``FILTERSHIFTBITS``, ``FILTERMINBW``)."""
IIR_COEFFICIENT_BITS = 32
"""``IIRBITS``: the coefficients' two's complement width (the low word of each pair PyRPL
writes; the high word is ignored)."""
IIR_COEFFICIENT_SHIFT = 29
"""``IIRSHIFT``: a coefficient of 1 is ``2**29``."""
IIR_WORDS_PER_BIQUAD = 8
"""Biquad ``k`` is written at ``0x8000 + 32 k``: b0, b1, -a1, -a2, each a (low, high) pair."""
IIR_ON, IIR_BYPASS = 0x1, 0x2
"""Register 0x104: {shortcut, on}."""


def iir(input_select: int, output_select: int, loops: int, flags: int, inputfilter: int,
        coefficients: np.ndarray) -> iir_physics.IirSettings:
    """The IIR's settings from its DSP selects, its registers 0x100 (loops), 0x104 (on, bypass),
    0x120 (input filter) and its ``STAGES * 8`` coefficient words (PyRPL's
    ``IIR.coefficients`` encoding: ``round(c * 2**29)`` as 32-bit two's complement, the
    denominator's ``a1``, ``a2`` negated)."""

    def coefficient(index: int) -> float:
        return to_signed(int(coefficients[index]), IIR_COEFFICIENT_BITS) / 2**IIR_COEFFICIENT_SHIFT

    biquads = []
    for k in range(iir_physics.STAGES):
        b0, b1, c1, c2 = (coefficient(IIR_WORDS_PER_BIQUAD * k + 2 * i) for i in range(4))
        biquads.append(iir_physics.Biquad(b0, b1, -c1, -c2))
    return iir_physics.IirSettings(
        input=signal(input_select),
        output_direct=output_direct(output_select),
        on=bool(flags & IIR_ON),
        bypass=bool(flags & IIR_BYPASS),
        loops=loops,
        inputfilter=tuple(cutoffs(IIR_INPUT_FILTER, inputfilter)),
        biquads=tuple(biquads),
    )


# ------------------------------------------------------------------------------------------------
# scope


def scope(input1_select: int, input2_select: int, source: int, threshold: int, hysteresis: int,
          decimation: int) -> dict[str, Any]:
    """The scope settings the trigger search needs (catalogue names): the inputs, the trigger
    source (register 0x4), threshold and hysteresis (14-bit volts) and the duration of 16384
    samples at ``decimation``."""
    sources = catalogue.SCOPE_TRIGGER_SOURCES
    return {
        "input1": signal(input1_select),
        "input2": signal(input2_select),
        "trigger_source": sources[source] if source < len(sources) else "off",
        "threshold": catalogue.VOLTS.value(threshold),
        "hysteresis": catalogue.VOLTS.value(hysteresis),
        "duration": catalogue.SCOPE_SAMPLES * max(decimation, 1) / catalogue.FPGA_CLOCK,
    }
