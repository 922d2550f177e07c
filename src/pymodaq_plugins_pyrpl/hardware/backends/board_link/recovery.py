"""Getting a lost board link back, one bounded step at a time, without writing a register and
without ``killall monitor_server``.

A :class:`Recovery` lives for one outage. Each :meth:`Recovery.step` does one phase and says how
long to wait before the next (:class:`Outcome`):

1. **look**: the board's ssh port answers a TCP connect (never the data port: an idle faithful
   ``monitor_server`` would take the probe for its one client and exit); our old data connection
   is reset (RST, so a ``monitor_server`` serving it ends at once); the board is looked at over
   ssh (:mod:`.probe`: boot id, listener and clients of the data port). Another program's client
   on the data port: the board is ``taken`` (nothing more is done). Our old connection still
   served (half-open on the board: a reset that never reached it): end it
   (:meth:`~.link.RegisterLink.end_half_open`) and look again. The boot id changed (a reboot),
   or our side ended the connection (silence, garbage: the cause is ours): go on at once.
   Otherwise (the board closed our connection: someone killed our ``monitor_server``, maybe
   another program starting) look again until :data:`TAKEOVER_QUIET` seconds after the outage
   began before going on, so that program's PyRPL connects undisturbed.
2. **start**: no ``monitor_server`` listens: start one over ssh (no ``killall``).
3. **connect**: connect the register link (bounded retry): ``ready``.

A failure in any phase goes back to the look after a backoff (:data:`BACKOFF`); while the ssh port
does not answer, it is probed every :data:`REACH_CADENCE` seconds (:data:`REACH_CADENCE_LATER`
after :data:`REACH_FAST_FOR`). ssh refusing the login is final (``error``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import probe
from .errors import LinkError
from .link import RegisterLink

logger = logging.getLogger(__name__)

REACH_TIMEOUT = 0.5
"""Seconds a TCP connect to the ssh port may take in the reachability check."""
REACH_CADENCE = 0.5
"""Seconds between two reachability checks while the board does not answer..."""
REACH_FAST_FOR = 60.0
"""... during the first this many seconds of an outage; then every :data:`REACH_CADENCE_LATER`."""
REACH_CADENCE_LATER = 2.0
TAKEOVER_QUIET = 3.0
"""Seconds the board is looked at again (every :data:`LOOK_AGAIN` s) before our monitor server is
started when the board, not us, ended our connection: another program's PyRPL takes ≈ 0.2-1.5 s
from its ``killall`` to its connect."""
LOOK_AGAIN = 0.5
BACKOFF = (0.25, 0.5, 1.0, 2.0)
"""Seconds before the next attempt after the 1st, 2nd, 3rd and later failed ones."""
CONNECT_WITHIN = 1.5
"""Seconds the connect phase keeps trying to connect to a ``monitor_server``."""


@dataclass(frozen=True)
class Outcome:
    """What a recovery step ended with: ``state`` ``lost`` (go on after ``delay`` s), ``ready``
    (the link is connected), ``taken`` (``other``: the other program's client ip:port) or
    ``error`` (``reason``: the user must act)."""

    state: str
    delay: float = 0.0
    reason: str | None = None
    other: str | None = None


@dataclass
class BoardAccess:
    """How to reach the board over ssh, and where its ``monitor_server`` binary is."""

    host: str
    ssh_port: int
    user: str
    password: str
    server_path: str
    data_port: int


class Recovery:
    """One outage of the link: :meth:`step` until it returns a state other than ``lost``.

    ``shells`` gives the ssh shell to look through (kept by the caller across outages; a new one
    after :meth:`forget_shell`); the clients the board lists at ``link``'s
    :attr:`~.link.RegisterLink.local_addresses` are ours, never another program's; ``boot_id``
    is the board's last known boot id (None: unknown); ``caused_by_us``: we ended the connection
    (silence, garbage), so no quiet window is needed.
    """

    def __init__(self, link: RegisterLink, access: BoardAccess,
                 shells: Callable[[], probe.BoardShell], forget_shell: Callable[[], None],
                 boot_id: str | None, caused_by_us: bool) -> None:
        self.link = link
        self.access = access
        self._shells = shells
        self._forget_shell = forget_shell
        self.boot_id = boot_id
        self.rebooted = False
        """The boot id changed during this outage: the board rebooted."""
        self._caused_by_us = caused_by_us
        self.started = time.monotonic()
        self.attempts = 0
        """Looks at the board made (each full attempt starts with one)."""
        self._failures = 0
        self._phase = "look"

    def step(self) -> Outcome:
        """One phase (see the module docstring), bounded by its timeouts (≤ 2.5 s)."""
        if self._phase == "look":
            return self._look()
        if self._phase == "start":
            return self._start()
        return self._connect()

    def _look(self) -> Outcome:
        now = time.monotonic()
        if not probe.ssh_reachable(self.access.host, self.access.ssh_port, REACH_TIMEOUT):
            cadence = REACH_CADENCE if now - self.started < REACH_FAST_FOR else \
                REACH_CADENCE_LATER
            return Outcome("lost", cadence, "the board's ssh port does not answer")
        self.attempts += 1
        self.link.drop(reset=True)
        try:
            look = self._shells().look(self.access.data_port)
        except probe.LoginRefused as exc:
            return Outcome("error", reason=f"ssh refused the login: {exc}")
        except (LinkError, probe.BoardCommandError) as exc:
            self._forget_shell()
            return self._failed(f"looking at the board over ssh failed: {exc}")
        if self.boot_id is not None and look.boot_id != self.boot_id:
            logger.info("the board at %s rebooted (boot id %s)", self.access.host, look.boot_id)
            self.rebooted = True
        self.boot_id = look.boot_id
        clients = {(ip, port) for ip, port in look.clients}
        foreign = sorted(clients - self.link.local_addresses)
        if foreign:
            ip, port = foreign[0]
            return Outcome("taken", other=f"{ip}:{port}")
        if clients:  # our old connection, half-open on the board: its server takes no other
            for local in clients:
                self.link.end_half_open(local)
            return Outcome("lost", LOOK_AGAIN, "the board still serves our old connection")
        if not (self._caused_by_us or self.rebooted) and now < self.started + TAKEOVER_QUIET:
            return Outcome("lost", LOOK_AGAIN, "waiting whether another program connects")
        self._phase = "connect" if look.listening else "start"
        return Outcome("lost", 0.0, "reconnecting")

    def _start(self) -> Outcome:
        try:
            self._shells().start_monitor_server(self.access.server_path, self.access.data_port)
        except probe.LoginRefused as exc:
            return Outcome("error", reason=f"ssh refused the login: {exc}")
        except (LinkError, probe.BoardCommandError) as exc:
            self._forget_shell()
            return self._failed(f"starting monitor_server over ssh failed: {exc}")
        self._phase = "connect"
        return Outcome("lost", 0.0, "monitor_server started")

    def _connect(self) -> Outcome:
        try:
            self.link.connect(within=CONNECT_WITHIN)
        except LinkError as exc:
            return self._failed(f"connecting failed: {exc.what}")
        return Outcome("ready")

    def _failed(self, why: str) -> Outcome:
        delay = BACKOFF[min(self._failures, len(BACKOFF) - 1)]
        self._failures += 1
        self._phase = "look"
        logger.info("recovery of the board link at %s: %s; next attempt in %g s",
                    self.access.host, why, delay)
        return Outcome("lost", delay, why)
