"""No silent corruption: a trace never mixes settings or outlives a settings change, and the
settings a plugin had are in effect again after the manager restarted a crashed server."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue, runtime
from tests.helpers.plugins import server_client, snap
from tests.helpers.support import ServerProcess

DURATIONS = catalogue.SCOPE_DURATIONS[:4]  # 131 µs ... 1.05 ms: many traces per second


def test_a_trace_is_never_returned_after_a_settings_change(tmp_path) -> None:
    """A client changes the duration and acquires, again and again, while another client acquires
    continuously (its acquisitions are in flight when the duration changes): the first client's
    trace always has the new duration, and every trace's dt matches the settings it reports."""
    with ServerProcess(tmp_path, ["--mock", "--seed", "3"]) as server:
        changer, reader = server.client("changer"), server.client("reader")
        read: list[dict] = []
        stop = threading.Event()

        def keep_reading() -> None:
            while not stop.is_set():
                read.append(reader.call("acquire", module="scope", timeout=10))

        thread = threading.Thread(target=keep_reading)
        thread.start()
        changed: list[tuple[float, dict]] = []
        try:
            for i in range(60):
                duration = DURATIONS[i % len(DURATIONS)]
                changer.call("set", module="scope", values={"duration": duration})
                changed.append((duration, changer.call("acquire", module="scope", timeout=10)))
        finally:
            stop.set()
            thread.join(30)
        changer.close()
        reader.close()
    for duration, trace in changed:
        assert trace["settings"]["duration"] == pytest.approx(duration)
        assert trace["dt"] == pytest.approx(duration / catalogue.SCOPE_SAMPLES)
    assert len(read) > 30
    for trace in read:
        assert trace["dt"] == pytest.approx(trace["settings"]["duration"] / catalogue.SCOPE_SAMPLES)
        assert trace["ch1"].shape == (catalogue.SCOPE_SAMPLES,)
    sequences = [t["sequence"] for t in read]
    assert sequences == sorted(set(sequences))


def test_viewer_settings_in_effect_again_after_a_server_crash(qtbot, port, make_viewer) -> None:
    """Through DAQ_Viewer: the scope's settings are re-applied by the plugin after the manager
    restarted the SIGKILLed server, and the next snap uses them."""
    duration = catalogue.SCOPE_DURATIONS[3]
    scope = make_viewer("PyRPL_Scope_TCP", port, "DAQ1D", duration=duration, input1="out1",
                        threshold=0.25)
    old = runtime.read_state(port)
    os.kill(old.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: (state := runtime.read_state(port)) is not None
                    and state.pid != old.pid and runtime.pid_alive(state.pid), timeout=20000)

    def reapplied() -> bool:
        try:
            with server_client(port) as observer:
                values = observer.get("scope", ["duration", "input1", "threshold"])
        except Exception:  # the new server is still starting
            return False
        return values == {"duration": duration, "input1": "out1",
                          "threshold": pytest.approx(0.25, abs=2.0**-13)}

    qtbot.waitUntil(reapplied, timeout=20000)
    trace = snap(qtbot, scope).get_data_from_dim("Data1D")[0]
    assert trace.labels[0] == "out1"
    axis = trace.axes[0].get_data()
    assert axis[1] - axis[0] == pytest.approx(duration / catalogue.SCOPE_SAMPLES)
