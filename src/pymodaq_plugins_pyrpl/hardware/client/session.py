"""The client's session: ``hello`` on a new connection, the session id and latest ``hello`` result,
and the leases and subscription it restores on a new session (docs/protocol.md, *Sessions and
leases*)."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .. import protocol
from ..errors import ModuleLeased, error_from_wire
from .calls import Call
from .transport import SLICE, Broken, Link, WriteTimeout

logger = logging.getLogger(__name__)

HandshakeCall = Callable[[str, dict[str, Any]], Any]
"""``call(method, params)`` on a link nobody else uses yet; returns the decoded result."""


def exchange(link: Link, call: Call, stop: threading.Event,
             on_push: Callable[[dict[str, Any]], None]) -> Any:
    """``call`` on a link nobody else uses yet: write, then read until its reply (other messages
    go to ``on_push``), all before ``call.deadline``; the decoded result. Raises the reply's
    RemoteError, TimeoutError, Broken, Stopped (``stop`` set)."""
    try:
        link.write(call.line, call.deadline)
    except WriteTimeout:
        raise TimeoutError("request not written in time") from None
    except OSError as exc:
        raise Broken(f"connection error: {exc}") from None
    while True:
        message = link.read_message(call.deadline, stop)
        if message.get("id") == call.id or message.get("id", 0) is None and "error" in message:
            break  # its reply, or the server's refusal of the connection (RetryLater, ...)
        on_push(message)
    link.sock.settimeout(SLICE)
    if "error" in message:
        raise error_from_wire(message["error"] if isinstance(message["error"], dict) else {})
    try:
        return protocol.decode_value(message.get("result"))
    except ValueError as exc:
        raise Broken(f"malformed reply to '{call.method}': {exc}") from None


class Session:
    """What this client holds on the server, kept across reconnections. Thread-safe."""

    def __init__(self, token: str, name: str, hold: bool) -> None:
        self._token = token
        self._name = name
        self._hold = hold
        self._lock = threading.Lock()
        self.id: str | None = None
        """The server session id of the latest ``hello`` (None before the first)."""
        self.hello: dict[str, Any] | None = None
        """The latest ``hello`` result after restoring (None before the first)."""
        self._leases: dict[str, str | None] = {}  # module -> the owner its lease named
        self._subscribed = False

    def hello_params(self) -> dict[str, Any]:
        """The parameters of ``hello``, resuming the current session if there is one."""
        params: dict[str, Any] = {"token": self._token, "client": self._name,
                                  "protocol": protocol.PROTOCOL_VERSION, "hold": self._hold}
        if self.id is not None:
            params["session"] = self.id
        return params

    def open(self, call: HandshakeCall, address: str) -> dict[str, Any]:
        """``hello`` (resuming this session) then :meth:`restore`, through ``call`` on a new link;
        the result for :meth:`adopt`. Raises Broken (not a hello result) and what ``call``
        raises."""
        hello = call(protocol.Method.HELLO.value, self.hello_params())
        if not isinstance(hello, dict) or not isinstance(hello.get("session"), str):
            raise Broken(f"unexpected reply to 'hello': {hello!r:.200}")
        return self.restore(call, hello, address)

    def adopt(self, info: dict[str, Any]) -> None:
        """``info`` (a restored hello result) is the session now."""
        self.hello = info
        self.id = info.get("session")

    def track(self, method: str, params: dict[str, Any] | None, value: Any) -> None:
        """Remember leases and subscription from the result ``value`` of a successful call."""
        module = value.get("module") if isinstance(value, dict) else None
        with self._lock:
            if method == protocol.Method.LEASE and isinstance(module, str):
                self._leases[module] = (params or {}).get("owner")
            elif method == protocol.Method.RELEASE and isinstance(module, str):
                self._leases.pop(module, None)
            elif method == protocol.Method.SUBSCRIBE:
                self._subscribed = bool((params or {}).get("status", True))

    def restore(self, call: HandshakeCall, hello: dict[str, Any], address: str) -> dict[str, Any]:
        """Re-acquire the leases this client holds but the session lacks (all of them on a new
        session; each under the owner it named) and re-subscribe (a subscription belongs to a connection), through ``call``.
        The hello result with ``leases`` (held now) and ``lost_leases`` (taken by another client
        meanwhile). Raises what ``call`` raises, ModuleLeased aside."""
        with self._lock:
            wanted = dict(self._leases)
            subscribed = self._subscribed
        held = set(hello.get("leases", []))
        lost: list[str] = []
        for module in sorted(set(wanted) - held):
            owner = wanted[module]
            try:
                call(protocol.Method.LEASE.value,
                     {"module": module, **({"owner": owner} if owner else {})})
            except ModuleLeased as exc:
                logger.warning("lease of %s not restored on %s: %s", module, address, exc)
                lost.append(module)
        if subscribed:
            call(protocol.Method.SUBSCRIBE.value, {"status": True})
        with self._lock:
            for module in lost:
                self._leases.pop(module, None)
        return {**hello, "leases": sorted(held | (set(wanted) - set(lost))), "lost_leases": lost}
