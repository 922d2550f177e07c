"""What the plugins show of the board's state (lost, ready again, restarted, taken) and how
Initialize again takes a taken board back: PyMoDAQ's real DAQ_Move with the ASG plugin, headless,
connected with a token to the package's server serving a board whose link the test scripts
(tests/helpers/scripted_link.py)."""
from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator

import pytest

from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend
from pymodaq_plugins_pyrpl.hardware.client.device import local_time
from pymodaq_plugins_pyrpl.plugin_support import board_name, device_problem
from tests.helpers.plugins import move
from tests.helpers.scripted_link import InProcessServer, ScriptedLinkBackend

TAKEN = ("another program took the Red Pitaya at 127.0.0.1 (its client at 10.0.0.5:40000); "
         "Initialize again to take it back")
RESTARTED = "2026-12-06T16:00:00.000000+00:00"
TITLES = itertools.count(1)
"""Numbers the actuators' titles: each test's module has its own (PyMoDAQ's worker logger)."""


@pytest.fixture
def board() -> ScriptedLinkBackend:
    return ScriptedLinkBackend()


@pytest.fixture
def server(board: ScriptedLinkBackend) -> Iterator[InProcessServer]:
    with InProcessServer(board) as server:
        yield server


@pytest.fixture
def actuator(qtbot, server: InProcessServer, board: ScriptedLinkBackend):
    """The ASG actuator initialized on the scripted board; its status messages in
    ``actuator.messages``."""
    with initialized_actuator(qtbot, server, board) as actuator:
        yield actuator


@contextlib.contextmanager
def initialized_actuator(qtbot, server: InProcessServer, board: ScriptedLinkBackend,
                         **settings: object) -> Iterator[object]:
    """The ASG actuator, its plugin ``settings`` given, initialized on the scripted board (quit
    at the end); its status messages in ``actuator.messages``."""
    from pymodaq.control_modules.daq_move import DAQ_Move

    actuator = DAQ_Move(parent=None, title=f"ASG board states {next(TITLES)}")
    actuator.actuator = "PyRPL_ASG_TCP"
    actuator.messages = []
    actuator.status_sig.connect(actuator.messages.append)
    for name, value in (("server_ip", "127.0.0.1"), ("server_port", server.port),
                        ("token", server.token), ("hostname", board.hostname),
                        ("ssh_port", board.ssh_port), ("board_port", board.board_port)):
        actuator.settings.child("actuator_settings", "pyrpl", name).setValue(value)
    for name, value in settings.items():
        actuator.settings.child("actuator_settings", name).setValue(value)
    try:
        with qtbot.waitSignal(actuator.init_signal, timeout=30000) as init:
            actuator.init_hardware(True)
        assert init.args[0] is True
        yield actuator
    finally:
        actuator.quit_fun()


def setting(actuator, *path: str):
    return actuator.settings[("actuator_settings", *path)]


def lost(attempt: int) -> str:
    """The PyRPL backend's reason of a lost board."""
    return (f"lost the Red Pitaya at 127.0.0.1 (no answer for 3.0 s); reconnecting (attempt "
            f"{attempt})")


def test_a_lost_board_is_the_problem_until_it_is_back_and_a_restart_is_told(
        qtbot, actuator, board: ScriptedLinkBackend) -> None:
    board.script("lost", lost(1), attempts=1)
    qtbot.waitUntil(lambda: setting(actuator, "problem") == lost(1), timeout=10000)
    assert setting(actuator, "pyrpl", "state") == f"lost: {lost(1)}"
    board.script("lost", lost(2), attempts=2)
    qtbot.waitUntil(lambda: setting(actuator, "problem") == lost(2), timeout=10000)
    board.script("ready", None, attempts=0, board_restarted_at=RESTARTED)
    restarted = (f"the Red Pitaya at 127.0.0.1 restarted at {local_time(RESTARTED)}; the server "
                 "restored its settings")
    qtbot.waitUntil(lambda: restarted in actuator.messages, timeout=10000)
    assert setting(actuator, "problem") == ""
    assert setting(actuator, "pyrpl", "state") == "ready"
    back = actuator.messages.index("the Red Pitaya at 127.0.0.1 is back")
    assert actuator.messages.index(lost(1)) < back < actuator.messages.index(restarted)
    assert move(qtbot, actuator, 1000.0) == pytest.approx(1000.00761449337)


@pytest.mark.parametrize("device, problem", [
    ({"state": "lost", "reason": None, "attempts": 3},
     "lost the Red Pitaya at rp.local; reconnecting (attempt 3)"),
    ({"state": "taken", "reason": None},
     "another program took the Red Pitaya at rp.local; Initialize again to take it back"),
    ({"state": "error", "reason": "wrong ssh password"}, "wrong ssh password"),
    ({"state": "ready", "reason": None}, None)])
def test_without_a_reason_the_plugins_say_what_the_state_means(device, problem) -> None:
    assert device_problem(board_name({"hostname": "rp.local"}), device) == problem


def test_a_taken_board_is_the_problem_and_initialize_again_takes_it_back(
        qtbot, actuator, board: ScriptedLinkBackend) -> None:
    board.script("taken", TAKEN, other="10.0.0.5:40000")
    qtbot.waitUntil(lambda: setting(actuator, "problem") == TAKEN, timeout=10000)
    assert board.takes == 0  # nobody takes the board back behind the user's back
    actuator.init_hardware(False)
    with qtbot.waitSignal(actuator.init_signal, timeout=30000) as init:
        actuator.init_hardware(True)
    assert init.args[0] is True and board.takes == 1
    assert any("taking the Red Pitaya at 127.0.0.1 back from the other program (10.0.0.5:40000)"
               in m for m in actuator.messages)
    assert setting(actuator, "pyrpl", "state") == "ready"
    qtbot.waitUntil(lambda: setting(actuator, "problem") == "", timeout=5000)
    assert move(qtbot, actuator, 2000.0) == pytest.approx(2000.0, abs=0.2)


class ErrorRecords(logging.Handler):
    """The records of level ERROR and above logged while
    installed (a context manager)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorRecords:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)


def test_the_refresh_poll_of_a_lost_board_logs_one_error_per_outage(
        qtbot, actuator, board: ScriptedLinkBackend) -> None:
    values = []
    actuator.current_value_signal.connect(values.append)
    with ErrorRecords() as logged:

        def polls(count: int) -> None:
            """``count`` refresh polls as PyMoDAQ's timer makes them; returns once as many polls
            have logged an error or reported a value (PyMoDAQ's own polls count too: whichever
            poll meets an outage first logs its one error)."""
            start = len(values) + len(logged.records)
            for _ in range(count):
                actuator.get_actuator_value()
            qtbot.waitUntil(lambda: len(values) + len(logged.records) - start >= count,
                            timeout=10000)

        board.script("lost", lost(1), attempts=1)
        qtbot.waitUntil(lambda: setting(actuator, "problem") == lost(1), timeout=10000)
        polls(4)
        assert len(logged.records) == 1
        assert setting(actuator, "problem") != ""
        board.script("ready", None, attempts=0)
        polls(1)
        qtbot.waitUntil(lambda: setting(actuator, "problem") == "", timeout=10000)
        assert len(logged.records) == 1
        board.script("lost", lost(1), attempts=1)  # a new outage is reported again
        qtbot.waitUntil(lambda: setting(actuator, "problem") == lost(1), timeout=10000)
        polls(3)
        assert len(logged.records) == 2


def on_board(board: ScriptedLinkBackend, module: str, name: str) -> object:
    """The value of an attribute in the simulated board itself (not through the link)."""
    return SimulatorBackend.get(board, module, [name])[name]


def test_settings_a_lost_board_refused_at_initialization_are_sent_once_it_is_ready(
        qtbot, server: InProcessServer, board: ScriptedLinkBackend) -> None:
    board.script("lost", lost(1), attempts=1)
    with initialized_actuator(qtbot, server, board, waveform="square") as actuator:
        qtbot.waitUntil(lambda: setting(actuator, "problem").startswith(
            "asg0: settings not applied yet"), timeout=10000)
        assert on_board(board, "asg0", "waveform") == "sin"
        board.script("ready", None, attempts=0)
        qtbot.waitUntil(lambda: on_board(board, "asg0", "waveform") == "square", timeout=10000)
        qtbot.waitUntil(lambda: setting(actuator, "problem") == "", timeout=10000)
        # the problem is cleared on the worker thread, the status message comes after it through
        # a queued signal
        qtbot.waitUntil(lambda: "asg0: settings applied again" in actuator.messages,
                        timeout=10000)


def test_a_plain_recovery_of_the_same_board_session_sends_no_setting(
        qtbot, actuator, board: ScriptedLinkBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    sets = []
    original = board.set
    monkeypatch.setattr(board, "set", lambda module, values: (sets.append(module),
                                                              original(module, values))[1])
    board.script("lost", lost(1), attempts=1)
    qtbot.waitUntil(lambda: setting(actuator, "problem") == lost(1), timeout=10000)
    board.script("ready", None, attempts=0)
    qtbot.waitUntil(lambda: setting(actuator, "problem") == "", timeout=10000)
    with qtbot.waitSignal(actuator.current_value_signal, timeout=10000):
        actuator.get_actuator_value()  # after the plugin handled the board's return
    assert sets == []
