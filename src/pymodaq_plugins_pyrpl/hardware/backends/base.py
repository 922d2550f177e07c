"""The interface every backend implements (simulator, PyRPL).

Threading contract: the server calls every method of a backend (but ``device_state`` and
``link_info``, which only read) from one and the same dedicated thread (the backend thread), never
concurrently, so a backend needs no locks and PyRPL is driven from the thread that imported it. A backend whose ``needs_own_thread`` is False is called from the
server's event-loop thread instead (still one call at a time); its calls must then take at most a few
milliseconds. Methods must not block for long: a scope acquisition is split into
``scope_arm`` / ``scope_ready`` / ``scope_fetch`` so the server waits for the trace without holding the
backend thread, and other clients' ``get``/``set`` are served meanwhile.

A call whose register accesses fail on the board link raises DeviceNotReady (the state is then
``lost``, or ``taken``) within the access's own deadline: no call blocks on a silent board.

Values passed to ``set`` are already validated and quantized by :mod:`..catalogue`; ``set`` returns the
values read back from the board after applying them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np


@dataclass
class ScopeTrace:
    """One trace: two channels of 16384 samples in volts, on the time axis ``t0 + k * dt``.

    ``t0`` is the time of the first sample relative to the trigger (0 for ``immediately``).
    """

    ch1: np.ndarray
    ch2: np.ndarray
    t0: float
    dt: float


@dataclass
class NaSweep:
    """A network-analyzer sweep as :meth:`Backend.na_start` set it up."""

    frequencies: np.ndarray
    """Hz, on the IQ frequency grid (PyRPL's ``NetworkAnalyzer._get_frequencies``)."""
    time_per_point: float
    """s, ``(na_sleepcycles + na_averages) / 125e6`` (PyRPL's ``_time_per_point``)."""
    rbw: float
    """Hz, the IQ bandwidth applied."""


class Backend(Protocol):
    """A Red Pitaya, real or simulated, seen from the server."""

    name: str
    """``"mock"`` or ``"pyrpl"``."""
    hostname: str
    """Board hostname (``""`` for the simulator, ``"_FAKE_"`` for PyRPL's fake board)."""
    plant: str
    """The simulated board's plant, what connects its outputs to its inputs (canonical spec, see
    ``physics.plants.plant_spec``): the simulator's, or the virtual board's (hostname
    ``virtual``); ``""`` for a real board (or PyRPL's fake one)."""
    ssh_port: int
    board_port: int
    """The ports PyRPL reaches the board at (``sshport``, ``port``; the virtual board's once
    open); 0 for the simulator and PyRPL's fake board."""
    needs_own_thread: bool
    """True if every call must run on the one backend thread (PyRPL); False if the calls are short
    computations the server may run on its event loop (the simulator)."""

    def open(self) -> None:
        """Connect to the board. Raises BackendUnavailable with the reason (PyRPL missing, unreachable)."""

    def close(self) -> None:
        """Disconnect without changing the board's outputs (a running lock keeps running)."""

    def device_state(self) -> tuple[str, str | None]:
        """The state of the opened board and its reason, the sentence the plugins show as is:
        ``("ready", None)`` while it answers; ``("lost", reason)`` while the link is down and
        :meth:`maintain` reconnects by itself; ``("taken", reason)`` when another program took the
        board (the reason says who and that initializing again takes it back: "another program
        took the Red Pitaya at HOST (its client at IP:PORT); Initialize again to take it back");
        ``("error", reason)`` when only the user can help (wrong password, no PyRPL bitfile). The
        one source of the device state the server reports once the backend is open. Only reads:
        the server calls it from its event-loop thread, at any time, while a call may run on the
        backend thread."""

    def link_info(self) -> dict[str, Any]:
        """The link's details the status' ``device`` block shows next to the state, read like
        :meth:`device_state` (only reads, event-loop thread): ``attempts`` (int: recovery attempts
        in the current outage, 0 when ready), ``board_restarted_at`` (ISO 8601 UTC time of the
        last board reboot or FPGA reload after which the server restored the settings, or None)
        and ``other`` (``"ip:port"`` of the other program's client while taken, else None)."""

    def maintain(self) -> float | None:
        """One bounded step (at most 2.5 s) of link upkeep, on the backend thread: a heartbeat
        when ready, one recovery attempt when lost, nothing when taken or in error. Returns the
        seconds until the next step, or None if this backend needs no upkeep (the server then
        never calls it again). Raises nothing: a failure is a state (``device_state``)."""

    def take_board(self) -> None:
        """Take the board back from another program (state taken, or lost): the user asked, so
        this may end the other program's connection. Ready afterwards. Raises BackendUnavailable
        with the reason if the board cannot be taken."""

    def get(self, module: str, names: Sequence[str]) -> dict[str, Any]:
        """Current values of ``names`` (all valid catalogue attributes of ``module``)."""

    def set(self, module: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Apply validated values; return them as read back."""

    def scope_arm(self) -> float:
        """Start one acquisition with the current scope settings; return the seconds to wait at least."""

    def scope_ready(self) -> bool:
        """True once the armed acquisition has a complete trace."""

    def scope_fetch(self) -> ScopeTrace:
        """The completed trace (call only after ``scope_ready()`` returned True)."""

    def scope_stop(self) -> None:
        """Abandon a pending acquisition (timeout, client gone)."""

    def iq_read(self, module: str) -> dict[str, float]:
        """Demodulated quadratures of ``module`` (iq0..iq2): ``{"i": V, "q": V}``, as they are now
        (maybe still settling: see ``iq_settle_remaining``)."""

    def iq_settle_remaining(self, module: str) -> float:
        """Seconds until the quadrature filter of ``module`` (iq0..iq2) has settled after the last
        ``set`` of that module (``catalogue.filter_settle_time`` of its ``bandwidth``); 0 if it
        has. The server waits this long before ``iq_read``."""

    def sampler_read(self) -> dict[str, float]:
        """Instantaneous values of every sampler signal, in volts."""

    def na_start(self, settings: Mapping[str, Any]) -> NaSweep:
        """Set the IQ module ``settings['iq']`` up as PyRPL's
        ``NetworkAnalyzer._start_trace_acquisition`` does (amplitude 0 first; iq setup with
        frequency = first point, bandwidth [rbw, rbw], gain 0, phase 0, acbandwidth, input,
        output_direct, output_signal 'output_direct'; ``_na_averages`` and ``_na_sleepcycles``
        from rbw, average_per_point and sleeptimes 0.5; first frequency written; amplitude on).
        The first point is under way when it returns. ``settings``: the ``na`` module's values
        (validated by the catalogue)."""

    def na_points(self, first: int, count: int) -> tuple[np.ndarray, float]:
        """Measure points ``first`` .. ``first + count - 1`` of the started sweep, as PyRPL's NA
        does per point (write the frequency, let time_per_point pass — 3x for point 0 — read the
        averaged I+jQ), normalised as PyRPL's NA (x 2**-24 x 4 / amplitude / tf(f), tf: the IQ's
        input filter and 3-cycle delay, ``NetworkAnalyzer.transfer_function``). Returns
        (values c16 [count], wait): the values are valid once ``wait`` more seconds have passed
        (PyRPL: 0, the backend thread waited itself; the simulator: the simulated time those
        points take from now). The server calls it with chunks of at most ~50 ms of points."""

    def na_stop(self) -> None:
        """Output amplitude 0 on the sweep's IQ module (idempotent; also after a failure)."""
