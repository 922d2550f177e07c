"""The client's call table: the requests waiting for their replies, matched by ``id``.

Which calls are re-sent after a lost connection is the retry policy of docs/protocol.md (*Retry
policy for clients*); :data:`RESENDABLE` is its list of methods.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any

from .. import protocol

RESENDABLE = frozenset(m.value for m in (
    protocol.Method.PING, protocol.Method.STATUS, protocol.Method.DESCRIBE, protocol.Method.GET,
    protocol.Method.ACQUIRE, protocol.Method.LEASE, protocol.Method.RELEASE,
    protocol.Method.SUBSCRIBE, protocol.Method.STOP))
"""Methods re-sent after a reconnect when their reply was lost (they can be repeated safely)."""


class Call:
    """One request and, once it arrives, its reply or the exception its caller raises.

    ``probe``: the client's own liveness ping; nobody waits for it, it is never re-sent and it
    does not count as a waiting call.
    """

    def __init__(self, id_: int, method: str, params: dict[str, Any] | None,
                 deadline: float, probe: bool = False) -> None:
        self.id = id_
        self.method = method
        self.params = params
        self.line = protocol.dumps_line(protocol.request(id_, method, params))
        self.deadline = deadline
        self.probe = probe
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


class CallTable:
    """The calls in flight, by id. Not thread-safe: the client uses it under its lock, together
    with its connection state, so that a call is never entered after the table was drained."""

    def __init__(self) -> None:
        self._calls: dict[int, Call] = {}
        self._ids = itertools.count(1)

    def new(self, method: str, params: dict[str, Any] | None, deadline: float,
            probe: bool = False) -> Call:
        """A call with a fresh id (not entered yet). Thread-safe."""
        return Call(next(self._ids), method, params, deadline, probe)

    def add(self, call: Call, generation: int | None) -> None:
        """Enter ``call``, to be written on link ``generation`` (None: on the next link)."""
        call.sent_on = generation
        self._calls[call.id] = call

    def discard(self, id_: int) -> None:
        self._calls.pop(id_, None)

    def take_reply(self, id_: Any, generation: int) -> Call | None:
        """Remove and return the call a reply with ``id_`` received on link ``generation``
        answers; None if none does (its caller gave up, or it was written on an older link)."""
        call = self._calls.get(id_) if isinstance(id_, int) else None
        if call is None or call.sent_on != generation:
            return None
        del self._calls[id_]
        return call

    def oldest_sent(self, generation: int) -> float | None:
        """When the oldest call written on link ``generation`` and still waiting was written
        (probes aside); None if no call waits there."""
        return min((c.sent_at for c in self._calls.values()
                    if c.sent_on == generation and c.sent_at is not None and not c.probe),
                   default=None)

    def lose(self, generation: int, resend: bool) -> list[Call]:
        """Link ``generation`` is gone: its calls wait for the next link if ``resend`` and their
        method is RESENDABLE; the others (and probes) are removed and returned, for their callers
        to raise."""
        orphans = []
        for call in list(self._calls.values()):
            if call.sent_on != generation:
                continue
            call.sent_on = None
            if call.probe or not (resend and call.method in RESENDABLE):
                del self._calls[call.id]
                orphans.append(call)
        return orphans

    def assign_unsent(self, generation: int) -> list[Call]:
        """The calls waiting for a link, now assigned to link ``generation``, to be written."""
        waiting = [call for call in self._calls.values() if call.sent_on is None]
        for call in waiting:
            call.sent_on = generation
        return waiting

    def drain(self) -> list[Call]:
        """Remove and return every call (the client closes or stops for good)."""
        calls = list(self._calls.values())
        self._calls.clear()
        return calls
