"""PyRPLClient: the synchronous, thread-safe client of the PyRPL server (docs/protocol.md).

One client holds one TCP connection and one server session. Any number of threads may call it at
once; each call waits for its own reply (matched by ``id``) up to its own timeout. When the
connection drops, the client reconnects in the background, resumes its session (or re-creates its
leases and subscription on a restarted server) and re-sends the calls that are safe to re-send.

Threads
    * the callers' threads: they build, send and wait for their requests, and decode their replies;
    * ``pyrpl-client-io`` (one per client, from ``connect()`` until ``close()``, a final error, or a
      drop with ``reconnect=False``): reads the socket and hands each reply to its caller; after a
      drop it reconnects with bounded exponential backoff, calls the ``revive`` hook after each
      failed attempt, says ``hello`` again and restores leases and subscription;
    * ``pyrpl-client-events``: runs the status and connection callbacks, one at a time, in the order
      of the events. A slow callback delays later callbacks, never a reply; an exception raised by a
      callback is logged and ignored. Callbacks may call the client, ``close()`` included.

Retry policy (docs/protocol.md, *Client behaviour*): ``ping``, ``status``, ``describe``, ``get``,
``acquire``, ``lease``, ``release``, ``subscribe`` in flight when the connection drops are re-sent
after reconnecting, within their original deadline; a ``set`` (and ``hello``, ``goodbye``,
``shutdown``) in flight raises ConnectionLost: its outcome is unknown. AuthenticationFailed (-32002)
and UnsupportedProtocol (-32007) from ``hello`` are final; RetryLater (-32009) is not: the client
tries again after its ``retry_after`` (``connect()`` within its timeout).
"""
from __future__ import annotations

import contextlib
import copy
import errno
import hmac
import itertools
import logging
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from datetime import datetime
from typing import Any, Callable

from . import protocol
from .errors import (AuthenticationFailed, CallTimeout, CertificateMismatch, ClientClosed,
                     CommunicationError, ConnectionFailed, ConnectionLost, ModuleLeased,
                     RemoteError, RequestTooLarge, RetryLater, UnsupportedProtocol,
                     error_from_wire)
from .tls import client_context, fingerprint, normalize_fingerprint

logger = logging.getLogger(__name__)

StatusCallback = Callable[[dict[str, Any]], None]
ConnectionCallback = Callable[[str, dict[str, Any]], None]

RESENDABLE = frozenset(m.value for m in (
    protocol.Method.PING, protocol.Method.STATUS, protocol.Method.DESCRIBE, protocol.Method.GET,
    protocol.Method.ACQUIRE, protocol.Method.LEASE, protocol.Method.RELEASE,
    protocol.Method.SUBSCRIBE))
"""Methods re-sent after a reconnect when their reply was lost (they can be repeated safely)."""

BACKOFF_START = 0.05
BACKOFF_MAX = 1.0
"""Delay between reconnect attempts: doubles from BACKOFF_START up to BACKOFF_MAX (seconds)."""
ATTEMPT_TIMEOUT_MAX = 5.0
"""A reconnect attempt (TCP connect + hello + restore) takes at most min(timeout, this) seconds."""
ACQUIRE_MARGIN = 2.0
"""``acquire`` waits for its reply this long beyond the acquisition timeout it gives the server."""
GOODBYE_WAIT = 0.5
"""``close()`` waits at most this long for the reply to ``goodbye`` (seconds)."""
CLOSE_BUDGET = 1.0
"""``close()`` returns within about this long, even if the server is gone (seconds)."""
SLICE = 0.2
PROBE_AFTER = 1.0
"""Seconds without a byte from the server while a call waits, before the io thread sends a ping."""
PROBE_TIMEOUT = 1.5
"""Seconds more without a byte after that ping: the link is dead (a silent cut) and is replaced."""
RECONNECT_ATTEMPT_MAX = 1.5
"""Bound of one reconnection attempt, so a fresh SYN goes out soon after a cut link comes back."""
"""Socket timeout: blocking reads and writes wake up at least this often (seconds)."""
RECV_CHUNK = 1 << 20
"""Bytes read per ``recv``: a scope trace (about 350 kB per line) arrives in a few reads."""
RCVBUF = 4 << 20
"""Requested kernel receive buffer (the kernel may grant less)."""
MAX_REPLY_BYTES = 256 << 20
"""A reply line longer than this is treated as a broken connection."""
FINAL = (AuthenticationFailed, UnsupportedProtocol, CertificateMismatch)
"""Connection errors after which the client stops for good instead of retrying."""
_IN_PROGRESS = {0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY,
                getattr(errno, "WSAEWOULDBLOCK", errno.EWOULDBLOCK)}


class _Broken(Exception):
    """The link cannot be used any more (EOF, socket error, unparsable line); str() says why."""


class _Stopped(Exception):
    """``close()`` interrupted a connection attempt."""


class _WriteTimeout(Exception):
    """The deadline passed before a request was fully written; ``partial``: some bytes were."""

    def __init__(self, partial: bool) -> None:
        super().__init__("write timed out")
        self.partial = partial


def _fresh(exc: BaseException) -> BaseException:
    """A copy of ``exc`` to raise in one more thread (a shared one would pile up tracebacks)."""
    try:
        clone = copy.copy(exc)
    except Exception:  # an exception class that cannot be copied: raise the original
        return exc
    clone.__traceback__ = None
    return clone


def _now_local() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


class _Call:
    """One request and, once it arrives, its reply or the exception its caller raises."""

    def __init__(self, id_: int, method: str, params: dict[str, Any] | None,
                 deadline: float) -> None:
        self.id = id_
        self.method = method
        self.params = params
        self.line = protocol.dumps_line(protocol.request(id_, method, params))
        self.deadline = deadline
        self.sent_on: int | None = None
        """Generation of the link the request was (or is being) written to; None: waits for one."""
        self.sent_at: float | None = None
        """When the request was written (monotonic), for the liveness probe."""
        self.reply: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def finish(self, reply: dict[str, Any] | None = None,
               error: BaseException | None = None) -> None:
        self.reply, self.error = reply, error
        self.done.set()


class _Tls:
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

        Raises _Broken on a TLS error or the server's close_notify.
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
                    raise _Broken("connection closed by the server (TLS close)") from None
                except ssl.SSLError as exc:
                    raise _Broken(f"TLS error: {exc}") from None
                if not chunk:
                    raise _Broken("connection closed by the server (TLS close)")
                plain += chunk

    def encrypt(self, data: bytes | memoryview) -> bytes:
        """The bytes to send for ``data`` (with any record pending from a decryption before)."""
        with self.lock:
            self.obj.write(data)
            return self.outgoing.read()


class _Link:
    """One TCP connection: an incremental line reader (one reader at a time) and a bounded writer
    (one writer at a time: the client holds its write lock); TLS with ``tls``."""

    def __init__(self, sock: socket.socket, generation: int, tls: _Tls | None = None) -> None:
        self.sock = sock
        self.generation = generation
        self.tls = tls
        self._buffer = bytearray()
        self._scanned = 0
        self._chunk = bytearray(RECV_CHUNK)
        self.last_received = time.monotonic()
        self.probed_at: float | None = None

    def read_message(self, deadline: float | None = None, stop: threading.Event | None = None,
                     on_idle: Callable[[], None] | None = None) -> dict[str, Any]:
        """The next JSON object from the server.

        ``deadline`` (monotonic) bounds the wait: TimeoutError after it. A deadline changes the
        socket timeout, so it may only be given while no other thread uses the link (handshake).
        Raises _Broken (EOF, socket error, a line that is not a JSON object), _Stopped (``stop``
        set, checked every SLICE). ``on_idle`` is called after every SLICE without data; it may
        raise _Broken.
        """
        while True:
            line = self._next_line()
            if line is not None:
                if line.strip():
                    return self._parse(line)
                continue
            if stop is not None and stop.is_set():
                raise _Stopped()
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
        """Receive what has arrived within a SLICE; False if nothing did. Raises _Broken."""
        try:
            n = self.sock.recv_into(self._chunk)
        except TimeoutError as exc:
            if exc.errno is None:  # the socket's own timeout: a SLICE passed without data
                return False
            raise _Broken(f"connection error: {exc}") from None  # ETIMEDOUT: keepalive failed
        except OSError as exc:
            raise _Broken(f"connection error: {exc}") from None
        if n == 0:
            raise _Broken("connection closed by the server"
                          + (" in the middle of a reply" if self._buffer else ""))
        self.last_received = time.monotonic()
        data = memoryview(self._chunk)[:n]
        self._buffer += data if self.tls is None else self.tls.decrypt(data)
        if len(self._buffer) > MAX_REPLY_BYTES:
            raise _Broken(f"reply line longer than {MAX_REPLY_BYTES} bytes")
        return True

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any]:
        """The message on ``line`` with its arrays decoded; if an array is malformed, the message
        as parsed (decoding it again then raises for the call it answers). Raises _Broken."""
        try:
            message = protocol.decode_line(line)
        except (ValueError, RecursionError):
            try:
                message = protocol.loads(line)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise _Broken(f"garbled line from the server ({exc}): {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise _Broken(f"line from the server is not a JSON object: {line[:80]!r}")
        return message

    def write(self, data: bytes, deadline: float) -> None:
        """Write all of ``data`` before ``deadline`` (overshoot at most SLICE).

        Raises _WriteTimeout (``partial`` if some bytes went out, or, with TLS, once ``data`` was
        encrypted: the stream is then corrupt) or OSError.
        """
        committed = False
        if self.tls is not None:
            if time.monotonic() >= deadline:
                raise _WriteTimeout(partial=False)
            data, committed = self.tls.encrypt(data), True
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            if time.monotonic() >= deadline:
                raise _WriteTimeout(partial=committed or sent > 0)
            try:
                sent += self.sock.send(view[sent:])
            except TimeoutError as exc:
                if exc.errno is not None:  # ETIMEDOUT from the kernel, not the SLICE timeout
                    raise

    def shutdown(self) -> None:
        """Wake up the reader (it sees EOF); idempotent."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.shutdown()
        self.sock.close()


def _configure(sock: socket.socket) -> None:
    """Low latency (no Nagle), large receive buffer, keepalive (a vanished server is noticed in
    about 30 s), and a SLICE timeout so blocked reads and writes wake up regularly."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    sock.settimeout(SLICE)


class PyRPLClient:
    """Client of one PyRPL server: typed calls, reconnection, session resume, lease restore.

    ``token`` is the server's token; ``name`` is shown in the server's ``status``; ``hold``: this
    client keeps an auto-started server alive (see docs/protocol.md, *Lifecycle*); ``timeout`` is
    the default timeout of every call, in seconds; ``reconnect``: reconnect in the background after
    a drop (otherwise calls fail until ``connect()`` is called again); ``revive``: called on the
    client's io thread after each failed reconnect attempt (refused, no answer): it may restart the
    server, and if it raises, the client stops for good with that exception (a ``failed`` event).

    TLS (a server started with ``--tls-cert``): on with ``tls``, ``tls_ca`` or ``tls_fingerprint``.
    ``tls_ca`` is a PEM file of the CA (or of the server's self-signed certificate) to verify the
    server against, with its host name (default: the system's CAs); ``tls_fingerprint`` pins the
    SHA-256 fingerprint of the server's certificate (hex, colons allowed) and replaces the host name
    check. A certificate that fails either check raises CertificateMismatch, which is final.

    Nothing happens before :meth:`connect`. Always :meth:`close` the client (or use it as a context
    manager): its background threads run until then. Raises ValueError for a bad ``timeout`` or
    ``tls_fingerprint``, or a ``tls_ca`` that cannot be loaded.
    """

    def __init__(self, host: str = "localhost", port: int = protocol.DEFAULT_PORT, token: str = "",
                 name: str = "pymodaq_plugins_pyrpl", *, hold: bool = False, timeout: float = 10.0,
                 reconnect: bool = True, revive: Callable[[], None] | None = None,
                 tls: bool = False, tls_ca: str | None = None,
                 tls_fingerprint: str | None = None) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self._tls_fingerprint = (normalize_fingerprint(tls_fingerprint) if tls_fingerprint
                                 else None)
        self._tls_context: ssl.SSLContext | None = None
        if tls or tls_ca or tls_fingerprint:
            try:
                self._tls_context = client_context(tls_ca or None, self._tls_fingerprint)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load the TLS CA file {tls_ca!r}: {exc}") from None
        self.host = host
        self.port = port
        self.name = name
        self.hold = hold
        self.timeout = float(timeout)
        self.reconnect = reconnect
        self._token = token
        self._revive = revive
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connect_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._generations = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._link: _Link | None = None
        self._hello: dict[str, Any] | None = None
        self._session: str | None = None
        self._leases: set[str] = set()
        self._subscribed = False
        self._reconnecting = False
        self._lost_reason: str | None = None
        self._final: BaseException | None = None
        self._closed = False
        self._stop = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._events: queue.SimpleQueue[tuple[str, tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._events_thread: threading.Thread | None = None
        self._status_callbacks: list[StatusCallback] = []
        self._connection_callbacks: list[ConnectionCallback] = []

    # -- state ----------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """True while a connection with a session is up (False while reconnecting)."""
        return self._link is not None

    @property
    def failure(self) -> BaseException | None:
        """The final error that stopped this client for good (taken over, server gone), or None."""
        return self._final

    @property
    def session(self) -> str | None:
        """The server session id of the latest ``hello`` (None before the first)."""
        return self._session

    @property
    def hello_info(self) -> dict[str, Any] | None:
        """The latest ``hello`` result, ``leases`` being the session's leases after restoring them
        and ``lost_leases`` the ones that could not be re-acquired (None before the first)."""
        hello = self._hello
        return None if hello is None else dict(hello)

    def __enter__(self) -> PyRPLClient:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ("closed" if self._closed else "failed" if self._final is not None
                 else "connected" if self._link is not None
                 else "reconnecting" if self._reconnecting else "not connected")
        return f"<PyRPLClient {self.name!r} {self.address} {state}>"

    # -- connection -----------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> dict[str, Any]:
        """Connect and say ``hello`` (resuming the previous session, if any); return its result.

        ``timeout`` (default: the client's) covers the TCP connection *and* the hello reply (and the
        restoring of leases after a reconnection). If the client is already connected, return the
        current hello result; if it is reconnecting in the background, wait for that.
        A RetryLater refusal (the server admits no more connections or sessions for now) is tried
        again after its ``retry_after``, within ``timeout``.
        Raises ConnectionFailed (refused, unreachable, no hello reply in time), AuthenticationFailed
        (wrong token: final), UnsupportedProtocol (final), RetryLater (not admitted within
        ``timeout``; not final), ClientClosed, or another RemoteError from ``hello`` (e.g.
        ServerShuttingDown).
        """
        timeout = self._resolve(timeout)
        deadline = time.monotonic() + timeout
        if not self._connect_lock.acquire(timeout=timeout):
            raise ConnectionFailed(f"another thread is still connecting to {self.address}")
        try:
            with self._lock:
                self._raise_if_unusable()
                if self._link is not None:
                    return dict(self._hello or {})
                reconnecting = self._reconnecting
            if reconnecting:
                return self._wait_reconnected(deadline, timeout)
            return self._connect_now(deadline, timeout)
        finally:
            self._connect_lock.release()

    def _connect_now(self, deadline: float, timeout: float) -> dict[str, Any]:
        self._start_events_thread()
        try:
            link, info = self._establish_admitted(deadline, timeout)
        except FINAL as exc:
            self._fail(exc)
            raise
        except _Stopped:
            raise ClientClosed(self._closed_message()) from None
        previous = self._session
        if not self._publish(link, info):  # closed (or failed) meanwhile
            link.close()
            with self._lock:
                self._raise_if_unusable()
        self._io_thread = threading.Thread(target=self._run_io, args=(link,), daemon=True,
                                           name="pyrpl-client-io")
        self._io_thread.start()
        if previous is not None:
            self._emit_restored(info)
        return dict(info)

    def _wait_reconnected(self, deadline: float, timeout: float) -> dict[str, Any]:
        with self._changed:
            self._changed.wait_for(
                lambda: self._link is not None or not self._reconnecting or self._closed,
                timeout=max(0.0, deadline - time.monotonic()))
            self._raise_if_unusable()
            if self._link is not None:
                return dict(self._hello or {})
            reason = self._lost_reason
        raise ConnectionFailed(f"not reconnected to the PyRPL server at {self.address} within "
                               f"{timeout:g} s (connection lost: {reason}); "
                               + ("the client keeps trying" if self._reconnecting else
                                  "call connect() again"))

    def close(self) -> None:
        """Say ``goodbye`` (best effort, waiting at most GOODBYE_WAIT), close the connection and
        stop the background threads; returns within about CLOSE_BUDGET seconds even if the server
        is gone.

        Idempotent. Calls waiting for a reply, and every later call, raise ClientClosed.
        """
        started = time.monotonic()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            self._reconnecting = False
            link = self._link
            calls = list(self._calls.values())
            self._calls.clear()
            self._changed.notify_all()
        for call in calls:
            call.finish(error=ClientClosed(self._closed_message()))
        if link is not None:
            self._say_goodbye(link, started + GOODBYE_WAIT)
            link.shutdown()
        self._join(self._io_thread, started + CLOSE_BUDGET)
        with self._lock:
            self._link = None
        if link is not None:
            self._close_link(link)
        self._events.put(None)
        self._join(self._events_thread, started + CLOSE_BUDGET)
        logger.debug("client %r of %s closed", self.name, self.address)

    def _say_goodbye(self, link: _Link, deadline: float) -> None:
        call = _Call(next(self._ids), protocol.Method.GOODBYE.value, None, deadline)
        with self._lock:
            call.sent_on = link.generation
            self._calls[call.id] = call
        self._transmit(link, call)
        call.done.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._calls.pop(call.id, None)

    @staticmethod
    def _join(thread: threading.Thread | None, deadline: float) -> None:
        if thread is None or thread is threading.current_thread():
            return
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning("thread %s did not stop in time (a callback or the revive hook is "
                           "still running); it is left to finish as a daemon", thread.name)

    # -- callbacks ------------------------------------------------------------------------------

    def add_status_callback(self, cb: StatusCallback) -> None:
        """Call ``cb(status)`` on every status push (after ``subscribe()``), on the events
        thread."""
        with self._lock:
            self._status_callbacks.append(cb)

    def remove_status_callback(self, cb: StatusCallback) -> None:
        with self._lock:
            if cb in self._status_callbacks:
                self._status_callbacks.remove(cb)

    def add_connection_callback(self, cb: ConnectionCallback) -> None:
        """Call ``cb(event, info)`` on the events thread when the connection changes:

        ``("lost", {"reason": str})``; ``("resumed", hello)``: same session, leases kept;
        ``("new_session", hello)``: the server was restarted, the client re-acquired its leases
        (``hello["lost_leases"]``: those another client holds now); re-apply your module settings;
        ``("failed", {"error": exc})``: final (wrong token, protocol, or the revive hook raised).
        """
        with self._lock:
            self._connection_callbacks.append(cb)

    def remove_connection_callback(self, cb: ConnectionCallback) -> None:
        with self._lock:
            if cb in self._connection_callbacks:
                self._connection_callbacks.remove(cb)

    # -- calls ----------------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """Send one request and return its decoded result (arrays as ndarrays).

        ``timeout`` (default: the client's) covers everything: waiting for a reconnection, sending,
        the server's work and the reply. Raises the RemoteError subclass of an error reply,
        CallTimeout (no reply in time; a late reply is dropped), ConnectionLost (the connection
        dropped with a non-idempotent call in flight), ConnectionFailed (not connected and not
        reconnecting), ClientClosed, RequestTooLarge (not sent), or the final error
        (AuthenticationFailed, or what the revive hook raised).
        """
        timeout = self._resolve(timeout)
        call = _Call(next(self._ids), method, params, time.monotonic() + timeout)
        if len(call.line) > protocol.MAX_REQUEST_BYTES:
            raise RequestTooLarge(f"'{method}' request of {len(call.line)} bytes exceeds the "
                                  f"server's limit of {protocol.MAX_REQUEST_BYTES} bytes; not sent")
        link = self._register(call)
        try:
            if link is not None:
                self._transmit(link, call)
            reply = self._wait(call, timeout)
        finally:  # also on KeyboardInterrupt: a forgotten call must not be re-sent later
            with self._lock:
                self._calls.pop(call.id, None)
        return self._result(call, reply)

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time of a ``ping``, in seconds (measures the link, not the board)."""
        t0 = time.perf_counter()
        self.call(protocol.Method.PING.value, timeout=timeout)
        return time.perf_counter() - t0

    def status(self, timeout: float | None = None) -> dict[str, Any]:
        """Server, device and clients (docs/protocol.md, ``status``)."""
        return self.call(protocol.Method.STATUS.value, timeout=timeout)

    def describe(self, timeout: float | None = None) -> dict[str, Any]:
        """The catalogue: modules, attributes, types, units, ranges, options."""
        return self.call(protocol.Method.DESCRIBE.value, timeout=timeout)

    def get(self, module: str, names: list[str] | None = None,
            timeout: float | None = None) -> dict[str, Any]:
        """Attribute values of ``module`` (all of them if ``names`` is None)."""
        params: dict[str, Any] = {"module": module}
        if names is not None:
            params["names"] = list(names)
        return self.call(protocol.Method.GET.value, params, timeout)

    def set(self, module: str, values: dict[str, Any],
            timeout: float | None = None) -> dict[str, Any]:
        """Set attributes (all or nothing); returns the values actually applied after quantization.

        Not re-sent after a drop: raises ConnectionLost if the connection dropped before the reply
        (read the values back with :meth:`get`).
        """
        return self.call(protocol.Method.SET.value, {"module": module, "values": dict(values)},
                         timeout)

    def acquire(self, module: str, timeout: float | None = None) -> dict[str, Any]:
        """One acquisition: a scope trace (``ch1``, ``ch2`` ndarrays, ``t0``, ``dt``, ...), IQ
        quadratures or sampler voltages.

        ``timeout`` (default: the client's) is the server's acquisition timeout (AcquisitionTimeout
        when no trace completes in time); the call waits ``timeout + ACQUIRE_MARGIN`` for the reply.
        """
        timeout = self._resolve(timeout)
        return self.call(protocol.Method.ACQUIRE.value, {"module": module, "timeout": timeout},
                         timeout + ACQUIRE_MARGIN)

    def lease(self, module: str, timeout: float | None = None) -> dict[str, Any]:
        """Exclusive ``set`` on ``module`` for this client's session (kept across reconnections).

        Raises ModuleLeased if another client holds it.
        """
        return self.call(protocol.Method.LEASE.value, {"module": module}, timeout)

    def release(self, module: str, timeout: float | None = None) -> dict[str, Any]:
        """End this client's lease of ``module`` (``released`` is False if it held none)."""
        return self.call(protocol.Method.RELEASE.value, {"module": module}, timeout)

    def subscribe(self, status: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Status pushes on or off (kept across reconnections); returns the current status."""
        return self.call(protocol.Method.SUBSCRIBE.value, {"status": status}, timeout)

    # -- call machinery -------------------------------------------------------------------------

    def _resolve(self, timeout: float | None) -> float:
        if timeout is None:
            return self.timeout
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        return float(timeout)

    def _register(self, call: _Call) -> _Link | None:
        """Enter ``call`` in the table; the link to write it on, or None: the io thread will send it
        after reconnecting. Raises if the client cannot take calls."""
        with self._lock:
            self._raise_if_unusable()
            if self._link is None and not self._reconnecting:
                raise ConnectionFailed(self._not_connected_message())
            self._calls[call.id] = call
            if self._link is not None:
                call.sent_on = self._link.generation
            return self._link

    def _transmit(self, link: _Link, call: _Call) -> None:
        """Write ``call`` on ``link`` before its deadline. Never raises: a write that fails breaks
        the link (the io thread then reconnects and decides the call's fate); a write that times out
        before any byte left lets the caller time out."""
        if not self._write_lock.acquire(timeout=max(0.0, call.deadline - time.monotonic())):
            return
        try:
            call.sent_at = time.monotonic()
            link.write(call.line, call.deadline)
        except _WriteTimeout as exc:
            if exc.partial:
                logger.warning("request '%s' to %s half written at its deadline: reconnecting",
                               call.method, self.address)
                link.shutdown()
        except OSError as exc:
            logger.debug("writing '%s' to %s failed: %s", call.method, self.address, exc)
            link.shutdown()
        finally:
            self._write_lock.release()

    def _wait(self, call: _Call, timeout: float) -> dict[str, Any]:
        if not call.done.wait(max(0.0, call.deadline - time.monotonic())):
            with self._lock:
                if not call.done.is_set():  # (else the reply came just now: take it)
                    self._calls.pop(call.id, None)
                    raise CallTimeout(self._timeout_message(call, timeout))
        if call.error is not None:
            raise call.error
        assert call.reply is not None
        return call.reply

    def _result(self, call: _Call, reply: dict[str, Any]) -> Any:
        if "error" in reply:
            error = reply["error"]
            if not isinstance(error, dict):
                raise CommunicationError(f"malformed error reply to '{call.method}' from "
                                         f"{self.address}: {error!r}")
            raise error_from_wire(error)
        try:
            value = protocol.decode_value(reply.get("result"))
        except ValueError as exc:
            raise CommunicationError(f"malformed reply to '{call.method}' from {self.address}: "
                                     f"{exc}") from None
        self._track(call, value)
        return value

    def _track(self, call: _Call, value: Any) -> None:
        """Remember leases and subscription, to restore them on a new session."""
        module = value.get("module") if isinstance(value, dict) else None
        with self._lock:
            if call.method == protocol.Method.LEASE and isinstance(module, str):
                self._leases.add(module)
            elif call.method == protocol.Method.RELEASE and isinstance(module, str):
                self._leases.discard(module)
            elif call.method == protocol.Method.SUBSCRIBE:
                self._subscribed = bool((call.params or {}).get("status", True))

    def _raise_if_unusable(self) -> None:
        """With the lock held: raise ClientClosed or (a copy of) the final error."""
        if self._closed:
            raise ClientClosed(self._closed_message())
        if self._final is not None:
            raise _fresh(self._final)

    # -- messages -------------------------------------------------------------------------------

    def _closed_message(self) -> str:
        return f"the PyRPL client {self.name!r} of {self.address} is closed; create a new one"

    def _not_connected_message(self) -> str:
        if self._lost_reason is None:
            return f"not connected to the PyRPL server at {self.address}: call connect() first"
        return (f"not connected to the PyRPL server at {self.address} (connection lost: "
                f"{self._lost_reason}; reconnect is off): call connect() to reconnect")

    def _timeout_message(self, call: _Call, timeout: float) -> str:
        text = (f"no reply to '{call.method}' from the PyRPL server at {self.address} within "
                f"{timeout:g} s")
        if self._reconnecting:
            return (f"{text}; the client is reconnecting (connection lost: {self._lost_reason}) "
                    "and keeps trying")
        return f"{text}; the server is busy or unreachable (connection still open)"

    def _connect_failed_message(self, reason: str) -> str:
        return (f"cannot connect to the PyRPL server at {self.address}: {reason}. Check that the "
                "server is running there (the plugins start a local one on demand; see "
                "`python -m pymodaq_plugins_pyrpl.hardware.server --help`) and that host and "
                "port are right")

    def _taken_over(self, exc: AuthenticationFailed) -> AuthenticationFailed:
        """The final error for a refused token: the server was restarted with another one."""
        return AuthenticationFailed(
            f"the PyRPL server at {self.address} refused this client's token (noticed at "
            f"{_now_local()}): it was restarted with a new token, i.e. taken over by another "
            f"program. This client stops and does not retry; re-initialize to use the new token. "
            f"Server: {exc.message}", exc.data)

    # -- establishing a connection (caller's thread for connect(), io thread for reconnects) ----

    def _establish(self, deadline: float, timeout: float) -> tuple[_Link, dict[str, Any]]:
        """TCP connect, ``hello`` (resuming ``self._session``), restore leases and subscription,
        all before ``deadline``. The link is not published yet.

        Raises ConnectionFailed, AuthenticationFailed (reworded, with the time), another
        RemoteError of ``hello``/``lease``/``subscribe``, or _Stopped.
        """
        link = self._open(deadline, timeout)
        try:
            hello = self._handshake_call(link, protocol.Method.HELLO.value, self._hello_params(),
                                         deadline)
            if not isinstance(hello, dict) or not isinstance(hello.get("session"), str):
                raise _Broken(f"unexpected reply to 'hello': {hello!r:.200}")
            info = self._restore(link, hello, deadline)
        except TimeoutError:
            link.close()
            raise ConnectionFailed(self._connect_failed_message(
                f"no reply to 'hello' within {timeout:g} s: the program on that port accepted the "
                "connection but does not answer like a PyRPL server")) from None
        except _Broken as exc:
            link.close()
            hint = "" if self._tls_context else "; a TLS server (--tls-cert) also does this"
            raise ConnectionFailed(self._connect_failed_message(
                f"the connection failed during 'hello' ({exc}{hint})")) from None
        except AuthenticationFailed as exc:
            link.close()
            raise self._taken_over(exc) from None
        except BaseException:
            link.close()
            raise
        return link, info

    def _establish_admitted(self, deadline: float,
                            timeout: float) -> tuple[_Link, dict[str, Any]]:
        """:meth:`_establish`, tried again after each RetryLater whose ``retry_after`` ends before
        ``deadline``. Raises what _establish raises (RetryLater when waiting would pass the
        deadline)."""
        while True:
            try:
                return self._establish(deadline, timeout)
            except RetryLater as exc:
                if time.monotonic() + exc.retry_after >= deadline:
                    raise
                logger.info("the PyRPL server at %s asks to retry in %g s: %s", self.address,
                            exc.retry_after, exc.message)
                if self._stop.wait(exc.retry_after):
                    raise _Stopped() from None

    def _hello_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"token": self._token, "client": self.name,
                                  "protocol": protocol.PROTOCOL_VERSION, "hold": self.hold}
        if self._session is not None:
            params["session"] = self._session
        return params

    def _open(self, deadline: float, timeout: float) -> _Link:
        """A TCP connection to host:port before ``deadline``; raises ConnectionFailed, _Stopped."""
        try:
            addresses = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectionFailed(self._connect_failed_message(
                f"cannot resolve {self.host!r} ({exc})")) from None
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
            _configure(sock)
            if self._tls_context is None:
                return _Link(sock, next(self._generations))
            try:
                return _Link(sock, next(self._generations), self._tls_handshake(sock, deadline))
            except BaseException:
                sock.close()
                raise
        if isinstance(failure, TimeoutError):
            reason = f"no connection within {timeout:g} s (host unreachable or a firewall drops it)"
        elif isinstance(failure, ConnectionRefusedError):
            reason = "connection refused (no server listens on that port)"
        else:
            reason = str(failure)
        raise ConnectionFailed(self._connect_failed_message(reason))

    def _tls_handshake(self, sock: socket.socket, deadline: float) -> _Tls:
        """The TLS handshake on a connected socket, before ``deadline``, and the certificate checks.

        Raises CertificateMismatch (final), ConnectionFailed, _Stopped.
        """
        assert self._tls_context is not None
        state = _Tls(self._tls_context, self.host)
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
        except (ssl.SSLError, OSError, _Broken) as exc:
            reason = "no TLS handshake in time" if isinstance(exc, TimeoutError) else exc
            raise ConnectionFailed(self._connect_failed_message(
                f"TLS handshake failed ({reason}): is it a TLS server (--tls-cert)?")) from None
        self._check_fingerprint(state.obj.getpeercert(binary_form=True) or b"")
        return state

    def _receive_handshake(self, sock: socket.socket, state: _Tls, deadline: float) -> None:
        """Feed the next bytes from the server to the handshake. Raises TimeoutError after
        ``deadline``, _Broken at end of stream, _Stopped."""
        while True:
            if self._stop.is_set():
                raise _Stopped()
            if time.monotonic() >= deadline:
                raise TimeoutError("no TLS handshake in time")
            try:
                data = sock.recv(RECV_CHUNK)
            except TimeoutError as exc:
                if exc.errno is None:  # a SLICE without data
                    continue
                raise
            if not data:
                raise _Broken("connection closed by the server during the TLS handshake")
            state.incoming.write(data)
            return

    def _check_fingerprint(self, der: bytes) -> None:
        """Raise CertificateMismatch unless the certificate ``der`` has the pinned fingerprint."""
        if self._tls_fingerprint is None:
            return
        actual = fingerprint(der)
        if not hmac.compare_digest(actual, self._tls_fingerprint):
            raise CertificateMismatch(
                f"refusing the PyRPL server at {self.address}: its TLS certificate has the SHA-256 "
                f"fingerprint {actual}, not the pinned {self._tls_fingerprint} (another server, or "
                "its certificate changed). The client does not retry; check the fingerprint (the "
                "server's log shows it)")

    def _connect_socket(self, sock: socket.socket, address: Any, deadline: float) -> None:
        """Non-blocking connect, waited for in SLICEs so ``close()`` can interrupt it.

        Raises OSError (TimeoutError after ``deadline``), _Stopped.
        """
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in _IN_PROGRESS:
            raise OSError(code, os.strerror(code))
        if code != 0:
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_WRITE)
                while not selector.select(min(SLICE, max(0.0, deadline - time.monotonic()))):
                    if self._stop.is_set():
                        raise _Stopped()
                    if time.monotonic() >= deadline:
                        raise TimeoutError("connect timed out")
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))

    def _handshake_call(self, link: _Link, method: str, params: dict[str, Any],
                        deadline: float) -> Any:
        """A call on a link nobody else uses yet: write, then read until its reply (status pushes
        are dispatched). Raises the reply's RemoteError, TimeoutError, _Broken, _Stopped."""
        call = _Call(next(self._ids), method, params, deadline)
        try:
            link.write(call.line, deadline)
        except _WriteTimeout:
            raise TimeoutError("request not written in time") from None
        except OSError as exc:
            raise _Broken(f"connection error: {exc}") from None
        while True:
            message = link.read_message(deadline, self._stop)
            if message.get("id") == call.id or message.get("id", 0) is None and "error" in message:
                break  # its reply, or the server's refusal of the connection (RetryLater, ...)
            self._dispatch_push(message)
        link.sock.settimeout(SLICE)
        if "error" in message:
            raise error_from_wire(message["error"] if isinstance(message["error"], dict) else {})
        try:
            return protocol.decode_value(message.get("result"))
        except ValueError as exc:
            raise _Broken(f"malformed reply to '{method}': {exc}") from None

    def _restore(self, link: _Link, hello: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Re-acquire the leases this client holds but the session lacks (all of them on a new
        session) and re-subscribe (a subscription belongs to a connection). The hello result with
        ``leases`` (held now) and ``lost_leases`` (taken by another client meanwhile)."""
        with self._lock:
            wanted = set(self._leases)
            subscribed = self._subscribed
        held = set(hello.get("leases", []))
        lost: list[str] = []
        for module in sorted(wanted - held):
            try:
                self._handshake_call(link, protocol.Method.LEASE.value, {"module": module},
                                     deadline)
            except ModuleLeased as exc:
                logger.warning("lease of %s not restored on %s: %s", module, self.address, exc)
                lost.append(module)
        if subscribed:
            self._handshake_call(link, protocol.Method.SUBSCRIBE.value, {"status": True}, deadline)
        with self._lock:
            self._leases.difference_update(lost)
        return {**hello, "leases": sorted(held | (wanted - set(lost))), "lost_leases": lost}

    def _publish(self, link: _Link, info: dict[str, Any]) -> bool:
        """Make ``link`` the connection and send the calls that waited for it; False (nothing done)
        if the client was closed or failed meanwhile."""
        with self._lock:
            if self._closed or self._final is not None:
                return False
            self._link = link
            self._hello = info
            self._session = info.get("session")
            self._reconnecting = False
            waiting = [call for call in self._calls.values() if call.sent_on is None]
            for call in waiting:
                call.sent_on = link.generation
            self._changed.notify_all()
        for call in waiting:
            self._transmit(link, call)
        return True

    def _start_events_thread(self) -> None:
        if self._events_thread is None:
            self._events_thread = threading.Thread(target=self._run_events, daemon=True,
                                                   name="pyrpl-client-events")
            self._events_thread.start()

    def _close_link(self, link: _Link) -> None:
        """Close a link that writers may be using: shut it down (their writes fail at once), then
        close it under the write lock, so no write can reach a new socket reusing its descriptor."""
        link.shutdown()
        with self._write_lock:
            link.close()

    # -- io thread ------------------------------------------------------------------------------

    def _run_io(self, link: _Link) -> None:
        """Read and dispatch until the link breaks; then reconnect (if enabled) and go on.

        A bug here must not leave callers waiting in silence: it becomes the final error.
        """
        current: _Link | None = link
        try:
            while current is not None:
                try:
                    while True:
                        link_ = current
                        self._dispatch(current, current.read_message(
                            on_idle=lambda: self._check_liveness(link_)))
                except _Broken as exc:
                    current = self._after_loss(current, str(exc))
        except Exception as exc:
            logger.exception("the io thread of the PyRPL client of %s failed", self.address)
            self._fail(CommunicationError(f"internal error of the PyRPL client of {self.address}: "
                                          f"{type(exc).__name__}: {exc}"))

    def _check_liveness(self, link: _Link) -> None:
        """Detect a silent cut: a call waits and nothing came from the server for PROBE_AFTER s ->
        send a ping; still nothing PROBE_TIMEOUT s later -> raise _Broken (then reconnect and
        resume; idempotent calls are re-sent). A busy server still answers pings at once."""
        now = time.monotonic()
        with self._lock:
            waiting = [c.sent_at for c in self._calls.values()
                       if c.sent_on == link.generation and c.sent_at is not None]
        if not waiting:
            link.probed_at = None
            return
        silent_since = max(link.last_received, min(waiting))
        if link.probed_at is not None and link.probed_at < link.last_received:
            link.probed_at = None  # answered
        if link.probed_at is None:
            if now - silent_since >= PROBE_AFTER:
                link.probed_at = now
                probe = protocol.dumps_line(protocol.request(next(self._ids), "ping"))
                if self._write_lock.acquire(timeout=SLICE):
                    try:
                        link.write(probe, now + SLICE)
                    except (_WriteTimeout, OSError):
                        pass
                    finally:
                        self._write_lock.release()
        elif now - link.probed_at >= PROBE_TIMEOUT:
            raise _Broken(f"no answer from the server for {now - silent_since:.1f} s")

    def _dispatch(self, link: _Link, message: dict[str, Any]) -> None:
        if "id" not in message:
            self._dispatch_push(message)
            return
        id_ = message["id"]
        with self._lock:
            call = self._calls.get(id_) if isinstance(id_, int) else None
            if call is None or call.sent_on != link.generation:
                call = None
            else:
                del self._calls[call.id]
        if call is None:
            if id_ is None:
                logger.warning("error reply without id from %s: %.300s", self.address, message)
            else:
                logger.debug("late reply %r from %s dropped (its call timed out)", id_,
                             self.address)
            return
        call.finish(reply=message)

    def _dispatch_push(self, message: dict[str, Any]) -> None:
        if message.get("method") == protocol.NOTIFICATION_STATUS and "id" not in message:
            self._events.put(("status", (message.get("params"),)))
        else:
            logger.warning("unexpected message from %s: %.300s", self.address, message)

    def _after_loss(self, link: _Link, reason: str) -> _Link | None:
        """Handle a broken link: fail or re-queue its calls, tell the callbacks, reconnect.

        Returns the new link, or None when the io thread should end.
        """
        self._close_link(link)
        with self._lock:
            if self._link is link:
                self._link = None
            closed = self._closed
            self._lost_reason = reason
            self._reconnecting = self.reconnect and not closed and self._final is None
            resend = self._reconnecting
            failed = [call for call in self._calls.values() if call.sent_on == link.generation
                      and not (resend and call.method in RESENDABLE)]
            for call in self._calls.values():
                if call.sent_on == link.generation:
                    call.sent_on = None
            for call in failed:
                del self._calls[call.id]
            self._changed.notify_all()
        if closed:
            for call in failed:
                call.finish(error=ClientClosed(self._closed_message()))
            return None
        for call in failed:
            call.finish(error=ConnectionLost(
                f"the connection to the PyRPL server at {self.address} dropped ({reason}) while "
                f"'{call.method}' was in flight: its outcome is unknown"
                + ("; read the values back with 'get'" if call.method == "set" else "")))
        logger.warning("connection to the PyRPL server at %s lost: %s%s", self.address, reason,
                       "; reconnecting" if resend else "")
        self._emit("connection", "lost", {"reason": reason})
        return self._reconnect() if resend else None

    def _reconnect(self) -> _Link | None:
        """Attempts with bounded exponential backoff until connected, closed or a final error."""
        delay = BACKOFF_START
        attempts = 0
        while not self._stop.is_set():
            attempts += 1
            timeout = min(self.timeout, RECONNECT_ATTEMPT_MAX if attempts > 1 else
                          ATTEMPT_TIMEOUT_MAX)
            pause = delay
            try:
                link, info = self._establish(time.monotonic() + timeout, timeout)
            except _Stopped:
                return None
            except FINAL as exc:
                self._fail(exc)
                return None
            except RetryLater as exc:
                logger.info("reconnect attempt %d to %s refused for now, next in %g s: %s",
                            attempts, self.address, exc.retry_after, exc)
                pause = max(delay, exc.retry_after)
            except ConnectionFailed as exc:
                logger.debug("reconnect attempt %d to %s failed: %s", attempts, self.address, exc)
                if not self._call_revive():
                    return None
            except (RemoteError, CommunicationError) as exc:
                logger.info("reconnect attempt %d to %s failed: %s", attempts, self.address, exc)
            else:
                if not self._publish(link, info):
                    link.close()
                    return None
                self._emit_restored(info)
                return link
            if self._stop.wait(pause):
                return None
            delay = min(2 * delay, BACKOFF_MAX)
        return None

    def _call_revive(self) -> bool:
        """Run the revive hook; False (and the client failed) if it raised."""
        if self._revive is None:
            return True
        try:
            self._revive()
        except Exception as exc:  # whatever it raises is final, by contract
            self._fail(exc)
            return False
        return True

    def _emit_restored(self, info: dict[str, Any]) -> None:
        resumed = bool(info.get("resumed"))
        logger.info("%s the PyRPL server at %s (session %s%s)",
                    "reconnected to" if resumed else "new session with a restarted", self.address,
                    str(info.get("session"))[:8],
                    f"; leases lost: {info['lost_leases']}" if info.get("lost_leases") else "")
        self._emit("connection", "resumed" if resumed else "new_session", dict(info))

    def _fail(self, exc: BaseException) -> None:
        """Stop for good: every waiting and later call raises ``exc``; a ``failed`` event."""
        with self._lock:
            if self._closed or self._final is not None:
                return
            self._final = exc
            self._reconnecting = False
            link, self._link = self._link, None
            calls = list(self._calls.values())
            self._calls.clear()
            self._changed.notify_all()
        for call in calls:
            call.finish(error=_fresh(exc))
        if link is not None:
            self._close_link(link)
        logger.error("PyRPL client %r of %s stopped: %s", self.name, self.address, exc)
        self._emit("connection", "failed", {"error": exc})

    # -- events thread --------------------------------------------------------------------------

    def _emit(self, kind: str, *args: Any) -> None:
        self._events.put((kind, args))

    def _run_events(self) -> None:
        """Run callbacks in event order until close() puts None."""
        while True:
            item = self._events.get()
            if item is None:
                return
            kind, args = item
            with self._lock:
                callbacks: list[Callable[..., None]] = list(
                    self._status_callbacks if kind == "status" else self._connection_callbacks)
            if kind == "status":
                try:
                    args = (protocol.decode_value(args[0]),)
                except ValueError as exc:
                    logger.warning("malformed status push from %s: %s", self.address, exc)
                    continue
            for callback in callbacks:
                try:
                    callback(*args)
                except Exception:  # a callback's bug must not stop the events thread
                    logger.exception("%s callback %r raised", kind, callback)
