"""The sampler viewer through PyMoDAQ's real DAQ_Viewer, against an auto-started simulated board."""
from __future__ import annotations


from tests.helpers.plugins import (
    continuous_frames,
    quit_stops_server,
    server_client,
    set_setting,
    snap,
)

NAME = "PyRPL_Sampler_TCP"


def test_snap_channels_and_quit(qtbot, port, make_viewer):
    viewer = make_viewer(NAME, port)
    [dwa] = snap(qtbot, viewer).get_data_from_dim("Data0D")
    assert dwa.name == "Sampler" and dwa.units == "V"
    assert dwa.labels == ["in1", "in2", "out1", "out2"]
    assert [a.shape for a in dwa.data] == [(1,)] * 4

    set_setting(qtbot, viewer, ("signals", "in2"), False)
    set_setting(qtbot, viewer, ("signals", "asg0"), True)
    [dwa] = snap(qtbot, viewer).get_data_from_dim("Data0D")
    assert dwa.labels == ["in1", "out1", "out2", "asg0"]
    # Naverage: averaged in the plugin's background thread, one frame per snap
    viewer.settings.child("main_settings", "Naverage").setValue(3)
    frames = []
    viewer.grab_done_signal.connect(frames.append)
    dte = snap(qtbot, viewer)
    assert frames == [dte] and dte.get_data_from_dim("Data0D")[0].labels[-1] == "asg0"
    with server_client(port) as observer:  # read-only: no lease
        assert all(c["leases"] == [] for c in observer.status()["clients"])
    quit_stops_server(qtbot, viewer, port)


def test_no_signal_selected_is_a_status_message(qtbot, port, make_viewer):
    viewer = make_viewer(NAME, port)
    for signal in ("in1", "in2", "out1", "out2"):
        set_setting(qtbot, viewer, ("signals", signal), False)
    messages = []
    viewer.status_sig.connect(messages.append)
    viewer.snap()
    qtbot.waitUntil(lambda: any("no signal selected" in m for m in messages), timeout=5000)
    set_setting(qtbot, viewer, ("signals", "out1"), True)
    assert snap(qtbot, viewer).get_data_from_dim("Data0D")[0].labels == ["out1"]


def test_continuous_grab_and_stop(qtbot, port, make_viewer):
    continuous_frames(qtbot, make_viewer(NAME, port))


def test_changing_the_server_port_connects_again(qtbot, port, make_viewer):
    """A connection setting changed on an initialized module applies: the plugin connects to
    (here: starts) the server on the new port and leaves the old one, which stops."""
    from pymodaq_plugins_pyrpl.hardware import runtime
    from pymodaq_plugins_pyrpl.hardware.sockets import free_port

    viewer = make_viewer(NAME, port)
    snap(qtbot, viewer)
    old_pid = runtime.read_state(port).pid
    new_port = free_port()
    viewer.settings.child("detector_settings", "pyrpl", "server_port").setValue(new_port)
    qtbot.waitUntil(lambda: runtime.read_live_state(new_port) is not None, timeout=30000)
    qtbot.waitUntil(lambda: not runtime.pid_alive(old_pid), timeout=10000)
    [dwa] = snap(qtbot, viewer).get_data_from_dim("Data0D")
    assert dwa.labels == ["in1", "in2", "out1", "out2"]
    with server_client(new_port) as observer:
        assert any(c["client"].startswith("PyMoDAQ") for c in observer.status()["clients"])
    quit_stops_server(qtbot, viewer, new_port)
