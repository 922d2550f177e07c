"""A register client for the board's ``monitor_server`` (wire format: :mod:`...monitor_wire`) with
a deadline per request, for PyRPL's hardware modules to use in place of PyRPL's ``MonitorClient``.

Same interface as PyRPL 0.9.9.1's ``MonitorClient`` as its modules use it (``reads``, ``writes``,
``close``, the ``_read_counter``/``_write_counter`` counters that PyRPL's tests read, ``socket``),
but a failed request raises a :class:`~.errors.LinkError` instead of retrying, restarting the
server over ssh (``killall monitor_server``) or returning ``None``: the caller decides what to do.
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from ... import monitor_wire
from .errors import (
    LinkClosed,
    LinkError,
    LinkGarbage,
    LinkNotConnected,
    LinkRefused,
    LinkReset,
    LinkTimeout,
)

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 1.5
"""Default seconds a request may take, before the allowance for its size (:data:`MIN_RATE`)."""
MIN_RATE = 200e3
"""Bytes per second the link is assumed to carry at least: a request's deadline grows by its
bytes (sent and received) divided by this rate (a 16 384-word scope read: +0.33 s)."""

_RESET_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED}
_CLOSED_ERRNOS = {errno.EPIPE, errno.ESHUTDOWN, errno.ENOTCONN}


@dataclass
class _Reply:
    """The reply to one request, as far as it has arrived."""

    operation: str
    address: int
    length: int
    header: bytes
    buffer: bytearray
    received: int = 0

    @property
    def missing(self) -> int:
        return len(self.buffer) - self.received


class BoardClient:
    """One TCP connection to a ``monitor_server``; build it with :meth:`connect`.

    Thread-safe: one request at a time (a call waiting for another one counts that wait in its
    own deadline). Every call returns or raises within its deadline: ``timeout`` seconds plus the
    bytes it moves divided by :data:`MIN_RATE` (the bytes owed by an earlier timed-out request
    included). No retries, no reconnection: after :class:`~.errors.LinkClosed`,
    :class:`~.errors.LinkReset` or :class:`~.errors.LinkGarbage` the client is closed and every
    further request raises :class:`~.errors.LinkNotConnected`; build a new one.

    A request that missed its deadline (:class:`~.errors.LinkTimeout`) leaves the connection
    open, and the rest of its reply is read and discarded (its echo still checked) before the
    next request is sent: a late reply is never taken for the answer to another request.
    """

    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float) -> None:
        """Use :meth:`connect`; ``sock`` is a connected TCP socket, owned from now on."""
        self.socket = sock
        self.host = host
        self.port = port
        self.timeout = timeout
        """Seconds a request may take before the allowance for its size (settable)."""
        self._read_counter = 0
        """Read requests made (as PyRPL's ``MonitorClient``; PyRPL's tests compare them)."""
        self._write_counter = 0
        """Write requests made (as PyRPL's ``MonitorClient``)."""
        self._lock = threading.Lock()
        self._owed: _Reply | None = None
        self._waiting_since: float | None = None
        self._closed = False

    @classmethod
    def connect(cls, host: str, port: int, timeout: float = REQUEST_TIMEOUT) -> BoardClient:
        """Connect to the ``monitor_server`` at ``host``:``port`` within ``timeout`` seconds
        (also the request timeout of the client, :attr:`timeout`), with ``TCP_NODELAY``.

        One attempt: raises :class:`~.errors.LinkRefused` if the connection is refused, the host
        unreachable or the deadline passed; ValueError for a timeout that is not > 0.
        """
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 s, not {timeout!r}")
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise LinkRefused("connect", None, None,
                              f"{host}:{port} did not accept within {timeout:g} s") from None
        except OSError as exc:
            raise LinkRefused("connect", None, None,
                              f"{host}:{port}: {exc.strerror or exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        logger.debug("connected to monitor_server at %s:%d", host, port)
        return cls(sock, host, port, timeout)

    # -- PyRPL's client interface ------------------------------------------------------------------

    def reads(self, addr: int, length: int) -> np.ndarray:
        """``length`` 32-bit words from byte address ``addr`` (a new uint32 array).

        Raises ValueError (nothing sent) if ``length`` is not in 1..65535 or the words cross a
        128 KiB window (the C server would crash), :class:`~.errors.LinkError` if the request
        failed.
        """
        self._read_counter += 1
        reply = self._request(b"r", addr, length, b"")
        words = np.frombuffer(reply.buffer, dtype="<u4", offset=monitor_wire.HEADER_SIZE)
        return words.astype(np.uint32, copy=False)

    def writes(self, addr: int, values: Iterable[int] | np.ndarray) -> bool:
        """Write ``values`` from byte address ``addr``; True once the board echoed the request.
        The values are converted as PyRPL's client converts them (``np.asarray(values,
        dtype=np.uint32)``, so numpy decides about values out of the uint32 range).

        Raises ValueError (nothing sent) for an empty or too long ``values`` or a request
        crossing a 128 KiB window, :class:`~.errors.LinkError` if the request failed (a
        :class:`~.errors.LinkTimeout` leaves the outcome unknown).
        """
        self._write_counter += 1
        words = np.asarray(values, dtype=np.uint32).ravel()
        self._request(b"w", addr, len(words), monitor_wire.pack_words(words))
        return True

    def close(self) -> None:
        """Close the connection (an orderly close: the C server ends with its client).
        Idempotent; a request running in another thread ends with
        :class:`~.errors.LinkNotConnected`."""
        self._closed = True
        try:
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes a request blocked in another thread
        except OSError:
            pass  # not connected any more
        with self._lock:
            self.socket.close()
            self._owed = None
            self._waiting_since = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the client is closed (by :meth:`close` or a failure that closed it)."""
        return self._closed

    @property
    def owed_bytes(self) -> int:
        """Bytes of a timed-out request's reply not received yet (drained before the next)."""
        owed = self._owed
        return 0 if owed is None else owed.missing

    def silent_for(self) -> float:
        """Seconds the board has been silent while a reply is expected: since the request was
        sent or its last byte arrived. 0.0 when no reply is expected. Does not wait for a
        running request."""
        since = self._waiting_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def deadline_for(self, length: int) -> float:
        """Seconds a request moving ``length`` words may take (:attr:`timeout` + its bytes at
        :data:`MIN_RATE`)."""
        return self.timeout + (2 * monitor_wire.HEADER_SIZE + 4 * length) / MIN_RATE

    # -- one request -----------------------------------------------------------------------------

    def _request(self, command: bytes, address: int, length: int, payload: bytes) -> _Reply:
        operation = "read" if command == b"r" else "write"
        self._check(operation, address, length)
        deadline = time.monotonic() + self.deadline_for(length)
        if not self._lock.acquire(timeout=self.deadline_for(length)):
            raise LinkTimeout(operation, address, length,
                              "another request held the link until the deadline")
        try:
            if self._closed:
                raise LinkNotConnected(operation, address, length, "the client is closed")
            owed = self._owed
            if owed is not None:
                deadline += owed.missing / MIN_RATE
                self._receive(owed, deadline, (operation, address, length))
                self._owed = None
                logger.debug("drained %d late bytes of the %s at %#010x", len(owed.buffer),
                             owed.operation, owed.address)
            if time.monotonic() >= deadline:
                raise LinkTimeout(operation, address, length, "not sent: draining the late reply "
                                  "to an earlier request used up the deadline")
            header = monitor_wire.header(command, length, address)
            reply = _Reply(operation, address, length, header,
                           bytearray(monitor_wire.reply_size(command, length)))
            self._send(header + payload, deadline, reply)
            self._owed = reply
            self._receive(reply, deadline, None)
            self._owed = None
            return reply
        finally:
            self._lock.release()

    @staticmethod
    def _check(operation: str, address: int, length: int) -> None:
        if not 0 <= address <= 0xFFFFFFFF:
            raise ValueError(f"{operation}: address {address!r} is not a 32-bit address")
        if not 1 <= length <= monitor_wire.MAX_WORDS:
            raise ValueError(f"{operation}: {length} words at {address:#010x}: a request carries "
                             f"1 to {monitor_wire.MAX_WORDS} words")
        if monitor_wire.crosses_window(address, length):
            raise ValueError(f"{operation}: {length} words at {address:#010x} cross a "
                             f"{monitor_wire.WINDOW // 1024} KiB window (monitor_server would "
                             "crash)")

    def _send(self, data: bytes, deadline: float, reply: _Reply) -> None:
        try:
            self.socket.settimeout(max(deadline - time.monotonic(), 1e-3))
            self.socket.sendall(data)
        except TimeoutError:  # part of the request may be out: the stream cannot be trusted
            self._fail(LinkTimeout, reply, "the request could not be sent before the deadline; "
                                           "connection closed (partly sent)")
        except OSError as exc:
            self._fail_os(exc, reply)
        self._waiting_since = time.monotonic()

    def _receive(self, reply: _Reply, deadline: float,
                 draining_for: tuple[str, int, int] | None) -> None:
        """Read the rest of ``reply`` into its buffer, checking the echo as soon as it is in.
        ``draining_for``: the request waiting for this late reply (named in a timeout)."""
        view = memoryview(reply.buffer)
        while reply.missing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timeout(reply, draining_for)
            try:
                self.socket.settimeout(remaining)
                n = self.socket.recv_into(view[reply.received:], reply.missing)
            except TimeoutError:
                self._timeout(reply, draining_for)
            except OSError as exc:
                self._fail_os(exc, reply)
            if n == 0:
                self._fail(LinkClosed, reply, "the board closed the connection (FIN) after "
                                              f"{reply.received} of {len(reply.buffer)} bytes")
            before = reply.received
            reply.received += n
            self._waiting_since = time.monotonic() if reply.missing else None
            if before < monitor_wire.HEADER_SIZE <= reply.received:
                echo = bytes(reply.buffer[:monitor_wire.HEADER_SIZE])
                if echo != reply.header:
                    self._fail(LinkGarbage, reply, f"the board echoed {echo.hex()} instead of "
                                                   f"{reply.header.hex()}; connection closed")

    def _timeout(self, reply: _Reply, draining_for: tuple[str, int, int] | None) -> NoReturn:
        got = f"{reply.received} of {len(reply.buffer)} bytes"
        if draining_for is None:
            raise LinkTimeout(reply.operation, reply.address, reply.length,
                              f"no complete reply within the deadline ({got} received)")
        operation, address, length = draining_for
        raise LinkTimeout(operation, address, length,
                          f"not sent: the late reply to the earlier {reply.operation} of "
                          f"{reply.length} word(s) at {reply.address:#010x} was still "
                          f"incomplete at the deadline ({got})")

    def _fail_os(self, exc: OSError, reply: _Reply) -> NoReturn:
        if self._closed:
            self._fail(LinkNotConnected, reply, "the client was closed during the request")
        if isinstance(exc, ConnectionResetError) or exc.errno in _RESET_ERRNOS:
            self._fail(LinkReset, reply, "the board reset the connection (RST)", exc)
        if isinstance(exc, BrokenPipeError) or exc.errno in _CLOSED_ERRNOS:
            self._fail(LinkClosed, reply, "the board closed the connection", exc)
        self._fail(LinkError, reply, f"socket error: {exc}", exc)

    def _fail(self, kind: type[LinkError], reply: _Reply, what: str,
              cause: BaseException | None = None) -> NoReturn:
        """Close the client and raise ``kind`` for ``reply``."""
        if self._closed and kind is not LinkNotConnected:
            kind, what = LinkNotConnected, "the client was closed during the request"
        self._closed = True
        self._owed = None
        self._waiting_since = None
        self.socket.close()
        logger.info("board link to %s:%d closed: %s", self.host, self.port, what)
        raise kind(reply.operation, reply.address, reply.length, what) from cause
