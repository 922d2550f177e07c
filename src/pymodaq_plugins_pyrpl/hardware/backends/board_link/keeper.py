"""The keeping of the PyRPL backend's link to a board: the look at the board before PyRPL starts,
the :class:`~.link.RegisterLink` PyRPL's modules use, the link's state and its upkeep.

States (:attr:`BoardLinkKeeper.state`) and upkeep (:meth:`BoardLinkKeeper.maintain`, run by the
server on the backend thread):

* ``ready``: a register access that fails is reported with :meth:`BoardLinkKeeper.access_failed`.
  An orderly close (FIN), a reset (RST) or a garbled reply make the link ``lost`` at once,
  :data:`LINK_SILENCE` s of silence too; one missed deadline does not (a lossy link). When no
  access ran for :data:`HEARTBEAT` s, ``maintain`` reads the FPGA's cycle counter: liveness, and
  an FPGA reset (reboot, bitfile load) seen as the counter restarting.
* ``lost``: each ``maintain`` step runs one phase of :class:`~.recovery.Recovery` (no register
  write, no ``killall``) until ``ready``.
* ``taken``: another program's client is on the board's monitor port (seen by the recovery's look
  at the board): nothing is sent to the board until :meth:`BoardLinkKeeper.take_board`, which the
  user asks for (it runs ``killall``). At start-up such a client makes
  :meth:`BoardLinkKeeper.refusal_to_start` refuse, unless the board is taken over.
* ``error``: the user must act (ssh refuses the login).

After an FPGA reset the keeper asks its user to apply its settings again (``restore_settings``)
until that succeeds, and then notes the time (``board_restarted_at`` of
:meth:`BoardLinkKeeper.link_info`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from ... import catalogue, errors
from ..exception_text import one_line
from . import probe
from .errors import LinkClosed, LinkError, LinkReset, LinkTimeout
from .link import RegisterLink
from .recovery import BoardAccess, Recovery

logger = logging.getLogger(__name__)

LINK_SILENCE = 3.0
"""Seconds the board may stay silent while a reply is expected before the link is ``lost``: a
single missed deadline (a lossy link) is not enough."""
HEARTBEAT = 1.0
"""Seconds without a register access after which :meth:`BoardLinkKeeper.maintain` reads the
FPGA's cycle counter (liveness and FPGA-reload check in one read, no write)."""
IDLE_UPKEEP = 1.0
"""Seconds between two :meth:`BoardLinkKeeper.maintain` steps that have nothing to do
(``taken``, ``error``)."""
TAKE_BACK_WAIT = 1.0
"""Seconds :meth:`BoardLinkKeeper.take_board` waits for the ended ``monitor_server`` to stop
listening."""
CYCLE_COUNTER = 0x4010015C
"""The scope's 64-bit count of 125 MHz cycles since the FPGA was reset (least significant word
first; a scope reset does not clear it, a bitfile load or a reboot does)."""
EPOCH_SLACK = 0.5
"""Seconds the FPGA's start time, computed from :data:`CYCLE_COUNTER`, must move later before the
FPGA counts as reloaded (beyond the read's own uncertainty, which is taken into account)."""


class BoardLinkKeeper:
    """The link of one PyRPL backend to its board, from the look before ``Pyrpl()`` to ``close``.

    Every method but :meth:`link_info` and :attr:`state` runs on the backend thread. The keeper
    never touches PyRPL's modules: ``restore_settings(fpga_reset)`` is called after an FPGA reset
    (``fpga_reset`` True) and again at later contacts until it returns True (all settings applied
    again); ``link_lost()`` is called each time the link becomes ``lost``.
    """

    def __init__(self, hostname: str, *, restore_settings: Callable[[bool], bool],
                 link_lost: Callable[[], None]) -> None:
        """``hostname``: the board as the user named it, for the sentences of the states."""
        self.hostname = hostname
        self._restore_settings = restore_settings
        self._link_lost = link_lost
        self._link: RegisterLink | None = None
        self._parameters: Mapping[str, Any] | None = None
        """PyRPL's ``RedPitaya.parameters`` (login, ports, monitor server) once started."""
        self._state: tuple[str, str | None] = ("ready", None)
        self._recovery: Recovery | None = None
        """The current outage's recovery while ``lost``."""
        self._shell: probe.BoardShell | None = None
        """Our own ssh connection to the board, to look at it and start its monitor server."""
        self._boot_id: str | None = None
        self._epoch: tuple[float, float] | None = None
        """Bounds of the monotonic time at which the FPGA's cycle counter was 0, last read."""
        self._other: str | None = None
        """The other program's client (ip:port) while ``taken``."""
        self._board_restarted_at: str | None = None
        self._restore_pending = False
        """The FPGA was reset and the settings are not restored yet."""
        self._lost_why = ""
        """What ended the link, while ``lost``."""

    @property
    def link(self) -> RegisterLink | None:
        """The register client of PyRPL's modules on a network board (None before ``Pyrpl()``,
        after :meth:`close`, and on PyRPL's fake board, whose modules use its ``DummyClient``)."""
        return self._link

    @property
    def state(self) -> tuple[str, str | None]:
        """``ready``, ``lost``, ``taken`` or ``error``, and why (None when ``ready``)."""
        return self._state

    # -------------------------------------------------------------------------------------------------
    # start-up

    def look_in_background(self, host: str, ssh_port: int, board_port: int
                           ) -> Future[probe.BoardLook]:
        """Start looking at the board over ssh (boot id, clients of its monitor port) in a thread
        of its own, with PyRPL's default login or the ``REDPITAYA_USER``/``REDPITAYA_PASSWORD``
        environment variables (a login stored in a named config is PyRPL's to use)."""
        self._shell = probe.BoardShell(host, ssh_port,
                                       os.environ.get("REDPITAYA_USER", "root"),
                                       os.environ.get("REDPITAYA_PASSWORD", "root"))
        looking = ThreadPoolExecutor(max_workers=1, thread_name_prefix="board-look")
        try:
            return looking.submit(self._shell.look, board_port)
        finally:
            looking.shutdown(wait=False)

    def refusal_to_start(self, host: str, board_port: int, look: Future[probe.BoardLook],
                         take_over: bool) -> str | None:
        """Why the board must not be started (another program's client on its monitor port,
        unless ``take_over``), or None; remembers its boot id. A look that failed is logged and
        checks nothing: PyRPL's start-up then says what is wrong with ssh. Waits for the look
        at most its command timeout + 1 s."""
        try:
            seen = look.result(timeout=probe.COMMAND_TIMEOUT + 1.0)
        except (LinkError, probe.LoginRefused, probe.BoardCommandError, TimeoutError) as exc:
            logger.warning("could not look at the Red Pitaya at %s before starting (%s): not "
                           "checked for another program", host, one_line(exc))
            self._forget_shell()
            return None
        self._boot_id = seen.boot_id
        if not seen.clients:
            return None
        ip, port = seen.clients[0]
        if take_over:
            logger.warning("taking the Red Pitaya at %s over from the client at %s:%d", host, ip,
                           port)
            return None
        return (f"the Red Pitaya at {host} is in use by another program (a client at {ip}:{port} "
                f"on monitor_server port {board_port}); stop it, or take the board over: "
                "--take-over / the plugin setting 'Take over the board'")

    @contextlib.contextmanager
    def link_for_pyrpl(self) -> Iterator[None]:
        """While ``Pyrpl()`` runs, PyRPL's ``RedPitaya.startclient`` builds this keeper's
        :class:`RegisterLink` (connected, its write gate closed) instead of PyRPL's
        ``MonitorClient``: every register access has a deadline from the first one, no restart
        callback (``killall monitor_server``) can ever run, and PyRPL's start-up writes are not
        sent. PyRPL's fake board keeps its ``DummyClient``. Only the backend thread uses PyRPL, so
        the module-level substitution is seen by this backend's ``Pyrpl()`` alone."""
        from pyrpl import redpitaya_client

        def register_link(hostname: str, port: int, restartserver: Any = None) -> RegisterLink:
            link = RegisterLink(hostname, port)
            link.connect()
            self._link = link
            return link

        original = redpitaya_client.MonitorClient
        redpitaya_client.MonitorClient = register_link
        try:
            yield
        finally:
            redpitaya_client.MonitorClient = original

    def started(self, parameters: Mapping[str, Any]) -> None:
        """PyRPL started on the board with ``parameters`` (its ``RedPitaya.parameters``): open the
        link's write gate; the shell of the look is dropped if PyRPL logs in otherwise (a named
        config's login: the next look logs in with it)."""
        self._parameters = parameters
        if self._shell is not None and (self._shell.user, self._shell.password) != (
                parameters["user"], parameters["password"]):
            self._forget_shell()
        if self._link is not None:
            if self._link.gated_writes:
                logger.debug("%d start-up writes of PyRPL not sent", self._link.gated_writes)
            self._link.open_gate()

    def close(self) -> None:
        """Close the data connection (a ``monitor_server`` ends with its client: no ``killall``)
        and our ssh shell. Idempotent."""
        link, self._link = self._link, None
        self._parameters = None
        if link is not None:
            link.close()
        self._forget_shell()

    # -------------------------------------------------------------------------------------------------
    # upkeep

    def access_failed(self, exc: LinkError) -> str:
        """Note a failed register access: the link is ``lost`` unless ``exc`` is a missed
        deadline on a link silent for less than :data:`LINK_SILENCE` (a lossy link, not a dead
        one). The sentence for the caller."""
        if isinstance(exc, LinkTimeout) and self._link is not None and \
                self._link.connected and self._link.silent_for() < LINK_SILENCE:
            return (f"the Red Pitaya at {self.hostname!r} did not answer in time ({exc.what}); "
                    "a write may or may not have been applied")
        self._lose_by(exc)
        return self._state[1] or "lost"

    def maintain(self) -> float | None:
        """One bounded step (≤ 2.5 s) of link upkeep: when ``ready``, a heartbeat
        (:data:`HEARTBEAT`) if no register access ran for that long; when ``lost``, one recovery
        phase (:mod:`.recovery`: no register write, no ``killall``); nothing when ``taken`` or
        ``error``. Returns seconds until the next step; None when there is no link to keep
        (PyRPL's fake board, not started, closed)."""
        if self._link is None or self._parameters is None:
            return None
        state = self._state[0]
        if state == "ready":
            return self._heartbeat()
        if state == "lost":
            return self._recovery_step()
        return IDLE_UPKEEP

    def take_board(self) -> None:
        """Take the board back when ``taken`` or ``lost``, because the user asked: end every
        ``monitor_server`` on it (``killall``: another program's connection ends), start ours,
        connect; then ``ready``. Nothing when ``ready`` or without a link (PyRPL's fake board).
        Raises BackendUnavailable with the reason (``error``, ssh or the board failing)."""
        state, reason = self._state
        if self._link is None or self._parameters is None or state == "ready":
            return
        if state == "error":
            raise errors.BackendUnavailable(reason or "error")
        access = self._board_access()
        name = self._parameters["monitor_server_name"]
        try:
            shell = self._board_shell()
            self._link.drop(reset=True)
            shell.run(f"killall {name}")
            deadline = time.monotonic() + TAKE_BACK_WAIT
            while shell.look(access.data_port).listening:  # killall is not instantaneous
                if time.monotonic() > deadline:
                    raise errors.BackendUnavailable(
                        f"the monitor_server on the Red Pitaya at {self.hostname} did not end")
                time.sleep(0.05)
            shell.start_monitor_server(access.server_path, access.data_port)
            self._link.connect()
            epoch = self._read_epoch()
        except probe.LoginRefused as exc:
            raise errors.BackendUnavailable(f"cannot take the Red Pitaya at {self.hostname} "
                                            f"back: {exc}") from None
        except (LinkError, probe.BoardCommandError) as exc:
            self._forget_shell()
            raise errors.BackendUnavailable(f"cannot take the Red Pitaya at {self.hostname} "
                                            f"back: {one_line(exc)}") from None
        self._recovery, self._other = None, None
        self._state = ("ready", None)
        if self._epoch_moved(epoch):
            self._after_contact(fpga_reset=True)
        logger.warning("took the Red Pitaya at %s back", self.hostname)

    def link_info(self) -> dict[str, Any]:
        """``attempts``: recovery attempts in the current outage (0 when not ``lost``);
        ``board_restarted_at``: ISO 8601 UTC time of the last detected board reboot or FPGA reload
        whose settings were restored (None: none); ``other``: the other program's client
        (``ip:port``) while ``taken``. Only reads (any thread)."""
        recovery = self._recovery
        return {"attempts": recovery.attempts if recovery is not None else 0,
                "board_restarted_at": self._board_restarted_at, "other": self._other}

    # -------------------------------------------------------------------------------------------------
    # internals

    def _lose_by(self, exc: LinkError) -> None:
        """The link is ``lost`` by ``exc``: the board ended the connection (FIN, RST: maybe
        another program's ``killall``) or our side did (silence, garbage: no quiet window)."""
        why, caused_by_us = exc.what, not isinstance(exc, (LinkClosed, LinkReset))
        logger.warning("lost the Red Pitaya at %s: %s", self.hostname, why)
        self._lost_why = why
        self._state = ("lost", self._lost_sentence(0))
        self._link_lost()
        if self._link is not None and self._parameters is not None:
            self._recovery = Recovery(self._link, self._board_access(), self._board_shell,
                                      self._forget_shell, self._boot_id,
                                      caused_by_us)

    def _lost_sentence(self, attempts: int) -> str:
        tail = f"; reconnecting (attempt {attempts})" if attempts else "; reconnecting"
        return f"lost the Red Pitaya at {self.hostname} ({self._lost_why}){tail}"

    def _heartbeat(self) -> float:
        """Read the cycle counter if the link was idle for :data:`HEARTBEAT` s."""
        assert self._link is not None
        idle = time.monotonic() - self._link.last_reply
        if idle < HEARTBEAT:
            return HEARTBEAT - idle
        try:
            epoch = self._read_epoch()
        except LinkError as exc:
            self.access_failed(exc)
            return 0.0  # lost: recover at once; a missed deadline: read again (drains it)
        self._after_contact(self._epoch_moved(epoch))
        return HEARTBEAT

    def _recovery_step(self) -> float:
        recovery = self._recovery
        assert recovery is not None
        outcome = recovery.step()
        self._boot_id = recovery.boot_id
        if outcome.state == "lost":
            self._state = ("lost", self._lost_sentence(recovery.attempts))
            return outcome.delay
        if outcome.state == "taken":
            self._recovery = None
            self._other = outcome.other
            reason = (f"another program took the Red Pitaya at {self.hostname} (its client at "
                      f"{outcome.other}); Initialize again to take it back")
            self._state = ("taken", reason)
            logger.warning("%s", reason)
            return IDLE_UPKEEP
        if outcome.state == "error":
            self._recovery = None
            reason = f"the Red Pitaya at {self.hostname} cannot be reconnected: {outcome.reason}"
            self._state = ("error", reason)
            logger.error("%s", reason)
            return IDLE_UPKEEP
        try:
            epoch = self._read_epoch()
        except LinkError as exc:
            self._lose_by(exc)
            return 0.0
        self._recovery = None
        self._state = ("ready", None)
        self._after_contact(self._epoch_moved(epoch) or recovery.rebooted)
        logger.info("the Red Pitaya at %s is back after %d attempt(s)", self.hostname,
                    recovery.attempts)
        return HEARTBEAT

    def _after_contact(self, fpga_reset: bool) -> None:
        """The board answered (``fpga_reset``: its FPGA was reset since the last contact): have
        the settings applied again while that is pending; on success note the time in
        ``board_restarted_at``."""
        if fpga_reset:
            logger.warning("the Red Pitaya at %s restarted: its registers are at their reset "
                           "values; restoring the settings applied through this server",
                           self.hostname)
            self._restore_pending = True
        elif not self._restore_pending:
            return
        if self._restore_settings(fpga_reset):
            self._restore_pending = False
            self._board_restarted_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def _read_epoch(self) -> tuple[float, float]:
        """Bounds of the monotonic time at which the FPGA's cycle counter was 0, from one read
        (the request's send and reply times). Raises LinkError."""
        assert self._link is not None
        sent = time.monotonic()
        low, high = (int(w) for w in self._link.reads(CYCLE_COUNTER, 2))
        got = time.monotonic()
        elapsed = ((high << 32) | low) / catalogue.FPGA_CLOCK
        return sent - elapsed, got - elapsed

    def _epoch_moved(self, epoch: tuple[float, float]) -> bool:
        """Whether the FPGA restarted counting since the last read (its start time moved later
        than the last read allows), remembering ``epoch``."""
        previous, self._epoch = self._epoch, epoch
        return previous is not None and epoch[0] > previous[1] + EPOCH_SLACK

    def _board_access(self) -> BoardAccess:
        assert self._parameters is not None
        parameters = self._parameters
        return BoardAccess(
            host=parameters["hostname"], ssh_port=int(parameters["sshport"]),
            user=parameters["user"], password=parameters["password"],
            server_path=f"{parameters['serverdirname']}/{parameters['monitor_server_name']}",
            data_port=int(parameters["port"]))

    def _board_shell(self) -> probe.BoardShell:
        """Our ssh shell to the board (a new one if there is none)."""
        if self._shell is None:
            access = self._board_access()
            self._shell = probe.BoardShell(access.host, access.ssh_port, access.user,
                                           access.password)
        return self._shell

    def _forget_shell(self) -> None:
        shell, self._shell = self._shell, None
        if shell is not None:
            shell.close()
