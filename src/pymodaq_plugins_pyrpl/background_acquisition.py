"""A viewer's acquisitions in the background: :class:`BackgroundAcquisition` runs them one at a time
away from the plugin's thread and hands their results back to it (non-blocking grab and stop)."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from qtpy.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal, Slot

from .hardware.errors import AcquisitionTimeout, PyrplPluginError
from .plugin_support import clear_problem, report_problem

logger = logging.getLogger(__name__)


LIVE_WAIT_S = 0.1
"""Live grabbing: how long ``grab`` waits for a frame not ready yet before it returns. PyMoDAQ's
worker polls its event loop without pause until the frame comes (its "Wait time" is 0 by default),
which costs a core; waiting here instead costs nothing, and at most this long for a Stop."""
RETRY_DELAY_MS = 1000
"""Live grabbing: delay before a new attempt after an error (other than an acquisition timeout)."""
GUI_BACKLOG = 3
"""Live grabbing: at most this many frames handed over and not yet taken in by the GUI thread."""

Job = Callable[[Callable[[], bool]], Any]
"""A blocking acquisition; its argument tells whether its result is still wanted (to end early)."""


class BackgroundAcquisition(QObject):
    """A viewer's acquisitions, run one at a time in a dedicated Python thread, each result handed
    back to the plugin in the plugin's own Qt thread; ``grab`` and ``stop`` return at once.

    Every ``grab`` (except a continuing live one) or ``stop`` opens a new *generation*; only a result
    of the current generation reaches ``on_data``. A server call cannot be cancelled, so after
    ``stop`` a running acquisition completes in the background and its result is dropped; the next
    job runs after it (one acquisition at a time). ``make_job(naverage)`` is called in the plugin's
    thread (it may read the settings).

    Live (continuous) grabs stream: PyMoDAQ's worker asks for the next frame only after it got one,
    so the next acquisition starts as soon as a frame is handed over, and the frame is ready (or on
    its way) when the worker asks; at most one frame is acquired ahead. A frame can therefore have
    been taken up to one frame period before it was asked for; its settings travel with it. A live
    ``grab`` whose frame is on its way waits for it (at most LIVE_WAIT_S) and hands it over before
    it returns, so the worker does not poll its event loop in the meantime.

    Live frames are also paced by the GUI thread, when the plugin runs in a worker thread: no new
    acquisition starts while GUI_BACKLOG frames handed over have not been taken in by an idle GUI
    thread (PyMoDAQ processes and displays them there). PyMoDAQ's worker asks for frames without a
    pause, so without this the frames of fast modules (sampler, IQ, short traces) pile up in the
    GUI thread's queue faster than it handles them: the Dashboard lags, and at quit it works
    through that backlog (tens of seconds, or for ever while other modules still grab).

    Errors are reported as the module's problem (:func:`report_problem`; ``describe_error`` words
    them) until a frame comes again; in live mode the acquisition is started again, at once after
    an acquisition timeout (still waiting for a trigger), after RETRY_DELAY_MS otherwise, so a
    continuous grab survives a missing trigger or a reconnection.
    """

    _finished = Signal(int, object, object)
    _handed = Signal()  # a live frame was handed over: the GUI thread acknowledges it

    def __init__(self, plugin: Any, make_job: Callable[[int], Job],
                 on_data: Callable[[Any], None],
                 describe_error: Callable[[BaseException], str] = str) -> None:
        super().__init__()
        self._plugin = plugin
        self._make_job = make_job
        self._on_data = on_data
        self._describe_error = describe_error
        self._generation = 0
        self._live = False
        self._naverage = 1
        self._closed = False
        self._job: tuple[int, Job] | None = None
        self._streaming = -1  # the generation whose job repeats (live), or -1
        self._ready: tuple[int, Any] | None = None  # a live frame acquired ahead
        self._wanted = False  # the worker waits for the next frame
        self._waiting = False  # ... inside grab(), for at most LIVE_WAIT_S
        self._ready_claimed = False  # _ready is for a grab waiting for it
        self._running = False
        self._unshown = 0  # live frames handed over, not yet taken in by an idle GUI thread
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._finished.connect(self._deliver, Qt.QueuedConnection)
        self._gui_ack: _GuiAck | None = None
        thread, app = QThread.currentThread(), QCoreApplication.instance()
        if app is not None and thread is not app.thread():  # as PyRPLLink: the worker may end
            thread.finished.connect(self.close, Qt.DirectConnection)  # without close()
            self._gui_ack = _GuiAck(self._on_gui_caught_up)
            self._gui_ack.moveToThread(app.thread())
            self._handed.connect(self._gui_ack.acknowledge, Qt.QueuedConnection)

    @property
    def busy(self) -> bool:
        """An acquisition is running in the background (maybe one whose result will be dropped)."""
        return self._running

    def grab(self, naverage: int = 1, live: bool = False) -> None:
        naverage = max(1, int(naverage))
        ready = None
        with self._cond:
            generation = self._generation
            continuing = (live and self._live and naverage == self._naverage and not self._closed
                          and self._streaming == generation)
            if continuing and self._ready is None:
                self._wanted = self._waiting = True
                self._cond.wait_for(lambda: self._ready is not None or not self._wanted
                                    or self._closed or self._generation != generation,
                                    LIVE_WAIT_S)
                self._waiting = False
            if continuing and self._ready is not None:
                ready, self._ready, self._wanted = self._ready, None, False
                self._cond.notify_all()  # the acquisition thread goes on with the next frame
        if ready is not None:
            self._deliver(ready[0], ready[1], None)
        if continuing:
            return
        self._live, self._naverage = live, naverage
        self._submit()

    def stop(self) -> None:
        """Drop the pending result, if any (the running server call completes in the background)."""
        self._live = False
        with self._cond:
            self._generation += 1
            self._job, self._streaming, self._ready, self._wanted = None, -1, None, False
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _submit(self) -> None:
        if self._closed:
            return
        job = self._make_job(self._naverage)
        with self._cond:
            self._generation += 1
            self._job = (self._generation, job)
            self._streaming = self._generation if self._live else -1
            self._ready, self._wanted, self._unshown = None, True, 0
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"acquisition {self._plugin._title}")
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while (self._job is None or self._ready is not None and not self._ready_claimed
                       or self._unshown >= GUI_BACKLOG and self._streaming == self._job[0]
                       ) and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                generation, job = self._job
                if self._streaming != generation:
                    self._job = None  # one-shot; a live job repeats
                self._running = True
            result, error = None, None
            try:
                result = job(lambda: generation == self._generation and not self._closed)
            except Exception as exc:  # reported in the plugin's thread
                error = exc
            finally:
                self._running = False
            with self._cond:
                if generation != self._generation or self._closed:
                    continue
                if error is not None and self._job is not None:
                    self._job = None  # a live grab restarts through _rearm
                if error is None and self._streaming == generation and (self._waiting
                                                                        or not self._wanted):
                    while (self._ready is not None and generation == self._generation
                           and not self._closed):
                        self._cond.wait()  # the frame before is still being handed over
                    if generation != self._generation or self._closed:
                        continue
                    # for the grab waiting for it (then go on at once), or kept for the next grab
                    self._ready, self._ready_claimed = (generation, result), self._waiting
                    self._cond.notify_all()
                    continue
                self._wanted = False
                self._cond.notify_all()
            try:
                self._finished.emit(generation, result, error)
            except RuntimeError:  # the plugin was deleted meanwhile
                return

    @Slot(int, object, object)
    def _deliver(self, generation: int, result: Any, error: BaseException | None) -> None:
        if generation != self._generation or self._closed:
            return  # stopped or superseded meanwhile
        if error is None:
            paced = self._gui_ack is not None and generation == self._streaming
            if paced:
                with self._cond:
                    self._unshown += 1
            try:
                clear_problem(self._plugin)
                self._on_data(result)
                return
            except Exception as exc:
                error = exc
            finally:
                if paced:  # queued after what _on_data queued to the GUI thread
                    self._handed.emit()
        if isinstance(error, PyrplPluginError):
            message = self._describe_error(error)
        else:
            logger.error("acquisition failed", exc_info=error)
            message = f"acquisition failed: {error!r}"
        report_problem(self._plugin, message)
        if self._live:
            delay = 0 if isinstance(error, AcquisitionTimeout) else RETRY_DELAY_MS
            QTimer.singleShot(delay, lambda: self._rearm(generation))

    def _rearm(self, generation: int) -> None:
        if generation == self._generation and self._live:
            self._submit()

    def _on_gui_caught_up(self) -> None:
        with self._cond:
            self._unshown = max(0, self._unshown - 1)
            self._cond.notify_all()


class _GuiAck(QObject):
    """Lives in the GUI thread; calls ``on_ack`` once the GUI thread has handled what was queued to
    it before ``acknowledge`` (a live frame PyMoDAQ is to display) and has nothing else pending:
    a zero timer fires when the event loop is idle (Qt's glib event dispatcher, Linux's default)."""

    def __init__(self, on_ack: Callable[[], None]) -> None:
        super().__init__()
        self._on_ack = on_ack

    @Slot()
    def acknowledge(self) -> None:
        QTimer.singleShot(0, self._on_ack)
