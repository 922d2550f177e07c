"""The client's event dispatcher: status and progress pushes and connection events run their
callbacks on one thread, ``pyrpl-client-events``, one at a time and in the order of the events. A slow callback
delays later callbacks, never a reply; an exception raised by a callback is logged and ignored."""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from .. import protocol

logger = logging.getLogger(__name__)

StatusCallback = Callable[[dict[str, Any]], None]
ConnectionCallback = Callable[[str, dict[str, Any]], None]
ProgressCallback = Callable[[dict[str, Any]], None]


def join_until(thread: threading.Thread | None, deadline: float) -> None:
    """Join ``thread`` until ``deadline`` (monotonic); a thread still running is logged and left
    (a daemon). Not the current thread (a callback may close the client)."""
    if thread is None or thread is threading.current_thread():
        return
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        logger.warning("thread %s did not stop in time (a callback or the revive hook is "
                       "still running); it is left to finish as a daemon", thread.name)


class EventDispatcher:
    """Runs status, progress and connection callbacks on its own thread; ``address`` names the
    server in the log. Thread-safe."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._status_callbacks: list[StatusCallback] = []
        self._connection_callbacks: list[ConnectionCallback] = []
        self._progress_callbacks: dict[str, list[ProgressCallback]] = {}
        """The progress callbacks of each module's acquisitions under way, oldest first (the
        server runs one at a time per module: a later one is refused)."""

    def start(self) -> None:
        """Start the events thread (once)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="pyrpl-client-events")
                self._thread.start()

    def stop(self, deadline: float) -> None:
        """Run the events queued so far, then end the thread; waits for it until ``deadline``."""
        self._queue.put(None)
        join_until(self._thread, deadline)

    def status(self, params: Any) -> None:
        """A status push arrived (``params`` still encoded: decoded on the events thread)."""
        self._queue.put(("status", (params,)))

    def progress(self, params: Any) -> None:
        """A progress push arrived (``params`` still encoded): for the callback registered for
        its module when it is dispatched (none: dropped)."""
        self._queue.put(("progress", (params,)))

    def connection(self, event: str, info: dict[str, Any]) -> None:
        """The connection changed (see :meth:`PyRPLClient.add_connection_callback`)."""
        self._queue.put(("connection", (event, info)))

    def add_status_callback(self, cb: StatusCallback) -> None:
        with self._lock:
            self._status_callbacks.append(cb)

    def remove_status_callback(self, cb: StatusCallback) -> None:
        with self._lock:
            if cb in self._status_callbacks:
                self._status_callbacks.remove(cb)

    def add_progress_callback(self, module: str, cb: ProgressCallback) -> None:
        """Call ``cb(params)`` on the progress pushes of ``module``, unless a callback added
        before it for ``module`` is still there (that acquisition's, which is the one running)."""
        with self._lock:
            self._progress_callbacks.setdefault(module, []).append(cb)

    def remove_progress_callback(self, module: str, cb: ProgressCallback) -> None:
        """Stop calling ``cb`` for ``module`` (its pushes still queued are dropped)."""
        with self._lock:
            callbacks = self._progress_callbacks.get(module, [])
            if cb in callbacks:
                callbacks.remove(cb)
            if not callbacks:
                self._progress_callbacks.pop(module, None)

    def add_connection_callback(self, cb: ConnectionCallback) -> None:
        with self._lock:
            self._connection_callbacks.append(cb)

    def remove_connection_callback(self, cb: ConnectionCallback) -> None:
        with self._lock:
            if cb in self._connection_callbacks:
                self._connection_callbacks.remove(cb)

    def _run(self) -> None:
        """Run callbacks in event order until :meth:`stop` queues None."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, args = item
            with self._lock:
                callbacks: list[Callable[..., None]] = list(
                    self._status_callbacks if kind == "status" else self._connection_callbacks)
                if kind == "progress":
                    module = args[0].get("module") if isinstance(args[0], dict) else None
                    progress = self._progress_callbacks.get(module) if isinstance(
                        module, str) else None
                    callbacks = progress[:1] if progress else []
            if kind == "status" or kind == "progress" and callbacks:
                try:
                    args = (protocol.decode_value(args[0]),)
                except ValueError as exc:
                    logger.warning("malformed %s push from %s: %s", kind, self._address, exc)
                    continue
            for callback in callbacks:
                try:
                    callback(*args)
                except Exception:  # a callback's bug must not stop the events thread
                    logger.exception("%s callback %r raised", kind, callback)
