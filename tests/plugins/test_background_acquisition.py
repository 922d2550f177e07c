"""BackgroundAcquisition's live stream: a live grab whose frame is on its way waits for it and hands
it over before it returns (so PyMoDAQ's worker does not poll meanwhile), frames stay in order, and a
frame slower than the wait still arrives, through the event loop."""
from __future__ import annotations

import itertools
import threading

import pytest

from pymodaq_plugins_pyrpl import background_acquisition
from pymodaq_plugins_pyrpl.background_acquisition import BackgroundAcquisition


class _Plugin:
    _title = "test"

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
