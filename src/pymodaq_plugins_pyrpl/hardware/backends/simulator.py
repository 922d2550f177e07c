"""A virtual Red Pitaya for plugin development and demos: the backend of the server's ``--mock``.

The backend keeps the state of the modules, checks names and values against the catalogue, and
runs the time base (simulated time is a clock's); the signals come from :mod:`..physics`.
Imports only the standard library, numpy, the catalogue and the physics.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import catalogue
from ..analysis import network
from ..errors import InternalError, InvalidParams
from ..physics.board import Board
from ..physics.pid import Recorder
from ..physics.plants import parse_plant, plant_spec
from ..physics.signals import LSB, Grid
from ..physics.triggers import TRIGGER_HORIZON, find_trigger
from .base import NaSweep, ScopeTrace

logger = logging.getLogger(__name__)

SAMPLES = catalogue.SCOPE_SAMPLES


@dataclass
class _Acquisition:
    """A pending scope acquisition (settings snapshot at arm time)."""

    inputs: tuple[str, str]
    duration: float
    t0: float
    start: float | None
    """Simulated time of the first sample; None if the trigger never comes."""
    recorder: Recorder | None

    @property
    def end(self) -> float:
        return math.inf if self.start is None else self.start + self.duration


@dataclass
class _NaRun:
    """A started network-analyzer sweep."""

    module: str
    frequencies: np.ndarray
    averaging: network.Averaging
    amplitude: float
    tf: np.ndarray
    """The analyzer's own response the data are divided by (``network.transfer_function``)."""
    cursor: float
    """Simulated time of the next point's frequency write (once the previous point is read)."""


class SimulatorBackend:
    """A virtual Red Pitaya with physically meaningful signals (the server's ``--mock`` backend).

    Parameters
    ----------
    seed:
        Seed of the numpy Generator behind all noise: the same seed and the same sequence of calls
        and clock readings give identical results. None: unpredictable.
    plant:
        What connects the outputs to the inputs, ``name[:key=value,...]``:

        - ``"loopback"`` (default): cables out1→in1 and out2→in2 with ``delay=16e-9`` s
          (2 samples), a first-order low-pass ``bandwidth=60e6`` Hz and ADC ``noise=1e-3`` V rms.
        - ``"resonator"``: a damped resonator in place of each cable,
          ``H(f) = gain / (1 - (f/f0)**2 + j f/(f0 q))``, defaults ``f0=100e3`` Hz, ``q=30``,
          ``gain=1``, ``noise=1e-3`` V rms. Its DC gain is ``gain``, its peak gain ``gain * q`` at
          f0 and its linewidth (FWHM of the power) f0/q; excite it with less than 1/(gain q) V to
          stay within the ±1 V input range. Example: ``"resonator:f0=250e3,q=100,gain=0.5"``.

        An unknown plant or parameter, or a value that is not a number, raises ValueError.
    clock:
        Monotonic seconds. Simulated time is the clock minus its value at construction; inject a
        fake clock in tests. Acquisitions take clock time: a trace is ready once the clock has
        passed its last sample, and PID integrators evolve with the clock.

    The model (physics, conventions, approximations): :mod:`..physics`. ``scope_arm`` returns
    the seconds until the trace is complete; ``trace_average`` is the server's business. The
    network analyzer's points take simulated time too: ``na_points`` returns them with the
    seconds until their last one is read.
    """

    name = "mock"
    hostname = ""
    ssh_port = 0
    board_port = 0
    needs_own_thread = False

    def __init__(self, seed: int | None = None, plant: str = "loopback",
                 clock: Callable[[], float] = time.monotonic) -> None:
        board_plant = parse_plant(plant)
        self.plant = plant_spec(plant)
        """The plant's canonical spec (:func:`plant_spec`)."""
        self._clock = clock
        self._epoch = clock()
        self._values: dict[str, dict[str, Any]] = {
            name: {k: list(v) if isinstance(v, list) else v for k, v in spec.defaults().items()}
            for name, spec in catalogue.MODULES.items()}
        self._board = Board(board_plant, self._values, seed)
        self._iq_changed = [-math.inf] * 3
        self._acquisition: _Acquisition | None = None
        self._na: _NaRun | None = None
        self._na_module: str | None = None
        """The IQ module of the last sweep started: its amplitude is what na_stop turns off."""

    # -- Backend interface ----------------------------------------------------------------------

    def open(self) -> None:
        """Nothing to connect."""
        logger.info("virtual Red Pitaya ready (plant %r)", self.plant)

    def close(self) -> None:
        """Nothing to disconnect."""

    def device_state(self) -> tuple[str, str | None]:
        """Always ready: the simulated board never stops answering."""
        return "ready", None

    def link_info(self) -> dict[str, Any]:
        """No link: no attempts, never restarted, never taken."""
        return {"attempts": 0, "board_restarted_at": None, "other": None}

    def maintain(self) -> None:
        """No link to keep up: no upkeep (None)."""

    def take_board(self) -> None:
        """Nothing to take back: no other program can use the simulated board."""

    def get(self, module: str, names: Sequence[str]) -> dict[str, Any]:
        """Current values; ``ival`` and the sampler signals evolve with time."""
        names = catalogue.attribute_names(module, list(names))
        if module == "sampler":
            values = self.sampler_read()
            return {n: values[n] for n in names}
        self._sync()
        return self._read(module, names)

    def _read(self, module: str, names: Sequence[str]) -> dict[str, Any]:
        """The values of ``names`` of ``module`` (not the sampler) at the last sync."""
        state = self._values[module]
        result: dict[str, Any] = {}
        for n in names:
            if module == "scope" and n == "sampling_time":
                result[n] = state["duration"] / SAMPLES
            elif module.startswith("pid") and n == "ival":
                result[n] = math.floor(self._board.pids.ival[int(module[3])] / LSB) * LSB
            else:
                result[n] = list(state[n]) if isinstance(state[n], list) else state[n]
        return result

    def set(self, module: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Apply quantized values at the current time; return them as ``get`` reads them."""
        spec = catalogue.module(module)
        catalogue.attribute_names(module, list(values))
        for n in values:
            if spec.attributes[n].readonly:
                raise InvalidParams(f"attribute '{n}' of '{module}' is read-only", {"attribute": n})
        now = self._sync()
        if module.startswith("iq"):
            self._iq_changed[int(module[2])] = now
        self._board.change(module, values, now)
        acq = self._acquisition
        if module != "scope" and acq is not None and acq.recorder is not None:
            acq.recorder.add(now, self._board.pids.outputs())
        return self._read(module, list(values))

    def scope_arm(self) -> float:
        """Find the trigger for the current settings; return the seconds until the trace is done."""
        now = self._sync()
        cfg = self._values["scope"]
        duration = cfg["duration"]
        trigger = find_trigger(self._board, cfg, now)
        t0 = 0.0 if cfg["trigger_source"] == "immediately" else cfg["trigger_delay"] - duration / 2
        start = None if trigger is None else trigger + t0
        recorder = None if start is None else Recorder(start, start + duration)
        self._acquisition = _Acquisition((cfg["input1"], cfg["input2"]), duration, t0, start,
                                         recorder)
        if recorder is None:
            logger.debug("scope armed on %s: no trigger within %g s", cfg["trigger_source"],
                         TRIGGER_HORIZON)
            return duration
        recorder.add(now, self._board.pids.outputs())
        return max(0.0, self._acquisition.end - now)

    def scope_ready(self) -> bool:
        now = self._sync()
        return self._acquisition is not None and now >= self._acquisition.end - 1e-9

    def scope_fetch(self) -> ScopeTrace:
        """The completed trace; raises InternalError if none is armed or it is not complete yet."""
        acq = self._acquisition
        if acq is None:
            raise InternalError("scope_fetch() without a pending acquisition: call scope_arm() "
                                "first")
        if not self.scope_ready():
            raise InternalError("the scope trace is not complete yet: wait until scope_ready() is "
                                "True")
        assert acq.start is not None and acq.recorder is not None
        self._acquisition = None
        dt = acq.duration / SAMPLES
        averaged = round(dt * catalogue.FPGA_CLOCK) if self._values["scope"]["average"] else 1
        ch1, ch2 = self._board.window(acq.inputs, Grid.uniform(acq.start, dt, SAMPLES),
                                      acq.recorder, averaged)
        return ScopeTrace(ch1, ch2, acq.t0, dt)

    def scope_stop(self) -> None:
        self._acquisition = None

    def iq_read(self, module: str) -> dict[str, float]:
        """``{"i": V, "q": V}``: the input component at the demodulation frequency (see class)."""
        if module not in ("iq0", "iq1", "iq2"):
            raise InvalidParams(f"iq_read needs iq0, iq1 or iq2, not {module!r}",
                                {"module": module})
        now = self._sync()
        n = int(module[2])
        z = self._board.read_iq(n, now)
        return {"i": z.real, "q": z.imag}

    def iq_settle_remaining(self, module: str) -> float:
        """Seconds until the quadrature filter of ``module`` has settled after the module's last
        ``set`` (``catalogue.filter_settle_time`` of its ``bandwidth``), 0 if it has."""
        if module not in ("iq0", "iq1", "iq2"):
            raise InvalidParams(f"iq_settle_remaining needs iq0, iq1 or iq2, not {module!r}",
                                {"module": module})
        n = int(module[2])
        settled = self._iq_changed[n] + catalogue.filter_settle_time(self._board.cutoffs(n))
        return max(0.0, settled - (self._clock() - self._epoch))

    def sampler_read(self) -> dict[str, float]:
        """Values of catalogue.SAMPLER_SIGNALS now (PyRPL's sampler scaling, 1 / (2**13 - 1))."""
        self._sync()
        values = self._board.sample(catalogue.SAMPLER_SIGNALS)
        return {s: v * 8192.0 / 8191.0 for s, v in values.items()}

    def na_start(self, settings: Mapping[str, Any]) -> NaSweep:
        """Set the IQ module ``settings['iq']`` up as PyRPL's network analyzer does, through
        :meth:`set` (see ``Backend.na_start``): PyRPL's amplitude 0, set-up and amplitude happen
        at one simulated instant here, so they are one change. The first point starts now."""
        module = settings["iq"]
        if module not in ("iq0", "iq1", "iq2"):
            raise InvalidParams(f"na_start needs iq0, iq1 or iq2, not {module!r}",
                                {"module": module})
        self._na_module = module
        frequencies = network.frequencies(settings["start_freq"], settings["stop_freq"],
                                          settings["points"], settings["logscale"])
        iq = catalogue.MODULES[module].attributes
        applied = self.set(module, {
            "frequency": catalogue.IQ_FREQUENCY.read_back(float(frequencies[0])),
            "bandwidth": iq["bandwidth"].validate([settings["rbw"], settings["rbw"]]),
            "gain": 0.0, "phase": 0.0,
            "acbandwidth": iq["acbandwidth"].validate(settings["acbandwidth"]),
            "input": settings["input"], "output_direct": settings["output_direct"],
            "output_signal": "output_direct",
            "amplitude": iq["amplitude"].validate(settings["amplitude"])})
        rbw = applied["bandwidth"][0]
        averaging = network.averaging(rbw, settings["average_per_point"])
        self._na = _NaRun(module, frequencies, averaging, applied["amplitude"],
                          network.transfer_function(frequencies, -applied["acbandwidth"]),
                          self._sync())
        return NaSweep(frequencies, averaging.time_per_point, rbw)

    def na_points(self, first: int, count: int) -> tuple[np.ndarray, float]:
        """Points ``first`` .. ``first + count - 1`` of the started sweep, each the mean of the IQ
        module's I + jQ over its averaging window (``Board.average_iq``) at its simulated time:
        a point's frequency is written when the previous point is read (the first point of this
        call: now, or when the previous call's points are read if that is later), its average
        starts ``sleepcycles`` later and it is read ``averages`` cycles after that (3 x the time
        per point after the write for point 0). The IQ module's ``frequency`` reads the last
        point's from now on. Returns the normalised values and the seconds until the last one is
        read. Raises InternalError without a started sweep, InvalidParams for points outside it."""
        run = self._na
        if run is None:
            raise InternalError("na_points() without a started sweep: call na_start() first")
        if not (0 <= first and count >= 1 and first + count <= len(run.frequencies)):
            raise InvalidParams(f"points {first}..{first + count - 1} are not in the sweep of "
                                f"{len(run.frequencies)} points", {"first": first, "count": count})
        now = self._sync()
        n = int(run.module[2])
        sleep = run.averaging.sleepcycles / catalogue.FPGA_CLOCK
        duration = run.averaging.averages / catalogue.FPGA_CLOCK
        per_point = run.averaging.time_per_point
        write = max(run.cursor, now)
        means = np.empty(count, dtype=complex)
        for i, k in enumerate(range(first, first + count)):
            means[i] = self._board.average_iq(n, write + sleep, duration,
                                              float(run.frequencies[k]))
            write += per_point * (network.FIRST_POINT_FACTOR if k == 0 else 1)
        run.cursor = write
        last = catalogue.IQ_FREQUENCY.read_back(float(run.frequencies[first + count - 1]))
        self.set(run.module, {"frequency": last})
        totals = means * run.averaging.averages / network.RESCALE
        values = network.normalise(totals, run.averaging.averages, run.amplitude,
                                   run.tf[first:first + count])
        return values, max(0.0, write - (self._clock() - self._epoch))

    def na_stop(self) -> None:
        """Amplitude 0 on the IQ module of the last sweep started (none: nothing to do); the sweep
        ends."""
        self._na = None
        if self._na_module is not None:
            self.set(self._na_module, {"amplitude": 0.0})

    # -- time ----------------------------------------------------------------------------------

    def _sync(self) -> float:
        """Advance the PID integrators to the current simulated time, and return it."""
        now = self._clock() - self._epoch
        acq = self._acquisition
        self._board.pids.advance(now, acq.recorder if acq is not None else None)
        return now
