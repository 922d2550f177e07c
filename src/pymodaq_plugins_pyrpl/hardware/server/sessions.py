"""The clients' sessions and their leases: a session survives a dropped connection for the resume
grace period; the auto-stop watchdog stops the server once no holding client is left."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..errors import ModuleLeased, RetryLater

if TYPE_CHECKING:
    from .connection import Connection

logger = logging.getLogger(__name__)

MAX_SESSIONS = 256
"""Sessions at once, connected or waiting to be resumed; a hello that would open one more is
refused with RetryLater until one ends. Bounds the memory they hold and the size of a status."""
FREES_IN_RESOLUTION = 0.001
"""``frees_in`` of a lease refusal is in seconds rounded to this; less left means the module is
free."""


@dataclass
class Session:
    """A client's identity on the server; survives a dropped connection for the resume grace period."""

    id: str
    client: str
    hold: bool
    leases: set[str] = field(default_factory=set)
    owners: dict[str, str] = field(default_factory=dict)  # module -> who took its lease (optional)
    connection: Connection | None = None
    expiry: asyncio.TimerHandle | None = None


class Sessions:
    """The open sessions, their leases and the auto-stop watchdog.

    ``changed`` is called whenever what :meth:`clients` reports changes; ``stop(reason)`` when the
    auto-stop (``auto_stop`` seconds, None: never) says the server should stop.
    """

    def __init__(self, grace: float, auto_stop: float | None, changed: Callable[[], None],
                 stop: Callable[[str], None]) -> None:
        self.grace = grace
        """Seconds a dropped client's session (and its leases) waits for it to resume."""
        self.auto_stop = auto_stop
        self._changed = changed
        self._stop = stop
        self._by_id: dict[str, Session] = {}
        self._no_holder_since: float | None = time.monotonic()

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Session]:
        return iter(self._by_id.values())

    def open(self, connection: Connection, client: str, hold: bool,
             resume: str | None) -> tuple[Session, bool]:
        """Attach ``connection`` to the session ``resume`` if it is still open (True), else to a
        new one (False). Raises RetryLater (and closes the connection after the reply) if
        MAX_SESSIONS are open; its ``retry_after`` is the time until the first waiting session
        expires."""
        session = self._by_id.get(resume) if resume else None
        resumed = session is not None
        if session is None:
            self._check_room(connection)
            session = Session(id=uuid.uuid4().hex, client=client, hold=hold)
            self._by_id[session.id] = session
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
        self._changed()
        return session, resumed

    def _check_room(self, connection: Connection) -> None:
        if len(self._by_id) < MAX_SESSIONS:
            return
        connection.close_after_reply = True
        loop = asyncio.get_running_loop()
        expiries = [s.expiry.when() for s in self._by_id.values() if s.expiry is not None]
        wait = min(expiries) - loop.time() if expiries else self.grace
        raise RetryLater(f"the server has {len(self._by_id)} sessions, its limit: retry when one "
                         "ends", {"retry_after": round(max(0.1, wait), 1)})

    def detach(self, connection: Connection) -> None:
        """``connection`` is gone: its session (if it is still the session's connection) ends,
        leases released, after the resume grace period unless the client resumes it."""
        session = connection.session
        if session is None or session.connection is not connection:
            return
        session.connection = None
        loop = asyncio.get_running_loop()
        session.expiry = loop.call_later(self.grace, self._expire, session.id)
        logger.info("client %r (%s) disconnected; session kept for %g s", session.client,
                    session.id[:8], self.grace)
        self._changed()

    def goodbye(self, connection: Connection) -> None:
        """The client of ``connection`` ends its session (leases released) and detaches."""
        session = connection.session
        assert session is not None
        self._end(session)
        connection.session = None
        logger.info("goodbye from %r (%s)", session.client, session.id[:8])
        if session.hold:
            self._holders_changed(ended_by_client=True)

    def _expire(self, session_id: str) -> None:
        session = self._by_id.get(session_id)
        if session is None or session.connection is not None:
            return
        self._end(session)
        logger.info("session of %r (%s) expired; leases released: %s", session.client,
                    session_id[:8], sorted(session.leases) or "none")
        if session.hold:
            self._holders_changed(ended_by_client=False)

    def _end(self, session: Session) -> None:
        self._by_id.pop(session.id, None)
        if session.expiry is not None:
            session.expiry.cancel()
        self._changed()

    # -- leases ------------------------------------------------------------------------------------

    def lease(self, session: Session, module: str, owner: str | None = None) -> None:
        """Lease ``module`` to ``session``, recording ``owner`` (who in that client took it; None:
        not said). Raises ModuleLeased (see :meth:`check_lease`)."""
        self.check_lease(session, module)
        session.leases.add(module)
        if owner:
            session.owners[module] = owner
        else:
            session.owners.pop(module, None)
        self._changed()

    def release(self, session: Session, module: str) -> bool:
        """Release ``module``; whether ``session`` held it."""
        held = module in session.leases
        session.leases.discard(module)
        session.owners.pop(module, None)
        if held:
            self._changed()
        return held

    def check_lease(self, session: Session | None, module: str) -> None:
        """Raise ModuleLeased if a session other than ``session`` leases ``module``. Its data:
        ``module``, ``holder`` (the client's name), ``owner`` (who in that client took the lease,
        None if it did not say), ``holder_connected`` and ``frees_in`` (seconds until a vanished
        holder's session ends with its resume grace, releasing the lease; None while the holder is
        connected; never 0: a vanished holder whose grace is over, its expiry due but not yet run,
        is ended here and the module is free)."""
        for other in list(self._by_id.values()):
            if other is not session and module in other.leases:
                frees_in = self._frees_in(other)
                if frees_in is not None and frees_in < FREES_IN_RESOLUTION:
                    self._expire(other.id)
                    continue
                owner = other.owners.get(module)
                holder = (f"{owner!r} of client {other.client!r}" if owner
                          else f"client {other.client!r}")
                if frees_in is None:
                    message = (f"module '{module}' is leased by {holder}; it can be read but not "
                               "changed until that client releases it")
                else:
                    frees_at = datetime.now() + timedelta(seconds=frees_in)
                    message = (f"module '{module}' is leased by {holder}, which "
                               f"vanished (its connection is gone; its session waits for it to "
                               f"come back): the module frees in {frees_in:.1f} s (at "
                               f"{frees_at.strftime('%H:%M:%S')}) unless that client returns")
                raise ModuleLeased(message, {"module": module, "holder": other.client,
                                             "owner": owner,
                                             "holder_connected": frees_in is None,
                                             "frees_in": frees_in})

    @staticmethod
    def _frees_in(session: Session) -> float | None:
        """Seconds until ``session`` ends with its resume grace; None while it is connected."""
        if session.connection is not None or session.expiry is None:
            return None
        remaining = session.expiry.when() - asyncio.get_running_loop().time()
        return round(remaining, 3) if remaining >= FREES_IN_RESOLUTION else 0.0

    # -- auto-stop ---------------------------------------------------------------------------------

    def check_auto_stop(self) -> None:
        """The watchdog's tick: stop once no holding client has been there for ``auto_stop`` s."""
        if self.auto_stop is None:
            return
        if any(s.hold for s in self._by_id.values()):
            self._no_holder_since = None
            return
        if self._no_holder_since is None:
            self._no_holder_since = time.monotonic()
        elif time.monotonic() - self._no_holder_since >= self.auto_stop:
            self._stop(f"auto-stop: no holding client for {self.auto_stop:g} s")

    def _holders_changed(self, ended_by_client: bool) -> None:
        """The last holder left: an auto-started server stops now."""
        if self.auto_stop is None or any(s.hold for s in self._by_id.values()):
            return
        if ended_by_client:
            self._stop("auto-stop: the last holding client said goodbye")
        else:
            self._stop("auto-stop: the last holding client vanished")

    def clients(self) -> list[dict[str, Any]]:
        """The sessions as the status reports them."""
        return [{"id": s.id[:8], "client": s.client, "hold": s.hold,
                 "connected": s.connection is not None, "leases": sorted(s.leases),
                 "owners": dict(sorted(s.owners.items()))}
                for s in self._by_id.values()]
