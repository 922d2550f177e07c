"""The whole virtual Red Pitaya on the network: one :class:`~.board.VirtualBoard` (registers and
physics), its ssh server (:mod:`.ssh_server`) and the ``monitor_server`` processes started on it
(:class:`~.monitor_server.MonitorServer`), as unmodified PyRPL finds them on a board.

At power-on (:meth:`VirtualRedPitaya.start`) PyRPL's bitfile is loaded and a monitor server
listens on the data port, as on a board where PyRPL ran before; PyRPL's start-up ends it
(``killall monitor_server``) and starts its own on the port it was given. The ssh commands map to
the board: ``killall monitor_server`` ends every monitor server, ``monitor_server PORT`` starts
one (a new :class:`MonitorServer`), ``overlay.sh`` loads the bitfile
(:meth:`VirtualBoard.load_bitfile`: registers back to reset values). :meth:`VirtualRedPitaya.reboot`
is the board's reboot with its ssh side.

For the tests of the board link: :attr:`VirtualRedPitaya.commands` logs every ssh command line by
session (``killall monitor_server`` counted by :meth:`~.command_log.CommandLog.killalls`), the
shell answers ``cat /proc/sys/kernel/random/boot_id`` (new at each reboot) and ``cat
/proc/net/tcp`` (:meth:`VirtualRedPitaya.tcp_sockets`), and ``board.monitor_clients()`` lists the
clients the monitor servers serve.
"""
from __future__ import annotations

import logging
import threading
from typing import Literal

import paramiko

from . import proc_net_tcp
from .board import LinkSettings, VirtualBoard
from .command_log import CommandLog
from .files import BoardFiles
from .monitor_server import MonitorServer
from .proc_net_tcp import TcpSocket
from .ssh_server import SshServer

logger = logging.getLogger(__name__)

Mode = Literal["shared", "faithful"]
REBOOT_MARGIN = 30.0
"""Seconds past a reboot's duration after which ssh gives up waiting for the board."""


class VirtualRedPitaya:
    """A virtual board serving ssh and ``monitor_server`` on ``host``.

    ``plant`` connects its outputs to its inputs (``physics.plants.parse_plant``), ``mode`` is how
    its monitor servers take clients (:class:`~.board.LinkSettings`), ``user``/``password`` the
    ssh login (PyRPL's default root/root), ``seed`` seeds its noise. Raises ValueError for a
    plant or mode that does not exist. Thread-safe; :meth:`close` ends everything.
    """

    def __init__(self, plant: str = "loopback", mode: Mode = "shared", host: str = "127.0.0.1",
                 user: str = "root", password: str = "root", seed: int | None = None) -> None:
        self.host = host
        self.board = VirtualBoard(plant, seed)
        self.board.link = LinkSettings(mode=mode, killall_close=self.board.link.killall_close)
        self._login = (user, password)
        self._host_key = paramiko.ECDSAKey.generate()
        self.files = BoardFiles()
        self.commands = CommandLog(self.board.clock)
        """The ssh sessions and the command lines they ran (kept across reboots)."""
        self.ssh = self._new_ssh()
        self._lock = threading.Lock()
        self._closed = False
        self._up = threading.Event()
        """Set while ssh listens (cleared by a reboot until ssh is back)."""
        self._up.set()
        self._monitors: list[MonitorServer] = []
        self.ssh_port = 0
        self.port = 0
        """The ssh port and the data port (of the power-on monitor server), once started."""

    def start(self, ssh_port: int = 0, port: int = 0) -> tuple[int, int]:
        """Start the power-on monitor server on ``port`` and ssh on ``ssh_port`` (0: free ports);
        return both ports (ssh, data). Raises OSError if a port cannot be opened (then nothing
        is left listening)."""
        try:
            self.port = self.start_monitor(port).port or 0
            self.ssh_port = self.ssh.start(ssh_port)
        except OSError:
            self.close()
            raise
        logger.info("virtual Red Pitaya on %s: ssh port %d, monitor port %d (plant %s, %s)",
                    self.host, self.ssh_port, self.port, self.board.plant, self.board.link.mode)
        return self.ssh_port, self.port

    def close(self) -> None:
        """Stop ssh (closing its sessions) and the board (every monitor server). Idempotent."""
        with self._lock:
            self._closed = True
            self._monitors = []
            ssh = self.ssh
        ssh.close()
        self.board.close()

    def reboot(self, seconds: float) -> None:
        """The board reboots: its ssh sessions and monitor servers end, both ports refuse
        connections for ``seconds``, the registers and the files go back to their power-on state
        (:meth:`VirtualBoard.reboot`); then ssh listens again on its port, with the same host
        key, and the monitor servers as :meth:`VirtualBoard.reboot` says. Returns at once.
        Raises ValueError if ``seconds`` is negative."""
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, not {seconds!r}")
        with self._lock:
            old, self.files = self.ssh, BoardFiles()
            self.ssh = self._new_ssh()
            self._up.clear()
        old.close()
        self.board.reboot(seconds)
        threading.Thread(target=self._ssh_after_reboot, args=(self.ssh, seconds), daemon=True,
                         name="virtual-board-ssh-reboot").start()

    def _ssh_after_reboot(self, ssh: SshServer, seconds: float) -> None:
        if not self.board.wait_rebooted(seconds + REBOOT_MARGIN):
            logger.error("the board did not come back from its reboot: ssh stays down")
            return
        with self._lock:
            if self._closed or ssh is not self.ssh:
                return
            try:
                ssh.start(self.ssh_port)
            except OSError as exc:
                logger.error("ssh could not listen again on port %d after the reboot: %s",
                             self.ssh_port, exc)
                return
            self._up.set()

    def wait_rebooted(self, timeout: float) -> bool:
        """Wait until the last :meth:`reboot` is over, ssh listening again; False on timeout."""
        return self._up.wait(timeout)

    def _new_ssh(self) -> SshServer:
        user, password = self._login
        return SshServer(self.files, self, self.host, user, password, self._host_key)

    # -- what the ssh side asks of the board (shell.BoardControl) --------------------------------

    def start_monitor(self, port: int) -> MonitorServer:
        """``monitor_server PORT``: a new monitor server on ``port`` (0: a free one). Raises
        OSError if it cannot listen there (``BoardDown`` while the board reboots)."""
        monitor = MonitorServer(self.board, self.host)
        monitor.start(port)
        with self._lock:
            self._monitors = [m for m in self._monitors if m.listening] + [monitor]
        return monitor

    def killall_monitors(self) -> int:
        """``killall monitor_server``: end every monitor server still running; how many were."""
        with self._lock:
            running = [m for m in self._monitors if m.listening]
            self._monitors = []
        for monitor in running:
            monitor.killall()
        return len(running)

    def load_bitfile(self) -> None:
        self.board.load_bitfile()

    def boot_id(self) -> str:
        return self.board.boot_id

    def tcp_sockets(self) -> list[TcpSocket]:
        """The board's TCP sockets: its monitor servers' (:meth:`VirtualBoard.tcp_sockets`) and
        its ssh server's (listener and connections)."""
        with self._lock:
            ssh = self.ssh
        return self.board.tcp_sockets() + ssh.tcp_sockets()

    def net_tcp(self) -> str:
        return proc_net_tcp.render(self.tcp_sockets())

    def new_session(self, peer: tuple[str, int]) -> int:
        return self.commands.new_session(peer)

    def log_command(self, session: int, line: str) -> None:
        self.commands.record(session, line)
