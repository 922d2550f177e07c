"""The data port of the virtual board: PyRPL's ``monitor_server`` on TCP (wire format:
:mod:`..hardware.monitor_wire`), serving the registers of a :class:`~.board.VirtualBoard`.

Behaviour, per :attr:`~.board.LinkSettings.mode` of the board:

- ``"shared"``: any number of clients, one thread each, all on the same board; a client that
  leaves, sends ``'c'`` or an unknown command ends only its own connection.
- ``"faithful"``: as the C server: the first client is accepted and served, later ones wait in the
  listen backlog and are never served; when that client leaves (or sends ``'c'``, an unknown
  command, or a request crossing the 128 KiB window), the server ends: its port is closed (the
  connections still queued are reset) until :meth:`MonitorServer.start` is called again (by the ssh
  side's ``//opt//pyrpl///monitor_server <port>``).

In both modes a request crossing a 128 KiB window ends its connection with a reset (the C server
dies of a segmentation fault there). :meth:`MonitorServer.killall` is ``killall monitor_server``:
the listening port closes and every connection ends with FIN or RST as the board's
:attr:`~.board.LinkSettings.killall_close` says.

Threads block in ``accept``/``recv`` (never poll), so an idle server costs no CPU.
"""
from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from ..hardware import monitor_wire
from ..hardware.sockets import close_listener
from .proc_net_tcp import ESTABLISHED, LISTEN, NO_PEER, TcpSocket

if TYPE_CHECKING:
    from .board import VirtualBoard

logger = logging.getLogger(__name__)

Close = Literal["fin", "rst"]
JOIN_TIMEOUT = 2.0
"""Seconds :meth:`MonitorServer.killall` waits for each thread it ended."""


class _Connection:
    """One accepted client: its socket, its thread and how it is to be closed."""

    def __init__(self, sock: socket.socket, peer: tuple) -> None:
        self.sock = sock
        self.peer = peer
        self.local: tuple[str, int] = sock.getsockname()[:2]
        self.cancelled = threading.Event()
        self.close_with: Close = "fin"
        self.thread: threading.Thread | None = None

    def kill(self, how: Close) -> None:
        """End the connection from another thread: FIN (orderly shutdown) or RST (linger 0)."""
        self.close_with = how
        self.cancelled.set()
        try:
            if how == "rst":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sock.shutdown(socket.SHUT_RD)  # wakes the reader; the close sends the RST
            else:
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by its thread

    def close(self) -> None:
        """Close the socket (RST if :meth:`kill` asked for it)."""
        if self.close_with == "rst" and not self.cancelled.is_set():
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()


class MonitorServer:
    """``monitor_server`` for ``board`` on ``host``; not listening until :meth:`start`.

    Thread-safe. ``start``/``killall``/``stop`` may be called repeatedly in any order; a server
    that ended (faithful mode, or after :meth:`killall`) can be started again.
    """

    def __init__(self, board: VirtualBoard, host: str = "127.0.0.1") -> None:
        self.board = board
        self.host = host
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._port: int | None = None
        self._bound_host = host

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, port: int = 0) -> int:
        """Listen on ``port`` (0: a free port) and return the bound port.

        Raises RuntimeError if this server is already listening, :class:`~.board.BoardDown` while
        the board reboots, OSError if the port cannot be bound.
        """
        with self._lock:
            if self._listener is not None:
                raise RuntimeError(f"monitor_server already listening on port {self._port}")
            self.board.check_up()
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.host, port))
                listener.listen(5)
            except OSError:
                listener.close()
                raise
            self._listener = listener
            self._port = listener.getsockname()[1]
            self._bound_host = listener.getsockname()[0]
            faithful = self.board.link.mode == "faithful"
            self.board.register_server(self)
            self._accept_thread = threading.Thread(
                target=self._accept_loop, args=(listener, faithful),
                name=f"monitor_server:{self._port}", daemon=True)
            self._accept_thread.start()
        logger.info("monitor_server listening on %s:%d (%s)", self.host, self._port,
                    "faithful" if faithful else "shared")
        return self._port

    @property
    def port(self) -> int | None:
        """The port listened on, or the last one (None before the first :meth:`start`)."""
        return self._port

    @property
    def listening(self) -> bool:
        with self._lock:
            return self._listener is not None

    @property
    def connections(self) -> int:
        """Number of open client connections."""
        with self._lock:
            return len(self._connections)

    def clients(self) -> list[tuple[str, int]]:
        """The (host, port) of every client being served. In faithful mode, connections waiting
        in the listen backlog are not clients (nor known to the server)."""
        with self._lock:
            return [(c.peer[0], c.peer[1]) for c in self._connections]

    def tcp_sockets(self) -> list[TcpSocket]:
        """The listening socket (while listening) and the connections being served, as the
        board's ``/proc/net/tcp`` shows them (:mod:`.proc_net_tcp`)."""
        with self._lock:
            listener = self._listener
            connections = list(self._connections)
            local = (self._bound_host, self._port or 0)
        sockets = [] if listener is None else [TcpSocket(local, NO_PEER, LISTEN)]
        return sockets + [TcpSocket(c.local, (c.peer[0], c.peer[1]), ESTABLISHED)
                          for c in connections]

    def killall(self) -> None:
        """``killall monitor_server``: stop listening and end every connection with FIN or RST
        (the board's ``link.killall_close``). Returns once the server's threads have ended (each
        waited for at most :data:`JOIN_TIMEOUT` s)."""
        self.end(self.board.link.killall_close)

    def stop(self) -> None:
        """Stop listening and close every connection orderly (FIN); same wait as :meth:`killall`."""
        self.end("fin")

    close = stop

    def end(self, how: Close) -> None:
        """Stop listening and end every connection with ``how`` (``"fin"`` or ``"rst"``); same
        wait as :meth:`killall`. Idempotent."""
        with self._lock:
            listener, self._listener = self._listener, None
            accept_thread, self._accept_thread = self._accept_thread, None
            connections = list(self._connections)
        if listener is not None:
            close_listener(listener)
        for conn in connections:
            conn.kill(how)
        self.board.faults.wake()
        threads = [accept_thread] + [c.thread for c in connections]
        for thread in threads:
            alive = thread is not None and thread.is_alive()
            if alive and thread is not threading.current_thread():
                thread.join(JOIN_TIMEOUT)
        self.board.unregister_server(self)

    # -- serving -----------------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket, faithful: bool) -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except OSError:
                return  # listener closed: the server ended
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, peer)
            conn.thread = threading.current_thread() if faithful else threading.Thread(
                target=self._serve, args=(conn,), name=f"monitor_server:{self._port}:{peer[1]}",
                daemon=True)
            with self._lock:
                if self._listener is not listener:  # ended while accepting
                    sock.close()
                    return
                self._connections.add(conn)
            with self.board.lock:
                self.board.counts.connections += 1
            if faithful:
                self._serve(conn, lambda: self._end_after_client(listener))
                return
            conn.thread.start()

    def _end_after_client(self, listener: socket.socket) -> None:
        """Faithful mode: the client left, so the server process ends (its port closes)."""
        with self._lock:
            if self._listener is not listener:
                return  # already ended by killall/stop
            self._listener = None
            self._accept_thread = None
        close_listener(listener)
        self.board.unregister_server(self)
        logger.info("monitor_server on port %s ended with its client", self._port)

    def _serve(self, conn: _Connection, before_close: Callable[[], None] | None = None) -> None:
        """Answer ``conn``'s requests until it leaves, is killed or sends something fatal; then
        call ``before_close`` (faithful mode: the port closes first) and close the connection."""
        try:
            while self._handle(conn):
                pass
        except OSError as exc:
            logger.debug("monitor_server connection %s ended: %s", conn.peer, exc)
        finally:
            with self._lock:
                self._connections.discard(conn)
            if before_close is not None:
                before_close()
            conn.close()

    def _handle(self, conn: _Connection) -> bool:
        """Read and answer one request; False when the connection is to end."""
        raw = _recv_exact(conn.sock, monitor_wire.HEADER_SIZE)
        if raw is None:
            return False
        header = monitor_wire.Header.parse(raw)
        if header.length == 0:
            return True  # ignored by the C server, whatever the command
        payload = b""
        if header.command == monitor_wire.WRITE:
            payload = _recv_exact(conn.sock, monitor_wire.WORD_SIZE * header.length)
            if payload is None:
                return False
        elif header.command != monitor_wire.READ:
            if header.command != monitor_wire.CLOSE:
                logger.warning("monitor_server: unknown command byte 0x%02x: ending the "
                               "connection", header.command)
            return False
        if not self.board.faults.wait_turn(conn.cancelled):
            return False
        if monitor_wire.crosses_window(header.address, header.length):
            logger.warning("monitor_server: %d words at 0x%08x cross a 128 KiB window: the C "
                           "server crashes here", header.length, header.address)
            conn.close_with = "rst"
            return False
        try:
            if header.command == monitor_wire.READ:
                reply = monitor_wire.pack_words(self.board.read(header.address, header.length))
            else:
                self.board.write(header.address, monitor_wire.unpack_words(payload))
                reply = b""
        except Exception:  # a defect of the board model: end like a crashed server, loudly
            logger.exception("monitor_server: %d words at 0x%08x failed", header.length,
                             header.address)
            conn.close_with = "rst"
            return False
        conn.sock.sendall(self.board.faults.echo(header.raw) + reply)
        return True


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Exactly ``size`` bytes, or None if the peer closed first (blocking, no timeout)."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        n = sock.recv_into(view[received:], size - received)
        if n == 0:
            return None
        received += n
    return bytes(buffer)
