"""(3) Plugin start-up and (4) plugin rate, through a real DAQ_Viewer (headless PyMoDAQ)."""
from __future__ import annotations

import time

from pymodaq_plugins_pyrpl.demo import Demo
from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.sockets import free_port


def first_frame_times(runs: int, duration: float) -> list[float]:
    times = []
    for _ in range(runs):
        demo = Demo(free_port())
        t0 = time.perf_counter()
        scope = demo.viewer("PyRPL_Scope_TCP", "Scope", "DAQ1D", duration=duration)
        demo.snap(scope)
        times.append(time.perf_counter() - t0)
        demo.close()
    return times


def plugin_rate(demo: Demo, scope, seconds: float) -> tuple[float, float]:
    """Frames/s of a continuous grab through ``scope`` (a DAQ_Viewer), and the CPU this process
    used meanwhile (% of one core: PyMoDAQ's threads, the plugin and its client)."""
    frames = []
    scope.grab_done_signal.connect(lambda dte: frames.append(time.perf_counter()))
    demo.wait(scope.grab_done_signal, lambda: scope.grab_data(grab_state=True))
    start, first, cpu = time.perf_counter(), len(frames), time.process_time()
    loop_until = start + seconds
    loop = demo.QtCore.QEventLoop()  # idle like an application's main loop, not spinning
    demo.QtCore.QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    cpu = (time.process_time() - cpu) / (time.perf_counter() - start) * 100
    scope.stop_grab()
    done = [t for t in frames[first:] if t <= loop_until]
    return len(done) / seconds, cpu


def raw_rate(port: int, seconds: float) -> float:
    state = runtime.read_state(port)
    with PyRPLClient("127.0.0.1", port, state.token, "bench raw") as client:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            client.acquire("scope")
            count += 1
        return count / (time.perf_counter() - start)
