"""The server's core: one request line in, one reply out, and the status pushed to subscribers."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from ... import __version__
from .. import catalogue, protocol
from ..backends.base import Backend
from ..errors import (
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotAuthenticated,
    RemoteError,
    ServerShuttingDown,
    UnsupportedProtocol,
    echoed,
)
from .acquisition import ScopeAcquisition, iq_settled
from .auth import Authenticator
from .board import Board
from .connection import Connection
from .network_analyzer import NetworkAnalyzer
from .sessions import Sessions
from .spectrum_analyzer import SpectrumAnalyzer

logger = logging.getLogger(__name__)

STATUS_PERIOD = 2.0
"""Subscribers get a status push on every change and at least this often (seconds)."""
WHILE_STOPPING = (protocol.Method.PING, protocol.Method.STATUS, protocol.Method.GOODBYE)
"""The methods a stopping server still serves."""

Handler = Callable[[Connection, dict[str, Any]], Awaitable[Any]]


class Server:
    """The dispatch of requests to their methods, and the status; sessions (:class:`.Sessions`),
    the token (:class:`.Authenticator`), the board (:class:`.Board`), the scope
    (:class:`.ScopeAcquisition`), the network analyzer (:class:`.NetworkAnalyzer`) and the spectrum
    analyzer (:class:`.SpectrumAnalyzer`) are its parts."""

    def __init__(self, backend: Backend, token: str | None, *, port: int = 0,
                 auto_stop: float | None = None, session_grace: float = 10.0,
                 auth_cooldown: float = 60.0) -> None:
        self.port = port
        self.stopping = asyncio.Event()
        self.started_at = time.time()
        self._started_monotonic = time.monotonic()
        self.connections: set[Connection] = set()
        self.board = Board(backend, self._device_changed)
        self.backend = backend
        self.sessions = Sessions(session_grace, auto_stop, self._status_changed, self.stop)
        self.auth = Authenticator(token, auth_cooldown, self.started_iso())
        self.scope = ScopeAcquisition(self.board)
        self.na = NetworkAnalyzer(self.board, self.sessions)
        self.spectrum_analyzer = SpectrumAnalyzer(self.sessions, self.scope, self.apply,
                                                  self.read)
        self._last_push = 0.0
        self._push_pending = False
        self._handlers: dict[str, Handler] = {
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
            protocol.Method.TAKE_BOARD: self._take_board,
            protocol.Method.STOP: self._stop,
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open_backend(self) -> None:
        """Connect the backend to its board. Raises BackendUnavailable."""
        await self.board.open()

    async def close_backend(self) -> None:
        """End a network-analyzer sweep under way (its output off), then disconnect from the
        board without touching its outputs."""
        await self.na.close()
        await self.board.close()

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
            if not self.stopping.is_set():
                self.sessions.check_auto_stop()
            if time.monotonic() - self._last_push >= STATUS_PERIOD:
                self.broadcast_status()

    def connection_made(self, connection: Connection) -> None:
        self.connections.add(connection)

    def connection_lost(self, connection: Connection) -> None:
        """The connection ended: close it once its queued output is written, detach its session,
        which ends (leases released) after the resume grace period."""
        self.connections.discard(connection)
        connection.close()
        self.sessions.detach(connection)

    # -- dispatch ----------------------------------------------------------------------------------

    async def process_line(self, connection: Connection, line: bytes) -> dict[str, Any] | None:
        """One request line in, one reply message out (None for a valid notification: a request
        object without id; an invalid one is answered with ``"id": null``)."""
        try:
            request = protocol.parse_request(line)
        except protocol.BadRequest as exc:
            return protocol.error(exc.id, exc.error.to_wire())
        try:
            handler = self._gate(connection, request.method)
            reply = protocol.result(request.id, await handler(connection, request.params))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a backend failure: answered, the server keeps serving
            reply = protocol.error(request.id, _wire_error(exc))
        return None if request.notification else reply

    def _gate(self, connection: Connection, method: str) -> Handler:
        """The handler of ``method``, if this connection may call it now. Raises MethodNotFound,
        NotAuthenticated (no hello yet), ServerShuttingDown."""
        handler = self._handlers.get(method)
        if handler is None:
            raise MethodNotFound(f"unknown method {echoed(method)!r}; methods are "
                                 f"{[m.value for m in protocol.Method]}")
        if method != protocol.Method.HELLO and connection.session is None:
            raise NotAuthenticated("say 'hello' with the server token first")
        if self.stopping.is_set() and method not in WHILE_STOPPING:
            raise ServerShuttingDown("the server is shutting down; reconnect later")
        return handler

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
        self.auth.check_hello(connection, params.get("token", ""))
        client = params.get("client", "")
        hold = params.get("hold", False)
        resume = params.get("session")
        if not isinstance(client, str) or len(client) > 200:
            raise InvalidParams("'client' must be a string of at most 200 characters")
        if not isinstance(hold, bool):
            raise InvalidParams("'hold' must be true or false")
        if resume is not None and not isinstance(resume, str):
            raise InvalidParams("'session' must be a session id string")
        session, resumed = self.sessions.open(connection, client, hold, resume)
        return {"server_version": __version__, "protocol": protocol.PROTOCOL_VERSION,
                "session": session.id, "resumed": resumed, "leases": sorted(session.leases),
                "backend": self.backend.name, "hostname": self.backend.hostname,
                "ssh_port": self.backend.ssh_port, "board_port": self.backend.board_port,
                "plant": self.backend.plant, "device": self.board.status()}

    async def _ping(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        return {"time": time.time()}

    async def _status(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    async def _describe(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        return catalogue.describe()

    async def _get(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = params.get("module")
        names = catalogue.attribute_names(module, params.get("names"))
        if module == "na":
            return self.na.get(names)
        if module == "sa":
            return self.spectrum_analyzer.get(names)
        return await self.read(module, names)

    async def _set(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = params.get("module")
        values = catalogue.validate(module, params.get("values"))
        self.sessions.check_lease(connection.session, module)
        if module == "na":
            return self.na.set(values)
        if module == "sa":
            return self.spectrum_analyzer.set(values)
        self.na.check_set(module)
        return await self.apply(module, values)

    async def read(self, module: str, names: list[str]) -> dict[str, Any]:
        """The values of ``names`` of the hardware module ``module``, read from the board."""
        return await self.board.run(self.backend.get, module, names)

    async def apply(self, module: str, values: dict[str, Any]) -> dict[str, Any]:
        """Apply validated ``values`` of the hardware module ``module`` (a scope change restarts
        the acquisition under way); the values read back."""
        if module == "scope":
            self.scope.settings_changed()
        return await self.board.run(self.backend.set, module, values)

    async def _acquire(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = params.get("module")
        spec = catalogue.module(module)
        timeout = params.get("timeout", None)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout <= 3600):
            raise InvalidParams("'timeout' must be a number of seconds in (0, 3600]")
        if spec.kind == "scope":
            return await self.scope.acquire(timeout)
        if spec.kind == "na":
            progress = params.get("progress", False)
            if not isinstance(progress, bool):
                raise InvalidParams("'progress' must be true or false")
            return await self.na.acquire(connection, timeout, progress)
        if spec.kind == "iq":
            await iq_settled(self.board, module, timeout)
            return await self.board.run(self.backend.iq_read, module)
        if spec.kind == "sampler":
            return await self.board.run(self.backend.sampler_read)
        if spec.kind == "sa":
            assert connection.session is not None
            return await self.spectrum_analyzer.acquire(connection.session, timeout)
        raise InvalidParams(f"module '{module}' has nothing to acquire; use 'get' for its values",
                            {"module": module,
                             "allowed": ["scope", "iq0", "iq1", "iq2", "sampler", "na", "sa"]})

    async def _stop(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = catalogue.module(params.get("module")).name
        assert connection.session is not None
        if module == "na":
            return {"module": module, "stopped": await self.na.stop(connection.session)}
        raise InvalidParams(f"module '{module}' has no acquisition to stop; 'stop' is for 'na'",
                            {"module": module, "allowed": ["na"]})

    async def _lease(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = catalogue.module(params.get("module")).name
        owner = params.get("owner")
        if owner is not None and (not isinstance(owner, str) or len(owner) > 200):
            raise InvalidParams("'owner' must be a string of at most 200 characters")
        assert connection.session is not None
        self.sessions.lease(connection.session, module, owner)
        return {"module": module, "leased": True}

    async def _release(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        module = catalogue.module(params.get("module")).name
        assert connection.session is not None
        return {"module": module, "released": self.sessions.release(connection.session, module)}

    async def _subscribe(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        status = params.get("status", True)
        if not isinstance(status, bool):
            raise InvalidParams("'status' must be true or false")
        connection.subscribed = status
        return self.status()

    async def _goodbye(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        connection.close_after_reply = True
        self.sessions.goodbye(connection)
        return {"bye": True}

    async def _shutdown(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        if not self.auth.matches(params.get("token", "")):
            raise InvalidParams("'shutdown' needs the server token in params.token")
        client = connection.session.client if connection.session else "?"
        asyncio.get_running_loop().call_soon(self.stop, f"shutdown requested by {client!r}")
        return {"stopping": True}

    async def _take_board(self, connection: Connection, params: dict[str, Any]) -> dict[str, Any]:
        return {"device": await self.board.take()}

    # -- status ------------------------------------------------------------------------------------

    def started_iso(self) -> str:
        """When the server started, ISO 8601 in UTC to the second."""
        return datetime.fromtimestamp(self.started_at, timezone.utc).isoformat(timespec="seconds")

    def status(self) -> dict[str, Any]:
        """Server, device and clients, as pushed to subscribers (never contains the token)."""
        return {
            "server": {"version": __version__, "protocol": protocol.PROTOCOL_VERSION,
                       "pid": os.getpid(), "port": self.port, "started_at": self.started_iso(),
                       "uptime": round(time.monotonic() - self._started_monotonic, 3),
                       "auto_stop": self.sessions.auto_stop, "stopping": self.stopping.is_set()},
            "device": self.board.status(),
            "clients": self.sessions.clients(),
        }

    def _device_changed(self) -> None:
        """The device state or link changed: a scope trace under way is not finished with the
        settings cached before an outage (the board may have restarted); an output a sweep had
        to leave on is turned off once the board is ready; subscribers are told."""
        if self.board.state()[0] != "ready":
            self.scope.settings_changed()
        else:
            self.na.board_ready()
        self._status_changed()

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


def _wire_error(exc: Exception) -> dict[str, Any]:
    """The error object answering a request that raised ``exc``: its own for a RemoteError, else
    -32603 (a bug or a backend failure: logged with its traceback; the server keeps serving)."""
    if isinstance(exc, RemoteError):
        return exc.to_wire()
    logger.error("request failed", exc_info=exc)
    return InternalError(f"{type(exc).__name__}: {exc}").to_wire()
