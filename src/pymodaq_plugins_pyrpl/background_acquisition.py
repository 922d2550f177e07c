"""A viewer's acquisitions in the background: :class:`BackgroundAcquisition` runs them one at a time
away from the plugin's thread and hands their results back to it (non-blocking grab and stop)."""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from qtpy.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal, Slot

from .hardware.errors import AcquisitionTimeout, DeviceNotReady, PyrplPluginError
from .plugin_support import BoardOutage, PluginHost, clear_problem, plugin_title, report_problem

logger = logging.getLogger(__name__)

LIVE_WAIT_S = 0.1
"""Live grabbing: how long ``grab`` waits for a frame not ready yet before it returns. PyMoDAQ's
worker polls its event loop without pause until the frame comes (its "Wait time" is 0 by default),
which costs a core; waiting here instead costs nothing, and at most this long for a Stop."""
RETRY_DELAY_MS = 1000
"""Live grabbing: delay before a new attempt after an error (other than an acquisition timeout)."""
GUI_BACKLOG = 3
"""Live grabbing: at most this many frames handed over and not yet taken in by the GUI thread."""
END_CHECK_S = 0.5
"""How often the acquisition thread, idle or waiting for room in the GUI thread, checks whether the
program's main thread (PyMoDAQ's GUI thread) has ended."""

Job = Callable[[Callable[[], bool]], Any]
"""A blocking acquisition; its argument tells whether its result is still wanted (to end early)."""


@dataclasses.dataclass(frozen=True)
class _Stream:
    """A live grab: its job, run again for every frame, and the room its frames have in the GUI
    thread (one permit per frame acquired and not yet taken in there; None: not paced)."""

    naverage: int
    job: Job
    room: threading.Semaphore | None


class BackgroundAcquisition(QObject):
    """A viewer's acquisitions, run one at a time in a worker thread of its own, each result handed
    back to the plugin in the plugin's own Qt thread (through a queued signal); ``grab`` and
    ``stop`` return at once (a live ``grab`` after at most LIVE_WAIT_S).

    Every ``grab`` (except a continuing live one) and ``stop`` opens a new *generation*; only a
    result (or an error) of the current generation reaches the plugin. A server call cannot be
    cancelled, so after ``stop`` a running acquisition completes in the background (its job's
    ``wanted()`` turns false, so it may end early) and its result is dropped; the next job runs after it, one
    acquisition at a time. ``make_job(naverage)`` is called in the plugin's thread (it may read the
    settings); an exception it raises propagates out of ``grab``, which then changes nothing.

    Live (continuous) grabs stream: PyMoDAQ's worker asks for the next frame only after it got one,
    so the next acquisition (the same job again) starts as soon as a frame is handed over, and the
    frame is ready (or on its way) when the worker asks; at most one frame is acquired ahead. A
    frame can therefore have been taken up to one frame period before it was asked for; its
    settings travel with it. A live ``grab`` whose frame is on its way waits for it (at most
    LIVE_WAIT_S) and hands it over before it returns, so the worker does not poll its event loop
    in the meantime; a frame slower than that is handed over when it comes.

    Live frames are also paced by the GUI thread, when the plugin runs in a worker thread: no new
    acquisition starts while GUI_BACKLOG frames handed over have not been taken in by an idle GUI
    thread (PyMoDAQ processes and displays them there). PyMoDAQ's worker asks for frames without a
    pause, so without this the frames of fast modules (sampler, IQ, short traces) pile up in the
    GUI thread's queue faster than it handles them: the Dashboard lags, and at quit it works
    through that backlog (tens of seconds, or for ever while other modules still grab).

    Errors (of the job or of ``on_data``) are reported as the module's problem
    (:func:`report_problem`; ``describe_error`` words them) until a frame comes again, those of a
    board that is not ready (DeviceNotReady) once per outage (``outage``, the plugin's
    :class:`BoardOutage`, shared with its other calls; default: one of its own); in live mode
    the acquisition is started again, at once after an acquisition timeout (still waiting for a
    trigger), after RETRY_DELAY_MS otherwise, so a continuous grab survives a missing trigger or a
    reconnection.

    All methods are called in the plugin's thread. ``close`` (also when that thread ends) stops
    and lets the worker thread end after the job it runs, without waiting for it; a ``grab``
    after ``close`` raises RuntimeError. A program that ends while grabbing, without closing,
    waits at exit for the job running only (:class:`_JobThread`): a live acquisition waiting for
    room in the GUI thread is abandoned once the program's main thread (the GUI thread) has
    ended, within END_CHECK_S.
    """

    _done = Signal(object, int)  # an acquisition ended: its Future and generation
    _handed = Signal(object)  # a paced live frame was handed over: its stream's room, to the GUI

    def __init__(self, plugin: PluginHost, make_job: Callable[[int], Job],
                 on_data: Callable[[Any], None],
                 describe_error: Callable[[BaseException], str] = str,
                 outage: BoardOutage | None = None) -> None:
        super().__init__()
        self._plugin = plugin
        self._make_job = make_job
        self._on_data = on_data
        self._describe_error = describe_error
        self._job_thread = _JobThread(f"acquisition {plugin_title(plugin)}")
        self._generation = 0  # read by the worker thread: whether a job's result is still wanted
        self._pending: Future | None = None  # the latest acquisition, until its result is taken
        self._stream: _Stream | None = None  # the live grab going on
        self._wanted = False  # the plugin waits for the pending result: deliver it when it comes
        self._outage = outage or BoardOutage()  # a board not ready: the first failure shown
        self._done.connect(self._on_done, Qt.QueuedConnection)
        self._gui_ack: _GuiAck | None = None
        thread, app = QThread.currentThread(), QCoreApplication.instance()
        if app is not None and thread is not app.thread():  # as PyRPLLink: the worker may end
            thread.finished.connect(self.close, Qt.DirectConnection)  # without close()
            self._gui_ack = _GuiAck()
            self._gui_ack.moveToThread(app.thread())
            self._handed.connect(self._gui_ack.acknowledge, Qt.QueuedConnection)

    @property
    def busy(self) -> bool:
        """An acquisition is running or queued in the background (maybe one whose result will be
        dropped), or a live one waits for room in the GUI thread."""
        return self._pending is not None and not self._pending.done()

    def grab(self, naverage: int = 1, live: bool = False) -> None:
        """Acquire (``naverage`` is passed to ``make_job``); the result reaches ``on_data`` later.
        A live grab continuing the one before (same ``naverage``) hands over the frame acquired
        ahead, waiting at most LIVE_WAIT_S for it."""
        naverage = max(1, int(naverage))
        if live and self._stream is not None and self._stream.naverage == naverage:
            self._next_frame()
        else:
            self._start(naverage, live)

    def stop(self) -> None:
        """Drop the result on its way, if any: the running job completes in the background (told
        by its ``wanted()``), a job not started yet does not run."""
        self._generation += 1
        if self._stream is not None and self._stream.room is not None:
            self._stream.room.release(GUI_BACKLOG)  # a job waiting for room goes on (to its end)
        self._stream, self._wanted = None, False

    def close(self) -> None:
        """Stop; the worker thread ends after the job it runs, which is not waited for here (the
        interpreter waits for it at exit: at most that job's own timeout)."""
        self.stop()
        self._job_thread.shutdown()

    def _start(self, naverage: int, live: bool) -> None:
        """A new generation: a snap, or the first frame of a live grab."""
        job = self._make_job(naverage)
        self.stop()
        room = threading.Semaphore(GUI_BACKLOG) if live and self._gui_ack is not None else None
        self._stream = _Stream(naverage, job, room) if live else None
        self._wanted = True
        self._pending = self._submit(job, room)

    def _next_frame(self) -> None:
        """A live grab goes on: hand over the frame acquired ahead, waiting at most LIVE_WAIT_S for
        it; the frame after it is queued meanwhile, so that it starts as soon as this one is done
        (it is withdrawn if the wait ends first, unless it has started: then this one is done)."""
        future, stream = self._pending, self._stream
        if future is None:  # it failed: the stream starts again (_report)
            self._wanted = True
            return
        following = self._submit(stream.job, stream.room, after=future)
        try:
            future.exception(LIVE_WAIT_S)  # done (a failure is handed over as well)
        except FutureTimeout:
            if following.cancel():
                self._wanted = True  # handed over when it comes
                return
        self._take(future, following)

    def _submit(self, job: Job, room: threading.Semaphore | None,
                after: Future | None = None) -> Future:
        """Queue ``job``: it runs unless stopped meanwhile, or ``after`` (the frame before) failed;
        a live frame first waits for room in the GUI thread."""
        generation = self._generation

        def wanted() -> bool:
            return generation == self._generation

        def acquire() -> Any:
            if after is not None and after.exception() is not None:  # done: one worker, in order
                return None
            if room is not None:
                _wait_for_room(room)
            return job(wanted) if wanted() else None

        future = self._job_thread.submit(acquire)
        future.add_done_callback(lambda done: self._done.emit(done, generation))
        return future

    @Slot(object, int)
    def _on_done(self, future: Future, generation: int) -> None:
        """The pending result is handed over if the plugin waits for it, an error at once (not
        after a stop); a live frame is otherwise kept for the next grab."""
        if (generation == self._generation and future is self._pending
                and (self._wanted or future.exception() is not None)):
            self._take(future)

    def _take(self, future: Future, following: Future | None = None) -> None:
        """Hand the result of the pending ``future`` over; in a live grab the next frame goes on
        (``following``, if queued already)."""
        stream, self._pending, self._wanted = self._stream, None, False
        error = future.exception()
        if error is None and stream is not None:
            self._pending = following or self._submit(stream.job, stream.room)
        if error is None:
            error = self._deliver(future.result(), stream)
        if error is not None:
            self._report(error, stream is not None)

    def _deliver(self, result: Any, stream: _Stream | None) -> Exception | None:
        """``on_data(result)``; returns what it raised."""
        try:
            self._outage.succeeded(self._plugin)
            clear_problem(self._plugin)
            self._on_data(result)
        except Exception as exc:
            return exc
        finally:
            if stream is not None and stream.room is not None:
                self._handed.emit(stream.room)  # after what _on_data queued to the GUI thread
        return None

    def _report(self, error: BaseException, live: bool) -> None:
        """Show ``error`` as the module's problem; a live grab starts again (RETRY_DELAY_MS)."""
        if isinstance(error, DeviceNotReady):
            self._outage.failed(self._plugin, self._describe_error(error))
        elif isinstance(error, PyrplPluginError):
            report_problem(self._plugin, self._describe_error(error))
        else:
            logger.error("acquisition failed", exc_info=error)
            report_problem(self._plugin, f"acquisition failed: {error!r}")
        if live:
            delay = 0 if isinstance(error, AcquisitionTimeout) else RETRY_DELAY_MS
            QTimer.singleShot(delay, lambda generation=self._generation: self._rearm(generation))

    def _rearm(self, generation: int) -> None:
        if generation == self._generation and self._stream is not None:
            self._start(self._stream.naverage, live=True)


def _program_running() -> bool:
    """The program's main thread, where PyMoDAQ runs its GUI, has not ended (once it has, the
    interpreter is exiting)."""
    return threading.main_thread().is_alive()


class _ProgramEnded(Exception):
    """The program's main thread has ended: the job is abandoned (see :class:`_JobThread`)."""


def _wait_for_room(room: threading.Semaphore) -> None:
    """Take a place in the GUI thread's backlog (GUI_BACKLOG frames wait for the GUI thread: wait
    for one). Raises _ProgramEnded if the program's main thread (the GUI thread, which takes no
    frame in any more) ends first."""
    while not room.acquire(timeout=END_CHECK_S):
        if not _program_running():
            raise _ProgramEnded


class _JobThread:
    """Runs the jobs submitted, one at a time and in order, in a thread of its own (started with
    the first job). The thread ends after ``shutdown`` once the jobs submitted before it have run,
    or, once the program's main thread has ended, after the job it runs (within END_CHECK_S when
    idle): a program that exits without closing its acquisitions waits for that job only (unlike
    a ThreadPoolExecutor's thread, which the interpreter joins after all its jobs), and the jobs
    still queued never run. A job that raises _ProgramEnded is abandoned, its Future left
    running (nobody takes results any more). A job's Future may be cancelled until the job
    starts. ``submit`` after ``shutdown`` raises RuntimeError. ``submit`` and ``shutdown`` are
    called from one thread (the plugin's)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._shut = False

    def submit(self, job: Callable[[], Any]) -> Future:
        if self._shut:
            raise RuntimeError(f"{self._name}: closed, no new acquisition")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name)
            self._thread.start()
        future: Future = Future()
        self._jobs.put((future, job))
        return future

    def shutdown(self) -> None:
        """No more jobs: the thread ends after those submitted (not waited for)."""
        if not self._shut:
            self._shut = True
            self._jobs.put(None)

    def _run(self) -> None:
        while _program_running():
            try:
                item = self._jobs.get(timeout=END_CHECK_S)
            except queue.Empty:
                continue
            if item is None:
                return
            self._execute(*item)
            del item  # no reference to the last job (and its frame) while waiting for the next

    @staticmethod
    def _execute(future: Future, job: Callable[[], Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return  # cancelled
        try:
            result = job()
        except _ProgramEnded:
            return
        except BaseException as exc:  # handed to the Future's owner, as an executor does
            future.set_exception(exc)
        else:
            future.set_result(result)


class _GuiAck(QObject):
    """Lives in the GUI thread; gives a live frame's permit back to its stream's room once the GUI
    thread has handled what was queued to it before ``acknowledge`` (the frame PyMoDAQ is to
    display) and has nothing else pending: a zero timer fires when the event loop is idle (Qt's
    glib event dispatcher, Linux's default)."""

    @Slot(object)
    def acknowledge(self, room: threading.Semaphore) -> None:
        QTimer.singleShot(0, room.release)
