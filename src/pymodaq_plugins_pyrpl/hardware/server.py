"""The PyRPL server process: one per Red Pitaya, many clients, line-delimited JSON-RPC over TCP.

Run ``python -m pymodaq_plugins_pyrpl.hardware.server (--mock | --hostname HOST) [--port 6341]
[--bind 127.0.0.1] [--token-file PATH] [--config NAME] [--auto-stop SECONDS]
[--tls-cert PATH --tls-key PATH]`` (``--help`` lists every option). Once it listens it registers in
the runtime folder (:func:`register`), then prints exactly one line to stdout,
``PYRPL_SERVER_READY {"port": N, "pid": P}``, and logs to stderr (or
``--log-file``). SIGTERM/SIGINT stop it cleanly with exit status 0; the board's outputs are left as they
are. If the backend cannot reach its board (PyRPL missing, board unreachable) it exits with status 2
before the ready line.

Structure: :class:`Server` holds sessions, leases and the dispatch of one request line to one reply
line (:meth:`Server.process_line`, testable without sockets); :func:`serve` puts it on a TCP socket.
All backend calls run on one dedicated thread (:class:`BackendThread`), so a slow board never stalls the
event loop, and a scope acquisition waits for its trace without holding that thread.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import logging.handlers
import math
import os
import secrets
import signal
import socket
import ssl
import sys
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from .. import __version__
from . import catalogue, protocol, runtime, tls
from .backends.base import Backend, ScopeTrace
from .errors import (AcquisitionTimeout, AuthenticationFailed, BackendUnavailable, DeviceNotReady,
                     InternalError, InvalidParams, InvalidRequest, MethodNotFound, ModuleLeased,
                     NotAuthenticated, RemoteError, RequestTooLarge, RetryLater,
                     ServerError, ServerShuttingDown, UnsupportedProtocol, echoed)

logger = logging.getLogger(__name__)

STATUS_PERIOD = 2.0
"""Subscribers get a status push on every change and at least this often (seconds)."""
IQ_SETTLE_TIMEOUT = 10.0
"""Default bound of an IQ acquisition's wait for its filter to settle (seconds)."""
SCOPE_POLL = 0.002
"""Interval between two attempts to finish a trace that is late (no trigger yet), in seconds."""
SCOPE_TIMEOUT_MARGIN = 10.0
"""A scope acquisition's default timeout is its ``trace_average × duration`` plus this (seconds)."""
FINISH_WINDOW = 0.003
"""The backend thread may wait this long for a trace to complete (seconds)."""
FINISH_POLL = 0.0001
"""Interval of the backend thread's ``scope_ready`` polls within FINISH_WINDOW (seconds)."""
LOOP_TIMER_SLACK = 0.001
"""How late the event loop's timers can wake up (s): epoll rounds a timeout up to the next ms."""
MAX_IN_FLIGHT = 64
"""Requests one connection may have pending at once; further lines wait for a slot."""
AUTH_MAX_FAILURES = 20
AUTH_WINDOW = 10.0
"""AUTH_MAX_FAILURES failed hellos within AUTH_WINDOW seconds from one IP start a cool-down: the
stale programs a takeover leaves behind each fail once, then stop for good."""
AUTH_MAX_TRACKED = 4096
"""IP addresses the rate limit of failed hellos remembers at most."""
MAX_PENDING = 128
MAX_PENDING_PER_ADDRESS = 16
"""Connections that have not said hello yet, in all and per peer IP address (fewer in all if the
file-descriptor limit is low: see :func:`pending_limit`). A client needs one for a few
milliseconds; a connection beyond either cap is refused at once, before any byte is read."""
MAX_SESSIONS = 256
"""Sessions at once, connected or waiting to be resumed; a hello that would open one more is
refused with RetryLater until one ends. Bounds the memory they hold and the size of a status."""
FD_RESERVE = 64
"""File descriptors kept for everything but client connections (backend, log, listeners)."""
ACCEPT_RETRY = 0.1
"""After a failed accept (out of file descriptors or memory), the next one waits this long (s)."""
LOG_BURST_PERIOD = 60.0
"""A warning that comes in bursts (failed accepts, refused connections) is logged at most once per
this many seconds, with a count of the ones left out."""
LISTEN_BACKLOG = 128
"""Connections the kernel queues before the server accepts them."""
OPEN_FILES_WANTED = 10240
"""The soft limit of open files the server asks for where the hard limit is unlimited (macOS
allows at most 10240)."""
LOG_MAX_BYTES = 1 << 20
LOG_BACKUPS = 2
"""``--log-file`` is rotated at LOG_MAX_BYTES, keeping LOG_BACKUPS older files (FILE.1, FILE.2)."""


_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: time.sleep(0))
"""Give the CPU to another runnable thread or process, if any."""


class BackendThread:
    """Runs every call to the backend on one dedicated thread, in submission order.

    A backend that does not need its own thread (``needs_own_thread`` False: the simulator, whose
    calls are short computations) is called directly on the event loop instead, which saves two
    thread hand-overs per call.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.inline = not backend.needs_own_thread
        """Calls run directly on the event loop (no thread)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backend")

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


@dataclass
class _Failures:
    """An IP's failed authentications in its current window, and the end of its cool-down."""

    window_start: float
    count: int = 0
    blocked_until: float = 0.0
    """0.0: not cooling down (nor since the window started)."""


class AuthLimiter:
    """Rate limit of failed ``hello``s, per peer IP address.

    Contract: the ``max_failures``-th wrong token from one IP within ``window`` seconds of its first
    counted one starts a cool-down of ``cooldown`` seconds for that IP, logged once (WARNING, naming
    the IP); then the IP starts afresh. While :meth:`refused_for` is positive the server refuses
    that IP's wrong tokens with a retryable error and does not count them; a right token is always
    accepted. Only failures are recorded (a success does not reset them). Each call is O(1); at most
    ``max_tracked`` IPs are remembered (beyond, the one whose last failure is the oldest is
    forgotten), and an IP whose window and cool-down are over is forgotten at the next failure.
    """

    def __init__(self, cooldown: float, max_failures: int = AUTH_MAX_FAILURES,
                 window: float = AUTH_WINDOW, max_tracked: int = AUTH_MAX_TRACKED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self.max_failures = max_failures
        self.window = window
        self.max_tracked = max_tracked
        self._clock = clock
        self._records: OrderedDict[str, _Failures] = OrderedDict()
        """Per IP, the least recently failed first."""

    def __len__(self) -> int:
        """The number of IPs remembered."""
        return len(self._records)

    def refused_for(self, ip: str) -> float:
        """Seconds ``ip`` is still cooling down (0.0: it is not)."""
        record = self._records.get(ip)
        return 0.0 if record is None else max(0.0, record.blocked_until - self._clock())

    def failed(self, ip: str) -> None:
        """Record a wrong token from ``ip`` (ignored while it cools down); the failure that reaches
        the limit starts a cool-down."""
        now = self._clock()
        self._forget(now)
        record = self._records.pop(ip, None)
        if record is not None and record.blocked_until > now:
            self._records[ip] = record
            return
        if record is None or record.blocked_until or now - record.window_start > self.window:
            record = _Failures(window_start=now)
        record.count += 1
        if record.count >= self.max_failures:
            record.blocked_until = now + self.cooldown
            logger.warning("%d failed authentications from %s within %g s: its wrong tokens are "
                           "refused for %g s", record.count, ip, self.window, self.cooldown)
        self._records[ip] = record
        if len(self._records) > self.max_tracked:
            self._records.popitem(last=False)

    def _forget(self, now: float) -> None:
        """Drop, least recently failed first, the IPs whose window and cool-down are over."""
        while self._records:
            ip, record = next(iter(self._records.items()))
            if record.blocked_until > now or now - record.window_start <= self.window:
                return
            del self._records[ip]


class Admission:
    """The connections that have not said hello yet, in all and per peer IP address: each counts
    from its acceptance until it says hello or closes. O(1) per call; holds one entry per such
    connection, so at most ``total``."""

    def __init__(self, total: int, per_address: int, hello_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.per_address = per_address
        self._hello_timeout = hello_timeout
        self._clock = clock
        self._pending: dict[object, tuple[str, float]] = {}
        """Ticket -> (IP, hello deadline), oldest first."""
        self._by_address: dict[str, dict[object, float]] = {}
        """IP -> {ticket: hello deadline}, oldest first."""

    def __len__(self) -> int:
        return len(self._pending)

    def wait_for(self, ip: str) -> float | None:
        """None if a connection from ``ip`` may enter now; else the seconds until a place is sure
        to be free (the hello deadline of the oldest connection in the way)."""
        mine = self._by_address.get(ip, {})
        if len(mine) >= self.per_address:
            oldest = next(iter(mine.values()))
        elif len(self._pending) >= self.total:
            oldest = next(iter(self._pending.values()))[1]
        else:
            return None
        return max(0.0, oldest - self._clock())

    def enter(self, ip: str) -> object:
        """Count a new connection from ``ip``; the ticket to give to :meth:`leave`."""
        ticket = object()
        deadline = self._clock() + self._hello_timeout
        self._pending[ticket] = (ip, deadline)
        self._by_address.setdefault(ip, {})[ticket] = deadline
        return ticket

    def leave(self, ticket: object) -> None:
        """The connection said hello or closed (idempotent)."""
        entry = self._pending.pop(ticket, None)
        if entry is None:
            return
        mine = self._by_address[entry[0]]
        del mine[ticket]
        if not mine:
            del self._by_address[entry[0]]


class _Throttled:
    """A warning that can come in bursts: logged at most once per ``period`` seconds, with the
    number of occurrences left out since the previous one."""

    def __init__(self, message: str, period: float = LOG_BURST_PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._message = message
        self._period = period
        self._clock = clock
        self._next = -math.inf
        self._left_out = 0

    def __call__(self, *args: Any) -> None:
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return
        logger.warning(self._message + "%s", *args,
                       f" ({self._left_out} more like it not logged since the last)"
                       if self._left_out else "")
        self._left_out = 0
        self._next = now + self._period


@dataclass
class Session:
    """A client's identity on the server; survives a dropped connection for the resume grace period."""

    id: str
    client: str
    hold: bool
    leases: set[str] = field(default_factory=set)
    connection: Connection | None = None
    expiry: asyncio.TimerHandle | None = None


class _Output:
    """One encoded message waiting in a connection's output queue."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Connection:
    """One TCP connection (or a test double): its output queue, subscription flag and session.

    Output never makes its caller wait for the peer: :meth:`send` and :meth:`push_status` queue the
    encoded message, and a writer task of the connection hands the queue to ``send`` in order. The
    backlog (bytes queued, or handed to ``send`` that has not returned yet) is bounded by
    ``max_output``: a message that would pass it aborts the connection instead (nothing more is
    written; the session stays for resume, as after any dropped connection). An unsent status push
    is replaced by a newer one, so a subscriber that does not read holds at most one.
    """

    def __init__(self, send: Callable[[bytes], Awaitable[None]], peer: str = "local",
                 close: Callable[[], None] | None = None, ip: str = "local",
                 abort: Callable[[], None] | None = None,
                 max_output: int = protocol.MAX_OUTPUT_BYTES) -> None:
        self._send = send
        self._close = close
        self._abort = abort or close
        self.max_output = max_output
        self._output: deque[_Output] = deque()
        self._unsent_status: _Output | None = None
        self._writer: asyncio.Task[None] | None = None
        self.backlog = 0
        """Bytes of output queued or being written (see the class docstring)."""
        self.peer = peer
        """``ip:port`` of the client, for the log."""
        self.ip = ip
        """The client's IP address: the key of the authentication rate limit."""
        self.session: Session | None = None
        self.subscribed = False
        self.closed = False
        """No more output is queued: closing, closed, aborted or broken."""
        self.close_after_reply = False

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message; a reply that cannot be encoded becomes a -32603 error reply."""
        if self.closed:
            return
        try:
            data = protocol.dumps_line(message)
        except (ValueError, TypeError, RecursionError) as exc:
            if "id" not in message:
                raise
            logger.error("reply %r could not be encoded: %s", message.get("id"), exc)
            data = protocol.dumps_line(protocol.error(message["id"], InternalError(
                f"the reply could not be encoded ({type(exc).__name__})").to_wire()))
        self._queue(_Output(data))

    def push_status(self, data: bytes) -> None:
        """Queue an encoded status push; it replaces the previous one if that is still unsent."""
        if self.closed:
            return
        unsent = self._unsent_status
        if unsent is None:
            self._unsent_status = self._queue(_Output(data))
        elif self._fits(len(data) - len(unsent.data)):
            self.backlog += len(data) - len(unsent.data)
            unsent.data = data

    def _queue(self, output: _Output) -> _Output | None:
        """Queue ``output`` (None if that aborted the connection) and start the writer if idle."""
        if not self._fits(len(output.data)):
            return None
        self._output.append(output)
        self.backlog += len(output.data)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())
        return output

    def _fits(self, more: int) -> bool:
        """Whether the backlog stays within its bound with ``more`` bytes; if not, abort."""
        if self.backlog + more <= self.max_output:
            return True
        logger.warning("closing %s: it does not read its replies (%d bytes unread would pass the "
                       "limit of %d)%s", self.peer, self.backlog + more, self.max_output,
                       "; its session is kept for resume" if self.session else "")
        self.closed = True
        self._output.clear()
        self._unsent_status = None
        if self._writer is not None:
            self._writer.cancel()
        if self._abort is not None:
            self._abort()
        return False

    async def _write(self) -> None:
        """Hand the queue to ``send`` until it is empty; then close if :meth:`close` was called."""
        try:
            while self._output:
                output = self._output.popleft()
                if output is self._unsent_status:
                    self._unsent_status = None
                try:
                    await self._send(output.data)
                finally:
                    self.backlog -= len(output.data)
        except (ConnectionError, OSError):
            self.closed = True
            self._output.clear()
            self._unsent_status = None
        if self.closed and self._close is not None:
            self._close()

    def close(self) -> None:
        """Close once the queued output is written (at once if there is none); queue no more."""
        if self.closed:
            return
        self.closed = True
        if (self._writer is None or self._writer.done()) and self._close is not None:
            self._close()


class Server:
    """Sessions, leases, status and the dispatch of requests to the backend."""

    def __init__(self, backend: Backend, token: str | None, *, port: int = 0,
                 auto_stop: float | None = None, session_grace: float = 10.0,
                 auth_cooldown: float = 60.0) -> None:
        self.backend = backend
        self.thread = BackendThread(backend)
        self._token = token
        self._auth_limiter = AuthLimiter(auth_cooldown)
        self.port = port
        self.auto_stop = auto_stop
        self.session_grace = session_grace
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self.stopping = asyncio.Event()
        self.started_at = time.time()
        self._started_monotonic = time.monotonic()
        self.device_state = "disconnected"
        self.device_reason: str | None = None
        self.device_session = ""
        self._scope_lock = asyncio.Lock()
        self._scope_generation = 0
        self._scope_settings_cache: tuple[int, dict[str, Any]] = (-1, {})
        self._scope_sequence = 0
        self._no_holder_since: float | None = time.monotonic()
        self._last_push = 0.0
        self._push_pending = False
        self._handlers: dict[str, Callable[[Connection, dict[str, Any]], Awaitable[Any]]] = {
            protocol.Method.HELLO: self._hello,
            protocol.Method.PING: self._ping,
            protocol.Method.STATUS: self._status,
            protocol.Method.DESCRIBE: self._describe,
            protocol.Method.GET: self._get,
            protocol.Method.SET: self._set,
            protocol.Method.ACQUIRE: self._acquire,
            protocol.Method.LEASE: self._lease,
            protocol.Method.RELEASE: self._release,
            protocol.Method.SUBSCRIBE: self._subscribe,
            protocol.Method.GOODBYE: self._goodbye,
            protocol.Method.SHUTDOWN: self._shutdown,
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open_backend(self) -> None:
        """Connect the backend to its board. Raises BackendUnavailable."""
        self._set_device("connecting")
        try:
            await self.thread.call(self.backend.open)
        except BackendUnavailable as exc:
            self._set_device("error", str(exc))
            raise
        self.device_session = uuid.uuid4().hex
        self._set_device("ready")

    async def close_backend(self) -> None:
        """Disconnect from the board without touching its outputs."""
        try:
            await self.thread.call(self.backend.close)
        finally:
            self.thread.shutdown()
            self._set_device("disconnected")

    def stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            logger.info("stopping: %s", reason)
            self.stopping.set()

    async def watch(self) -> None:
        """Periodic duties until stopped: status pushes and the auto-stop watchdog."""
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=min(STATUS_PERIOD, 0.5))
            except asyncio.TimeoutError:
                pass
            self._check_auto_stop()
            now = time.monotonic()
            if now - self._last_push >= STATUS_PERIOD:
                self.broadcast_status()

    def _check_auto_stop(self) -> None:
        if self.auto_stop is None or self.stopping.is_set():
            return
        if any(s.hold for s in self.sessions.values()):
            self._no_holder_since = None
            return
        if self._no_holder_since is None:
            self._no_holder_since = time.monotonic()
        elif time.monotonic() - self._no_holder_since >= self.auto_stop:
            self.stop(f"auto-stop: no holding client for {self.auto_stop:g} s")

    def _holders_changed(self, ended_by_client: bool) -> None:
        """The last holder left: an auto-started server stops now."""
        if self.auto_stop is None or any(s.hold for s in self.sessions.values()):
            return
        if ended_by_client:
            self.stop("auto-stop: the last holding client said goodbye")
        else:
            self.stop("auto-stop: the last holding client vanished")

    # -- connections -------------------------------------------------------------------------------

    def connection_made(self, connection: Connection) -> None:
        self.connections.add(connection)

    def connection_lost(self, connection: Connection) -> None:
        """The connection ended: close it once its queued output is written, detach its session,
        which ends (leases released) after the resume grace period."""
        self.connections.discard(connection)
        connection.close()
        session = connection.session
        if session is None or session.connection is not connection:
            return
        session.connection = None
        loop = asyncio.get_running_loop()
        session.expiry = loop.call_later(self.session_grace, self._expire, session.id)
        logger.info("client %r (%s) disconnected; session kept for %g s", session.client,
                    session.id[:8], self.session_grace)
        self._status_changed()

    def _expire(self, session_id: str) -> None:
        session = self.sessions.get(session_id)
        if session is None or session.connection is not None:
            return
        self._end_session(session)
        logger.info("session of %r (%s) expired; leases released: %s", session.client,
                    session_id[:8], sorted(session.leases) or "none")
        if session.hold:
            self._holders_changed(ended_by_client=False)

    def _end_session(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        if session.expiry is not None:
            session.expiry.cancel()
        self._status_changed()

    # -- dispatch ----------------------------------------------------------------------------------

    async def process_line(self, connection: Connection, line: bytes) -> dict[str, Any] | None:
        """One request line in, one reply message out (None for a valid notification: a request
        object without id; an invalid one is answered with ``"id": null``)."""
        id_: Any = None
        notification = False
        try:
            if len(line) > protocol.MAX_REQUEST_BYTES:
                connection.close_after_reply = True
                raise RequestTooLarge(f"request of {len(line)} bytes exceeds the limit of "
                                      f"{protocol.MAX_REQUEST_BYTES} bytes")
            try:
                request = protocol.parse_request(line)
            except protocol.BadRequest as exc:
                id_ = exc.id
                raise exc.error from None
            id_, method, params = request.id, request.method, request.params
            notification = request.notification
            handler = self._handlers.get(method)
            if handler is None:
                raise MethodNotFound(f"unknown method {echoed(method)!r}; methods are "
                                     f"{[m.value for m in protocol.Method]}")
            if method != protocol.Method.HELLO and connection.session is None:
                raise NotAuthenticated("say 'hello' with the server token first")
            if self.stopping.is_set() and method not in (protocol.Method.PING,
                                                         protocol.Method.STATUS,
                                                         protocol.Method.GOODBYE):
                raise ServerShuttingDown("the server is shutting down; reconnect later")
            value = await handler(connection, params)
            return None if notification else protocol.result(id_, value)
        except RemoteError as exc:
            return None if notification else protocol.error(id_, exc.to_wire())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a backend failure: report it, keep serving
            logger.exception("request failed")
            error = InternalError(f"{type(exc).__name__}: {exc}").to_wire()
            return None if notification else protocol.error(id_, error)

    # -- methods -----------------------------------------------------------------------------------

    async def _hello(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        if connection.session is not None:
            raise InvalidRequest("this connection already said hello")
        version = params.get("protocol")
        if version != protocol.PROTOCOL_VERSION:
            raise UnsupportedProtocol(
                f"protocol {echoed(repr(version))} is not supported; this server (version {__version__}) "
                f"speaks protocol {protocol.PROTOCOL_VERSION}: update the plugin package",
                {"supported": [protocol.PROTOCOL_VERSION]})
        self._authenticate(connection, params.get("token", ""))
        client = params.get("client", "")
        hold = params.get("hold", False)
        resume = params.get("session")
        if not isinstance(client, str) or len(client) > 200:
            raise InvalidParams("'client' must be a string of at most 200 characters")
        if not isinstance(hold, bool):
            raise InvalidParams("'hold' must be true or false")
        if resume is not None and not isinstance(resume, str):
            raise InvalidParams("'session' must be a session id string")
        session = self.sessions.get(resume) if resume else None
        resumed = session is not None
        if session is None:
            self._check_session_room(connection)
            session = Session(id=uuid.uuid4().hex, client=client, hold=hold)
            self.sessions[session.id] = session
        else:
            if session.expiry is not None:
                session.expiry.cancel()
                session.expiry = None
            if session.connection is not None and session.connection is not connection:
                session.connection.close()  # a half-open connection of the same client
            session.client, session.hold = client or session.client, hold or session.hold
        session.connection = connection
        connection.session = session
        logger.info("%s %r (%s) from %s%s", "resumed" if resumed else "hello", session.client,
                    session.id[:8], connection.peer, ", holding" if session.hold else "")
        self._status_changed()
        return {"server_version": __version__, "protocol": protocol.PROTOCOL_VERSION,
                "session": session.id, "resumed": resumed, "leases": sorted(session.leases),
                "backend": self.backend.name, "hostname": self.backend.hostname,
                "plant": self.backend.plant, "device": self._device_status()}

    def _authenticate(self, connection: Connection, token: Any) -> None:
        """Check a hello's token (constant-time); the right one is always accepted. A wrong one is
        refused, the connection closed after the reply and the token never quoted: RetryLater
        while the IP cools down after too many failures (neither counted nor logged), else
        AuthenticationFailed (logged, counted by the rate limit)."""
        if self._token is None or self._token_matches(token):
            return
        connection.close_after_reply = True
        refused_for = self._auth_limiter.refused_for(connection.ip)
        if refused_for > 0:
            raise RetryLater(
                f"too many failed authentications from {connection.ip}: hellos from there with a "
                f"wrong token are refused for {refused_for:.0f} s more; check the token",
                {"retry_after": round(refused_for, 1)})
        logger.warning("authentication failed from %s", connection.peer)
        self._auth_limiter.failed(connection.ip)
        raise AuthenticationFailed(
            "wrong token: this server was restarted with a new token (taken over by another "
            f"program at {self._started_iso()}); do not retry, re-initialize to get the new token")

    def _check_session_room(self, connection: Connection) -> None:
        """Raise RetryLater (and close the connection after the reply) if MAX_SESSIONS are open;
        its ``retry_after`` is the time until the first waiting session expires."""
        if len(self.sessions) < MAX_SESSIONS:
            return
        connection.close_after_reply = True
        loop = asyncio.get_running_loop()
        expiries = [s.expiry.when() for s in self.sessions.values() if s.expiry is not None]
        wait = min(expiries) - loop.time() if expiries else self.session_grace
        raise RetryLater(f"the server has {len(self.sessions)} sessions, its limit: retry when one "
                         "ends", {"retry_after": round(max(0.1, wait), 1)})

    def _token_matches(self, token: Any) -> bool:
        """Constant-time comparison with the server token (any string, even with lone surrogates)."""
        assert self._token is not None
        return isinstance(token, str) and hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), self._token.encode("utf-8", "surrogatepass"))

    async def _ping(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        return {"time": time.time()}

    async def _status(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    async def _describe(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        return catalogue.describe()

    async def _get(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = params.get("module")
        names = catalogue.attribute_names(module, params.get("names"))
        return await self._backend(self.backend.get, module, names)

    async def _set(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = params.get("module")
        values = catalogue.validate(module, params.get("values"))
        self._check_lease(connection, module)
        if module == "scope":
            self._scope_generation += 1
        return await self._backend(self.backend.set, module, values)

    async def _acquire(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = params.get("module")
        spec = catalogue.module(module)
        timeout = params.get("timeout", None)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout <= 3600):
            raise InvalidParams("'timeout' must be a number of seconds in (0, 3600]")
        if spec.kind == "scope":
            return await self._acquire_scope(timeout)
        if spec.kind == "iq":
            await self._iq_settled(module, timeout)
            return await self._backend(self.backend.iq_read, module)
        if spec.kind == "sampler":
            return await self._backend(self.backend.sampler_read)
        raise InvalidParams(f"module '{module}' has nothing to acquire; use 'get' for its values",
                            {"module": module, "allowed": ["scope", "iq0", "iq1", "iq2", "sampler"]})

    async def _iq_settled(self, module: str, timeout: float | None) -> None:
        """Wait, on the event loop, until the quadrature filter of ``module`` has settled after the
        module's last change (Backend.iq_settle_remaining); a change meanwhile extends the wait.
        Raises AcquisitionTimeout if that takes longer than ``timeout`` (default IQ_SETTLE_TIMEOUT).
        """
        loop = asyncio.get_running_loop()
        limit = IQ_SETTLE_TIMEOUT if timeout is None else timeout
        deadline = loop.time() + limit
        while (wait := await self._backend(self.backend.iq_settle_remaining, module)) > 0:
            if loop.time() + wait > deadline:
                raise AcquisitionTimeout(
                    f"{module} has not settled within {limit} s: its settings keep changing, or "
                    "its bandwidth is too low for the timeout", {"module": module})
            await asyncio.sleep(wait)

    async def _lease(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = catalogue.module(params.get("module")).name
        self._check_lease(connection, module)
        assert connection.session is not None
        connection.session.leases.add(module)
        self._status_changed()
        return {"module": module, "leased": True}

    async def _release(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = catalogue.module(params.get("module")).name
        assert connection.session is not None
        held = module in connection.session.leases
        connection.session.leases.discard(module)
        if held:
            self._status_changed()
        return {"module": module, "released": held}

    async def _subscribe(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        status = params.get("status", True)
        if not isinstance(status, bool):
            raise InvalidParams("'status' must be true or false")
        connection.subscribed = status
        return self.status()

    async def _goodbye(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        session = connection.session
        assert session is not None
        self._end_session(session)
        connection.session = None
        connection.close_after_reply = True
        logger.info("goodbye from %r (%s)", session.client, session.id[:8])
        if session.hold:
            self._holders_changed(ended_by_client=True)
        return {"bye": True}

    async def _shutdown(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        token = params.get("token", "")
        if self._token is not None and not self._token_matches(token):
            raise InvalidParams("'shutdown' needs the server token in params.token")
        client = connection.session.client if connection.session else "?"
        asyncio.get_running_loop().call_soon(self.stop, f"shutdown requested by {client!r}")
        return {"stopping": True}

    # -- helpers -----------------------------------------------------------------------------------

    def _check_lease(self, connection: Connection, module: str) -> None:
        """Raise ModuleLeased if another session leases ``module``. Its data: ``module``,
        ``holder`` (the client's name), ``holder_connected`` and ``frees_in`` (seconds until a
        vanished holder's session ends with its resume grace, releasing the lease; None while the
        holder is connected)."""
        for session in self.sessions.values():
            if session is not connection.session and module in session.leases:
                frees_in = self._frees_in(session)
                if frees_in is None:
                    message = (f"module '{module}' is leased by client {session.client!r}; it can "
                               "be read but not changed until that client releases it")
                else:
                    frees_at = datetime.now() + timedelta(seconds=frees_in)
                    message = (f"module '{module}' is leased by client {session.client!r}, which "
                               f"vanished (its connection is gone; its session waits for it to "
                               f"come back): the module frees in {frees_in:.1f} s (at "
                               f"{frees_at.strftime('%H:%M:%S')}) unless that client returns")
                raise ModuleLeased(message, {"module": module, "holder": session.client,
                                             "holder_connected": frees_in is None,
                                             "frees_in": frees_in})

    @staticmethod
    def _frees_in(session: Session) -> float | None:
        """Seconds until ``session`` ends with its resume grace; None while it is connected."""
        if session.connection is not None or session.expiry is None:
            return None
        return round(max(0.0, session.expiry.when() - asyncio.get_running_loop().time()), 3)

    async def _backend(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.device_state != "ready":
            raise DeviceNotReady(f"the board is {self.device_state}"
                                 + (f": {self.device_reason}" if self.device_reason else ""))
        try:
            return await self.thread.call(fn, *args)
        except DeviceNotReady as exc:
            self._set_device("error", str(exc))
            raise
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None

    async def _acquire_scope(self, timeout: float | None) -> dict[str, Any]:
        """One (averaged) trace taken entirely with the current settings.

        A settings change during the acquisition restarts it, so a trace never mixes settings.
        ``timeout`` is a deadline counted from the request's arrival (now): it covers waiting for
        another client's acquisition to end, the restarts and the traces. Default: the current
        settings' ``trace_average × duration`` plus SCOPE_TIMEOUT_MARGIN, still from the arrival
        (a change to longer traces moves it). Raises AcquisitionTimeout when it passes without a
        complete (averaged) trace.
        """
        loop = asyncio.get_running_loop()
        arrival = loop.time()

        def deadline(settings: dict[str, Any]) -> float:
            if timeout is not None:
                return arrival + timeout
            return (arrival + settings["trace_average"] * settings["duration"]
                    + SCOPE_TIMEOUT_MARGIN)

        await self._scope_turn(deadline)
        try:
            restarts = 0
            while True:
                generation = self._scope_generation
                settings = await self._scope_settings(generation)
                trace = await self._take_traces(settings["trace_average"], generation,
                                                deadline(settings), restarts)
                if trace is not None:
                    break
                restarts += 1
            self._scope_sequence += 1
        finally:
            self._scope_lock.release()
        return {"ch1": np.asarray(trace.ch1, dtype="<f4"), "ch2": np.asarray(trace.ch2, dtype="<f4"),
                "t0": trace.t0, "dt": trace.dt, "sequence": self._scope_sequence,
                "timestamp": time.time(), "settings": settings, **trace.extra}

    async def _scope_turn(self, deadline: Callable[[dict[str, Any]], float]) -> None:
        """Take the scope (wait while another acquisition holds it) before ``deadline(settings)``
        of the current settings passes. Raises AcquisitionTimeout."""
        loop = asyncio.get_running_loop()
        while True:
            settings = await self._scope_settings(self._scope_generation)
            remaining = deadline(settings) - loop.time()
            if remaining <= 0:
                raise AcquisitionTimeout(
                    "no trace within the timeout: the scope was busy with another client's "
                    "acquisition all that time; give a longer 'timeout'")
            try:
                await asyncio.wait_for(self._scope_lock.acquire(), remaining)
                return
            except asyncio.TimeoutError:
                continue  # the deadline of settings changed meanwhile may be later

    async def _scope_settings(self, generation: int) -> dict[str, Any]:
        """The scope settings, read from the board once per settings generation."""
        if self._scope_settings_cache[0] != generation:
            settings = await self._backend(self.backend.get, "scope",
                                           list(catalogue.MODULES["scope"].attributes))
            self._scope_settings_cache = (generation, settings)
        return dict(self._scope_settings_cache[1])

    async def _take_traces(self, count: int, generation: int, deadline: float,
                           restarts: int) -> ScopeTrace | None:
        """The average of ``count`` traces, or None if the scope settings changed meanwhile.

        The traces are summed as they come: the memory does not depend on ``count``. The wait for
        a trace happens on the event loop, so other requests are served meanwhile; a backend with
        its own thread spends the last few milliseconds polling there instead. Raises
        AcquisitionTimeout once the event loop's clock passes ``deadline`` (``restarts``: how
        many settings changes restarted the acquisition before, for the message).
        """
        loop = asyncio.get_running_loop()
        total: ScopeTrace | None = None
        for _ in range(count):
            if loop.time() >= deadline:
                raise _scope_timeout(restarts)
            try:
                wait, trace = await self._backend(self._arm_and_finish)
                if trace is None:
                    await self._wait_for_trace(min(wait, deadline - loop.time()))
                while trace is None:
                    if self._scope_generation != generation:
                        return None
                    trace = await self._backend(self._finish_trace)
                    if trace is not None:
                        break
                    if loop.time() >= deadline:
                        raise _scope_timeout(restarts)
                    await asyncio.sleep(SCOPE_POLL)
            except BaseException:
                if self.device_state == "ready":
                    await self.thread.call(self.backend.scope_stop)
                raise
            if self._scope_generation != generation:
                return None
            if total is None:
                total = ScopeTrace(np.array(trace.ch1, dtype=np.float64),
                                   np.array(trace.ch2, dtype=np.float64), trace.t0, trace.dt,
                                   trace.extra)
            else:
                total.ch1 += trace.ch1
                total.ch2 += trace.ch2
        assert total is not None  # count >= 1 (catalogue)
        if count > 1:
            total.ch1 /= count
            total.ch2 /= count
        return total

    async def _wait_for_trace(self, wait: float) -> None:
        """Let ``wait`` seconds pass on the event loop, serving other requests meanwhile.

        With a backend thread, until FINISH_WINDOW before the end (the thread polls the rest). An
        inline backend has no thread to poll, and the loop's timers wake up to LOOP_TIMER_SLACK
        late: that last stretch is a busy wait that yields to the loop (other requests) and to
        other processes (a local client) until the moment has come.
        """
        loop = asyncio.get_running_loop()
        if not self.thread.inline:
            await asyncio.sleep(max(0.0, wait - FINISH_WINDOW))
            return
        end = loop.time() + wait
        if wait > LOOP_TIMER_SLACK:
            await asyncio.sleep(wait - LOOP_TIMER_SLACK)
        while loop.time() < end:
            _yield_cpu()  # a busy wait, but other processes (the client's) run first
            await asyncio.sleep(0)

    def _arm_and_finish(self) -> tuple[float, ScopeTrace | None]:
        """On the backend thread: arm; a trace due within FINISH_WINDOW is also waited for there.
        Inline: only arm."""
        wait = self.backend.scope_arm()
        if wait > FINISH_WINDOW or self.thread.inline:
            return wait, None
        time.sleep(wait)
        return wait, self._finish_trace()

    def _finish_trace(self) -> ScopeTrace | None:
        """The trace if it is complete (on the backend thread: if it completes within
        FINISH_WINDOW), else None."""
        end = time.monotonic() + (0.0 if self.thread.inline else FINISH_WINDOW)
        while not self.backend.scope_ready():
            if time.monotonic() >= end:
                return None
            time.sleep(FINISH_POLL)
        return self.backend.scope_fetch()

    # -- status ------------------------------------------------------------------------------------

    def _set_device(self, state: str, reason: str | None = None) -> None:
        if (state, reason) != (self.device_state, self.device_reason):
            self.device_state, self.device_reason = state, reason
            log = logger.error if state == "error" else logger.info
            log("device %s%s", state, f": {reason}" if reason else "")
            self._status_changed()

    def _device_status(self) -> dict[str, Any]:
        return {"state": self.device_state, "reason": self.device_reason,
                "session": self.device_session, "backend": self.backend.name,
                "hostname": self.backend.hostname, "plant": self.backend.plant}

    def _started_iso(self) -> str:
        return datetime.fromtimestamp(self.started_at, timezone.utc).isoformat(timespec="seconds")

    def status(self) -> dict[str, Any]:
        """Server, device and clients, as pushed to subscribers (never contains the token)."""
        return {
            "server": {"version": __version__, "protocol": protocol.PROTOCOL_VERSION,
                       "pid": os.getpid(), "port": self.port, "started_at": self._started_iso(),
                       "uptime": round(time.monotonic() - self._started_monotonic, 3),
                       "auto_stop": self.auto_stop, "stopping": self.stopping.is_set()},
            "device": self._device_status(),
            "clients": [{"id": s.id[:8], "client": s.client, "hold": s.hold,
                         "connected": s.connection is not None, "leases": sorted(s.leases)}
                        for s in self.sessions.values()],
        }

    def _status_changed(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if not self._push_pending:
            self._push_pending = True
            loop.call_soon(self.broadcast_status)

    def broadcast_status(self) -> None:
        """Queue the current status, encoded once, to every subscriber (never waits for one)."""
        self._push_pending = False
        self._last_push = time.monotonic()
        targets = [c for c in self.connections if c.subscribed and not c.closed]
        if targets:
            data = protocol.dumps_line(
                protocol.notification(protocol.NOTIFICATION_STATUS, self.status()))
            for connection in targets:
                connection.push_status(data)


def _scope_timeout(restarts: int) -> AcquisitionTimeout:
    """The timeout error of a scope acquisition that settings changes restarted ``restarts`` times."""
    changed = (f" (the scope settings changed {restarts} time{'s' * (restarts != 1)} meanwhile; "
               "each change restarts the acquisition)") if restarts else ""
    return AcquisitionTimeout(f"no trace within the timeout{changed}: check the trigger source and "
                              "threshold, or give a longer 'timeout'")


# ------------------------------------------------------------------------------------------------
# TCP


def _enable_keepalive(sock: socket.socket | None) -> None:
    """Detect a silently vanished peer (pulled cable, sleeping laptop) within about 30 s."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def _read_line(reader: asyncio.StreamReader, limit: int) -> bytes:
    """The next line, ``\\n`` included, of at most ``limit`` bytes; what the reader holds meanwhile
    stays within its own limit (plus one receive). Raises asyncio.LimitOverrunError (the line is
    longer: the stream cannot be read further), asyncio.IncompleteReadError (end of stream)."""
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            part = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            if size + exc.consumed > limit:
                raise
            parts.append(await reader.readexactly(exc.consumed))
            size += exc.consumed
            continue
        if size + len(part) > limit:
            raise asyncio.LimitOverrunError(f"line longer than {limit} bytes", size + len(part))
        parts.append(part)
        return b"".join(parts) if len(parts) > 1 else part


async def _serve_connection(server: Server, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, hello_timeout: float,
                            accepted_at: float, said_hello: Callable[[], None]) -> None:
    """Serve one connection until it closes. It must say hello within ``hello_timeout`` of
    ``accepted_at`` (loop time); until then its lines are read one at a time, each of at most
    MAX_LINE_BEFORE_HELLO bytes, and ``said_hello`` is called once when it has."""
    ip, port = writer.get_extra_info("peername")[:2]
    peer = f"{ip}:{port}"
    _enable_keepalive(writer.get_extra_info("socket"))

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    connection = Connection(send, peer, close=writer.close, ip=ip, abort=writer.transport.abort)
    server.connection_made(connection)
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    hello_deadline = accepted_at + hello_timeout

    async def answer(line: bytes) -> None:
        try:
            reply = await server.process_line(connection, line)
            if reply is not None:
                connection.send(reply)
            if connection.close_after_reply:
                connection.close()
        finally:
            slots.release()

    end_of_stream = False
    try:
        while not connection.closed:
            timeout = None if connection.session else hello_deadline - loop.time()
            if timeout is not None and timeout <= 0:
                logger.info("closing %s: no hello within %g s", peer, hello_timeout)
                break
            limit = (protocol.MAX_LINE_BEFORE_HELLO if connection.session is None
                     else protocol.MAX_REQUEST_BYTES)
            try:
                line = await asyncio.wait_for(_read_line(reader, limit), timeout)
            except asyncio.TimeoutError:
                continue
            except asyncio.LimitOverrunError:
                connection.send(protocol.error(None, RequestTooLarge(
                    f"request line exceeds {limit} bytes"
                    f"{' before hello' if connection.session is None else ''}; connection closed"
                ).to_wire()))
                break
            except asyncio.IncompleteReadError:
                end_of_stream = True
                break
            if not line.strip():
                continue
            await slots.acquire()
            task = asyncio.ensure_future(answer(line))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            # before hello, one line at a time: the next line's limit and deadline depend on it
            if connection.session is None:
                await asyncio.wait([task])
                if connection.session is not None:
                    said_hello()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            while end_of_stream and tasks and not connection.closed:
                # the client closed its sending side (a half-close): answer what it sent first
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            server.connection_lost(connection)  # closes once the queued replies are written


async def serve(server: Server, bind: str, port: int, hello_timeout: float = 10.0,
                ready: Callable[[int], None] | None = None,
                tls_context: ssl.SSLContext | None = None) -> None:
    """Open the backend, listen on ``bind:port`` (TLS with ``tls_context``) and serve until
    ``server.stop()``.

    A connection must end its TLS handshake and say hello within ``hello_timeout`` of its
    acceptance. Connections that have not said hello yet are capped (:class:`Admission`): one more
    is refused at once, with a RetryLater line on plain TCP, closed before the handshake with TLS.
    Raises BackendUnavailable (before listening) if the board cannot be reached, OSError if the
    port cannot be opened.
    """
    await server.open_backend()
    try:
        listeners = _listen(bind, port)
    except OSError:
        await server.close_backend()
        raise
    loop = asyncio.get_running_loop()
    admission = Admission(pending_limit(open_files_limit()), MAX_PENDING_PER_ADDRESS,
                          hello_timeout)
    refused = _Throttled("refusing connections: %d have not said hello yet (at most %d, %d per "
                         "address); the latest refused came from %s")
    accept_failed = _Throttled("cannot accept connections: %s; retrying every %g s")
    connection_tasks: set[asyncio.Task[None]] = set()

    async def handle(sock: socket.socket, ip: str, ticket: object, accepted_at: float) -> None:
        try:
            reader = asyncio.StreamReader(limit=protocol.MAX_LINE_BEFORE_HELLO)
            stream = asyncio.StreamReaderProtocol(reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: stream, sock, ssl=tls_context,
                    ssl_handshake_timeout=(max(0.001, accepted_at + hello_timeout - loop.time())
                                           if tls_context else None))
            except OSError as exc:  # the TLS handshake failed or did not end in time
                sock.close()
                logger.info("closing %s: no TLS handshake within the hello timeout (%g s): %s",
                            ip, hello_timeout, exc)
                return
            writer = asyncio.StreamWriter(transport, stream, reader, loop)
            await _serve_connection(server, reader, writer, hello_timeout, accepted_at,
                                    lambda: admission.leave(ticket))
        except asyncio.CancelledError:
            pass  # the server is stopping; a cancelled handler would be logged as an error
        finally:
            admission.leave(ticket)

    async def accept(listener: socket.socket) -> None:
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # out of file descriptors or memory: wait, do not spin
                accept_failed(exc, ACCEPT_RETRY)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            ip = address[0]
            wait = admission.wait_for(ip)
            if wait is not None:
                refused(len(admission), admission.total, admission.per_address, ip)
                _refuse(sock, wait, plain=tls_context is None)
                continue
            task = asyncio.ensure_future(handle(sock, ip, admission.enter(ip), loop.time()))
            connection_tasks.add(task)
            task.add_done_callback(connection_tasks.discard)

    accepting = [asyncio.ensure_future(accept(listener)) for listener in listeners]
    server.port = listeners[0].getsockname()[1]
    if ready is not None:
        ready(server.port)
    watcher = asyncio.ensure_future(server.watch())
    try:
        await server.stopping.wait()
    finally:
        for task in accepting:
            task.cancel()
        await asyncio.gather(*accepting, return_exceptions=True)
        for listener in listeners:
            listener.close()
        for task in list(connection_tasks):
            task.cancel()
        await asyncio.gather(*connection_tasks, return_exceptions=True)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await server.close_backend()


def _listen(bind: str, port: int) -> list[socket.socket]:
    """Non-blocking listening sockets on every address of ``bind``, all on one port (``port``, or
    the free one the first got for 0). Raises OSError."""
    listeners: list[socket.socket] = []
    try:
        for family, _, _, _, address in dict.fromkeys(socket.getaddrinfo(
                bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)):
            if listeners:
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            listener = socket.create_server(address, family=family, backlog=LISTEN_BACKLOG)
            listener.setblocking(False)
            listeners.append(listener)
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _refuse(sock: socket.socket, wait: float, plain: bool) -> None:
    """Close a connection that is not admitted; on plain TCP, after one RetryLater line (id null)
    saying when to come back. What the peer has sent already (its hello) is read and dropped
    first: closing with unread input would reset the connection and could lose that line."""
    with sock, contextlib.suppress(OSError):
        if plain:
            sock.send(protocol.dumps_line(protocol.error(None, RetryLater(
                "too many connections have not said hello yet; retry later",
                {"retry_after": round(max(0.1, wait), 1)}).to_wire())))
        sock.recv(protocol.MAX_LINE_BEFORE_HELLO)
        sock.shutdown(socket.SHUT_WR)


def open_files_limit() -> int:
    """The soft limit of open file descriptors of this process (sys.maxsize where there is none)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return sys.maxsize
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> None:
    """Raise the soft limit of open file descriptors to the hard limit, where the system allows
    (logged); keep it otherwise."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else OPEN_FILES_WANTED
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.info("open files limit kept at %d (%s)", soft, exc)
            return
        logger.info("open files limit raised from %d to %d", soft, target)


def pending_limit(open_files: int) -> int:
    """How many connections may wait for their hello at once: MAX_PENDING, or fewer so that they
    take at most half of the file descriptors left after FD_RESERVE (logged)."""
    limit = max(1, min(MAX_PENDING, (open_files - FD_RESERVE) // 2))
    if limit < MAX_PENDING:
        logger.warning("the open files limit (%d) allows only %d connections waiting for their "
                       "hello at once (instead of %d)", open_files, limit, MAX_PENDING)
    return limit


# ------------------------------------------------------------------------------------------------
# entry point


def read_or_create_token(path: Path) -> str:
    """The token stored in ``path``; if the file is missing or empty, a new random one written there
    owner-only.

    Raises ServerError if the file is not private: another user's, readable or writable by others,
    or a symbolic link (anyone who can read the token can drive the board).
    """
    try:
        runtime.check_private(path)
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def make_backend(args: argparse.Namespace) -> Backend:
    if args.mock:
        from .backends.simulator import SimulatorBackend

        return SimulatorBackend(seed=args.seed, plant=args.plant)
    from .backends.pyrpl import PyrplBackend

    return PyrplBackend(hostname=args.hostname, config=args.config)


def _port(text: str) -> int:
    """argparse type: a TCP port number, 0 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0 to 65535)")
    return value


def _seed(text: str) -> int:
    """argparse type: a random seed, an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _seconds(positive: bool) -> Callable[[str], float]:
    """argparse type: a finite number of seconds, > 0 (``positive``) or >= 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(
                f"{text} is not a {'positive' if positive else 'non-negative'} finite number of "
                "seconds")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pymodaq_plugins_pyrpl.hardware.server",
        description="PyRPL server: serves one Red Pitaya (or the simulated board) to many clients.")
    board = parser.add_mutually_exclusive_group(required=True)
    board.add_argument("--mock", action="store_true", help="serve the simulated Red Pitaya")
    board.add_argument("--hostname", help="Red Pitaya hostname or IP ('_FAKE_': PyRPL's fake board)")
    parser.add_argument("--port", type=_port, default=protocol.DEFAULT_PORT,
                        help="TCP port (0: pick a free one); default %(default)s")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on; default %(default)s")
    parser.add_argument("--token-file", type=Path,
                        help="file holding the token clients must present (created owner-only with a "
                             "random token if missing); without it, a new random token is written "
                             "to the runtime folder (token-PORT), where local plugins find it")
    parser.add_argument("--config", default="", help="PyRPL config name (default: in-memory config)")
    parser.add_argument("--auto-stop", type=_seconds(positive=False), metavar="SECONDS",
                        help="stop when no holding client is left: at once when the last one says "
                             "goodbye or its session expires, or after SECONDS without any")
    parser.add_argument("--session-grace", type=_seconds(positive=False), default=10.0,
                        metavar="SECONDS",
                        help="how long a dropped client's session (and its leases) waits for it to "
                             "resume; default %(default)s")
    parser.add_argument("--hello-timeout", type=_seconds(positive=True), default=10.0,
                        metavar="SECONDS",
                        help="close connections that have not said hello by then, counted from "
                             "their acceptance (the TLS handshake included); default %(default)s")
    parser.add_argument("--auth-cooldown", type=_seconds(positive=False), default=60.0,
                        metavar="SECONDS",
                        help=f"after {AUTH_MAX_FAILURES} wrong tokens within {AUTH_WINDOW:g} s from "
                             "one IP address, refuse its wrong tokens with a retryable error for "
                             "SECONDS (the right token is always accepted); default %(default)s")
    parser.add_argument("--seed", type=_seed,
                        help="simulator: random seed, >= 0 (deterministic noise)")
    parser.add_argument("--plant", default="loopback",
                        help="simulator: what connects the outputs to the inputs, 'loopback' (cable "
                             "out1->in1, out2->in2) or 'resonator[:f0=HZ,q=Q,gain=G]'; "
                             "default %(default)s")
    parser.add_argument("--tls-cert", type=Path, metavar="PATH",
                        help="serve TLS with this certificate (PEM; with --tls-key). The log shows "
                             "its SHA-256 fingerprint, for clients to pin")
    parser.add_argument("--tls-key", type=Path, metavar="PATH",
                        help="private key of --tls-cert (PEM, owner-only)")
    parser.add_argument("--log-file", type=Path,
                        help="log to this file instead of stderr, and send stderr there too; "
                             f"rotated at {LOG_MAX_BYTES >> 20} MiB, {LOG_BACKUPS} older files kept")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    return parser


class _LogFile(logging.handlers.RotatingFileHandler):
    """``--log-file``: owner-only, rotated at LOG_MAX_BYTES with LOG_BACKUPS older files kept, and
    the process's stderr (file descriptor 2) always writes to the current file, so what bypasses
    logging (a crash's traceback, a library's print) lands there and counts toward its size."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)  # stderr
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def _configure_logging(args: argparse.Namespace) -> None:
    handler: logging.Handler = (_LogFile(args.log_file) if args.log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(max(logging.DEBUG, logging.INFO + 10 * (args.quiet - args.verbose)))


def _is_loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--tls-cert``/``--tls-key`` (None without them); logs the certificate's
    fingerprint. Raises ValueError (only one of them given, no certificate in the file),
    ServerError (a key file others can read), OSError or ssl.SSLError (unreadable files)."""
    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("give both --tls-cert and --tls-key, or neither")
    runtime.check_private(args.tls_key)
    context = tls.server_context(args.tls_cert, args.tls_key)
    logger.info("TLS on; certificate SHA-256 fingerprint %s", tls.file_fingerprint(args.tls_cert))
    return context


async def _main(args: argparse.Namespace) -> int:
    if args.token_file is None and not _is_loopback(args.bind):
        logger.error("refusing to listen on %s without --token-file: clients on other computers "
                     "need the token. Add --token-file PATH (created with a random token if "
                     "missing) and give that token to the clients.", args.bind)
        return 2
    try:
        token = read_or_create_token(args.token_file) if args.token_file else secrets.token_hex(32)
    except ServerError as exc:
        logger.error("token file refused: %s", exc)
        return 2
    try:
        tls_context = _tls_context(args)
    except (ValueError, OSError, ssl.SSLError, ServerError) as exc:
        logger.error("TLS refused: %s", exc)
        return 2
    try:
        backend = make_backend(args)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    server = Server(backend, token, auto_stop=args.auto_stop, session_grace=args.session_grace,
                    auth_cooldown=args.auth_cooldown)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop, f"signal {signal.Signals(sig).name}")

    registered: list[int] = []

    def ready(port: int) -> None:
        try:
            register(server, args, token, port)
        except ServerError as exc:
            logger.error("cannot register in the runtime folder: %s", exc)
            server.stop("not registered")
            return
        registered.append(port)
        print(f"{protocol.READY_PREFIX} {json.dumps({'port': port, 'pid': os.getpid()})}",
              flush=True)
        logger.info("serving %s board%s on %s:%d (pid %d, protocol %d, version %s)", backend.name,
                    f" {backend.hostname}" if backend.hostname else "", args.bind, port,
                    os.getpid(), protocol.PROTOCOL_VERSION, __version__)

    raise_open_files_limit()
    try:
        await serve(server, args.bind, args.port, args.hello_timeout, ready, tls_context)
    except BackendUnavailable as exc:
        logger.error("cannot serve the board: %s", exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", args.bind, args.port, exc)
        return 3
    finally:
        for port in registered:
            runtime.remove_own_state(port)
    if not registered:
        return 2
    logger.info("stopped")
    return 0


def register(server: Server, args: argparse.Namespace, token: str, port: int) -> None:
    """Write the state file of this server, listening on ``port``, in the runtime folder (and,
    without ``--token-file``, its token file there): so plugins, ``pymodaq-pyrpl status`` and
    ``stop`` find it, whoever started it. Raises ServerError (naming the folder and the fix) if
    the folder cannot be used."""
    if args.token_file is None:
        runtime.write_private(runtime.token_path(port), token + "\n")
    runtime.write_state(runtime.ServerState(
        pid=os.getpid(), port=port, token=token, backend=server.backend.name,
        hostname=server.backend.hostname, config=args.config, plant=server.backend.plant,
        version=__version__, started_at=server._started_iso(),
        process_start=runtime.process_start(os.getpid())))


def main(argv: list[str] | None = None) -> int:
    """Run the server. It registers in the runtime folder once it listens (:func:`register`);
    however it ends (stop, auto-stop, signal, error), its state file is removed if it still names
    this process."""
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
