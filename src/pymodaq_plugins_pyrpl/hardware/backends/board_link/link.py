"""The register client PyRPL's hardware modules hold for the life of a backend (``rp.client`` and
every module's ``_client``): it forwards each request to the current connection to the board's
``monitor_server`` (a :class:`~.client.BoardClient`), which the backend replaces when it
reconnects, so PyRPL's objects never need to be rebuilt.

It also holds the **write gate**: closed from construction until :meth:`RegisterLink.open_gate`,
writes are dropped (and counted) instead of sent, so PyRPL's start-up (the ASG ``counter_wrap``
writes of ``RedPitaya()``, ``_load_setup_attributes`` of a named config) changes no register of a
board whose outputs may be running.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from collections.abc import Iterable

import numpy as np

from .client import REQUEST_TIMEOUT, BoardClient
from .errors import LinkNotConnected, LinkRefused

logger = logging.getLogger(__name__)

CONNECT_WITHIN = 2.0
"""Seconds :meth:`RegisterLink.connect` keeps trying (a ``monitor_server`` just started over ssh
may take a moment to listen)."""
CONNECT_SPACING = 0.1
"""Seconds between two connection attempts."""
HALF_OPEN_WAIT = 0.2
"""Seconds :meth:`RegisterLink.end_half_open` leaves for the SYN, the board's ACK and our reset
(one round trip each way; less than the 1 s after which our TCP would send the SYN again)."""


class RegisterLink:
    """PyRPL's register-client interface (``reads``, ``writes``, ``close``, the request counters)
    over the current :class:`~.client.BoardClient` to ``host``:``port``.

    Requests raise what the connection raises (:class:`~.errors.LinkError` subclasses, ValueError
    for a bad request), :class:`~.errors.LinkNotConnected` when there is no connection. Not
    thread-safe beyond what :class:`~.client.BoardClient` is: the backend uses it from one thread.
    """

    def __init__(self, host: str, port: int, timeout: float = REQUEST_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        """Request timeout of the connections (:attr:`.BoardClient.timeout`)."""
        self._connection: BoardClient | None = None
        self._gate_open = False
        self.gated_writes = 0
        """Write requests dropped while the gate was closed."""
        self.last_reply = -float("inf")
        """``time.monotonic()`` of the last request the board answered."""
        self.local_addresses: set[tuple[str, int]] = set()
        """Our ends (ip, port) of every connection this link made, as the board lists its
        clients: never another program's."""
        self._counters = [0, 0]  # requests of the connections closed so far: reads, writes

    # -- PyRPL's client interface ------------------------------------------------------------------

    def reads(self, addr: int, length: int) -> np.ndarray:
        """``length`` words from ``addr`` (:meth:`.BoardClient.reads`)."""
        data = self._current("read", addr, length).reads(addr, length)
        self.last_reply = time.monotonic()
        return data

    def writes(self, addr: int, values: Iterable[int] | np.ndarray) -> bool:
        """Write ``values`` at ``addr`` (:meth:`.BoardClient.writes`); while the gate is closed
        nothing is sent, the write is counted in :attr:`gated_writes` and True returned."""
        if not self._gate_open:
            self.gated_writes += 1
            return True
        words = np.asarray(values, dtype=np.uint32).ravel()
        result = self._current("write", addr, len(words)).writes(addr, words)
        self.last_reply = time.monotonic()
        return result

    def close(self) -> None:
        """Close the connection (an orderly close: a ``monitor_server`` ends with its client).
        Idempotent; the link can :meth:`connect` again."""
        self.drop(reset=False)

    @property
    def _read_counter(self) -> int:
        """Read requests made on every connection (as PyRPL's ``MonitorClient``)."""
        connection = self._connection
        return self._counters[0] + (connection._read_counter if connection else 0)

    @property
    def _write_counter(self) -> int:
        """Write requests made on every connection, gated ones not included."""
        connection = self._connection
        return self._counters[1] + (connection._write_counter if connection else 0)

    # -- the connection ----------------------------------------------------------------------------

    def connect(self, within: float = CONNECT_WITHIN) -> None:
        """Replace the connection (closing the old one) by a new one to :attr:`host`:
        :attr:`port`, trying every :data:`CONNECT_SPACING` s for ``within`` s. Raises
        :class:`~.errors.LinkRefused` (the last attempt's reason) if none succeeded."""
        self.drop(reset=False)
        deadline = time.monotonic() + within
        while True:
            attempt = min(self.timeout, max(deadline - time.monotonic(), 0.05))
            try:
                connection = BoardClient.connect(self.host, self.port, attempt)
            except LinkRefused:
                if time.monotonic() + CONNECT_SPACING >= deadline:
                    raise
                time.sleep(CONNECT_SPACING)
                continue
            connection.timeout = self.timeout
            self._connection = connection
            self.local_addresses.add(connection.socket.getsockname()[:2])
            return

    def drop(self, reset: bool) -> None:
        """Close the connection, if any; with ``reset`` by a reset (RST, ``SO_LINGER`` 0), which
        ends a ``monitor_server`` serving it at once even if it is blocked sending."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        self._counters[0] += connection._read_counter
        self._counters[1] += connection._write_counter
        if reset and not connection.closed:
            try:
                connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                             struct.pack("ii", 1, 0))
            except OSError:
                pass  # already gone
        connection.close()

    def end_half_open(self, local: tuple[str, int], wait: float = HALF_OPEN_WAIT) -> None:
        """End a connection from our ``local`` (ip, port) that the board still serves although
        we no longer hold it (a half-open connection: a router's reset, or our own, never reached
        the board; a faithful ``monitor_server`` would serve it, and refuse everyone else, until
        the board's TCP gives up, i.e. for ever while idle).

        A SYN from that same local port makes the board's TCP answer with an ACK of the
        connection it knows (a challenge ACK, RFC 5961); our TCP, which knows no such connection,
        answers it with a reset, which the board accepts: that connection, and the
        ``monitor_server`` serving it, end. Only that one connection (its four addresses) is
        touched. Waits ``wait`` s for the exchange; failures are logged, not raised (the next
        look at the board tells whether it worked)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.bind(local)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect((self.host, self.port))
            time.sleep(wait)
        except OSError as exc:
            logger.info("could not end the half-open connection from %s:%d: %s", *local, exc)
        finally:
            sock.close()

    @property
    def connected(self) -> bool:
        """True while there is a connection not known to be closed."""
        connection = self._connection
        return connection is not None and not connection.closed

    def silent_for(self) -> float:
        """Seconds the board has been silent while a reply is expected (0 when none is, or no
        connection): :meth:`.BoardClient.silent_for`."""
        connection = self._connection
        return 0.0 if connection is None else connection.silent_for()

    # -- the write gate ------------------------------------------------------------------------------

    @property
    def gate_open(self) -> bool:
        return self._gate_open

    def open_gate(self) -> None:
        """From now on writes are sent."""
        self._gate_open = True

    def _current(self, operation: str, addr: int, length: int) -> BoardClient:
        connection = self._connection
        if connection is None:
            raise LinkNotConnected(operation, addr, length, "not connected to the board")
        return connection
