"""The PyRPL backend: a real Red Pitaya driven through PyRPL 0.9.9 (``--hostname HOST``, at PyRPL's
ssh and monitor ports or others: ``--ssh-port``, ``--board-port``), PyRPL's own fake board
(``--hostname _FAKE_``), or a virtual board (``--hostname virtual``): a ``pymodaq-pyrpl
virtual-board`` child process started by :meth:`PyrplBackend.open` on free ports of 127.0.0.1 and
stopped by :meth:`PyrplBackend.close`, which PyRPL drives over real sockets like a board.

Threading ("Pattern A" of the PyRPL notes): the server calls every method, ``open()`` included, from one
dedicated backend thread. ``open()`` gives that thread its own asyncio event loop, then imports PyRPL
there, so PyRPL's ``QApplication``, its qasync loop and every register access live in that one thread.
Nothing here pumps Qt events and nothing calls PyRPL's ``single()``: the scope uses PyRPL's Qt-free
low-level path (``_start_trace_acquisition`` / ``curve_ready`` / ``_get_trace``). Qt requires the main
thread on macOS, so there this backend is untested.

This module imports PyRPL lazily, inside :meth:`PyrplBackend.open`, so importing it has no side effects.

Behaviour worth knowing:

* **Reads never write.** PyRPL's ``SelectRegister`` rewrites the register when its python-side cache
  disagrees with the hardware, so merely reading ``asg0.trigger_source`` on a fresh PyRPL instance
  would stop a running ASG. ``open()`` primes every select cache from the hardware without writing,
  and :meth:`PyrplBackend.get` reads select registers through the same no-write path.
* **asg ``waveform`` cannot be read back**: the FPGA only holds the 16384-sample table. It is PyRPL's
  python-side value: ``'sin'`` until it is set through this backend (or re-applied from a named
  PyRPL config), whatever the board is actually playing.
* **asg ``trigger_source``**: PyRPL runs the full ``asg.setup()`` when it is set (output off, state
  machine reset, waveform table rewritten from the python-side ``waveform``, output on), which glitches
  the output. This backend lets PyRPL do that once per ASG and session, the first time the ASG is
  started or switched to another trigger (a value other than ``'off'`` and than the current one), so
  the ASG is in a known state with the table that ``waveform`` reports; otherwise (``'off'``, the
  value already active, later changes) it writes the trigger register alone, so re-sending the
  settings of a running ASG does not disturb it. Setting ``waveform`` rewrites the table directly.
* **Scope ``trace_average``** is stored on PyRPL's python-side property and not used by this backend:
  the server repeats arm/fetch and averages. ``ch1_active``/``ch2_active`` are PyRPL's python-side
  display flags; both channels are always returned. ``duration`` sets the decimation. Setting
  ``duration``, ``trigger_source`` or ``trigger_delay`` runs PyRPL's ``scope.setup()``, which cancels
  PyRPL-side acquisitions (the server re-arms after a settings change).
* **Filters** (``inputfilter``, ``bandwidth``) are returned as the list PyRPL reports, one cutoff per
  FPGA filter stage. In fake mode the stage counts and cutoffs are garbage (PyRPL's ``DummyClient``).
* **Named PyRPL configs** (``--config NAME``): ``<user dir>/config/NAME.yml`` is created if
  missing and every change is saved there, but its stored settings are **not** written to the FPGA
  at start-up (the write gate, below): the board keeps what it runs, the plugins apply theirs when
  they initialize. Python-side values (asg ``waveform``) come from the file; readable registers
  are read live. PyRPL defers a save that follows another within 3 s to a Qt timer, which never
  runs here: :meth:`PyrplBackend.set` writes such a pending save before it returns, so every
  accepted change is on disk (a write costs a YAML dump and an fsync). The file holds the board's
  ssh password: it is kept owner-only (0600), in an owner-only config folder (0700), and the
  default user dir is created 0700. A file that is not valid YAML (or not a mapping) is refused at
  ``open()`` naming the file. ``config=""`` (the default) keeps PyRPL's settings in memory only.
* **Network analyzer** (:meth:`PyrplBackend.na_start`, ``na_points``, ``na_stop``): PyRPL's
  ``NetworkAnalyzer`` is not loaded (it would own iq2, and its sweep runs in PyRPL's Qt event
  loop); the sweep drives the IQ's averager registers itself as that analyzer does
  (:mod:`.pyrpl_na`), on the backend thread, and agrees with it on a virtual board
  (``tests/hardware/backends/test_pyrpl_na.py``). The sweep's IQ settings are not settings applied
  through :meth:`PyrplBackend.set`: after an FPGA reset the restore applies the user's settings of
  that IQ (and the sweep under way fails), not the sweep's; the IQ keeps the sweep's settings,
  excitation off, when it ends, as after PyRPL's analyzer.
* **Fake board** (``_FAKE_``): scope traces are random noise, ``curve_ready`` is always true, the
  sampler and IQ accumulators return constants, filter cutoffs are garbage. They are not hidden.

Board link (:mod:`.board_link`): PyRPL's ``MonitorClient`` retries a failed access 5 times with
``killall monitor_server`` in between, spins forever on a connection the board closed, and returns
``None`` instead of raising. So while ``Pyrpl()`` runs, PyRPL's ``startclient`` is given a
:class:`~.board_link.link.RegisterLink` instead: every register access has a deadline
(:mod:`.board_link.client`), a failure raises, and PyRPL's restart path never runs. Its write gate
stays closed until :meth:`PyrplBackend.open` returns, so a start-up (a restart of the server, a
named config) writes no register: the outputs keep running. :meth:`PyrplBackend.close` runs no
``killall`` (it closes the connection: a ``monitor_server`` ends with its client).

The link's states (``ready``, ``lost``, ``taken``, ``error``), its upkeep and its recovery are
kept by :class:`~.board_link.keeper.BoardLinkKeeper`; :meth:`PyrplBackend.device_state`,
:meth:`PyrplBackend.maintain`, :meth:`PyrplBackend.take_board` and :meth:`PyrplBackend.link_info`
are its. While the link is not ``ready``, every call raises :class:`~..errors.DeviceNotReady` at
once. After an FPGA reset the settings last applied through :meth:`PyrplBackend.set` are applied
again (ASGs, IQs, PIDs, scope), and ``board_restarted_at`` (:meth:`PyrplBackend.link_info`) says
when.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .. import board_address, catalogue, errors
from ..physics.plants import plant_spec
from . import pyrpl_na
from .base import NaSweep, ScopeTrace
from .board_link import probe
from .board_link.errors import LinkError
from .board_link.keeper import BoardLinkKeeper
from .exception_text import one_line

if TYPE_CHECKING:
    from ...virtual_board.process import VirtualBoardProcess

logger = logging.getLogger(__name__)

IQ_AVERAGE_CYCLES = 2**20
"""FPGA clock cycles (8 ns) the IQ accumulators average over in :meth:`PyrplBackend.iq_read`: 8.39 ms."""

IQ_VOLTS_PER_LSB = 2.0**-22
"""Volts of input amplitude per unit of the averaged IQ accumulators.

The demodulator multiplies the 14-bit input (1 V = 2**13) by a 17-bit sine (amplitude 2**16 - 1) and
keeps product bits [29:6] as a 24-bit quadrature, so an input of amplitude A volts averages to
A * 2**22 * cos(...). PyRPL's network analyzer uses the same factor (``rescale = 2**-LPFBITS * 4``).
"""

_SCOPE_DATA_LENGTH = catalogue.SCOPE_SAMPLES
_IQ_SLOWEST_SETTLE = catalogue.filter_settle_time(
    [min(abs(f) for f in catalogue.filter_options(catalogue.IQ2_BANDWIDTH_FILTER) if f)]
    * catalogue.IQ2_BANDWIDTH_FILTER[0])
"""Settle time of the slowest quadrature filter (iq2's four stages at 1.19 Hz: 2.1 s)."""


VIRTUAL_SSH_DELAY = 0.02
"""PyRPL's ``delay`` for the virtual board (hostname ``virtual``), in s. PyRPL paces each ssh
question by 3 × ``delay`` (PyRPL's default 0.05 s, for a board's console) and takes what arrives
within 11 × ``delay`` as the answer; the virtual board answers a line in one packet, within a
millisecond on an idle machine. Every other board keeps PyRPL's default (or its config's)."""


def default_user_dir() -> Path:
    """The private ``PYRPL_USER_DIR`` used when neither the caller nor the environment names one.

    A folder in the per-user cache directory, so PyRPL never creates ``~/pyrpl_user_dir``.
    """
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pymodaq_plugins_pyrpl" / "pyrpl_user_dir"


class PyrplBackend:
    """A Red Pitaya through PyRPL. See the module docstring for the threading rules and caveats."""

    name = "pyrpl"
    needs_own_thread = True

    def __init__(self, hostname: str, config: str = "",
                 user_dir: str | os.PathLike[str] | None = None, *,
                 ssh_port: int = board_address.DEFAULT_SSH_PORT,
                 board_port: int = board_address.DEFAULT_BOARD_PORT,
                 plant: str = "loopback", take_over: bool = False) -> None:
        """``ssh_port`` and ``board_port`` are PyRPL's ``sshport`` and ``port`` for a network
        board; ``plant`` is the virtual board's (hostname ``virtual``, see
        :mod:`..board_address`). ``take_over``: start even if another program's client is on
        the board's ``monitor_server`` (PyRPL's start-up then ends it); by default :meth:`open`
        refuses. Raises ValueError if ``plant`` is not a plant."""
        self.hostname = hostname
        self.config = config
        self.user_dir = user_dir
        self.virtual = hostname.strip() == board_address.VIRTUAL
        self.take_over = take_over
        self.plant = plant_spec(plant) if self.virtual else ""
        """The virtual board's plant (canonical spec); "" for any other board."""
        network = board_address.has_ports(hostname.strip())
        self.ssh_port = ssh_port if network else 0
        self.board_port = board_port if network else 0
        """The ports PyRPL reaches the board at (the virtual board's once open); 0 for PyRPL's
        fake board."""
        self._virtual_board: VirtualBoardProcess | None = None
        self._pyrpl: Any = None
        self._rp: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link_keeper = BoardLinkKeeper(hostname, restore_settings=self._restore_settings,
                                            link_lost=self._forget_armed_trace)
        """The link to the board: its state, upkeep and recovery."""
        self._applied: dict[str, dict[str, Any]] = {}
        """Per module, the values last applied through :meth:`set` (as read back), restored
        after the FPGA was reset."""
        self._open_error: str | None = None
        self._closed = False
        self._asg_started: set[str] = set()
        self._armed: tuple[float, float] | None = None
        self._iq_changed: dict[str, float] = {}  # IQ module → monotonic time of its last set
        self._na: pyrpl_na.RunningSweep | None = None
        """The network-analyzer sweep started by :meth:`na_start`, until :meth:`na_stop`."""
        self._na_stop_pending: str | None = None
        """The IQ module whose excitation :meth:`na_stop` could not turn off (the link was
        down): turned off at the next access to a ready board."""

    # -------------------------------------------------------------------------------------------------
    # lifecycle

    def open(self) -> None:
        """Import PyRPL in this thread and connect to the board. Raises BackendUnavailable."""
        if self._rp is not None:
            return
        if self._closed:
            raise errors.BackendUnavailable("this PyRPL backend was closed; PyRPL cannot be "
                                            "restarted in the same process")
        host = (self.hostname or "").strip()
        if not host:
            # PyRPL would open its hostname-selector dialog (even with gui=False) and hang.
            raise errors.BackendUnavailable(
                "no Red Pitaya hostname given: start the server with --hostname HOST (the board's "
                "IP address or name), --hostname _FAKE_ for PyRPL's simulated board, or --mock for "
                "the built-in simulator")
        self._prepare_environment()
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        started = time.perf_counter()
        if self.virtual:
            failure = self._open_virtual_board()
        else:
            look = (self._link_keeper.look_in_background(host, self.ssh_port, self.board_port)
                    if self.ssh_port else None)
            failure = self._import_pyrpl() or self._connect(host, look)
        if failure is not None:
            # Nothing of PyRPL may outlive this thread (see close()): the exception and its frames
            # are gone by now, so collect the half-built objects here, then drop the QApplication.
            self.close()
            self._open_error = failure
            raise errors.BackendUnavailable(failure)
        self._link_keeper.started(self._rp.parameters)
        logger.info("PyRPL %s connected to %s in %.2f s", sys.modules["pyrpl"].__version__, host,
                    time.perf_counter() - started)

    def _open_virtual_board(self) -> str | None:
        """Start the virtual board this backend connects to (hostname ``virtual``), importing PyRPL
        while its process starts, take its ports and connect; the reason of a failure, or None."""
        from ...virtual_board.process import VirtualBoardError, launch_virtual_board

        try:
            starting = launch_virtual_board(self.plant)
        except VirtualBoardError as exc:
            return f"cannot start the virtual board: {exc}"
        failure = self._import_pyrpl()
        if failure is not None:
            starting.stop()
            return failure
        try:
            self._virtual_board = starting.ready()
        except VirtualBoardError as exc:
            return f"cannot start the virtual board: {exc}"
        self.ssh_port, self.board_port = self._virtual_board.ssh_port, self._virtual_board.port
        return self._connect("127.0.0.1", self._link_keeper.look_in_background(
            "127.0.0.1", self.ssh_port, self.board_port))

    @staticmethod
    def _import_pyrpl() -> str | None:
        """Import PyRPL; the reason of a failure, or None."""
        try:
            import pyrpl  # noqa: F401
            from pyrpl import pyrpl as pyrpl_main  # noqa: F401
        except Exception as exc:
            logger.debug("import pyrpl failed", exc_info=True)
            return (f"PyRPL cannot be imported in {sys.executable} ({type(exc).__name__}: "
                    f"{one_line(exc)}). Install it into this Python environment with the "
                    "install-pyrpl script of pymodaq_plugins_pyrpl (see its README), or use --mock "
                    "for the simulator")
        return None

    def _connect(self, host: str, look: Future[probe.BoardLook] | None) -> str | None:
        """Build ``Pyrpl`` (PyRPL imported by :meth:`_import_pyrpl`), once ``look`` (the board
        looked at over ssh, None for PyRPL's fake board) shows nobody else on it; the reason of
        a failure, or None."""
        import pyrpl
        from pyrpl import pyrpl as pyrpl_main

        # No network analyzer / spectrum analyzer / lockbox: they would own iq2 and pid2.
        pyrpl_main.default_pyrpl_config["modules"] = []
        kept_delay = None
        if self.config:
            stored, failure = _read_config_file(self.config)
            if failure is not None:
                return failure
            kept_delay = _ssh_delay(stored) if self.virtual else None
        options: dict[str, Any] = (
            {"sshport": self.ssh_port, "port": self.board_port} if self.ssh_port else {})
        if self.virtual:
            options["delay"] = VIRTUAL_SSH_DELAY
        if look is not None:
            failure = self._link_keeper.refusal_to_start(host, self.board_port, look,
                                                         self.take_over)
            if failure is not None:
                return failure
        try:
            with self._link_keeper.link_for_pyrpl():
                p = pyrpl.Pyrpl(config=self.config or "", hostname=host, gui=False,
                                loglevel="error", **options)
        except Exception as exc:
            logger.debug("Pyrpl() failed", exc_info=True)
            return (f"cannot connect to the Red Pitaya at {host!r}"
                    f"{board_address.describe_ports(self.ssh_port, self.board_port)} "
                    f"({_connect_reason(exc)}). "
                    "Check the hostname, that the board is on the network "
                    "(ping it, open it in a web browser), and the ssh user/password (PyRPL's "
                    "defaults root/root, or the redpitaya section of the PyRPL config); only one "
                    "PyRPL client may use a board at a time")
        self._pyrpl, self._rp = p, p.rp
        if self.virtual and p.c._filename is not None:
            # PyRPL stores every connection setting in the named config: keep its delay for the
            # boards the config is used with later
            p.c.redpitaya.delay = kept_delay
            try:
                self._write_pending_config()
            except errors.InternalError as exc:
                return str(exc)
        if p.c._filename is not None:
            _make_private(p.c._filename)
        modules = list(getattr(p.c.pyrpl, "modules", []) or [])
        if modules:
            logger.warning("PyRPL config %r loads software modules %s: they may own iq2/pid2",
                           self.config, modules)
        try:
            self._prime_select_caches(p.rp)
            if p.rp.scope.running_state != "stopped":  # a named config may have started the scope
                p.rp.scope.stop()  # its writes stay behind the closed write gate
        except LinkError as exc:
            return f"the Red Pitaya at {host!r} stopped answering right after connecting ({exc})"
        return None

    def close(self) -> None:
        """Disconnect without touching the outputs (a running lock keeps running). Idempotent.

        Does what ``Pyrpl._clear()`` does but its ``killall monitor_server`` (which would end
        another program's server when the board was taken): stops PyRPL's timers, writes a named
        config file, closes the data connection (a ``monitor_server`` ends with its client) and
        the ssh session; the FPGA keeps its configuration. Then PyRPL's QApplication is destroyed
        in this thread: Qt crashes the interpreter at exit (SIGSEGV) when the application of a
        finished thread is destroyed from the main thread. So a closed backend cannot be reopened
        in the same process, and the server must call ``close()`` before it exits.
        """
        self._closed = True
        p, self._pyrpl, self._rp = self._pyrpl, None, None
        if p is not None:
            try:
                for module in p.modules:
                    module._clear()
                p.c._write_to_file()
            except Exception as exc:  # a dead link must not prevent the server from stopping
                logger.warning("PyRPL did not shut down cleanly: %s", one_line(exc))
        self._link_keeper.close()
        if p is not None:
            _close_ssh(p.rp)
            del p
        virtual_board, self._virtual_board = self._virtual_board, None
        if virtual_board is not None:
            virtual_board.stop()
        if self._loop is not None:  # open() ran in this thread
            gc.collect()  # PyRPL's Qt objects go in this thread, before their QApplication
            _destroy_qt_application()
            with contextlib.suppress(Exception):
                asyncio.set_event_loop(None)
                self._loop.close()
            self._loop = None

    def device_state(self) -> tuple[str, str | None]:
        """Once open: ``("ready", None)`` while the board answers, ``("lost", reason)`` while the
        link is down (:meth:`maintain` reconnects), ``("taken", reason)`` when another program
        took the board, ``("error", reason)`` when the user must act; ``("error", reason)`` also
        before :meth:`open` succeeded and after :meth:`close`."""
        if self._open_error is not None:
            return "error", self._open_error
        if self._closed:
            return "error", "closed"
        if self._rp is None:
            return "error", "not connected"
        return self._link_keeper.state

    def maintain(self) -> float | None:
        """One bounded step (≤ 2.5 s) of link upkeep, on the backend thread
        (:meth:`.BoardLinkKeeper.maintain`). Returns seconds until the next step; None when there
        is no link to keep (PyRPL's fake board, a closed backend)."""
        if self._rp is None or self._closed:
            return None
        return self._link_keeper.maintain()

    def take_board(self) -> None:
        """Take the board back when ``taken`` or ``lost``, because the user asked
        (:meth:`.BoardLinkKeeper.take_board`: ``killall``, our ``monitor_server``, connect).
        Nothing when ``ready`` or on PyRPL's fake board. Raises BackendUnavailable with the reason
        (not open, ``error``, ssh or the board failing)."""
        if self._closed or self._rp is None:
            raise errors.BackendUnavailable("the PyRPL backend is not open")
        self._link_keeper.take_board()

    def link_info(self) -> dict[str, Any]:
        """:meth:`.BoardLinkKeeper.link_info`: ``attempts``, ``board_restarted_at``, ``other``.
        Only reads (any thread)."""
        return self._link_keeper.link_info()

    # -------------------------------------------------------------------------------------------------
    # settings

    def get(self, module: str, names: Sequence[str]) -> dict[str, Any]:
        spec = catalogue.module(module)
        with self._board() as rp:
            m = getattr(rp, module)
            return {name: self._read(m, spec, name) for name in names}

    def set(self, module: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``values``; with a named config, they are in its file when this returns.

        Raises InternalError (the values applied nonetheless) if the config file cannot be written.
        """
        spec = catalogue.module(module)
        with self._board() as rp:
            m = getattr(rp, module)
            for name, value in values.items():  # refuse before writing anything
                self._check_writable(m, spec, name, value)
            for name in self._write_order(spec, values):
                self._write(m, spec, name, values[name])
            if spec.kind == "iq":
                self._iq_changed[module] = time.monotonic()
            applied = {name: self._read(m, spec, name) for name in values}
        self._applied.setdefault(module, {}).update(applied)
        self._write_pending_config()
        return applied

    # -------------------------------------------------------------------------------------------------
    # scope

    def scope_arm(self) -> float:
        """Arm one trace (PyRPL's ``_start_trace_acquisition``); return the minimum wait in seconds.

        With an edge trigger the FPGA ignores triggers until the pre-trigger part of the buffer is
        full, then records ``round(trigger_delay / sampling_time) + 8192`` samples after the trigger,
        so a trace takes at least ``max(duration, that many samples)`` (PyRPL waits ``duration``).
        """
        with self._board() as rp:
            s = rp.scope
            s._start_trace_acquisition()
            dt = float(s.sampling_time)
            duration = dt * _SCOPE_DATA_LENGTH
            wait = duration
            if s.trigger_source != "immediately":
                delay = int(np.round(s.trigger_delay / dt)) + _SCOPE_DATA_LENGTH // 2
                wait = max(duration, min(max(delay, 1), 2**32 - 1) * dt)
            self._armed = (float(s.times[0]), dt)
            return wait

    def scope_ready(self) -> bool:
        with self._board() as rp:
            return bool(rp.scope.curve_ready())

    def scope_fetch(self) -> ScopeTrace:
        """The trace (PyRPL's ``_get_trace``), on the time axis of the settings it was armed with."""
        with self._board() as rp:
            s = rp.scope
            data = np.asarray(s._get_trace(), dtype=np.float64)
            t0, dt = self._armed if self._armed is not None else (float(s.times[0]),
                                                                  float(s.sampling_time))
            return ScopeTrace(ch1=np.ascontiguousarray(data[0]), ch2=np.ascontiguousarray(data[1]),
                              t0=t0, dt=dt)

    def scope_stop(self) -> None:
        """Cancel: PyRPL's ``scope.stop()``, then disarm the FPGA (reset bit, arm bit clear)."""
        with self._board() as rp:
            s = rp.scope
            s.stop()
            s._acquisition_started = False
            s._write(0x0, (s._read(0x0) & 0b1000) | 0b10)  # keep adc_we_keep; reset, do not re-arm
            self._armed = None

    # -------------------------------------------------------------------------------------------------
    # network analyzer

    def na_start(self, settings: Mapping[str, Any]) -> NaSweep:
        """Set the IQ module ``settings["iq"]`` up for a sweep of the ``na`` values ``settings``
        and start its first point, as PyRPL's ``NetworkAnalyzer._start_trace_acquisition``
        (:func:`.pyrpl_na.start`; its differences from PyRPL's are there). The sweep's settings
        are not settings applied through :meth:`set`: a restore after an FPGA reset does not
        replay them, and they are not saved into a named config. A sweep already running is
        replaced (its excitation turned off first)."""
        module = settings["iq"]
        if module not in ("iq0", "iq1", "iq2"):
            raise errors.InvalidParams(f"na_start needs iq0, iq1 or iq2, not {module!r}")
        with self._board() as rp:
            if self._na is not None and self._na.broken is None:
                pyrpl_na.stop(self._na.iq)
            self._na = None
            self._na_stop_pending = module  # kept if the start fails: na_stop turns it off
            sweep, started = pyrpl_na.start(getattr(rp, module), settings)
            self._na, self._na_stop_pending = sweep, None
            self._iq_changed[module] = time.monotonic()
            return started

    def na_points(self, first: int, count: int) -> tuple[np.ndarray, float]:
        """Points ``first`` .. ``first + count - 1`` of the started sweep, normalised as PyRPL's
        NA (:func:`.pyrpl_na.measure`): this thread waits for each point, so the wait returned is
        0. Raises InvalidParams without a started sweep or for points out of order,
        DeviceNotReady if the link fails or the board restarted during the sweep."""
        if self._na is None:
            raise errors.InvalidParams("na_points: no network-analyzer sweep was started")
        with self._board():
            return pyrpl_na.measure(self._na, first, count), 0.0

    def na_stop(self) -> None:
        """Turn the excitation of the sweep (or of a start that failed) off: amplitude 0;
        idempotent. If the link is down, it is turned off at the next call on a ready board
        (and DeviceNotReady is raised). Nothing after an FPGA reset during the sweep: the
        reset ended the excitation, and the IQ holds the settings restored since."""
        sweep, self._na = self._na, None
        if sweep is not None and sweep.broken is None:
            self._na_stop_pending = sweep.iq.name
        if self._na_stop_pending is None:
            return
        with self._board():
            pass  # entering turns the pending excitation off

    # -------------------------------------------------------------------------------------------------
    # IQ and sampler

    def iq_read(self, module: str) -> dict[str, float]:
        """Both quadratures of ``module``, averaged by the FPGA over ``IQ_AVERAGE_CYCLES`` (8.39 ms).

        Uses the IQ module's network-analyzer accumulators, which exist in iq0, iq1 and iq2 (only
        iq2 exports its second quadrature to the DSP bus): set ``_na_averages`` and
        ``_na_sleepcycles = 0``, rewrite the frequency register with its own value (that restarts the
        accumulation without touching the oscillator), sleep for the window, read the two 62-bit sums
        (registers 0x140..0x14C, bit 31 = still averaging), then restore the two NA registers.

        Scaling and convention: ``i + 1j*q = mean(quadrature1 + 1j*quadrature2) * 2**-22`` volts, the
        quadratures after the input filter (``acbandwidth``) and the low-pass ``bandwidth`` filters,
        independent of ``quadrature_factor``, ``gain`` and ``output_signal``. ``i`` is what the module
        puts on the DSP bus as ``iqN`` (divided by ``quadrature_factor``), ``q`` is ``iq2_2``'s
        quadrature. For an input ``A*sin(psi + theta)``, with ``psi`` the module's oscillator phase (its
        excitation is ``amplitude*sin(psi)``) and ``phi`` its ``phase`` setting:
        ``i = A*cos(theta + phi)``, ``q = A*sin(theta + phi)``, i.e. ``(i + 1j*q) / A`` is the transfer
        function from the module's excitation to its input, rotated by ``+phi`` (the convention of
        PyRPL's network analyzer). The 2f ripple of the demodulation averages out when the window
        spans many periods (f >> 120 Hz) or the ``bandwidth`` filter removes it.
        """
        if module not in ("iq0", "iq1", "iq2"):
            raise errors.InvalidParams(f"iq_read needs iq0, iq1 or iq2, not {module!r}")
        window = IQ_AVERAGE_CYCLES / catalogue.FPGA_CLOCK
        with self._board() as rp:
            iq = getattr(rp, module)
            saved = (iq._read(0x130), iq._read(0x134))  # _na_averages, _na_sleepcycles
            try:
                iq._write(0x130, IQ_AVERAGE_CYCLES)
                iq._write(0x134, 0)
                iq._write(0x108, iq._read(0x108))  # frequency unchanged: restarts the accumulators
                time.sleep(window)
                deadline = time.monotonic() + 1.0
                while True:
                    a, b, c, d = (int(v) for v in iq._reads(0x140, 4))
                    if not (a | b | c | d) >> 31:
                        break
                    if time.monotonic() > deadline:
                        raise errors.InternalError(
                            f"{module}: the FPGA's IQ accumulators did not finish averaging")
                    time.sleep(0.001)
            finally:
                iq._write(0x130, saved[0])
                iq._write(0x134, saved[1])
            mask = 2**31 - 1
            i_sum = iq._to_pyint((a & mask) + ((b & mask) << 31), bitlength=62)
            q_sum = iq._to_pyint((c & mask) + ((d & mask) << 31), bitlength=62)
            scale = IQ_VOLTS_PER_LSB / IQ_AVERAGE_CYCLES
            return {"i": float(i_sum * scale), "q": float(q_sum * scale)}

    def iq_settle_remaining(self, module: str) -> float:
        """Seconds until the quadrature filter of ``module`` has settled after its last ``set``
        (``catalogue.filter_settle_time`` of its ``bandwidth``, read from the board only within the
        slowest filter's settle time of that set); 0 if it has."""
        if module not in ("iq0", "iq1", "iq2"):
            raise errors.InvalidParams(f"iq_settle_remaining needs iq0, iq1 or iq2, not {module!r}")
        elapsed = time.monotonic() - self._iq_changed.get(module, -np.inf)
        if elapsed >= _IQ_SLOWEST_SETTLE:
            return 0.0
        with self._board() as rp:
            bandwidth = self._read(getattr(rp, module), catalogue.module(module), "bandwidth")
        return max(0.0, catalogue.filter_settle_time(bandwidth) - elapsed)

    def sampler_read(self) -> dict[str, float]:
        """One sample of every signal of ``catalogue.SAMPLER_SIGNALS`` (``rp.sampler.<signal>``)."""
        with self._board() as rp:
            return {sig: float(getattr(rp.sampler, sig)) for sig in catalogue.SAMPLER_SIGNALS}

    # -------------------------------------------------------------------------------------------------
    # internals

    def _write_pending_config(self) -> None:
        """Write the named config now if PyRPL left the save to its Qt timer (never run here).

        Raises InternalError naming the file if it cannot be written."""
        tree = self._pyrpl.c if self._pyrpl is not None else None
        if tree is None or tree._filename is None or not tree._savetimer.isActive():
            return
        try:
            tree._write_to_file()
        except OSError as exc:
            logger.error("PyRPL config file %s not written: %s", tree._filename, exc)
            raise errors.InternalError(
                f"the values were applied, but the PyRPL config file {tree._filename} could not "
                f"be written ({one_line(exc)})") from None
        _make_private(tree._filename)

    @contextlib.contextmanager
    def _board(self) -> Iterator[Any]:
        """The RedPitaya object while the link is ready; a register access that fails on the link
        raises DeviceNotReady (and, unless it only missed its deadline on a link not yet silent
        for :data:`.board_link.keeper.LINK_SILENCE`, makes the link ``lost``)."""
        if self._closed:
            raise errors.DeviceNotReady("the PyRPL backend is closed")
        if self._rp is None:
            raise errors.DeviceNotReady("the PyRPL backend is not connected")
        state, reason = self._link_keeper.state
        if state != "ready":
            raise errors.DeviceNotReady(reason or state)
        try:
            if self._na_stop_pending is not None:
                pyrpl_na.stop(getattr(self._rp, self._na_stop_pending))
                self._na_stop_pending = None
            yield self._rp
        except LinkError as exc:
            raise errors.DeviceNotReady(self._link_keeper.access_failed(exc)) from exc

    def _forget_armed_trace(self) -> None:
        """The link was lost: a trace armed before the loss is not fetched after it."""
        self._armed = None

    def _restore_settings(self, fpga_reset: bool) -> bool:
        """Apply again the values last applied to each module (:attr:`_applied`), ASGs first,
        then IQs, PIDs, the scope; ``fpga_reset``: the FPGA was just reset (each ASG's first
        start runs PyRPL's ``setup()`` again). Whether all were applied: a failure on the link
        leaves them pending (the link is ``lost``, the next ``ready`` retries)."""
        if fpga_reset:
            self._asg_started.clear()  # PyRPL's asg.setup() rewrites the table of `waveform`
            if self._na is not None:
                self._na.broken = (f"the Red Pitaya at {self.hostname} restarted during the "
                                   "network-analyzer sweep (its FPGA was reset)")
        order = {"asg": 0, "iq": 1, "pid": 2, "scope": 3}
        modules = sorted(self._applied, key=lambda m: order.get(catalogue.module(m).kind, 4))
        try:
            for module in modules:
                self.set(module, dict(self._applied[module]))
        except errors.DeviceNotReady as exc:
            logger.warning("restoring the settings of the Red Pitaya at %s failed: %s",
                           self.hostname, exc)
            return False
        logger.warning("the Red Pitaya at %s restarted; the settings of %s were restored",
                       self.hostname, ", ".join(modules) or "no module")
        return True

    def _prepare_environment(self) -> None:
        """Environment PyRPL reads at import: Qt platform, user dir (the default one owner-only),
        XDG runtime dir."""
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # else import aborts without a display
        if "pyrpl" in sys.modules:
            if self.user_dir is not None:
                logger.warning("PyRPL is already imported in this process: its user dir stays %s",
                               os.environ.get("PYRPL_USER_DIR"))
            return
        user_dir = Path(self.user_dir or os.environ.get("PYRPL_USER_DIR") or default_user_dir())
        user_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["PYRPL_USER_DIR"] = str(user_dir)
        if os.name == "posix" and not os.environ.get("XDG_RUNTIME_DIR"):
            os.environ["XDG_RUNTIME_DIR"] = _private_runtime_dir()

    @staticmethod
    def _prime_select_caches(rp: Any) -> None:
        """Set every SelectRegister's python-side cache from the hardware, without writing."""
        for m in rp.modules.values():
            for name, descriptor in _select_registers(type(m)):
                _read_select(m, name, descriptor)

    def _read(self, m: Any, spec: catalogue.Module, name: str) -> Any:
        from pyrpl.attributes import SelectRegister

        attribute = spec.attributes[name]
        descriptor = getattr(type(m), name, None)
        if isinstance(descriptor, SelectRegister):
            value: Any = _read_select(m, name, descriptor)
        else:
            value = getattr(m, name)
        return _plain(attribute.kind, value)

    def _check_writable(self, m: Any, spec: catalogue.Module, name: str, value: Any) -> None:
        attribute = spec.attributes.get(name)
        if attribute is None or attribute.readonly:
            raise errors.InvalidParams(f"attribute {name!r} of {spec.name} cannot be set")
        if attribute.kind == "select":
            options = getattr(type(m), name).options(m)
            if value not in options:
                raise errors.InvalidParams(
                    f"PyRPL does not offer {value!r} for {spec.name}.{name}; it offers "
                    f"{list(options)}")

    @staticmethod
    def _write_order(spec: catalogue.Module, values: Mapping[str, Any]) -> list[str]:
        """Catalogue order, routing last: configure a signal before connecting or starting it."""
        last = ("output_direct", "trigger_source") if spec.kind == "asg" else ("output_direct",)
        names = [n for n in spec.attributes if n in values]
        return [n for n in names if n not in last] + [n for n in last if n in values]

    def _write(self, m: Any, spec: catalogue.Module, name: str, value: Any) -> None:
        kind = spec.attributes[name].kind
        if kind == "filter":
            value = [float(v) for v in value]
        elif kind == "int":
            value = int(value)
        elif kind == "float":
            value = float(value)
        if spec.kind == "asg" and name == "trigger_source":
            current = _read_select(m, name, type(m).trigger_source)
            if value not in ("off", current) and m.name not in self._asg_started:
                setattr(m, name, value)  # PyRPL's asg.setup(): known state, table of `waveform`
                self._asg_started.add(m.name)
            else:
                with m.do_setup:  # PyRPL's _setup_ongoing: write the register alone, no setup()
                    setattr(m, name, value)
            return
        setattr(m, name, value)


def _ssh_delay(stored: dict[str, Any]) -> float:
    """PyRPL's ssh ``delay`` in a config file's content ``stored`` (:func:`_read_config_file`,
    read before ``Pyrpl()``, which writes its own into the file and into PyRPL's defaults): the
    ``redpitaya`` section's, else PyRPL's default."""
    from pyrpl.redpitaya import defaultparameters

    branch = stored.get("redpitaya")
    delay = branch.get("delay") if isinstance(branch, dict) else None
    return delay if isinstance(delay, (int, float)) else defaultparameters["delay"]


def _read_config_file(name: str) -> tuple[dict[str, Any], str | None]:
    """PyRPL's config file ``name`` (PyRPL's own lookup: ``<user dir>/config/NAME.yml``, created
    empty if missing): its settings, and why it cannot be used (not YAML, not a mapping) or None.
    The settings are empty if it cannot be used."""
    import yaml
    from pyrpl.memory import get_config_file, load

    path = get_config_file(name)
    try:
        with open(path, encoding="utf-8") as f:
            data = load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = one_line(exc)
    else:
        if data is None or isinstance(data, dict):
            return data or {}, None
        reason = f"it holds a {type(data).__name__}, not a mapping of settings"
    return {}, (f"the PyRPL config file {path} (--config {name}) is corrupt: {reason}. Fix it, "
                "or move it away to start from an empty config")


def _make_private(config_file: str) -> None:
    """Owner-only config file, its backup and its folder (the file holds the ssh password)."""
    path = Path(config_file)
    for target, mode in ((path.parent, 0o700), (path, 0o600),
                         (path.with_name(path.name + ".bak"), 0o600)):
        try:
            if target.stat().st_mode & 0o777 != mode:
                target.chmod(mode)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot make %s owner-only: %s", target, exc)


def _select_registers(cls: type) -> list[tuple[str, Any]]:
    from pyrpl.attributes import SelectRegister

    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        for name, descriptor in vars(klass).items():
            if isinstance(descriptor, SelectRegister) and name not in found:
                found[name] = descriptor
    return list(found.items())


def _read_select(m: Any, name: str, descriptor: Any) -> Any:
    """A SelectRegister's option from the hardware, updating PyRPL's cache, never writing.

    An unknown register value (no option maps to it) leaves the cache alone and returns it.
    """
    from pyrpl.attributes import BaseRegister

    raw = BaseRegister.get_value(descriptor, m)
    inverse: dict[Any, Any] = {}
    for option, register_value in descriptor.options(m).items():
        inverse.setdefault(register_value, option)
    if raw in inverse:
        setattr(m, "_" + name, inverse[raw])
        return inverse[raw]
    cached = getattr(m, "_" + name, None)
    logger.warning("%s.%s: register value %r is not one of PyRPL's options; reporting %r",
                   m.name, name, raw, cached)
    return cached


def _plain(kind: str, value: Any) -> Any:
    """PyRPL's value as a plain JSON-friendly Python value of the catalogue kind."""
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(round(float(value)))
    if kind == "select":
        return str(value)
    if kind == "filter":
        values = value if np.iterable(value) else [value]
        return [float(v) for v in values]
    return float(value)


_SSH_FAILURE = re.compile(r"ssh port: (\S+) username: (\S+) .*?Error message: (.*?)"
                          r"(?: An expected error occured in PyRPL.*)?$")


def _connect_reason(exc: BaseException) -> str:
    """Why ``Pyrpl()`` failed, short: PyRPL's ssh failure message is a whole paragraph."""
    match = _SSH_FAILURE.search(one_line(exc, limit=10_000))
    if match:
        return f"ssh on port {match[1]} as {match[2]} failed: {match[3]}"
    return f"{type(exc).__name__}: {one_line(exc)}"


def _close_ssh(rp: Any) -> None:
    """Close PyRPL's ssh session to the board (``RedPitaya.end_ssh`` and the connection under
    it); nothing for PyRPL's fake board."""
    shell = getattr(rp, "ssh", None)
    if shell is None:
        return
    try:
        shell.channel.close()
        shell.ssh.close()
    except (OSError, EOFError, _ssh_exception()) as exc:  # after a cut paramiko raises either
        logger.warning("PyRPL's ssh session did not close cleanly: %s", one_line(exc))


def _ssh_exception() -> type[Exception]:
    """paramiko's base exception (paramiko is PyRPL's dependency, imported once PyRPL is)."""
    import paramiko

    return paramiko.SSHException


def _destroy_qt_application() -> None:
    """Delete PyRPL's QApplication if it belongs to the calling thread (see ``close``)."""
    if "qtpy" not in sys.modules:
        return
    try:
        from qtpy import QtCore, QtWidgets

        app = QtWidgets.QApplication.instance()
        if app is None or app.thread() is not QtCore.QThread.currentThread():
            return
        try:
            from qtpy import sip

            sip.delete(app)
        except ImportError:  # PySide
            import shiboken6 as shiboken  # type: ignore[import-not-found]

            shiboken.delete(app)
    except Exception as exc:
        logger.warning("could not destroy PyRPL's QApplication: %s", one_line(exc))


def _private_runtime_dir() -> str:
    """An owner-only directory for ``XDG_RUNTIME_DIR`` (Qt warns when it is unset or shared)."""
    path = Path(tempfile.gettempdir()) / f"pymodaq_plugins_pyrpl-runtime-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if info.st_uid == os.getuid() and path.is_dir() and not path.is_symlink():
            if info.st_mode & 0o077:
                path.chmod(0o700)
            return str(path)
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="pymodaq_plugins_pyrpl-runtime-")
