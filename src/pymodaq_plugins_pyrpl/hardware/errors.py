"""Exceptions of the wire protocol: one class per JSON-RPC error code.

The server raises these to produce an error reply; the client raises the same classes when it receives
one, via :func:`error_from_wire`. Messages say what to do next.
"""
from __future__ import annotations

import math
from typing import Any

ECHO_LIMIT = 64
"""Longest piece of a request (a name, a value's repr) an error message or its data quotes."""


def echoed(text: str) -> str:
    """``text`` from a request as an error quotes it: at most ECHO_LIMIT characters (cut with
    "..."), so that an error reply stays small whatever the request sent."""
    return text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT - 3] + "..."


class PyrplPluginError(Exception):
    """Base class of every error this package raises on purpose."""


class RemoteError(PyrplPluginError):
    """An error with a JSON-RPC code, as carried by an error reply."""

    code: int = -32603

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_wire(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(RemoteError):
    """The request line is not valid UTF-8 JSON."""

    code = -32700


class InvalidRequest(RemoteError):
    """The JSON is not a JSON-RPC 2.0 request object."""

    code = -32600


class MethodNotFound(RemoteError):
    """The method is not part of the protocol."""

    code = -32601


class InvalidParams(RemoteError):
    """Unknown module or attribute, wrong type or value out of range."""

    code = -32602


class InternalError(RemoteError):
    """The server failed while executing a valid request."""

    code = -32603


class NotAuthenticated(RemoteError):
    """A call other than ``hello`` arrived before a successful ``hello``."""

    code = -32001


class AuthenticationFailed(RemoteError):
    """Wrong token: the server was restarted or taken over. Final (docs/protocol.md, *Retry policy
    for clients*)."""

    code = -32002


class ModuleLeased(RemoteError):
    """The module is leased by another client; ``set`` and ``lease`` are refused."""

    code = -32003


class DeviceNotReady(RemoteError):
    """The board is not connected (connecting, lost or in error)."""

    code = -32004


class AcquisitionTimeout(RemoteError):
    """No trace within the acquisition timeout (no trigger, or a timeout shorter than the trace)."""

    code = -32005


class RequestTooLarge(RemoteError):
    """A request line longer than the server's limit (1 MiB; 4 KiB before ``hello``)."""

    code = -32006


class UnsupportedProtocol(RemoteError):
    """The client speaks a protocol version this server does not."""

    code = -32007


class ServerShuttingDown(RemoteError):
    """The server is stopping and takes no new work."""

    code = -32008


class RetryLater(RemoteError):
    """The server does not admit this connection or session now (too many connections that have
    not said hello, too many sessions, or wrong tokens from this address during a cool-down); not
    final: :attr:`retry_after` says when (docs/protocol.md, *Retry policy for clients*)."""

    code = -32009

    @property
    def retry_after(self) -> float:
        """Seconds to wait before the next attempt: the server's ``data.retry_after`` (1.0 if it
        gave no finite, non-negative number)."""
        value = self.data.get("retry_after") if isinstance(self.data, dict) else None
        if (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and value >= 0):
            return float(value)
        return 1.0


_BY_CODE: dict[int, type[RemoteError]] = {
    cls.code: cls
    for cls in (
        ParseError, InvalidRequest, MethodNotFound, InvalidParams, InternalError,
        NotAuthenticated, AuthenticationFailed, ModuleLeased, DeviceNotReady,
        AcquisitionTimeout, RequestTooLarge, UnsupportedProtocol, ServerShuttingDown,
        RetryLater,
    )
}


def error_class(code: int) -> type[RemoteError]:
    """The exception class for a wire code (:class:`RemoteError` for codes this version does not know)."""
    return _BY_CODE.get(code, RemoteError)


def error_from_wire(error: dict[str, Any]) -> RemoteError:
    """Build the exception for an error object of a reply."""
    code = int(error.get("code", -32603))
    cls = error_class(code)
    exc = cls(str(error.get("message", "")), error.get("data"))
    if cls is RemoteError:
        exc.code = code
    return exc


class BackendUnavailable(PyrplPluginError):
    """The backend cannot reach its board (PyRPL missing, board unreachable); the server exits non-zero."""


class CommunicationError(PyrplPluginError):
    """The link to the server failed (client side)."""


class ConnectionFailed(CommunicationError):
    """No connection, or no ``hello`` reply, within the connect timeout."""


class CertificateMismatch(ConnectionFailed):
    """The TLS server's certificate is not the pinned one, or fails verification against the CA
    file. Final (docs/protocol.md, *Retry policy for clients*)."""


class ConnectionLost(CommunicationError):
    """The connection dropped while a call that is not re-sent was in flight: its outcome is unknown
    (docs/protocol.md, *Retry policy for clients*)."""


class CallTimeout(CommunicationError, TimeoutError):
    """No reply within the call's timeout (the server is busy, unreachable, or reconnecting)."""


class ClientClosed(CommunicationError):
    """The client was closed; create or connect a new one."""


class ServerError(PyrplPluginError):
    """A server cannot be started or shared (server manager)."""


class ServerNotReady(ServerError):
    """A server process started here did not print its ready line: ``returncode`` is its exit
    status, or None if it had not exited (it was then killed)."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


class ServerMismatch(ServerError):
    """The server running on the port serves another board, backend or PyRPL config."""


class PortInUse(ServerError):
    """The port is held by a program that does not speak this protocol, or by a server whose token
    this process does not have."""


class ServerGone(ServerError):
    """The local server was stopped on purpose (``pymodaq-pyrpl stop``) and is not restarted."""
