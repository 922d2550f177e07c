"""PyRPLClient: the synchronous, thread-safe client of the PyRPL server (docs/protocol.md).

One client holds one TCP connection and one server session. Any number of threads may call it at
once; each call waits for its own reply (matched by ``id``) up to its own timeout. When the
connection drops, the client reconnects in the background, resumes its session (or re-creates its
leases and subscription on a restarted server) and re-sends the calls that are safe to re-send
(docs/protocol.md, *Retry policy for clients* and *Client behaviour*).

The client orchestrates its parts: the transport (:mod:`.transport`), the call table
(:mod:`.calls`), the session (:mod:`.session`) and the event dispatcher (:mod:`.events`); its
connection state is a :class:`State`.

Threads
    * the callers' threads: they build, send and wait for their requests, and decode their replies;
    * ``pyrpl-client-io`` (one per client, from ``connect()`` until ``close()``, a final error, or a
      drop with ``reconnect=False``): reads the socket and hands each reply to its caller; after a
      drop it reconnects with bounded exponential backoff, calls the ``revive`` hook after each
      failed attempt, says ``hello`` again and restores leases and subscription;
    * ``pyrpl-client-events``: runs the status and connection callbacks (:mod:`.events`).
      Callbacks may call the client, ``close()`` included.
"""
from __future__ import annotations

import copy
import enum
import logging
import ssl
import threading
import time
from datetime import datetime
from typing import Any, Callable

from .. import protocol
from ..analysis import network
from ..errors import (AuthenticationFailed, CallTimeout, CertificateMismatch, ClientClosed,
                      CommunicationError, ConnectionFailed, ConnectionLost, DeviceNotReady,
                      RemoteError, RequestTooLarge, RetryLater, UnsupportedProtocol,
                      error_from_wire)
from ..tls import client_context, normalize_fingerprint
from .calls import Call, CallTable
from .device import DeviceWatch
from .events import (ConnectionCallback, EventDispatcher, ProgressCallback, StatusCallback,
                     join_until)
from .session import Session, exchange
from .transport import (SLICE, Broken, Connector, Link, Stopped, WriteTimeout,
                        connect_failed_message)

logger = logging.getLogger(__name__)

BACKOFF_START = 0.05
BACKOFF_MAX = 1.0
"""Delay between reconnect attempts: doubles from BACKOFF_START up to BACKOFF_MAX (seconds; the
backoff of docs/protocol.md, *Retry policy for clients*)."""
ATTEMPT_TIMEOUT_MAX = 5.0
"""A reconnect attempt (TCP connect + hello + restore) takes at most min(timeout, this) seconds."""
RECONNECT_ATTEMPT_MAX = 1.5
"""Bound of the later reconnection attempts, so a fresh SYN goes out soon after a cut link comes
back."""
ACQUIRE_MARGIN = 2.0
"""``acquire`` waits for its reply this long beyond the acquisition timeout it gives the server."""
GOODBYE_WAIT = 0.5
"""``close()`` waits at most this long for the reply to ``goodbye`` (seconds)."""
CLOSE_BUDGET = 1.0
"""``close()`` returns within about this long, even if the server is gone (seconds)."""
PROBE_AFTER = 1.0
"""Seconds without a byte from the server while a call waits, before the io thread sends a ping."""
PROBE_TIMEOUT = 1.5
"""Seconds more without a byte after that ping: the link is dead (a silent cut) and is replaced."""
DEVICE_REPLIES = frozenset(m.value for m in (protocol.Method.STATUS, protocol.Method.SUBSCRIBE,
                                              protocol.Method.TAKE_BOARD))
"""Methods whose result holds the ``device`` block (watched for ``device`` events)."""
FINAL = (AuthenticationFailed, UnsupportedProtocol, CertificateMismatch)
"""Connection errors after which the client stops for good (docs/protocol.md, *Retry policy for
clients*)."""


class State(enum.Enum):
    """The connection state of a client."""

    IDLE = "not connected"
    """Before ``connect()``, or after a drop with ``reconnect=False``."""
    CONNECTED = "connected"
    """A connection with a session is up."""
    RECONNECTING = "reconnecting"
    """The connection dropped; the io thread reconnects; calls wait for it."""
    FAILED = "failed"
    """Stopped for good by a final error (:attr:`PyRPLClient.failure`)."""
    CLOSED = "closed"
    """``close()`` was called."""


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
        pinned = normalize_fingerprint(tls_fingerprint) if tls_fingerprint else None
        tls_context: ssl.SSLContext | None = None
        if tls or tls_ca or tls_fingerprint:
            try:
                tls_context = client_context(tls_ca or None, pinned)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load the TLS CA file {tls_ca!r}: {exc}") from None
        self.host = host
        self.port = port
        self.name = name
        self.hold = hold
        self.timeout = float(timeout)
        self.reconnect = reconnect
        self._revive = revive
        self._stop = threading.Event()
        self._connector = Connector(host, port, self._stop, tls_context, pinned)
        self._session = Session(token, name, hold)
        self._events = EventDispatcher(self.address)
        self._device = DeviceWatch(lambda block: self._events.connection("device", block))
        self._lock = threading.Lock()
        """Guards the state, the link and the call table, which change together."""
        self._changed = threading.Condition(self._lock)
        self._connect_lock = threading.Lock()
        self._calls = CallTable()
        self._state = State.IDLE
        self._link: Link | None = None
        self._lost_reason: str | None = None
        self._final: BaseException | None = None
        self._io_thread: threading.Thread | None = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return f"{self.host}:{self.port}"

    @property
    def state(self) -> State:
        """The connection state."""
        return self._state

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
        return self._session.id

    @property
    def hello_info(self) -> dict[str, Any] | None:
        """The latest ``hello`` result, ``leases`` being the session's leases after restoring them
        and ``lost_leases`` the ones that could not be re-acquired (None before the first)."""
        hello = self._session.hello
        return None if hello is None else dict(hello)

    def __enter__(self) -> PyRPLClient:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PyRPLClient {self.name!r} {self.address} {self._state.value}>"

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
                    return dict(self._session.hello or {})
                reconnecting = self._state is State.RECONNECTING
            if reconnecting:
                return self._wait_reconnected(deadline, timeout)
            return self._connect_now(deadline, timeout)
        finally:
            self._connect_lock.release()

    def _connect_now(self, deadline: float, timeout: float) -> dict[str, Any]:
        self._events.start()
        try:
            link, info = self._establish_admitted(deadline, timeout)
        except FINAL as exc:
            self._fail(exc)
            raise
        except Stopped:
            raise ClientClosed(self._closed_message()) from None
        previous = self._session.id
        if not self._publish(link, info):  # closed (or failed) meanwhile
            link.close()
            with self._lock:
                self._raise_if_unusable()
        self._io_thread = threading.Thread(target=self._run_io, args=(link,), daemon=True,
                                           name="pyrpl-client-io")
        self._io_thread.start()
        if previous is not None:
            self._emit_restored(info)
        else:
            self._device.observe(info.get("device"))
        return dict(info)

    def _wait_reconnected(self, deadline: float, timeout: float) -> dict[str, Any]:
        with self._changed:
            self._changed.wait_for(lambda: self._state is not State.RECONNECTING,
                                   timeout=max(0.0, deadline - time.monotonic()))
            self._raise_if_unusable()
            if self._link is not None:
                return dict(self._session.hello or {})
            reason = self._lost_reason
        raise ConnectionFailed(f"not reconnected to the PyRPL server at {self.address} within "
                               f"{timeout:g} s (connection lost: {reason}); "
                               + ("the client keeps trying" if self._state is State.RECONNECTING
                                  else "call connect() again"))

    def close(self) -> None:
        """Say ``goodbye`` (best effort, waiting at most GOODBYE_WAIT), close the connection and
        stop the background threads; returns within about CLOSE_BUDGET seconds even if the server
        is gone.

        Idempotent. Calls waiting for a reply, and every later call, raise ClientClosed.
        """
        started = time.monotonic()
        with self._lock:
            if self._state is State.CLOSED:
                return
            self._state = State.CLOSED
            self._stop.set()
            link = self._link
            calls = self._calls.drain()
            self._changed.notify_all()
        for call in calls:
            call.finish(error=ClientClosed(self._closed_message()))
        if link is not None:
            self._say_goodbye(link, started + GOODBYE_WAIT)
            link.shutdown()
        join_until(self._io_thread, started + CLOSE_BUDGET)
        with self._lock:
            self._link = None
        if link is not None:
            link.close()
        self._events.stop(started + CLOSE_BUDGET)
        logger.debug("client %r of %s closed", self.name, self.address)

    def _say_goodbye(self, link: Link, deadline: float) -> None:
        call = self._calls.new(protocol.Method.GOODBYE.value, None, deadline)
        with self._lock:
            self._calls.add(call, link.generation)
        self._transmit(link, call)
        call.done.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._calls.discard(call.id)

    # -- callbacks ------------------------------------------------------------------------------

    def add_status_callback(self, cb: StatusCallback) -> None:
        """Call ``cb(status)`` on every status push (after ``subscribe()``), on the events
        thread."""
        self._events.add_status_callback(cb)

    def remove_status_callback(self, cb: StatusCallback) -> None:
        self._events.remove_status_callback(cb)

    def add_connection_callback(self, cb: ConnectionCallback) -> None:
        """Call ``cb(event, info)`` on the events thread when the connection changes:

        ``("lost", {"reason": str})``; ``("resumed", hello)``: same session, leases kept;
        ``("new_session", hello)``: the server was restarted, the client re-acquired its leases
        (``hello["lost_leases"]``: those another client holds now); re-apply your module settings;
        ``("failed", {"error": exc})``: final (wrong token, protocol, or the revive hook raised);
        ``("device", device)``: the board's state changed (``device`` is the status' ``device``
        block: ``state``, ``reason``, ``since``, ``attempts``, ``board_restarted_at``, ...), as
        seen in a status push or reply, a hello after a reconnection, a ``take_board`` reply or a
        -32004 error (:class:`.device.DeviceWatch`).
        """
        self._events.add_connection_callback(cb)

    def remove_connection_callback(self, cb: ConnectionCallback) -> None:
        self._events.remove_connection_callback(cb)

    # -- calls ----------------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """Send one request and return its decoded result (arrays as ndarrays).

        ``timeout`` (default: the client's) covers everything: waiting for a reconnection, sending,
        the server's work and the reply. Raises the RemoteError subclass of an error reply,
        CallTimeout (no reply in time; a late reply is dropped), ConnectionLost (the connection
        dropped with a call in flight that is not re-sent: docs/protocol.md, *Retry policy for
        clients*),
        ConnectionFailed (not connected and not reconnecting), ClientClosed, RequestTooLarge (not
        sent), or the final error (AuthenticationFailed, or what the revive hook raised).
        """
        timeout = self._resolve(timeout)
        call = self._calls.new(method, params, time.monotonic() + timeout)
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
                self._calls.discard(call.id)
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

        Not re-sent after a drop (docs/protocol.md, *Retry policy for clients*): raises
        ConnectionLost if the connection dropped before the reply.
        """
        return self.call(protocol.Method.SET.value, {"module": module, "values": dict(values)},
                         timeout)

    def acquire(self, module: str, timeout: float | None = None,
                progress: ProgressCallback | None = None) -> dict[str, Any]:
        """One acquisition: a scope trace (``ch1``, ``ch2`` ndarrays, ``t0``, ``dt``, ...), IQ
        quadratures, sampler voltages, or a network analyzer's sweep (``frequencies``, ``data``,
        ``complete``, ...).

        ``timeout`` (default: the client's; for ``na`` the server's default, 3 x sweep_time x
        trace_average + 10 s, read with a ``get`` first) is the server's acquisition timeout
        (AcquisitionTimeout when it does not complete in time); the call waits
        ``timeout + ACQUIRE_MARGIN`` for the reply. ``progress`` (``na``): called with the
        params of each progress push of this acquisition (``done``, ``points``, ``average``,
        ``frequencies``, ``data`` as ndarrays) on the client's events thread; never after this
        returns (but for a call already running then).
        """
        params: dict[str, Any] = {"module": module}
        if timeout is None and module == "na":
            wait = network.default_timeout(self.get(module)) + ACQUIRE_MARGIN
        else:
            params["timeout"] = timeout = self._resolve(timeout)
            wait = timeout + ACQUIRE_MARGIN
        if progress is None:
            return self.call(protocol.Method.ACQUIRE.value, params, wait)
        params["progress"] = True
        self._events.add_progress_callback(module, progress)
        try:
            return self.call(protocol.Method.ACQUIRE.value, params, wait)
        finally:
            self._events.remove_progress_callback(module, progress)

    def stop(self, module: str, timeout: float | None = None) -> dict[str, Any]:
        """End this client's acquisition of ``module`` (``na``) at its next step: that
        ``acquire`` returns what it has with ``complete`` False. Returns once it has ended
        (output off), ``{"module": module, "stopped": bool}`` (False: none was running)."""
        return self.call(protocol.Method.STOP.value, {"module": module}, timeout)

    def lease(self, module: str, timeout: float | None = None,
              owner: str | None = None) -> dict[str, Any]:
        """Exclusive ``set`` on ``module`` for this client's session (kept across reconnections).

        ``owner`` names who in this client takes it (a plugin; shown by the server's status and
        refusals); leasing a held module again replaces its owner. Raises ModuleLeased if another
        client holds it.
        """
        params: dict[str, Any] = {"module": module}
        if owner is not None:
            params["owner"] = owner
        return self.call(protocol.Method.LEASE.value, params, timeout)

    def release(self, module: str, timeout: float | None = None) -> dict[str, Any]:
        """End this client's lease of ``module`` (``released`` is False if it held none)."""
        return self.call(protocol.Method.RELEASE.value, {"module": module}, timeout)

    def subscribe(self, status: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Status pushes on or off (kept across reconnections); returns the current status."""
        return self.call(protocol.Method.SUBSCRIBE.value, {"status": status}, timeout)

    def take_board(self, timeout: float | None = None) -> dict[str, Any]:
        """Take the board back from another program that took it (device state ``taken``; also
        tried when ``lost``): the server may end that program's connection to the board. Returns
        the ``device`` block afterwards (nothing done if the board was ready). Raises
        DeviceNotReady with the reason if the board cannot be taken. Never re-sent:
        ConnectionLost if the connection drops before the reply."""
        return self.call(protocol.Method.TAKE_BOARD.value, timeout=timeout)["device"]

    def shutdown(self, token: str, timeout: float | None = None) -> dict[str, Any]:
        """Stop the server (it replies ``{"stopping": true}``, then exits); ``token`` is the
        server's token, needed even on an authenticated connection (InvalidParams if wrong).
        Never re-sent: ConnectionLost if the connection drops before the reply."""
        return self.call(protocol.Method.SHUTDOWN.value, {"token": token}, timeout)

    # -- call machinery -------------------------------------------------------------------------

    def _resolve(self, timeout: float | None) -> float:
        if timeout is None:
            return self.timeout
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        return float(timeout)

    def _register(self, call: Call) -> Link | None:
        """Enter ``call`` in the table; the link to write it on, or None: the io thread will send it
        after reconnecting. Raises if the client cannot take calls."""
        with self._lock:
            self._raise_if_unusable()
            if self._state is State.IDLE:
                raise ConnectionFailed(self._not_connected_message())
            link = self._link
            self._calls.add(call, None if link is None else link.generation)
            return link

    def _transmit(self, link: Link, call: Call) -> None:
        """Write ``call`` on ``link`` before its deadline. Never raises: a write that fails breaks
        the link (the io thread then reconnects and decides the call's fate); a write that times out
        before any byte left lets the caller time out."""
        try:
            call.sent_at = time.monotonic()
            link.write(call.line, call.deadline)
        except WriteTimeout as exc:
            if exc.partial:
                logger.warning("request '%s' to %s half written at its deadline: reconnecting",
                               call.method, self.address)
                link.shutdown()
        except OSError as exc:
            logger.debug("writing '%s' to %s failed: %s", call.method, self.address, exc)
            link.shutdown()

    def _wait(self, call: Call, timeout: float) -> dict[str, Any]:
        if not call.done.wait(max(0.0, call.deadline - time.monotonic())):
            with self._lock:
                if not call.done.is_set():  # (else the reply came just now: take it)
                    self._calls.discard(call.id)
                    raise CallTimeout(self._timeout_message(call, timeout))
        if call.error is not None:
            raise call.error
        assert call.reply is not None
        return call.reply

    def _result(self, call: Call, reply: dict[str, Any]) -> Any:
        if "error" in reply:
            error = reply["error"]
            if not isinstance(error, dict):
                raise CommunicationError(f"malformed error reply to '{call.method}' from "
                                         f"{self.address}: {error!r}")
            exc = error_from_wire(error)
            if isinstance(exc, DeviceNotReady):
                self._device.observe(exc.data)
            raise exc
        try:
            value = protocol.decode_value(reply.get("result"))
        except ValueError as exc:
            raise CommunicationError(f"malformed reply to '{call.method}' from {self.address}: "
                                     f"{exc}") from None
        self._session.track(call.method, call.params, value)
        if call.method in DEVICE_REPLIES and isinstance(value, dict):
            self._device.observe(value.get("device"))
        return value

    def _raise_if_unusable(self) -> None:
        """With the lock held: raise ClientClosed or (a copy of) the final error."""
        if self._state is State.CLOSED:
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

    def _timeout_message(self, call: Call, timeout: float) -> str:
        text = (f"no reply to '{call.method}' from the PyRPL server at {self.address} within "
                f"{timeout:g} s")
        if self._state is State.RECONNECTING:
            return (f"{text}; the client is reconnecting (connection lost: {self._lost_reason}) "
                    "and keeps trying")
        return f"{text}; the server is busy or unreachable (connection still open)"

    def _taken_over(self, exc: AuthenticationFailed) -> AuthenticationFailed:
        """The final error for a refused token: the server was restarted with another one."""
        return AuthenticationFailed(
            f"the PyRPL server at {self.address} refused this client's token (noticed at "
            f"{_now_local()}): it was restarted with a new token, i.e. taken over by another "
            f"program. This client stops and does not retry; re-initialize to use the new token. "
            f"Server: {exc.message}", exc.data)

    # -- establishing a connection (caller's thread for connect(), io thread for reconnects) ----

    def _establish(self, deadline: float, timeout: float) -> tuple[Link, dict[str, Any]]:
        """Connect, ``hello`` (resuming the session), restore leases and subscription, all before
        ``deadline``. The link is not published yet.

        Raises ConnectionFailed, AuthenticationFailed (reworded, with the time),
        CertificateMismatch, another RemoteError of ``hello``/``lease``/``subscribe``, or Stopped.
        """
        link = self._connector.open(deadline, timeout)
        try:
            info = self._session.open(
                lambda method, params: exchange(link, self._calls.new(method, params, deadline),
                                                self._stop, self._dispatch_push),
                self.address)
        except TimeoutError:
            link.close()
            raise ConnectionFailed(connect_failed_message(
                self.address,
                f"no reply to 'hello' within {timeout:g} s: the program on that port accepted the "
                "connection but does not answer like a PyRPL server")) from None
        except Broken as exc:
            link.close()
            hint = ("" if self._connector.tls_context
                    else "; a TLS server (--tls-cert) also does this")
            raise ConnectionFailed(connect_failed_message(
                self.address, f"the connection failed during 'hello' ({exc}{hint})")) from None
        except AuthenticationFailed as exc:
            link.close()
            raise self._taken_over(exc) from None
        except BaseException:
            link.close()
            raise
        return link, info

    def _establish_admitted(self, deadline: float,
                            timeout: float) -> tuple[Link, dict[str, Any]]:
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
                    raise Stopped() from None

    def _publish(self, link: Link, info: dict[str, Any]) -> bool:
        """Make ``link`` the connection and send the calls that waited for it; False (nothing done)
        if the client was closed or failed meanwhile."""
        with self._lock:
            if self._state in (State.CLOSED, State.FAILED):
                return False
            self._link = link
            self._session.adopt(info)
            self._state = State.CONNECTED
            waiting = self._calls.assign_unsent(link.generation)
            self._changed.notify_all()
        for call in waiting:
            self._transmit(link, call)
        return True

    # -- io thread ------------------------------------------------------------------------------

    def _run_io(self, link: Link) -> None:
        """Read and dispatch until the link breaks; then reconnect (if enabled) and go on.

        A bug here must not leave callers waiting in silence: it becomes the final error.
        """
        current: Link | None = link
        try:
            while current is not None:
                try:
                    while True:
                        link_ = current
                        self._dispatch(current, current.read_message(
                            on_idle=lambda: self._check_liveness(link_)))
                except Broken as exc:
                    current = self._after_loss(current, str(exc))
        except Exception as exc:
            logger.exception("the io thread of the PyRPL client of %s failed", self.address)
            self._fail(CommunicationError(f"internal error of the PyRPL client of {self.address}: "
                                          f"{type(exc).__name__}: {exc}"))

    def _check_liveness(self, link: Link) -> None:
        """Detect a silent cut: a call waits and nothing came from the server for PROBE_AFTER s ->
        send a ping (a call of its own, whose reply is taken like any other); still nothing
        PROBE_TIMEOUT s later -> raise Broken (then reconnect and resume). A busy server still
        answers pings at once."""
        now = time.monotonic()
        with self._lock:
            oldest = self._calls.oldest_sent(link.generation)
        if oldest is None:
            link.probed_at = None
            return
        silent_since = max(link.last_received, oldest)
        if link.probed_at is not None and link.probed_at < link.last_received:
            link.probed_at = None  # answered
        if link.probed_at is None:
            if now - silent_since >= PROBE_AFTER:
                link.probed_at = now
                probe = self._calls.new(protocol.Method.PING.value, None, now + SLICE, probe=True)
                with self._lock:
                    self._calls.add(probe, link.generation)
                try:
                    link.write(probe.line, probe.deadline)
                except (WriteTimeout, OSError):
                    with self._lock:
                        self._calls.discard(probe.id)
        elif now - link.probed_at >= PROBE_TIMEOUT:
            raise Broken(f"no answer from the server for {now - silent_since:.1f} s")

    def _dispatch(self, link: Link, message: dict[str, Any]) -> None:
        if "id" not in message:
            self._dispatch_push(message)
            return
        id_ = message["id"]
        with self._lock:
            call = self._calls.take_reply(id_, link.generation)
        if call is None:
            if id_ is None:
                logger.warning("error reply without id from %s: %.300s", self.address, message)
            else:
                logger.debug("late reply %r from %s dropped (its call timed out)", id_,
                             self.address)
            return
        call.finish(reply=message)

    def _dispatch_push(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method == protocol.NOTIFICATION_STATUS and "id" not in message:
            params = message.get("params")
            self._events.status(params)
            if isinstance(params, dict):
                self._device.observe(params.get("device"))
        elif method == protocol.NOTIFICATION_PROGRESS and "id" not in message:
            self._events.progress(message.get("params"))
        else:
            logger.warning("unexpected message from %s: %.300s", self.address, message)

    def _after_loss(self, link: Link, reason: str) -> Link | None:
        """Handle a broken link: fail or re-queue its calls (docs/protocol.md, *Client
        behaviour*), tell the callbacks, reconnect. Returns the new link, or None when the io
        thread should end."""
        link.close()
        with self._lock:
            if self._link is link:
                self._link = None
            closed = self._state is State.CLOSED
            self._lost_reason = reason
            resend = self.reconnect and self._state not in (State.CLOSED, State.FAILED)
            if resend:
                self._state = State.RECONNECTING
            elif self._state is not State.CLOSED and self._state is not State.FAILED:
                self._state = State.IDLE
            failed = [call for call in self._calls.lose(link.generation, resend)
                      if not call.probe]
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
        self._events.connection("lost", {"reason": reason})
        return self._reconnect() if resend else None

    def _reconnect(self) -> Link | None:
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
            except Stopped:
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
        self._events.connection("resumed" if resumed else "new_session", dict(info))
        self._device.observe(info.get("device"))

    def _fail(self, exc: BaseException) -> None:
        """Stop for good: every waiting and later call raises ``exc``; a ``failed`` event."""
        with self._lock:
            if self._state in (State.CLOSED, State.FAILED):
                return
            self._final = exc
            self._state = State.FAILED
            link, self._link = self._link, None
            calls = self._calls.drain()
            self._changed.notify_all()
        for call in calls:
            call.finish(error=_fresh(exc))
        if link is not None:
            link.close()
        logger.error("PyRPL client %r of %s stopped: %s", self.name, self.address, exc)
        self._events.connection("failed", {"error": exc})
