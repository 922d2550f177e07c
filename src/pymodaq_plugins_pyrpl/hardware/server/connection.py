"""One client connection as the server sees it: its output queue, subscription and session."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .. import protocol
from ..errors import InternalError

if TYPE_CHECKING:
    from .sessions import Session

logger = logging.getLogger(__name__)


class _Output:
    """One encoded message waiting in a connection's output queue."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Connection:
    """One TCP connection (or a test double): its output queue, subscription flag and session.

    Output never makes its caller wait for the peer: :meth:`send` and :meth:`push_status` hand the
    encoded message to ``write_now`` when nothing is waiting (it writes without blocking and says
    whether it did: the usual case, no task needed), else queue it, and a writer task of the
    connection hands the queue to ``send`` in order. The backlog (bytes queued, or handed to ``send``
    that has not returned yet; plus at most the one message ``write_now`` took last) is bounded by
    ``max_output``: a message that would pass it aborts the connection instead (nothing more is
    written; the session stays for resume, as after any dropped connection). An unsent status push
    is replaced by a newer one, so a subscriber that does not read holds at most one; so is an
    unsent progress push (:meth:`push_latest`).
    """

    def __init__(self, send: Callable[[bytes], Awaitable[None]], peer: str = "local",
                 close: Callable[[], None] | None = None, ip: str = "local",
                 abort: Callable[[], None] | None = None,
                 max_output: int = protocol.MAX_OUTPUT_BYTES,
                 write_now: Callable[[bytes], bool] | None = None) -> None:
        self._send = send
        self._write_now = write_now
        self._close = close
        self._abort = abort or close
        self.max_output = max_output
        self._output: deque[_Output] = deque()
        self._unsent: dict[str, _Output] = {}
        """The unsent push of each kind (:meth:`push_latest`)."""
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
        self.push_latest("status", data)

    def push_latest(self, kind: str, data: bytes) -> None:
        """Queue an encoded push of ``kind``; it replaces the previous one of that kind if that
        is still unsent (only the newest counts: a status, an acquisition's progress)."""
        if self.closed:
            return
        unsent = self._unsent.get(kind)
        if unsent is None:
            queued = self._queue(_Output(data))
            if queued is not None:
                self._unsent[kind] = queued
        elif self._fits(len(data) - len(unsent.data)):
            self.backlog += len(data) - len(unsent.data)
            unsent.data = data

    def _queue(self, output: _Output) -> _Output | None:
        """Write ``output`` at once if nothing waits and ``write_now`` takes it, else queue it and
        start the writer if idle. Returns it if queued (None if written, or if that aborted the
        connection)."""
        if not self._fits(len(output.data)):
            return None
        idle = not self._output and (self._writer is None or self._writer.done())
        if idle and self._write_now is not None and self._write_now(output.data):
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
        self._unsent.clear()
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
                for kind, unsent in list(self._unsent.items()):
                    if unsent is output:
                        del self._unsent[kind]
                try:
                    await self._send(output.data)
                finally:
                    self.backlog -= len(output.data)
        except (ConnectionError, OSError):
            self.closed = True
            self._output.clear()
            self._unsent.clear()
        if self.closed and self._close is not None:
            self._close()

    def close(self) -> None:
        """Close once the queued output is written (at once if there is none); queue no more."""
        if self.closed:
            return
        self.closed = True
        if (self._writer is None or self._writer.done()) and self._close is not None:
            self._close()

