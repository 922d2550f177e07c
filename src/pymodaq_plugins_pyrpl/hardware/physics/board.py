"""The board's DSP as one model: the module settings wired together (routing, the plant between
the outputs and the inputs, IQ demodulation, PID loops, transients), evaluated at any time.

A :class:`Board` holds no clock: every call says the (simulated) time it is about. Whoever owns the
settings (the simulator backend, a register-level board) calls :meth:`Board.change` at each change
and evaluates signals through :meth:`Board.trace` and :meth:`Board.read_iq`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import catalogue
from . import iir, iq, pid
from .asg import Asg
from .filters import delay, filter_response, steady_state
from .pid import LoopModel, PidLoops, Recorder
from .plants import OutSources, Plant
from .signals import LSB, TWO_PI, Context, Grid, Phase, Tone, gaussian, quantize
from .transients import Ring, Settling

logger = logging.getLogger(__name__)

CHANNEL = {"in1": "out1", "in2": "out2"}
"""The analog output each input sees through the plant."""
ROUTES = {"out1": ("out1", "both"), "out2": ("out2", "both")}
"""The ``output_direct`` options that route a module to each analog output."""


class Board:
    """The physics of one board for the module settings ``values`` (catalogue units, one dict
    per module of ``catalogue.MODULES``, updated in place by :meth:`change`).

    ``seed`` seeds every random draw (the same seed and the same sequence of calls and times give
    identical results; None: unpredictable). ``plant`` connects out1/out2 to in1/in2. The model,
    its conventions and its approximations: see the package docstring.
    """

    def __init__(self, plant: Plant, values: dict[str, dict[str, Any]], seed: int | None) -> None:
        self.plant = plant
        self._pole = plant.pole()
        self.rng = np.random.default_rng(seed)
        """The generator behind the noise of traces, samples and IQ readings."""
        self.values = values
        self.asgs = [Asg(values[f"asg{n}"]) for n in range(2)]
        self._iq_phases = [Phase() for _ in range(3)]
        self._settling: dict[int, Settling] = {}  # the IQ modules set so far: their filters
        self._rings: dict[str, Ring] = {}  # in1/in2 → the plant's free oscillation
        self._open_pids: set[int] = set()  # the PIDs whose AC response is being evaluated
        self.pids = PidLoops(self._loop_model, 3, 0.0, np.random.default_rng(
            np.random.SeedSequence(seed).spawn(1)[0]))
        self.iir = iir.IirSettings()
        """The IIR filter (not a catalogue module: set by :meth:`set_iir`)."""
        self._iir_overflow = 0  # the IIR's overflow flags raised before the current settings
        self._demodulations: dict[tuple[Any, ...], tuple[list[Tone], list[Tone]]] = {}
        """The IQ modules' demodulated tones (:meth:`_demodulated`) for the current settings, by
        (module, depth, PID outputs, PIDs evaluated open loop, filtered); emptied at every
        change."""

    # -- settings ---------------------------------------------------------------------------------

    def change(self, module: str, values: Mapping[str, Any], t: float) -> None:
        """Apply the new (valid, quantized) ``values`` of ``module`` at time ``t``, with their side
        effects: ASG and IQ phases continue or restart, a PID integrator is preset, the PID loop
        model is rebuilt, and (for any module but the scope) the plant's free oscillation and the
        IQ filters take up the change. ``t`` must not precede the PID loops' time."""
        self._iir_overflow = self.iir_overflow()  # what the IIR's input raised until now
        if module.startswith("iq"):  # in use from now on: its filter's state is followed
            n = int(module[2])
            self._settling.setdefault(n, Settling(t, self.cutoffs(n), None))
        before = self._transients_before(t) if module != "scope" else None
        state = self.values[module]
        old = dict(state)
        state.update({k: list(v) if isinstance(v, list) else v for k, v in values.items()})
        self._apply(module, old, values, t)
        self._demodulations.clear()
        if before is not None:
            self._transients_after(t, *before)

    def restart_iq(self, n: int, t: float) -> None:
        """Restart iq ``n``'s oscillator at phase 0 at time ``t`` (the FPGA's synchronization of
        the IQ modules, its sync bit set again), with the transients of that phase step."""
        before = self._transients_before(t)
        self._iq_phases[n] = Phase(self.values[f"iq{n}"]["frequency"], t, 0.0)
        self._demodulations.clear()
        if self._pids_active():
            self.pids.invalidate()
        self._transients_after(t, *before)

    def set_iir(self, settings: iir.IirSettings, t: float) -> None:
        """The IIR filter has ``settings`` from time ``t`` on, with the transients of the step
        (as :meth:`change`); its overflow flags clear while it is off."""
        before = self._transients_before(t)
        self._iir_overflow = self.iir_overflow() if settings.on else 0
        self.iir = settings
        self._demodulations.clear()
        self.pids.invalidate()
        self._transients_after(t, *before)

    def iir_overflow(self) -> int:
        """The IIR's overflow register: the flags raised since it was switched on."""
        if not self.iir.on:
            return 0
        return self._iir_overflow | iir.overflow(
            self.iir, self._tones(self.iir.input, 0.0, self.pids.outputs(), True, 1))

    def _apply(self, module: str, old: Mapping[str, Any], values: Mapping[str, Any],
               now: float) -> None:
        """Side effects of the new ``values`` of ``module`` (previously ``old``) at time ``now``."""
        if module == "scope":
            return
        state, n = self.values[module], int(module[-1])
        if module.startswith("asg"):
            self.asgs[n].update(old, now)
        elif module.startswith("iq") and state["frequency"] != old["frequency"]:
            self._iq_phases[n] = self._iq_phases[n].retuned(now, state["frequency"])
        elif module.startswith("pid") and "ival" in values:
            self.pids.preset(n, values["ival"])
        if module.startswith("pid") or self._pids_active():
            self.pids.invalidate()  # else the loop model has no gain and depends on PIDs only

    def _pids_active(self) -> bool:
        """True if some PID has a gain (its loop model depends on the other modules)."""
        return any(any(pid.gains(self.values[f"pid{k}"])) for k in range(3))

    # -- readings ---------------------------------------------------------------------------------

    def read_iq(self, n: int, t: float) -> complex:
        """``I + jQ`` of iq ``n`` at ``t`` (V): the steady state of its input's tones, its
        transients and its ADC noise (see the package docstring). The PID loops must be at ``t``."""
        difference, total = self._demodulated(n, self.pids.outputs(), 0)
        z = sum((tone.phasor(t) for tone in difference), 0j)
        z += sum((tone.phasor(t) for tone in total if tone.static), 0j)
        z += self._iq_transient(n, t)
        sigma = self._iq_noise(n)
        if sigma:
            z += complex(*self.rng.normal(0.0, sigma, 2))
        return z

    def average_iq(self, n: int, start: float, duration: float,
                   frequency: float | None = None) -> complex:
        """The mean of iq ``n``'s ``I + jQ`` over ``duration`` seconds from ``start`` (V), as the
        network analyzer's averager sums it: the steady state of its input's tones (each
        difference tone averaged over the window, :func:`iq.window_mean`) and the ADC noise
        averaged over the window (:func:`iq.averaged_noise`); no transients, as
        :meth:`read_iq` without the sum-frequency ripple. With ``frequency``: as if the module's
        frequency were that from ``start`` on (phase-continuous), the board left unchanged. The
        PID loops must be at ``start`` or before."""
        key = f"iq{n}"
        if frequency is not None and frequency != self.values[key]["frequency"]:
            saved = self.values[key]["frequency"], self._iq_phases[n]
            self.values[key]["frequency"] = frequency
            self._iq_phases[n] = saved[1].retuned(start, frequency)
            self._demodulations.clear()
            try:
                return self.average_iq(n, start, duration)
            finally:
                self.values[key]["frequency"], self._iq_phases[n] = saved
                self._demodulations.clear()
        difference, total = self._demodulated(n, self.pids.outputs(), 0)
        z = sum((tone.phasor(start) * iq.window_mean(tone.freq, duration)
                 for tone in difference), 0j)
        z += sum((tone.phasor(start) for tone in total if tone.static), 0j)
        if self.values[key]["input"] in CHANNEL:
            sigma = iq.averaged_noise(duration, self.plant.noise)
            z += complex(*self.rng.normal(0.0, sigma, 2))
        return z

    def context(self, rng: np.random.Generator | None) -> Context:
        """Evaluation with the PID outputs held at their current values."""
        u = self.pids.outputs()
        return Context(u, lambda k, grid: np.full(grid.n, u[k]), rng)

    def sample(self, signals: Sequence[str]) -> dict[str, float]:
        """The bus signals ``signals`` (14-bit volts, with noise) at the PID loops' time, as the
        sampler reads them (one instant)."""
        ctx = self.context(self.rng)
        grid = Grid(self.pids.t, np.zeros(1))
        return {s: float(self.trace(s, grid, ctx)[0]) for s in signals}

    def window(self, inputs: tuple[str, str], grid: Grid, recorder: Recorder | None,
               averaged: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The scope's two channels recording ``inputs`` on ``grid`` (14-bit volts, with noise),
        the PID outputs taken from ``recorder`` (None: held at their current values), each sample
        the average of ``averaged`` FPGA-clock samples as far as the noise goes (Context). The PID
        loops must have advanced past the grid's end."""
        u = self.pids.outputs()
        if recorder is None:
            ctx = Context(u, lambda k, g: np.full(g.n, u[k]), self.rng, averaged)
        else:
            ctx = Context(u, lambda k, g: recorder.pid(k, g, u), self.rng, averaged)
        ch1 = self.trace(inputs[0], grid, ctx)
        ch2 = ch1.copy() if inputs[1] == inputs[0] else self.trace(inputs[1], grid, ctx)
        return ch1, ch2

    # -- signals in time --------------------------------------------------------------------------

    def trace(self, signal: str, grid: Grid, ctx: Context) -> np.ndarray:
        """The DSP bus signal ``signal`` on ``grid`` (14-bit volts)."""
        if signal in CHANNEL:
            analog = self.plant.trace(self._out_sources(CHANNEL[signal], ctx), grid, ctx)
            ring = self._rings.get(signal)
            if ring is not None and not ring.over(grid.start):
                analog = analog + ring.evaluate(grid)
            if ctx.rng is not None:
                analog = analog + ctx.noise(self.plant.noise, grid.n)
            return quantize(analog)
        if signal in ROUTES:
            return self._out_sources(signal, ctx).total(grid)
        if signal.startswith("asg"):
            return quantize(self.asgs[int(signal[3])].evaluate(grid, ctx))
        if signal.startswith("pid"):
            k = int(signal[3])
            ac = sum((t.evaluate(grid) for t in self._pid_ac_tones(k, 0.0, ctx.u, 0)),
                     np.zeros(grid.n))
            return quantize(ctx.pid(k, grid) + ac)
        if signal.startswith("iq"):
            tones = self._bus_tones(signal, ctx.u, 0)
            values = sum((t.evaluate(grid) for t in tones), np.zeros(grid.n))
            sigma = self._bus_noise(signal)
            if ctx.rng is not None and sigma:
                values = values + gaussian(ctx.rng, sigma, grid.n)
            return quantize(values)
        if signal == "iir":
            tones = self._iir_tones(0.0, ctx.u, True, 0)
            return quantize(sum((t.evaluate(grid) for t in tones), np.zeros(grid.n)))
        return np.zeros(grid.n)

    def _bus_noise(self, signal: str) -> float:
        """rms ADC noise on the bus signal ``iqN`` / ``iq2_2`` (only quadratures of in1/in2)."""
        v = self.values[f"iq{signal[2]}"]
        if signal != "iq2_2" and v["output_signal"] not in ("quadrature", "quadrature_hf"):
            return 0.0
        return self._iq_noise(int(signal[2])) * abs(v["quadrature_factor"])

    def _routed(self, out: str, kind: str, count: int) -> list[int]:
        return [n for n in range(count)
                if self.values[f"{kind}{n}"]["output_direct"] in ROUTES[out]]

    def _out_sources(self, out: str, ctx: Context) -> OutSources:
        asgs = [self.asgs[n] for n in self._routed(out, "asg", 2)]
        pids = self._routed(out, "pid", 3)
        tones = [t for n in self._routed(out, "iq", 3)
                 for t in self._iq_output_tones(n, ctx.u, True, 0)]
        tones += [t for k in pids for t in self._pid_ac_tones(k, 0.0, ctx.u, 0)]
        if self.iir.output_direct in ROUTES[out]:
            tones += self._iir_tones(0.0, ctx.u, True, 0)

        def total(grid: Grid) -> np.ndarray:
            x = np.zeros(grid.n)
            for asg in asgs:
                x += asg.evaluate(grid, ctx)
            for k in pids:
                x += ctx.pid(k, grid)
            for tone in tones:
                x += tone.evaluate(grid)
            return quantize(x)

        return OutSources(asgs, pids, tones, total)

    # -- signals as tones -------------------------------------------------------------------------

    def _tones(self, signal: str, near: float, u: np.ndarray, bandpass: bool,
               depth: int) -> list[Tone]:
        """``signal`` as tones (those that matter around frequency ``near``), for PID outputs ``u``.

        ``bandpass`` False leaves out IQ band-pass outputs (they are evaluated open loop).
        """
        if depth > 8:
            return []
        if signal in CHANNEL:
            return [t.scaled(self.plant.transfer(t.freq))
                    for t in self._tones(CHANNEL[signal], near, u, bandpass, depth + 1)]
        if signal in ROUTES:
            return ([t for n in self._routed(signal, "asg", 2) for t in self.asgs[n].tones(near)]
                    + [t for k in self._routed(signal, "pid", 3)
                       for t in (Tone(complex(u[k])), *self._pid_ac_tones(k, near, u, depth + 1))]
                    + [t for n in self._routed(signal, "iq", 3)
                       for t in self._iq_output_tones(n, u, bandpass, depth + 1)]
                    + (self._iir_tones(near, u, bandpass, depth + 1)
                       if self.iir.output_direct in ROUTES[signal] else []))
        if signal.startswith("asg"):
            return self.asgs[int(signal[3])].tones(near)
        if signal.startswith("pid"):
            k = int(signal[3])
            return [Tone(complex(u[k])), *self._pid_ac_tones(k, near, u, depth + 1)]
        if signal.startswith("iq"):
            return self._bus_tones(signal, u, depth + 1)
        if signal == "iir":
            return self._iir_tones(near, u, bandpass, depth + 1)
        return []

    def _pid_ac_tones(self, k: int, near: float, u: np.ndarray, depth: int) -> list[Tone]:
        """pid ``k``'s linear response to the AC tones of its error (its filtered input, minus
        the other one's in differential mode, :func:`pid.response`), open loop: while it is
        evaluated, its own output counts with its DC level only."""
        cfg = self.values[f"pid{k}"]
        if k in self._open_pids or not any(pid.gains(cfg)):
            return []
        sources = [(cfg["input"], cfg["inputfilter"], 1.0)]
        if k in (0, 1) and cfg["differential_mode_enabled"]:
            other = self.values[f"pid{1 - k}"]
            sources.append((other["input"], other["inputfilter"], -1.0))
        tones = []
        self._open_pids.add(k)
        try:
            for signal, cutoffs, sign in sources:
                for tone in self._tones(signal, near, u, False, depth):
                    if not tone.static:
                        tones.append(tone.scaled(sign * pid.input_response(cutoffs, tone.freq)
                                                 * pid.response(cfg, tone.freq)))
        finally:
            self._open_pids.discard(k)
        return tones

    def _bus_tones(self, signal: str, u: np.ndarray, depth: int) -> list[Tone]:
        """Tones of ``iqN`` (per ``output_signal``) or ``iq2_2`` on the DSP bus."""
        n = int(signal[2])
        v = self.values[f"iq{n}"]
        if signal == "iq2_2" or v["output_signal"] in ("quadrature", "quadrature_hf"):
            difference, total = self._demodulated(n, u, depth)
            k = v["quadrature_factor"] * (-1j if signal == "iq2_2" else 1.0)
            return [t.scaled(k * delay(iq.QUADRATURE_OUTPUT_CYCLES, t.freq))
                    for t in difference + total]
        if v["output_signal"] == "output_direct":
            return self._iq_output_tones(n, u, True, depth)
        return []

    def _demodulator(self, n: int) -> tuple[Phase, int, float]:
        """(oscillator, harmonic, frequency) of the demodulation of iq ``n``."""
        return iq.demodulator(self.values[f"iq{n}"], self._iq_phases[n])

    def _demodulated(self, n: int, u: np.ndarray, depth: int, filtered: bool = True
                     ) -> tuple[list[Tone], list[Tone]]:
        """``I + jQ`` of iq ``n`` as complex exponentials: (difference, sum-frequency) terms
        (:func:`iq.demodulate`, :func:`iq.filtered`); the quadrature filter's input if not
        ``filtered``. Computed once per settings (``_demodulations``)."""
        v = self.values[f"iq{n}"]
        key = (n, depth, u.tobytes(), frozenset(self._open_pids), filtered)
        terms = self._demodulations.get(key)
        if terms is None:
            if filtered:
                terms = iq.filtered(v, *self._demodulated(n, u, depth, False))
            else:
                _, _, f_d = self._demodulator(n)
                inputs = self._tones(v["input"], f_d, u, True, depth + 1)
                terms = iq.demodulate(v, self._iq_phases[n], inputs)
            self._demodulations[key] = terms
        return terms

    def _iq_output_tones(self, n: int, u: np.ndarray, bandpass: bool, depth: int) -> list[Tone]:
        """Excitation and (if ``bandpass`` and ``gain`` != 0) band-pass output of iq ``n``."""
        v = self.values[f"iq{n}"]
        tones = iq.excitation(v, self._iq_phases[n])
        if bandpass and v["gain"]:
            _, _, f_d = self._demodulator(n)
            tones += iq.bandpass(v, f_d, self._tones(v["input"], f_d, u, False, depth + 1))
        return tones

    def _iir_tones(self, near: float, u: np.ndarray, bandpass: bool, depth: int) -> list[Tone]:
        """The IIR filter's output: its input's tones (as :meth:`_tones`) through
        :func:`iir.response`."""
        if not (self.iir.on or self.iir.bypass):
            return []
        inputs = self._tones(self.iir.input, near, u, bandpass, depth + 1)
        tones = [t.scaled(iir.response(self.iir, t.freq)) for t in inputs]
        return [t for t in tones if abs(t.amp) > 1e-12]

    def _iq_noise(self, n: int) -> float:
        """rms ADC noise on each quadrature of iq ``n`` (0 unless it demodulates in1 or in2)."""
        v = self.values[f"iq{n}"]
        if v["input"] not in CHANNEL:
            return 0.0
        return iq.quadrature_noise(v["bandwidth"], self.plant.noise)

    # -- transients -------------------------------------------------------------------------------

    def cutoffs(self, n: int) -> tuple[float, ...]:
        return tuple(float(c) for c in self.values[f"iq{n}"]["bandwidth"])

    def _transients_before(self, t: float) -> tuple[dict[str, tuple[float, float]],
                                                    dict[int, np.ndarray]]:
        """Just before a change at ``t``: the inputs' value and slope (for a plant with a free
        oscillation) and the state of every IQ filter in use."""
        if self._pole is None and not self._settling:
            return {}, {}
        u = self.pids.outputs()
        inputs = {}
        if self._pole is not None:
            for channel in CHANNEL:
                y, dy = self._steady_input(channel, u, t)
                ring = self._rings.get(channel)
                if ring is not None:
                    y, dy = y + ring.at(t).real, dy + (ring.s * ring.at(t)).real
                inputs[channel] = (y, dy)
        states = {n: self._filter_state(n, u, t) + settling.homogeneous(t)
                  for n, settling in self._settling.items()}
        return inputs, states

    def _transients_after(self, t: float, inputs: dict[str, tuple[float, float]],
                          states: dict[int, np.ndarray]) -> None:
        """Just after a change at ``t``: the free oscillation of the plant and the deviation of
        every IQ filter from its new steady state take up the differences (value and slope of the
        inputs, filter states), so that both stay continuous."""
        if not inputs and not states:
            return
        u = self.pids.outputs()
        s = self._pole
        for channel, (y, dy) in inputs.items():
            y_new, dy_new = self._steady_input(channel, u, t)
            jump, slope = y - y_new, dy - dy_new
            c = complex(jump, (s.real * jump - slope) / s.imag)
            self._rings[channel] = Ring(t, c, s)
        for n, state in states.items():
            deviation = state - self._filter_state(n, u, t)
            self._settling[n] = Settling(t, self.cutoffs(n), deviation)

    def _steady_input(self, channel: str, u: np.ndarray, t: float) -> tuple[float, float]:
        """Value and slope at ``t`` of the steady-state part of the input ``channel`` (the tones
        that matter near the plant's resonance)."""
        near = abs(self._pole) / TWO_PI if self._pole is not None else 0.0
        y = dy = 0.0
        for tone in self._tones(channel, near, u, True, 0):
            value = tone.phasor(t)
            y += value.real
            dy += (TWO_PI * 1j * tone.freq * value).real
        return y, dy

    def _filter_inputs(self, n: int, u: np.ndarray, t: float) -> list[tuple[complex, complex]]:
        """The input of iq ``n``'s quadrature filter at ``t`` as terms ``U exp(lambda (t' - t))``:
        (U, lambda) for each input tone and for the plant's free oscillation."""
        difference, total = self._demodulated(n, u, 0, filtered=False)
        terms = [(tone.phasor(t), TWO_PI * 1j * tone.freq) for tone in difference]
        terms += [(tone.phasor(t), 0j) for tone in total if tone.static]
        ring = self._ring_seen(n, t)
        if ring is not None:
            terms.append(ring)
        return terms

    def _ring_seen(self, n: int, t: float) -> tuple[complex, complex] | None:
        """The plant's free oscillation on iq ``n``'s input, demodulated: (U, lambda) at ``t``."""
        v = self.values[f"iq{n}"]
        ring = self._rings.get(v["input"])
        if ring is None or ring.over(t):
            return None
        return iq.demodulated_ring(v, self._iq_phases[n], ring, t)

    def _filter_state(self, n: int, u: np.ndarray, t: float) -> np.ndarray:
        """The steady-state (particular) state of iq ``n``'s quadrature filter at ``t``."""
        return steady_state(self.cutoffs(n), self._filter_inputs(n, u, t))

    def _iq_transient(self, n: int, t: float) -> complex:
        """What iq ``n`` reads at ``t`` beyond its steady state (:func:`iq.transient`)."""
        return iq.transient(self.cutoffs(n), self._ring_seen(n, t), self._settling.get(n), t)

    def iq_transient_mean(self, n: int, start: float, duration: float) -> complex:
        """The mean over ``duration`` seconds from ``start`` of what iq ``n`` reads beyond its
        steady state (:func:`iq.transient_mean`): the part of the network analyzer's average
        that :meth:`average_iq` leaves out, the filter still settling from the previous point
        and the plant still ringing. Of a window in which the settings changed, the part
        before the last change counts as no transient (its transients are not kept)."""
        settling = self._settling.get(n)
        begin = start if settling is None else max(start, settling.t)
        end = start + duration
        if begin >= end:
            return 0j
        return (end - begin) / duration * iq.transient_mean(
            self.cutoffs(n), self._ring_seen(n, begin), settling, begin, end - begin)

    # -- PID loop model ---------------------------------------------------------------------------

    def _dc(self, signal: str, u: np.ndarray) -> float:
        """Static (DC) part of ``signal`` for PID outputs ``u``, before any clipping."""
        now = self.pids.t
        tones = self._tones(signal, 0.0, u, True, 0)
        return sum((t.phasor(now).real for t in tones if t.static), 0.0)

    def _loop_model(self) -> LoopModel:
        """Linearize every PID's error in the PID outputs (the plant and wiring are linear)."""
        cfg = [self.values[f"pid{k}"] for k in range(3)]
        n = len(cfg)
        p, k = (np.array(column) for column in zip(*(pid.gains(c) for c in cfg)))
        lo = np.array([max(c["min_voltage"], -1.0) for c in cfg])
        hi = np.array([min(c["max_voltage"], 1.0 - LSB) for c in cfg])
        inputs = np.zeros((n, n))  # d input / d u
        offset = np.zeros(n)  # error at u = 0
        noise = np.zeros((n, len(CHANNEL)))  # white noise of each error per ADC input
        if p.any() or k.any():
            # the input filters pass DC (low-pass stages) or block it (any high-pass stage)
            dc = np.array([filter_response(c["inputfilter"], 0.0).real for c in cfg])
            x0 = dc * np.array([self._dc(c["input"], np.zeros(n)) for c in cfg])
            for j in range(n):
                inputs[:, j] = dc * np.array([self._dc(c["input"], np.eye(n)[j])
                                              for c in cfg]) - x0
            error, offset = inputs.copy(), x0 - np.array([c["setpoint"] for c in cfg])
            adc = self.plant.noise / math.sqrt(catalogue.FPGA_CLOCK)
            direct = np.array([[adc * d * (c["input"] == ch) for ch in CHANNEL]
                               for c, d in zip(cfg, dc)])
            noise = direct.copy()
            for a in (0, 1):
                if cfg[a]["differential_mode_enabled"]:
                    error[a], offset[a] = inputs[a] - inputs[1 - a], x0[a] - x0[1 - a]
                    noise[a] = direct[a] - direct[1 - a]
            inputs = error
            self._warn_loop_gain(p, inputs)
        return LoopModel(inputs, offset, p, k, lo, hi, noise)

    @staticmethod
    def _warn_loop_gain(p: np.ndarray, E: np.ndarray) -> None:
        gain = float(np.max(np.abs(np.linalg.eigvals(p[:, None] * E))))
        if gain >= 1.0:
            logger.warning("PID proportional loop gain %.3g >= 1 through the plant: a board would "
                           "oscillate or latch; the simulator solves the loop statically", gain)
