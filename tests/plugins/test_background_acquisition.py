"""BackgroundAcquisition's contract: a live grab whose frame is on its way waits for it and hands it
over before it returns (so PyMoDAQ's worker does not poll meanwhile), frames stay in order, a frame
slower than the wait still arrives, through the event loop; at most one frame is acquired ahead;
Stop drops the frame on its way; close does not wait for a running job; with the plugin in a worker
thread, results come in that thread and live frames wait for an idle GUI thread; an acquisition
left waiting for that GUI thread does not keep the process from ending."""
from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from qtpy.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

from pymodaq_plugins_pyrpl import background_acquisition, plugin_support
from pymodaq_plugins_pyrpl.background_acquisition import BackgroundAcquisition
from pymodaq_plugins_pyrpl.hardware.errors import AcquisitionTimeout, PyrplPluginError
from tests.helpers.scripts import UNCLOSED_ACQUISITION


class _Plugin:
    parent = None  # no PyMoDAQ worker: its acquisition thread is named after the class

    def __init__(self) -> None:
        self.statuses: list = []

    def emit_status(self, status) -> None:
        self.statuses.append(status)


@pytest.fixture
def stream(qtbot):
    """``(acquisition, frames, release)``: frame 0 comes at once, every later one after one
    ``release()``."""
    frames: list[int] = []
    permits = threading.Semaphore(0)
    numbers = itertools.count()

    def make_job(naverage: int):
        def job(should_continue) -> int:
            n = next(numbers)
            if n:
                assert permits.acquire(timeout=10)
            return n
        return job

    acquisition = BackgroundAcquisition(_Plugin(), make_job, frames.append)
    acquisition.grab(1, live=True)
    qtbot.waitUntil(lambda: frames == [0], timeout=5000)
    yield acquisition, frames, permits.release
    permits.release(10)
    acquisition.close()


def test_live_grab_hands_over_the_frame_on_its_way(stream, monkeypatch) -> None:
    acquisition, frames, release = stream
    monkeypatch.setattr(background_acquisition, "LIVE_WAIT_S", 10.0)
    for n in (1, 2, 3):
        threading.Timer(0.02, release).start()  # the frame completes while grab waits
        acquisition.grab(1, live=True)
        assert frames == list(range(n + 1))  # handed over before grab returned


def test_a_frame_slower_than_the_wait_comes_through_the_event_loop(stream, qtbot,
                                                                   monkeypatch) -> None:
    acquisition, frames, release = stream
    monkeypatch.setattr(background_acquisition, "LIVE_WAIT_S", 0.01)
    acquisition.grab(1, live=True)
    assert frames == [0]  # not there within the wait
    release()
    qtbot.waitUntil(lambda: frames == [0, 1], timeout=5000)
    threading.Timer(0.02, release).start()
    monkeypatch.setattr(background_acquisition, "LIVE_WAIT_S", 10.0)
    acquisition.grab(1, live=True)
    assert frames == [0, 1, 2]


def test_stop_drops_the_frame_on_its_way(stream, qtbot) -> None:
    acquisition, frames, release = stream
    acquisition.stop()
    release()
    acquisition.grab(1, live=False)  # a snap after the stop: a new generation
    release()
    qtbot.waitUntil(lambda: len(frames) == 2, timeout=5000)
    assert frames[0] == 0 and frames[1] >= 2  # frame 1 (stopped) never reached the plugin


def test_stop_drops_an_error_on_its_way(qtbot) -> None:
    started, fail, frames, plugin = threading.Event(), threading.Event(), [], _Plugin()

    def make_job(naverage: int):
        def job(wanted) -> None:
            started.set()
            assert fail.wait(10)
            raise PyrplPluginError("stopped meanwhile")
        return job

    acquisition = BackgroundAcquisition(plugin, make_job, frames.append)
    acquisition.grab(1)
    assert started.wait(5)
    acquisition.stop()
    fail.set()
    qtbot.waitUntil(lambda: not acquisition.busy, timeout=5000)
    with pytest.raises(qtbot.TimeoutError):  # bounded: the error is not reported
        qtbot.waitUntil(lambda: bool(plugin.statuses), timeout=300)
    acquisition.close()


def test_at_most_one_frame_is_acquired_ahead(qtbot) -> None:
    started, frames = [], []

    def make_job(naverage: int):
        def job(wanted) -> int:
            started.append(len(started))
            return started[-1]
        return job

    acquisition = BackgroundAcquisition(_Plugin(), make_job, frames.append)
    acquisition.grab(1, live=True)
    qtbot.waitUntil(lambda: frames == [0] and len(started) == 2, timeout=5000)  # 1: ahead
    with pytest.raises(qtbot.TimeoutError):  # bounded: no frame 2 while frame 1 is not asked for
        qtbot.waitUntil(lambda: len(started) > 2, timeout=300)
    acquisition.grab(1, live=True)
    assert frames == [0, 1]
    qtbot.waitUntil(lambda: len(started) == 3, timeout=5000)  # frame 2: the next one ahead
    with pytest.raises(qtbot.TimeoutError):  # bounded: and only that one
        qtbot.waitUntil(lambda: len(started) > 3, timeout=300)
    acquisition.close()


def test_a_live_frame_that_fails_is_reported_and_the_stream_starts_again(qtbot,
                                                                        monkeypatch) -> None:
    """The frame ahead fails while the grab waits for it: the error reaches the plugin, no other
    acquisition runs before the stream starts again (at once after an acquisition timeout)."""
    monkeypatch.setattr(background_acquisition, "LIVE_WAIT_S", 10.0)
    plugin, started, frames, fail = _Plugin(), [], [], threading.Event()

    def make_job(naverage: int):
        def job(wanted) -> int:
            started.append(len(started))
            if started[-1] == 1:
                assert fail.wait(10)
                raise AcquisitionTimeout("no trace")
            return started[-1]
        return job

    acquisition = BackgroundAcquisition(plugin, make_job, frames.append)
    acquisition.grab(1, live=True)
    qtbot.waitUntil(lambda: frames == [0], timeout=5000)
    threading.Timer(0.05, fail.set).start()  # while the grab waits for frame 1
    acquisition.grab(1, live=True)
    qtbot.waitUntil(lambda: frames == [0, 2], timeout=5000)
    assert started[:3] == [0, 1, 2]
    assert [s.attribute for s in plugin.statuses if s.command == plugin_support.UPDATE_STATUS] \
        == ["no trace"]
    acquisition.close()


def test_close_does_not_wait_for_the_running_job_and_its_thread_ends(qtbot) -> None:
    started, finish, frames = threading.Event(), threading.Event(), []

    def make_job(naverage: int):
        def job(wanted) -> str:
            started.set()
            assert finish.wait(10)
            return "late"
        return job

    before = set(threading.enumerate())
    acquisition = BackgroundAcquisition(_Plugin(), make_job, frames.append)
    acquisition.grab(1)
    assert started.wait(5)
    [thread] = set(threading.enumerate()) - before  # the acquisition's
    acquisition.close()
    assert thread.is_alive() and acquisition.busy  # close returned while the job still runs
    finish.set()
    thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(qtbot.TimeoutError):  # bounded: the late result is not delivered
        qtbot.waitUntil(lambda: bool(frames), timeout=200)


class _Worker(QObject):
    """Runs callables in the thread it was moved to (a plugin's worker thread, as in PyMoDAQ)."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run, Qt.QueuedConnection)

    @Slot(object)
    def _run(self, function: Callable[[], None]) -> None:
        function()


@pytest.fixture
def in_worker(qtbot):
    """``(run, thread)``: ``run(function)`` calls it in a QThread of its own, as PyMoDAQ runs a
    plugin; the thread ends with the test (which closes the acquisitions made in it)."""
    thread, worker = QThread(), _Worker()
    worker.moveToThread(thread)
    thread.start()
    yield worker.call.emit, thread
    thread.quit()
    assert thread.wait(5000)


class _Counted:
    """A live stream in a plugin's worker thread that asks for the next frame once it got one (as
    PyMoDAQ's worker does), counting the acquisitions started and the threads frames came in."""

    def __init__(self, run: Callable[[Callable[[], None]], None]) -> None:
        self.started, self.frames, self.threads = 0, [], set()
        self.live = True  # the worker asks for the next frame
        self.changed = threading.Condition()
        self.acquisition: BackgroundAcquisition | None = None
        run(self._create)

    def _create(self) -> None:
        self.acquisition = BackgroundAcquisition(_Plugin(), self._make_job, self._on_data)
        self.acquisition.grab(1, live=True)

    def _make_job(self, naverage: int):
        def job(wanted) -> int:
            with self.changed:
                self.started += 1
                self.changed.notify_all()
                return self.started
        return job

    def _on_data(self, frame: int) -> None:
        self.threads.add(QThread.currentThread())
        with self.changed:
            self.frames.append(frame)
            self.changed.notify_all()
        QTimer.singleShot(0, self._ask_again)

    def _ask_again(self) -> None:
        if self.live:
            self.acquisition.grab(1, live=True)

    def snap_after_stop(self) -> None:
        self.live = False
        self.acquisition.stop()
        self.acquisition.grab(1)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


def test_live_frames_come_in_the_plugin_thread_and_wait_for_an_idle_gui_thread(in_worker,
                                                                               qtbot) -> None:
    run, thread = in_worker
    stream = _Counted(run)
    backlog = background_acquisition.GUI_BACKLOG
    # this test holds the GUI thread: the frames handed over are not taken in
    assert stream.wait_for(lambda: len(stream.frames) == backlog, 5)
    assert not stream.wait_for(lambda: stream.started > backlog, 0.3)  # bounded
    qtbot.waitUntil(lambda: len(stream.frames) > 3 * backlog, timeout=5000)  # an idle GUI thread
    assert stream.frames[:3 * backlog] == list(range(1, 3 * backlog + 1))
    assert stream.threads == {thread}


def test_a_snap_after_stop_does_not_wait_for_the_gui_thread(in_worker) -> None:
    """Stop frees the live acquisition waiting for room in the GUI thread: it does not hold the
    worker, the snap after Stop runs (and its frame comes) while the GUI thread stays busy."""
    run, _ = in_worker
    stream = _Counted(run)
    backlog = background_acquisition.GUI_BACKLOG
    assert stream.wait_for(lambda: len(stream.frames) == backlog, 5)
    run(stream.snap_after_stop)
    assert stream.wait_for(lambda: len(stream.frames) == backlog + 1, 5)
    assert stream.frames[-1] == stream.started  # the snap's, not the stopped live frame


def test_an_acquisition_waiting_for_the_gui_thread_does_not_keep_the_process_alive() -> None:
    """A program that ends (an error, an exit) while a viewer grabs, without closing it: its live
    acquisition waits for room in a GUI thread that takes no more frames in, and the process still
    ends by itself (tests/helpers/scripts/unclosed_acquisition.py, in a subprocess: a process that
    cannot end fails here instead of hanging the suite)."""
    try:
        run = subprocess.run([sys.executable, str(UNCLOSED_ACQUISITION)], capture_output=True,
                             text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process did not end within {exc.timeout} s after its frames came: "
                    f"stdout {exc.stdout!r}")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert run.stdout.splitlines() == [f"FRAMES {background_acquisition.GUI_BACKLOG}"]
