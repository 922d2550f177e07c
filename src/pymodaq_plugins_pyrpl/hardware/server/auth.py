"""Who may talk to the server: the token, the rate limit of failed hellos per IP address, and the
caps on connections that have not said hello yet."""
from __future__ import annotations

import hmac
import logging
import secrets
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .. import runtime
from ..errors import AuthenticationFailed, RetryLater

if TYPE_CHECKING:
    from .connection import Connection

logger = logging.getLogger(__name__)

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
FD_RESERVE = 64
"""File descriptors kept for everything but client connections (backend, log, listeners)."""


class Authenticator:
    """Checks the token of a ``hello`` (and of a ``shutdown``) against the server's; None: any
    token is accepted."""

    def __init__(self, token: str | None, cooldown: float, started_at: str) -> None:
        self._token = token
        self.limiter = AuthLimiter(cooldown)
        self._started_at = started_at
        """When the server started (ISO 8601), for the message of a wrong token."""

    def matches(self, token: Any) -> bool:
        """Constant-time comparison with the server token (any string, even with lone
        surrogates); always True without a server token."""
        if self._token is None:
            return True
        return isinstance(token, str) and hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), self._token.encode("utf-8", "surrogatepass"))

    def check_hello(self, connection: Connection, token: Any) -> None:
        """Check a hello's token; the right one is always accepted. A wrong one is refused, the
        connection closed after the reply and the token never quoted: RetryLater while the IP
        cools down after too many failures (neither counted nor logged), else
        AuthenticationFailed (logged, counted by the rate limit)."""
        if self.matches(token):
            return
        connection.close_after_reply = True
        refused_for = self.limiter.refused_for(connection.ip)
        if refused_for > 0:
            raise RetryLater(
                f"too many failed authentications from {connection.ip}: hellos from there with a "
                f"wrong token are refused for {refused_for:.0f} s more; check the token",
                {"retry_after": round(refused_for, 1)})
        logger.warning("authentication failed from %s", connection.peer)
        self.limiter.failed(connection.ip)
        raise AuthenticationFailed(
            "wrong token: this server was restarted with a new token (taken over by another "
            f"program at {self._started_at}); do not retry, re-initialize to get the new token")


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



def open_files_limit() -> int:
    """The soft limit of open file descriptors of this process (sys.maxsize where there is none)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return sys.maxsize
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def pending_limit(open_files: int) -> int:
    """How many connections may wait for their hello at once: MAX_PENDING, or fewer so that they
    take at most half of the file descriptors left after FD_RESERVE (logged)."""
    limit = max(1, min(MAX_PENDING, (open_files - FD_RESERVE) // 2))
    if limit < MAX_PENDING:
        logger.warning("the open files limit (%d) allows only %d connections waiting for their "
                       "hello at once (instead of %d)", open_files, limit, MAX_PENDING)
    return limit



def read_or_create_token(path: Path) -> str:
    """The token stored in ``path``; if the file is missing or empty, a new random one written there
    owner-only.

    Raises ServerError if the file is not private (another user's, readable or writable by others,
    or a symbolic link: anyone who can read the token can drive the board), OSError if it cannot
    be read or written.
    """
    try:
        runtime.check_private(path)
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_hex(32)
    runtime.write_owner_only(path, token + "\n")
    return token
