"""The physics through the plugins (PyMoDAQ's real DAQ_Move and DAQ_Viewer, headless), on both
boards: the simulated one (``--mock``, a server auto-started per test) and the real PyRPL path
(hostname ``virtual``: PyRPL driving a virtual board, one server for the module, its modules put
back to their defaults before each test). Both boards use the loopback plant, cables out1→in1 and
out2→in2. An ASG frequency move shows on the scope trace; the ASG amplitude is the IQ amplitude; a
PID closed through the cable settles on its setpoint; the sampler reads what the outputs put out.
"""
from __future__ import annotations

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import board_address, catalogue
from pymodaq_plugins_pyrpl.hardware.sockets import free_port
from tests.helpers.plugins import default_to_board, move, select_axis, server_client, snap
from tests.helpers.support import ServerProcess
from tests.helpers.waiting import wait_until

IQ = catalogue.MODULES["iq0"].attributes
BANDWIDTH = [f for f in IQ["bandwidth"].options if f > 0]


def plugin_classes() -> list[type]:
    """Every plugin class of the package (imported here, after PyMoDAQ: see default_to_board)."""
    from pymodaq_plugins_pyrpl.daq_move_plugins.daq_move_PyRPL_ASG_TCP import (
        DAQ_Move_PyRPL_ASG_TCP,
    )
    from pymodaq_plugins_pyrpl.daq_move_plugins.daq_move_PyRPL_IQ_TCP import DAQ_Move_PyRPL_IQ_TCP
    from pymodaq_plugins_pyrpl.daq_move_plugins.daq_move_PyRPL_PID_TCP import (
        DAQ_Move_PyRPL_PID_TCP,
    )
    from pymodaq_plugins_pyrpl.daq_viewer_plugins.plugins_0D.daq_0Dviewer_PyRPL_IQ_TCP import (
        DAQ_0DViewer_PyRPL_IQ_TCP,
    )
    from pymodaq_plugins_pyrpl.daq_viewer_plugins.plugins_0D.daq_0Dviewer_PyRPL_Sampler_TCP import (
        DAQ_0DViewer_PyRPL_Sampler_TCP,
    )
    from pymodaq_plugins_pyrpl.daq_viewer_plugins.plugins_1D.daq_1Dviewer_PyRPL_Scope_TCP import (
        DAQ_1DViewer_PyRPL_Scope_TCP,
    )

    return [DAQ_Move_PyRPL_ASG_TCP, DAQ_Move_PyRPL_IQ_TCP, DAQ_Move_PyRPL_PID_TCP,
            DAQ_0DViewer_PyRPL_IQ_TCP, DAQ_0DViewer_PyRPL_Sampler_TCP,
            DAQ_1DViewer_PyRPL_Scope_TCP]


@pytest.fixture(scope="module")
def virtual_board_server(tmp_path_factory: pytest.TempPathFactory):
    """A server running PyRPL against a virtual board with the loopback plant, started by hand
    (the plugins use it and leave it running), stopped after the module."""
    with ServerProcess(tmp_path_factory.mktemp("virtual-board"),
                       ["--hostname", board_address.VIRTUAL, "--plant", "loopback"],
                       startup_timeout=90, token_file=False) as server:
        with server_client(server.port) as observer:
            device = observer.status()["device"]
        assert (device["backend"], device["hostname"]) == ("pyrpl", board_address.VIRTUAL)
        yield server


def reset_modules(port: int) -> None:
    """Every module of the board on ``port`` back to its defaults (outputs off, gains zero,
    integrators emptied): what a test before left on a shared board does not act on the next."""
    with server_client(port) as observer:
        for name, module in catalogue.MODULES.items():
            defaults = module.defaults()
            if defaults:
                observer.lease(name)
                observer.set(name, defaults)
                observer.release(name)


@pytest.fixture(params=["simulated", pytest.param("virtual", marks=pytest.mark.pyrpl)])
def board_port(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The server port the plugins use: a free one, where they auto-start the simulated board; or
    the module's virtual board server's, every plugin class defaulting to the hostname
    ``virtual``, its modules reset."""
    if request.param == "simulated":
        return free_port()
    server = request.getfixturevalue("virtual_board_server")
    default_to_board(monkeypatch, plugin_classes(), server.port, board_address.VIRTUAL)
    reset_modules(server.port)
    return server.port


def test_asg_frequency_is_the_dominant_frequency(qtbot, board_port, make_viewer, make_actuator):
    asg = make_actuator("PyRPL_ASG_TCP", board_port, axis="Amplitude")
    with qtbot.waitSignal(asg.move_done_signal, timeout=10000):
        asg.move_abs(0.5)
    asg.axis_name = "Frequency"
    qtbot.waitUntil(lambda: asg.units == "Hz", timeout=5000)
    viewer = make_viewer("PyRPL_Scope_TCP", board_port, dim="DAQ1D",
                         duration=catalogue.SCOPE_DURATIONS[3])
    for target in (20000.0, 50000.0):
        with qtbot.waitSignal(asg.move_done_signal, timeout=10000) as done:
            asg.move_abs(target)
        frequency = done.args[0].value()
        dwa = snap(qtbot, viewer).get_data_from_dim("Data1D")[0]
        ch1 = dwa.data[0]
        t = dwa.get_axis_from_index(0)[0].get_data()
        spectrum = np.abs(np.fft.rfft(ch1 - ch1.mean()))
        bins = np.fft.rfftfreq(ch1.size, t[1] - t[0])
        assert abs(bins[np.argmax(spectrum)] - frequency) <= bins[1], (target, frequency)


def test_asg_amplitude_is_the_iq_amplitude(qtbot, board_port, make_viewer, make_actuator):
    asg = make_actuator("PyRPL_ASG_TCP", board_port, axis="Frequency")
    with qtbot.waitSignal(asg.move_done_signal, timeout=10000) as done:
        asg.move_abs(10000.0)
    frequency = done.args[0].value()  # on the ASG's 30-bit grid, also on the IQ's 32-bit one
    viewer = make_viewer("PyRPL_IQ_TCP", board_port, frequency=frequency, bandwidth=BANDWIDTH[12])
    asg.axis_name = "Amplitude"
    qtbot.waitUntil(lambda: asg.units == "V", timeout=5000)
    for target in (0.2, 0.6):
        with qtbot.waitSignal(asg.move_done_signal, timeout=10000) as done:
            asg.move_abs(target)
        amplitude = float(snap(qtbot, viewer).get_data_from_name("Lock-in").data[2][0])
        assert amplitude == pytest.approx(done.args[0].value(), rel=0.03)


def sampler_in1(qtbot, sampler) -> float:
    """in1 as the Sampler viewer plugin reads it (one snap)."""
    with qtbot.waitSignal(sampler.grab_done_signal, timeout=10000) as grabbed:
        sampler.snap()
    channels = {label: float(data[0]) for dwa in grabbed.args[0].get_data_from_dim("Data0D")
                for label, data in zip(dwa.labels, dwa.data)}
    return channels["in1"]


def test_pid_setpoint_move_shows_on_the_sampler(qtbot, board_port, make_actuator, make_viewer):
    """pid0 reads in1 and drives out1, the loopback cable closes the loop, and the Sampler viewer
    sees in1 settle on the setpoint."""
    actuator = make_actuator("PyRPL_PID_TCP", board_port, axis="P", input="in1", output_direct="out1")
    sampler = make_viewer("PyRPL_Sampler_TCP", board_port)
    move(qtbot, actuator, -0.1)
    select_axis(qtbot, actuator, "I", "Hz")
    move(qtbot, actuator, -1000.0)
    select_axis(qtbot, actuator, "Setpoint", "V")
    assert abs(sampler_in1(qtbot, sampler)) < 0.05  # locked on setpoint 0 V so far
    applied = move(qtbot, actuator, 0.3)
    assert applied == pytest.approx(0.3, abs=2.0**-13)
    readings: list[float] = []

    def locked() -> bool:
        readings.append(sampler_in1(qtbot, sampler))
        return abs(readings[-1] - 0.3) < 5e-3

    wait_until(locked, 5.0, lambda: f"in1 to reach 0.3 V: last {readings[-5:]}")
    for _ in range(5):  # and it stays locked
        assert locked(), readings[-1]


def test_asg_offsets_are_read_on_the_outputs_and_the_inputs(qtbot, board_port, make_viewer,
                                                           make_actuator):
    """asg0 on out1 and asg1 on out2: the sampler reads each offset on its output and, through
    its cable, on its input."""
    offsets = {}
    for module, output, target in (("asg0", "out1", 0.3), ("asg1", "out2", -0.2)):
        asg = make_actuator("PyRPL_ASG_TCP", board_port, axis="Offset", module=module,
                            output_direct=output)
        offsets[output] = move(qtbot, asg, target)
    viewer = make_viewer("PyRPL_Sampler_TCP", board_port)
    [dwa] = snap(qtbot, viewer).get_data_from_dim("Data0D")
    values = dict(zip(dwa.labels, (float(a[0]) for a in dwa.data)))
    for output, cable_end in (("out1", "in1"), ("out2", "in2")):
        assert values[output] == pytest.approx(offsets[output], abs=2e-3)
        # through the loopback, with noise
        assert values[cable_end] == pytest.approx(offsets[output], abs=1e-2)
