"""The client's transport: socket options, TLS through memory buffers, one connection
(:class:`Link`) and opening one (:class:`Connector`: TCP connect and the TLS handshake)."""
from __future__ import annotations

import contextlib
import errno
import hmac
import itertools
import os
import selectors
import socket
import ssl
import threading
import time
from typing import Any, Callable

from .. import protocol
from ..errors import CertificateMismatch, ConnectionFailed
from ..sockets import configure_stream
from ..tls import fingerprint

SLICE = 0.2
"""Socket timeout: blocking reads and writes wake up at least this often (seconds)."""
RECV_CHUNK = 1 << 20
"""Bytes read per ``recv``: a scope trace (about 350 kB per line) arrives in a few reads."""
RCVBUF = 4 << 20
"""Requested kernel receive buffer (the kernel may grant less)."""
MAX_REPLY_BYTES = 256 << 20
"""A reply line longer than this is treated as a broken connection."""
_IN_PROGRESS = {0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY,
                getattr(errno, "WSAEWOULDBLOCK", errno.EWOULDBLOCK)}


class Broken(Exception):
    """The link cannot be used any more (EOF, socket error, unparsable line); str() says why."""


class Stopped(Exception):
    """``close()`` interrupted a connection attempt."""


class WriteTimeout(Exception):
    """The deadline passed before a request was fully written; ``partial``: some bytes were."""

    def __init__(self, partial: bool) -> None:
        super().__init__("write timed out")
        self.partial = partial


def connect_failed_message(address: str, reason: str) -> str:
    """The text of a ConnectionFailed to ``address`` because of ``reason``."""
    return (f"cannot connect to the PyRPL server at {address}: {reason}. Check that the "
            "server is running there (the plugins start a local one on demand; see "
            "`python -m pymodaq_plugins_pyrpl.hardware.server --help`) and that host and "
            "port are right")


class TlsChannel:
    """TLS over a plain socket through memory buffers. The SSL object is used only under ``lock``
    and never waits on the socket, so a reader and a writer thread can share the link (an
    ``ssl.SSLSocket`` must not be read and written by two threads at once). Records the SSL object
    produces while decrypting leave with the next :meth:`encrypt`."""

    def __init__(self, context: ssl.SSLContext, hostname: str) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname)
        self.lock = threading.Lock()

    def decrypt(self, data: bytes | memoryview) -> bytes:
        """The plaintext of ``data`` received from the server (empty until a record is complete).

        Raises Broken on a TLS error or the server's close_notify.
        """
        plain = bytearray()
        with self.lock:
            self.incoming.write(data)
            while True:
                try:
                    chunk = self.obj.read(RECV_CHUNK)
                except ssl.SSLWantReadError:
                    return bytes(plain)
                except ssl.SSLZeroReturnError:
                    raise Broken("connection closed by the server (TLS close)") from None
                except ssl.SSLError as exc:
                    raise Broken(f"TLS error: {exc}") from None
                if not chunk:
                    raise Broken("connection closed by the server (TLS close)")
                plain += chunk

    def encrypt(self, data: bytes | memoryview) -> bytes:
        """The bytes to send for ``data`` (with any record pending from a decryption before)."""
        with self.lock:
            self.obj.write(data)
            return self.outgoing.read()


class Link:
    """One TCP connection: an incremental line reader (one reader at a time) and a bounded writer
    (writers take turns on ``write_lock``); TLS with ``tls``. ``generation`` numbers the links of
    one client, so a reply is matched only to a call written on the same link."""

    def __init__(self, sock: socket.socket, generation: int, tls: TlsChannel | None = None) -> None:
        self.sock = sock
        self.generation = generation
        self.tls = tls
        self.write_lock = threading.Lock()
        self._buffer = bytearray()
        self._scanned = 0
        self._chunk = bytearray(RECV_CHUNK)
        self.last_received = time.monotonic()
        self.probed_at: float | None = None
        """When the liveness probe was written (monotonic); None: no probe outstanding."""

    def read_message(self, deadline: float | None = None, stop: threading.Event | None = None,
                     on_idle: Callable[[], None] | None = None) -> dict[str, Any]:
        """The next JSON object from the server.

        ``deadline`` (monotonic) bounds the wait: TimeoutError after it. A deadline changes the
        socket timeout, so it may only be given while no other thread uses the link (handshake).
        Raises Broken (EOF, socket error, a line that is not a JSON object), Stopped (``stop``
        set, checked every SLICE). ``on_idle`` is called after every SLICE without data; it may
        raise Broken.
        """
        while True:
            line = self._next_line()
            if line is not None:
                if line.strip():
                    return self._parse(line)
                continue
            if stop is not None and stop.is_set():
                raise Stopped()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no reply in time")
                self.sock.settimeout(min(SLICE, remaining))
            if not self._receive() and on_idle is not None:
                on_idle()

    def _next_line(self) -> bytes | None:
        end = self._buffer.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buffer)
            return None
        with memoryview(self._buffer) as view:
            line = bytes(view[:end])
        del self._buffer[:end + 1]
        self._scanned = 0
        return line

    def _receive(self) -> bool:
        """Receive what has arrived within a SLICE; False if nothing did. Raises Broken."""
        try:
            n = self.sock.recv_into(self._chunk)
        except TimeoutError as exc:
            if exc.errno is None:  # the socket's own timeout: a SLICE passed without data
                return False
            raise Broken(f"connection error: {exc}") from None  # ETIMEDOUT: keepalive failed
        except OSError as exc:
            raise Broken(f"connection error: {exc}") from None
        if n == 0:
            raise Broken("connection closed by the server"
                         + (" in the middle of a reply" if self._buffer else ""))
        self.last_received = time.monotonic()
        data = memoryview(self._chunk)[:n]
        self._buffer += data if self.tls is None else self.tls.decrypt(data)
        if len(self._buffer) > MAX_REPLY_BYTES:
            raise Broken(f"reply line longer than {MAX_REPLY_BYTES} bytes")
        return True

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any]:
        """The message on ``line`` with its arrays decoded; if an array is malformed, the message
        as parsed (decoding it again then raises for the call it answers). Raises Broken."""
        try:
            message = protocol.decode_line(line)
        except (ValueError, RecursionError):
            try:
                message = protocol.loads(line)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise Broken(f"garbled line from the server ({exc}): {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise Broken(f"line from the server is not a JSON object: {line[:80]!r}")
        return message

    def write(self, data: bytes, deadline: float) -> None:
        """Write all of ``data`` before ``deadline`` (overshoot at most SLICE), waiting for the
        write lock within that deadline too.

        Raises WriteTimeout (``partial`` if some bytes went out, or, with TLS, once ``data`` was
        encrypted: the stream is then corrupt) or OSError.
        """
        if not self.write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise WriteTimeout(partial=False)
        try:
            self._write_locked(data, deadline)
        finally:
            self.write_lock.release()

    def _write_locked(self, data: bytes, deadline: float) -> None:
        committed = False
        if self.tls is not None:
            if time.monotonic() >= deadline:
                raise WriteTimeout(partial=False)
            data, committed = self.tls.encrypt(data), True
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            if time.monotonic() >= deadline:
                raise WriteTimeout(partial=committed or sent > 0)
            try:
                sent += self.sock.send(view[sent:])
            except TimeoutError as exc:
                if exc.errno is not None:  # ETIMEDOUT from the kernel, not the SLICE timeout
                    raise

    def shutdown(self) -> None:
        """Wake up the reader (it sees EOF) and make writes fail at once; idempotent."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Shut down, then close under the write lock: no write can reach a new socket reusing
        this one's descriptor. Idempotent."""
        self.shutdown()
        with self.write_lock:
            self.sock.close()


def configure(sock: socket.socket) -> None:
    """Low latency (no Nagle), keepalive (a vanished server is noticed in about 30 s), and a SLICE
    timeout so blocked reads and writes wake up regularly."""
    configure_stream(sock)
    sock.settimeout(SLICE)


class Connector:
    """Opens links to ``host:port``: TCP connect, then with ``tls_context`` the TLS handshake and
    the certificate checks (host name through the context, or the pinned ``tls_fingerprint``).
    ``stop`` interrupts an attempt (Stopped)."""

    def __init__(self, host: str, port: int, stop: threading.Event,
                 tls_context: ssl.SSLContext | None, tls_fingerprint: str | None) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.stop = stop
        self.tls_context = tls_context
        self.tls_fingerprint = tls_fingerprint
        self._generations = itertools.count(1)

    def open(self, deadline: float, timeout: float) -> Link:
        """A connection to host:port before ``deadline``; raises ConnectionFailed,
        CertificateMismatch (final), Stopped."""
        try:
            addresses = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectionFailed(connect_failed_message(
                self.address, f"cannot resolve {self.host!r} ({exc})")) from None
        failure: OSError | None = None
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            with contextlib.suppress(OSError):  # a kernel may refuse that size: keep its default
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            try:
                self._connect_socket(sock, address, deadline)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            except BaseException:
                sock.close()
                raise
            configure(sock)
            if self.tls_context is None:
                return Link(sock, next(self._generations))
            try:
                return Link(sock, next(self._generations), self._tls_handshake(sock, deadline))
            except BaseException:
                sock.close()
                raise
        if isinstance(failure, TimeoutError):
            reason = f"no connection within {timeout:g} s (host unreachable or a firewall drops it)"
        elif isinstance(failure, ConnectionRefusedError):
            reason = "connection refused (no server listens on that port)"
        else:
            reason = str(failure)
        raise ConnectionFailed(connect_failed_message(self.address, reason))

    def _connect_socket(self, sock: socket.socket, address: Any, deadline: float) -> None:
        """Non-blocking connect, waited for in SLICEs so ``stop`` can interrupt it.

        Raises OSError (TimeoutError after ``deadline``), Stopped.
        """
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in _IN_PROGRESS:
            raise OSError(code, os.strerror(code))
        if code != 0:
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_WRITE)
                while not selector.select(min(SLICE, max(0.0, deadline - time.monotonic()))):
                    if self.stop.is_set():
                        raise Stopped()
                    if time.monotonic() >= deadline:
                        raise TimeoutError("connect timed out")
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))

    def _tls_handshake(self, sock: socket.socket, deadline: float) -> TlsChannel:
        """The TLS handshake on a connected socket, before ``deadline``, and the certificate checks.

        Raises CertificateMismatch (final), ConnectionFailed, Stopped.
        """
        assert self.tls_context is not None
        state = TlsChannel(self.tls_context, self.host)
        try:
            while True:
                try:
                    state.obj.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                sock.sendall(state.outgoing.read())
                if done:
                    break
                self._receive_handshake(sock, state, deadline)
        except ssl.SSLCertVerificationError as exc:
            raise CertificateMismatch(
                f"refusing the PyRPL server at {self.address}: its TLS certificate fails "
                f"verification ({exc.verify_message}). The client does not retry; check the TLS CA "
                "file, or pin the server's fingerprint (its log shows it)") from None
        except (ssl.SSLError, OSError, Broken) as exc:
            reason = "no TLS handshake in time" if isinstance(exc, TimeoutError) else exc
            raise ConnectionFailed(connect_failed_message(
                self.address,
                f"TLS handshake failed ({reason}): is it a TLS server (--tls-cert)?")) from None
        self._check_fingerprint(state.obj.getpeercert(binary_form=True) or b"")
        return state

    def _receive_handshake(self, sock: socket.socket, state: TlsChannel, deadline: float) -> None:
        """Feed the next bytes from the server to the handshake. Raises TimeoutError after
        ``deadline``, Broken at end of stream, Stopped."""
        while True:
            if self.stop.is_set():
                raise Stopped()
            if time.monotonic() >= deadline:
                raise TimeoutError("no TLS handshake in time")
            try:
                data = sock.recv(RECV_CHUNK)
            except TimeoutError as exc:
                if exc.errno is None:  # a SLICE without data
                    continue
                raise
            if not data:
                raise Broken("connection closed by the server during the TLS handshake")
            state.incoming.write(data)
            return

    def _check_fingerprint(self, der: bytes) -> None:
        """Raise CertificateMismatch unless the certificate ``der`` has the pinned fingerprint."""
        if self.tls_fingerprint is None:
            return
        actual = fingerprint(der)
        if not hmac.compare_digest(actual, self.tls_fingerprint):
            raise CertificateMismatch(
                f"refusing the PyRPL server at {self.address}: its TLS certificate has the SHA-256 "
                f"fingerprint {actual}, not the pinned {self.tls_fingerprint} (another server, or "
                "its certificate changed). The client does not retry; check the fingerprint (the "
                "server's log shows it)")
