"""Run as a script (tests/plugins/test_background_acquisition.py runs it in a subprocess, so that a
process that cannot end fails the test instead of hanging the suite):

    python tests/helpers/scripts/unclosed_acquisition.py

A plugin's thread (a Python thread standing in for PyMoDAQ's worker, which never ends) runs a live
BackgroundAcquisition whose frames the GUI thread (the main thread) never takes in: once
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
    handed, asking, idle = threading.Semaphore(0), threading.Event(), threading.Event()
    numbers = itertools.count()

    def make_job(naverage: int):
        return lambda wanted: next(numbers)

    def plugin_thread() -> None:
        acquisition = BackgroundAcquisition(_Plugin(), make_job, lambda frame: handed.release())
        asking.set()
        while asking.is_set():  # PyMoDAQ's grab loop: it asks for the next frame
            acquisition.grab(1, live=True)
        idle.set()
        threading.Event().wait()  # a worker thread that never ends (nor closes the acquisition)

    threading.Thread(target=plugin_thread, name="plugin", daemon=True).start()
    for _ in range(background_acquisition.GUI_BACKLOG):
        assert handed.acquire(timeout=10), "a live frame did not come"
    asking.clear()  # it stops touching Qt before Python ends (a daemon thread that does may crash)
    assert idle.wait(10), "the plugin thread did not stop asking"
    print(f"FRAMES {background_acquisition.GUI_BACKLOG}", flush=True)


if __name__ == "__main__":
    app = QCoreApplication([])  # in the main thread, the GUI thread; kept until Python ends
    main()
