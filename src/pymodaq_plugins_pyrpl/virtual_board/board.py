"""One virtual Red Pitaya: its FPGA (registers and physics), its clock, how its data port behaves
(:class:`LinkSettings`), the faults a test can inject (:class:`~.faults.LinkFaults`, :meth:`reboot`)
and the counters of register accesses. The monitor servers (:mod:`.monitor_server`) and the ssh
side serve one :class:`VirtualBoard`.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .faults import LinkFaults
from .fpga import Fpga
from .proc_net_tcp import TcpSocket

if TYPE_CHECKING:
    from .monitor_server import MonitorServer

logger = logging.getLogger(__name__)


class BoardDown(ConnectionRefusedError):
    """The board is rebooting: its ports refuse connections (raised by ``start``)."""


@dataclass
class LinkSettings:
    """How the board's monitor servers behave (read when a server starts or is killed).

    ``mode``: ``"shared"`` (many connections, one board) or ``"faithful"`` (one client per
    ``monitor_server``, which ends with its client, as the C server). ``killall_close``: how
    ``killall monitor_server`` ends open connections, ``"fin"`` (an orderly close, what the kernel
    does for an idle connection of a killed process) or ``"rst"`` (a reset, as when data was
    still unread).
    """

    mode: Literal["shared", "faithful"] = "shared"
    killall_close: Literal["fin", "rst"] = "fin"

    def __post_init__(self) -> None:
        if self.mode not in ("shared", "faithful"):
            raise ValueError(f"mode must be 'shared' or 'faithful', not {self.mode!r}")
        if self.killall_close not in ("fin", "rst"):
            raise ValueError(f"killall_close must be 'fin' or 'rst', not {self.killall_close!r}")


@dataclass
class AccessCounts:
    """Register requests served since the board was made (reads and writes, not reset by a
    reboot); ``words_written`` counts the 32-bit words of all writes; ``connections`` the
    data-port connections its monitor servers accepted (a client's connects, e.g. its
    reconnections; in faithful mode one waiting in a backlog counts once it is served)."""

    reads: int = 0
    writes: int = 0
    words_written: int = 0
    connections: int = 0


WRITE_LOG = 10000
"""Write requests remembered by :attr:`VirtualBoard.write_log` (the oldest are dropped)."""


class VirtualBoard:
    """A register-level Red Pitaya with PyRPL's bitfile loaded.

    ``plant`` connects the outputs to the inputs (a spec of ``physics.plants.parse_plant``, e.g.
    ``"loopback"`` or ``"resonator:f0=100e3,q=30"``; ValueError if invalid), ``seed`` seeds its
    noise, ``clock`` gives monotonic seconds (the 125 MHz time base follows it). Register access
    (:meth:`read`, :meth:`write`) is thread-safe; every request is executed under one lock, at the
    clock's current time.
    """

    def __init__(self, plant: str = "loopback", seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plant = plant
        self.seed = seed
        self.clock = clock
        self.link = LinkSettings()
        self.faults = LinkFaults()
        self.counts = AccessCounts()
        self.write_log: deque[tuple[float, int, int]] = deque(maxlen=WRITE_LOG)
        """The last write requests: (``clock()`` time, byte address, words), oldest first."""
        self.lock = threading.RLock()
        """Held while a request runs: hold it to read several registers at one instant."""
        self._closed = threading.Event()
        self.boot_id = str(uuid.uuid4())
        """The board's boot id (``/proc/sys/kernel/random/boot_id``): a new one at each
        :meth:`reboot`, not at a bitfile load."""
        self.fpga = Fpga(plant, seed, clock)
        self._servers: set[MonitorServer] = set()
        self._down_until = -float("inf")
        self._reboot_done = threading.Event()
        self._reboot_done.set()

    # -- registers -------------------------------------------------------------------------------

    def read(self, address: int, length: int) -> np.ndarray:
        """``length`` 32-bit words from byte ``address`` (uint32), computed now."""
        with self.lock:
            self.counts.reads += 1
            return self.fpga.read(address, length)

    def write(self, address: int, words: np.ndarray) -> None:
        """Write ``words`` (uint32) from byte ``address``, taking effect now."""
        with self.lock:
            self.counts.writes += 1
            self.counts.words_written += len(words)
            self.write_log.append((self.clock(), address, len(words)))
            self.fpga.write(address, words)

    def load_bitfile(self) -> None:
        """PyRPL's bitfile is loaded again (``overlay.sh`` over ssh, ``reloadfpga=True``): every
        register goes back to its power-up value. The monitor servers and their connections are
        untouched (PyRPL ends them itself before it loads)."""
        with self.lock:
            self.fpga.reset()

    # -- monitor servers -------------------------------------------------------------------------

    def register_server(self, server: MonitorServer) -> None:
        """Called by a monitor server that started listening (a reboot ends it)."""
        with self.lock:
            self._servers.add(server)

    def unregister_server(self, server: MonitorServer) -> None:
        with self.lock:
            self._servers.discard(server)

    def monitor_clients(self) -> list[tuple[str, int]]:
        """The (host, port) of every client its monitor servers are serving now (in faithful
        mode at most one per server; connections waiting in a backlog are not served)."""
        with self.lock:
            servers = list(self._servers)
        return [client for server in servers for client in server.clients()]

    def tcp_sockets(self) -> list[TcpSocket]:
        """The TCP sockets of its monitor servers: listeners and the connections served."""
        with self.lock:
            servers = list(self._servers)
        return [sock for server in servers for sock in server.tcp_sockets()]

    def check_up(self) -> None:
        """Raise :class:`BoardDown` while the board reboots."""
        remaining = self.down_for()
        if remaining > 0:
            raise BoardDown(f"the virtual board is rebooting ({remaining:.2f} s left)")

    def down_for(self) -> float:
        """Seconds until a reboot is over (0 when up)."""
        return max(0.0, self._down_until - self.clock())

    # -- faults ------------------------------------------------------------------------------------

    def reboot(self, seconds: float) -> None:
        """The board reboots: every monitor server ends and its connections are reset (RST), the
        registers go back to their power-up values, the boot id changes, and the ports refuse
        connections for ``seconds`` (:meth:`check_up`). Then servers in ``"shared"`` mode listen
        again on their port (standing in for an init script); in ``"faithful"`` mode they stay
        down until started again, as PyRPL does over ssh. Returns at once; :meth:`wait_rebooted`
        waits for the end."""
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, not {seconds!r}")
        with self.lock:
            servers = list(self._servers)
            self._down_until = self.clock() + seconds
            self.boot_id = str(uuid.uuid4())
            self._reboot_done.clear()
        ports = [(server, server.port) for server in servers]
        for server in servers:
            server.end("rst")
        with self.lock:
            self.fpga.reset()
        restart = [(s, p) for s, p in ports if self.link.mode == "shared" and p is not None]
        logger.info("virtual board rebooting for %.3g s", seconds)
        threading.Thread(target=self._come_back, args=(restart,), name="virtual-board-reboot",
                         daemon=True).start()

    def _come_back(self, restart: list[tuple[MonitorServer, int]]) -> None:
        while (remaining := self.down_for()) > 0:
            if self._closed.wait(remaining):
                return
        for server, port in restart:
            try:
                server.start(port)
            except (OSError, RuntimeError) as exc:
                logger.warning("monitor_server could not listen again on port %d: %s", port, exc)
        self._reboot_done.set()

    def close(self) -> None:
        """Stop every monitor server of the board (FIN) and cancel a pending reboot's restart."""
        self._closed.set()
        with self.lock:
            servers = list(self._servers)
        for server in servers:
            server.stop()
        self._reboot_done.set()

    def wait_rebooted(self, timeout: float) -> bool:
        """Wait until the last :meth:`reboot` is over (servers listening again); False on
        timeout."""
        return self._reboot_done.wait(timeout)
