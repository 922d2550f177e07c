"""Which server a plugin uses: the simulated plant it asks for, a server started by hand, and a
module still leased by a plugin of a process that crashed. Through PyMoDAQ's real DAQ_Move, headless,
against real server subprocesses."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.server_manager import stop_local_server
from pymodaq_plugins_pyrpl.hardware.server_process import start_server
from pymodaq_plugins_pyrpl.plugin_support import SharedLeases
from tests.helpers.plugins import move, select_axis, server_client, snap
from tests.helpers.scripts import HOLDER
from tests.helpers.support import ServerProcess

LOOPBACK = "loopback:delay=1.6e-08,bandwidth=60000000,noise=0.001"
RESONATOR = "resonator:f0=100000,q=30,gain=1,noise=0.001"
"""The plants' canonical specs (every parameter, defaults included)."""


def asg_actuator(port: int, plant: str | None, messages: list[str] | None = None):
    """A DAQ_Move with the ASG plugin on ``port`` asking for the simulated ``plant`` (None: the
    setting's default), not initialized; ``messages`` collects its status messages."""
    from pymodaq.control_modules.daq_move import DAQ_Move

    actuator = DAQ_Move(parent=None, title=f"ASG {plant}")
    actuator.actuator = "PyRPL_ASG_TCP"
    actuator.settings.child("actuator_settings", "pyrpl", "server_port").setValue(port)
    if plant is not None:
        actuator.settings.child("actuator_settings", "pyrpl", "plant").setValue(plant)
    if messages is not None:
        actuator.status_sig.connect(messages.append)
    return actuator


def initialized(qtbot, actuator) -> bool:
    with qtbot.waitSignal(actuator.init_signal, timeout=30000) as init:
        actuator.init_hardware(True)
    return init.args[0]


def init_actuator(qtbot, port: int, plant: str | None, messages: list[str] | None = None):
    """:func:`asg_actuator`, initialized; and the initialization's result (True/False). The
    caller quits it."""
    actuator = asg_actuator(port, plant, messages)
    return actuator, initialized(qtbot, actuator)


def test_the_plant_setting_starts_that_plant_and_another_plant_is_a_clear_error(qtbot, port):
    resonator = "resonator:f0=100000,q=30,gain=0.5,noise=0.001"
    first, ok = init_actuator(qtbot, port, "resonator: gain=0.5")
    messages: list[str] = []
    second = None
    try:
        assert ok is True
        assert runtime.read_state(port).plant == resonator
        with server_client(port) as observer:
            assert observer.status()["device"]["plant"] == resonator
            assert observer.hello_info["plant"] == resonator
            select_axis(qtbot, first, "Offset", "V")
            move(qtbot, first, 0.2)  # DC through the resonator: its gain
            assert observer.acquire("sampler")["in1"] == pytest.approx(0.1, abs=0.01)
        second, ok = init_actuator(qtbot, port, "loopback", messages)
        assert ok is False
        qtbot.waitUntil(lambda: any(resonator in m for m in messages), timeout=5000)
        refusal = next(m for m in messages if resonator in m)
        assert LOOPBACK in refusal and f"stop --port {port}" in refusal
    finally:
        if second is not None:
            second.quit_fun()
        first.quit_fun()


def test_a_bad_plant_setting_is_a_clear_error_and_starts_nothing(qtbot, port):
    messages: list[str] = []
    actuator, ok = init_actuator(qtbot, port, "resonator:q=banana", messages)
    try:
        assert ok is False
        qtbot.waitUntil(lambda: any("simulated plant" in m and "banana" in m for m in messages),
                        timeout=5000)
        assert runtime.read_state(port) is None
    finally:
        actuator.quit_fun()


HAND_STARTED_ARGS = ["--mock", "--plant", "resonator"]
"""A server started by hand (no token file, no auto-stop): ``… --port P`` is added."""


def check_the_plugins_use_a_server_started_by_hand(qtbot, port: int, pid: int) -> None:
    """It registers like an auto-started server, the plugins use it (same plant) or name both
    plants (another one), and it outlives them."""
    state = runtime.read_state(port)
    assert (state.pid, state.backend, state.plant) == (pid, "mock", RESONATOR)
    assert runtime.token_path(port).read_text().strip() == state.token
    assert runtime.server_process(state) is not None
    actuator, ok = init_actuator(qtbot, port, "resonator")
    try:
        assert ok is True
        assert move(qtbot, actuator, 1000.0) == pytest.approx(1000.00761449337)
    finally:
        actuator.quit_fun()
    messages: list[str] = []
    other, ok = init_actuator(qtbot, port, "loopback", messages)
    other.quit_fun()
    assert ok is False
    qtbot.waitUntil(lambda: any(RESONATOR in m and LOOPBACK in m
                                for m in messages), timeout=5000)
    assert runtime.server_process(state) is not None  # no auto-stop: it runs on
    assert stop_local_server(port) == state
    assert runtime.read_state(port) is None


def test_a_server_started_by_hand_with_the_console_script_is_used_by_the_plugins(qtbot, port):
    """``pymodaq-pyrpl server --mock --plant resonator --port P``."""
    script = Path(sys.executable).with_name("pymodaq-pyrpl")
    server, ready = start_server([str(script), "server", *HAND_STARTED_ARGS, "--port", str(port)],
                                 30, stderr=subprocess.DEVNULL)
    try:
        assert (ready.port, ready.pid) == (port, server.pid)
        check_the_plugins_use_a_server_started_by_hand(qtbot, port, server.pid)
    finally:
        server.kill()
        server.wait(10)
        server.stdout.close()


def test_a_server_started_by_hand_with_python_m_is_used_by_the_plugins(qtbot, tmp_path, port):
    """``python -m pymodaq_plugins_pyrpl.hardware.server --mock --plant resonator --port P``."""
    server = ServerProcess(tmp_path, [*HAND_STARTED_ARGS, "--port", str(port)], token_file=False)
    try:
        check_the_plugins_use_a_server_started_by_hand(qtbot, port, server.pid)
    finally:
        server.stop()


def test_init_right_after_a_crash_waits_for_the_vanished_lease(qtbot, port):
    """A process holding asg0 is killed; a new ASG plugin is told that the holder vanished and
    when the module frees, and initializes once it has."""
    holder = subprocess.Popen([sys.executable, str(HOLDER), str(port), "--session-grace", "4"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    messages: list[str] = []
    actuator = asg_actuator(port, None, messages)  # PyMoDAQ imported before the crash
    try:
        assert holder.stdout.readline().startswith("HELD")
        holder.stdin.write("lease asg0\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "LEASED"
        holder.kill()
        holder.wait(10)
        assert initialized(qtbot, actuator) is True, messages
        waited = [m for m in messages if "vanished" in m]
        assert waited and "'holder'" in waited[0] and "frees in" in waited[0], messages
        assert move(qtbot, actuator, 1000.0) == pytest.approx(1000.00761449337)  # leased
    finally:
        if holder.poll() is None:
            holder.kill()
        actuator.quit_fun()
        stop_local_server(port)


def test_each_lease_is_credited_to_the_plugin_that_took_it(qtbot, port, make_actuator,
                                                           make_viewer):
    """An ASG and a scope plugin in one process (one client): `pymodaq-pyrpl status` shows each
    lease under its own plugin's title, and another process is refused naming the right plugin."""
    make_actuator("PyRPL_ASG_TCP", port)  # titled "PyRPL_ASG_TCP test"
    make_viewer("PyRPL_Scope_TCP", port, dim="DAQ1D")
    status = subprocess.run([sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "status"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "asg0:PyRPL_ASG_TCP test of PyMoDAQ (pid" in status.stdout, status.stdout
    assert "scope:PyRPL_Scope_TCP test of PyMoDAQ (pid" in status.stdout, status.stdout
    with server_client(port) as observer:
        (ours,) = [c for c in observer.status()["clients"] if c["leases"]]
    assert ours["owners"] == {"asg0": "PyRPL_ASG_TCP test", "scope": "PyRPL_Scope_TCP test"}
    other = subprocess.Popen([sys.executable, str(HOLDER), str(port)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().startswith("HELD")
        other.stdin.write("lease scope\n")
        other.stdin.flush()
        word, refusal = other.stdout.readline().split(" ", 1)
        refused = json.loads(refusal)
        assert word == "REFUSED" and refused["data"]["owner"] == "PyRPL_Scope_TCP test"
        assert "'PyRPL_Scope_TCP test' of client 'PyMoDAQ (pid" in refused["message"]
    finally:
        other.kill()
        other.wait(10)


def test_a_shared_lease_names_every_plugin_holding_it(mock_server):
    """Plugins of one process sharing a module's lease: its owner names them all, in the order they
    took it; when one lets go, the others; the last releases it."""
    client = PyRPLClient("127.0.0.1", mock_server.port, mock_server.token, "PyMoDAQ (pid 1)",
                         reconnect=False)
    leases = SharedLeases()

    def owners() -> dict:
        (entry,) = [c for c in client.status()["clients"] if c["client"] == "PyMoDAQ (pid 1)"]
        return entry["owners"]

    with client:
        client.connect()
        leases.take(client, "iq0", "IQ")
        leases.take(client, "iq0", "IQ scan")
        assert owners() == {"iq0": "IQ, IQ scan"}
        leases.give_back(client, "iq0", "IQ")
        assert owners() == {"iq0": "IQ scan"}
        leases.give_back(client, "iq0", "IQ scan")
        assert owners() == {} and client.status()["clients"][0]["leases"] == []


def test_initializing_again_after_a_failure_gives_one_viewer(qtbot, port):
    """A failed initialization (a bad plant), the setting fixed, initialized again: one snap gives
    exactly one frame (PyMoDAQ keeps the failed worker connected; it must not acquire too)."""
    from pymodaq.control_modules.daq_viewer import DAQ_Viewer

    viewer = DAQ_Viewer(parent=None, title="Scope again")
    viewer.daq_type = "DAQ1D"
    viewer.detector = "PyRPL_Scope_TCP"
    viewer.settings.child("detector_settings", "pyrpl", "server_port").setValue(port)
    viewer.settings.child("detector_settings", "pyrpl", "plant").setValue("resonator:q=banana")
    frames: list = []
    try:
        with qtbot.waitSignal(viewer.init_signal, timeout=30000) as init:
            viewer.init_hardware(True)
        assert init.args[0] is False
        qtbot.waitUntil(lambda: "banana" in viewer.settings["detector_settings", "problem"],
                        timeout=5000)
        viewer.settings.child("detector_settings", "pyrpl", "plant").setValue("loopback")
        inits: list[bool] = []
        viewer.init_signal.connect(inits.append)
        with qtbot.waitSignal(viewer.init_signal, timeout=30000) as init:
            viewer.init_hardware(True)
        assert init.args[0] is True
        viewer.grab_done_signal.connect(frames.append)
        snap(qtbot, viewer)
        # a second worker would answer the snap as soon as the first (same server, same trace)
        qtbot.wait(1000)
        assert len(frames) == 1 and inits == [True]
    finally:
        viewer.quit_fun()


def test_initializing_again_after_a_failure_gives_one_actuator(qtbot, port):
    """The same for an actuator: after a failed and a good initialization, a move is done once."""
    actuator, ok = init_actuator(qtbot, port, "resonator:q=banana")
    try:
        assert ok is False
        actuator.settings.child("actuator_settings", "pyrpl", "plant").setValue("loopback")
        assert initialized(qtbot, actuator) is True
        done: list = []
        actuator.move_done_signal.connect(done.append)
        assert move(qtbot, actuator, 1000.0) == pytest.approx(1000.00761449337)
        qtbot.wait(1000)
        assert len(done) == 1
    finally:
        actuator.quit_fun()


@pytest.mark.pyrpl
def test_hostname_virtual_drives_a_virtual_board_through_pyrpl(qtbot, port):
    """The hostname ``virtual``: the plugin's server runs PyRPL against a virtual board it starts;
    an ASG offset set through the plugin comes back on in1 through the board's loopback."""
    actuator = asg_actuator(port, None)
    actuator.settings.child("actuator_settings", "pyrpl", "hostname").setValue("virtual")
    try:
        with qtbot.waitSignal(actuator.init_signal, timeout=90000) as init:
            actuator.init_hardware(True)
        assert init.args[0] is True
        with server_client(port) as observer:
            device = observer.status()["device"]
            assert (device["backend"], device["hostname"]) == ("pyrpl", "virtual")
            select_axis(qtbot, actuator, "Offset", "V")
            move(qtbot, actuator, 0.2)
            assert observer.acquire("sampler")["in1"] == pytest.approx(0.2, abs=0.01)
    finally:
        actuator.quit_fun()
        stop_local_server(port)
