"""A network-analyzer sweep on one of PyRPL's IQ modules, driven through its registers as PyRPL
0.9.9's ``NetworkAnalyzer`` does (``_start_trace_acquisition``, ``_start_point_acquisition``,
``_get_point``), without PyRPL's software module and its Qt event loop; the arithmetic is
:mod:`..analysis.network`'s.

Per point: write the IQ ``frequency`` (the FPGA's averager then waits ``_na_sleepcycles`` and sums
``_na_averages`` cycles), wait the time per point from the return of that write (three times that
for the first point), read the four sum words, write the next point's frequency at once. The
waits are precise (sleep, then a short spin on ``perf_counter``), so a point costs its time per
point plus two register round trips (PyRPL's costs a third, ``iq.amplitude`` read again per
point, its attribute machinery and its Qt scheduling).

Differences from PyRPL's NA, on purpose:

* The IQ's settings are written one by one, not through ``iq.setup()``: its
  ``synchronize_iqs()`` would restart the oscillators of all three IQ modules (a lock running on
  another one would see a phase step); the sweep demodulates its own oscillator, so its phase
  origin does not matter.
* The IQ's settings during the sweep are not saved into PyRPL's config tree (PyRPL's NA owns its
  IQ, which turns the autosave off; here the autosave is turned off for the sweep alone, so the
  IQ's settings stored in a named config stay the user's).
* A point whose sums are still busy is read again until its time per point has passed once more,
  then the sweep fails (PyRPL retries 10 times at once, then raises a bare ``Exception``).

Every register access goes through the caller's board (``PyrplBackend._board``): a link failure
raises there.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import catalogue, errors
from ..analysis import network
from .base import NaSweep

SPIN = 0.002
"""Seconds before a point is due that the wait stops sleeping and spins (a sleep may overshoot
by a scheduler tick; a spin does not)."""
FREQUENCY = 0x108
"""The IQ's frequency register (``Iq.frequency``): written as a word per point, without PyRPL's
attribute machinery (its validation and Qt signal, 0.05 ms a point)."""
NA_DATA = 0x140
"""The four sum words of the IQ's averager: {busy, I[30:0]}, {busy, I[61:31]}, {busy, Q[30:0]},
{busy, Q[61:31]} (``Iq._nadata_total``)."""
_BUSY = 1 << 31
_LOW_BITS = _BUSY - 1


@dataclass
class RunningSweep:
    """A sweep in progress on the PyRPL IQ module ``iq``."""

    iq: Any
    """PyRPL's IQ module."""
    frequencies: np.ndarray
    words: list[int]
    """The frequency register's word of each point."""
    averaging: network.Averaging
    amplitude: float
    """The excitation read back (V)."""
    tf: np.ndarray
    """The analyzer's own response at each frequency (:func:`.network.transfer_function`)."""
    current: int = 0
    """The point being measured (its frequency written)."""
    since: float = 0.0
    """``perf_counter`` when the write that started ``current`` returned."""
    broken: str | None = None
    """Why the sweep cannot go on (the board restarted during it), or None."""

    def due(self, point: int) -> float:
        """``perf_counter`` at which ``point`` (the current one) is measured."""
        factor = network.FIRST_POINT_FACTOR if point == 0 else 1
        return self.since + factor * self.averaging.time_per_point


def start(iq: Any, settings: Mapping[str, Any]) -> tuple[RunningSweep, NaSweep]:
    """Set ``iq`` up for the sweep of the ``na`` values ``settings`` and start its first point
    (``_start_trace_acquisition``): amplitude 0 first, the IQ's settings, the averager's
    registers for the rbw applied, the first frequency, then the amplitude."""
    freqs = network.frequencies(settings["start_freq"], settings["stop_freq"],
                                int(settings["points"]), bool(settings["logscale"]))
    iq._autosave_active = False
    iq.amplitude = 0
    iq.frequency = float(freqs[0])
    iq.bandwidth = [float(settings["rbw"])] * 2
    iq.gain = 0
    iq.phase = 0
    iq.acbandwidth = float(settings["acbandwidth"])
    iq.input = settings["input"]
    iq.output_direct = settings["output_direct"]
    iq.output_signal = "output_direct"
    rbw = float(iq.bandwidth[0])
    averaging = network.averaging(rbw, int(settings["average_per_point"]))
    iq._na_averages = averaging.averages
    iq._na_sleepcycles = averaging.sleepcycles
    inputfilter = float(np.ravel(iq.inputfilter)[0])
    iq.amplitude = float(settings["amplitude"])
    amplitude = float(iq.amplitude)
    iq.on = True
    words = [catalogue.IQ_FREQUENCY.word(f) for f in freqs]
    sweep = RunningSweep(iq, freqs, words, averaging, amplitude,
                         network.transfer_function(freqs, inputfilter))
    iq.frequency = float(freqs[0])  # starts the averager of point 0
    sweep.since = time.perf_counter()
    return sweep, NaSweep(frequencies=freqs, time_per_point=averaging.time_per_point, rbw=rbw)


def measure(sweep: RunningSweep, first: int, count: int) -> np.ndarray:
    """Points ``first`` .. ``first + count - 1`` of ``sweep`` (``first`` the point being
    measured), normalised; the point after them is started. Raises InvalidParams for points out
    of order, DeviceNotReady if the sweep is ``broken``, InternalError if the board's averager
    does not finish."""
    if sweep.broken is not None:
        raise errors.DeviceNotReady(sweep.broken)
    points = len(sweep.frequencies)
    if first != sweep.current or count < 1 or first + count > points:
        raise errors.InvalidParams(
            f"na_points({first}, {count}): the sweep measures point {sweep.current} next, of "
            f"{points}")
    totals = np.empty(count, dtype=complex)
    for i, point in enumerate(range(first, first + count)):
        totals[i] = _read_total(sweep, point)
        if point + 1 < points:
            sweep.iq._write(FREQUENCY, sweep.words[point + 1])
            sweep.since = time.perf_counter()
        sweep.current = point + 1
    return network.normalise(totals, sweep.averaging.averages, sweep.amplitude,
                             sweep.tf[first:first + count])


def stop(iq: Any) -> None:
    """Excitation off on ``iq`` (amplitude 0), its settings saved again by PyRPL from now on."""
    iq.amplitude = 0
    iq._autosave_active = True


def _read_total(sweep: RunningSweep, point: int) -> complex:
    """The averager's sum for ``point``, read once it is due (again while busy, until one more
    time per point has passed)."""
    due = sweep.due(point)
    wait_until(due)
    give_up = due + sweep.averaging.time_per_point
    while True:
        a, b, c, d = (int(w) for w in sweep.iq._reads(NA_DATA, 4))
        if not (a | b | c | d) & _BUSY:
            break
        if time.perf_counter() > give_up:
            raise errors.InternalError(
                f"{sweep.iq.name}: the FPGA's network-analyzer averager was still busy "
                f"{sweep.averaging.time_per_point * 1e3:.3g} ms after point {point} was due")
    i = sweep.iq._to_pyint((a & _LOW_BITS) + ((b & _LOW_BITS) << 31), bitlength=62)
    q = sweep.iq._to_pyint((c & _LOW_BITS) + ((d & _LOW_BITS) << 31), bitlength=62)
    return complex(i, q)


def wait_until(deadline: float) -> None:
    """Return at ``perf_counter() >= deadline``, not much later: sleep until :data:`SPIN` s
    before, then spin (yielding the GIL)."""
    remaining = deadline - time.perf_counter()
    if remaining > SPIN:
        time.sleep(remaining - SPIN)
    while time.perf_counter() < deadline:
        time.sleep(0)
