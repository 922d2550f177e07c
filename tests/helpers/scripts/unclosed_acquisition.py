"""Run as a script (tests/plugins/test_background_acquisition.py runs it in a subprocess, so that a
process that cannot end fails the test instead of hanging the suite):

    python tests/helpers/scripts/unclosed_acquisition.py

A plugin's thread (a Python thread standing in for PyMoDAQ's worker, which goes on asking for live
frames) runs a live BackgroundAcquisition whose frames the GUI thread never takes in: once
GUI_BACKLOG frames are handed over, the next acquisition waits for room in the GUI thread. The
script then ends without closing the acquisition, as a program does that fails or exits while a
viewer grabs. Prints ``FRAMES n`` when they are handed over; the process must then end by itself.
"""
from __future__ import annotations

import itertools
import threading

from qtpy.QtCore import QCoreApplication

from pymodaq_plugins_pyrpl import background_acquisition
from pymodaq_plugins_pyrpl.background_acquisition import BackgroundAcquisition


class _Plugin:
    parent = None  # no PyMoDAQ worker: the acquisition thread is named after the class

    def emit_status(self, status: object) -> None:
        pass


def main() -> None:
    app = QCoreApplication([])  # the GUI thread: this one, which takes no frame in
    main.app = app  # kept until the interpreter ends
    handed, pause = threading.Semaphore(0), threading.Event()
    numbers = itertools.count()

    def make_job(naverage: int):
        return lambda wanted: next(numbers)

    def plugin_thread() -> None:
        acquisition = BackgroundAcquisition(_Plugin(), make_job, lambda frame: handed.release())
        while True:  # PyMoDAQ's grab loop: it asks for the next frame, logs an error and goes on
            try:
                acquisition.grab(1, live=True)
            except RuntimeError:  # no new acquisition once the interpreter is ending
                pause.wait(background_acquisition.LIVE_WAIT_S)

    threading.Thread(target=plugin_thread, name="plugin", daemon=True).start()
    for _ in range(background_acquisition.GUI_BACKLOG):
        assert handed.acquire(timeout=10), "a live frame did not come"
    print(f"FRAMES {background_acquisition.GUI_BACKLOG}", flush=True)


if __name__ == "__main__":
    main()
