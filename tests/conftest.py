"""Test isolation and shared fixtures.

Everything a test could write outside its temporary folders is redirected at import time, before any
test imports PyMoDAQ or PyRPL: HOME (PyMoDAQ's ~/.pymodaq, PyRPL's ~/pyrpl_user_dir),
PYRPL_USER_DIR, XDG_RUNTIME_DIR, the server runtime folder and PyMoDAQ's system folder
(/etc/.pymodaq, see tests/helpers/isolation/sitecustomize.py). Qt runs offscreen.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

_ISOLATED = Path(tempfile.mkdtemp(prefix="pymodaq_pyrpl_tests_"))
for _name, _sub in (("HOME", "home"), ("PYRPL_USER_DIR", "pyrpl_user_dir"),
                    ("XDG_RUNTIME_DIR", "xdg_runtime"), ("PYMODAQ_PYRPL_RUNTIME_DIR", "runtime"),
                    ("PYMODAQ_PYRPL_TEST_ETC", "etc")):
    (_ISOLATED / _sub).mkdir(mode=0o700)
    os.environ[_name] = str(_ISOLATED / _sub)
os.environ["QT_QPA_PLATFORM"] = "offscreen"
# PyMoDAQ's /etc/.pymodaq goes to the "etc" folder above, in this process and in subprocesses
_SITE = str(Path(__file__).parent / "helpers" / "isolation")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_SITE, os.environ.get("PYTHONPATH")]))
_spec = importlib.util.spec_from_file_location("_pyrpl_test_isolation", f"{_SITE}/sitecustomize.py")
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))

from pymodaq_plugins_pyrpl.hardware.sockets import free_port  # noqa: E402
from tests.helpers.pyrpl_suite_run import SUITE_RUN, unavailable  # noqa: E402
from tests.helpers.support import ServerProcess  # noqa: E402  (after the environment is isolated)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--rp-host", default=None,
                     help="hostname of a real Red Pitaya for the tests marked 'hardware'")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--rp-host"):
        return
    skip = pytest.mark.skip(reason="needs a Red Pitaya: pass --rp-host HOST")
    for item in items:  # the marker, not the keyword: every test in tests/hardware/ has that one
        if item.get_closest_marker("hardware") is not None:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """PyRPL's own suite, a subprocess of about three minutes, starts now if its test is among
    those to run, so that the other tests run beside it."""
    if any(item.get_closest_marker("pyrpl_suite") for item in session.items) \
            and unavailable() is None:
        SUITE_RUN.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    SUITE_RUN.stop()


@pytest.fixture
def rp_host(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--rp-host")


@pytest.fixture
def private_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime folder (server state files, tokens, logs) of this test's own."""
    folder = tmp_path / "runtime"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("PYMODAQ_PYRPL_RUNTIME_DIR", str(folder))
    return folder


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def mock_server(tmp_path: Path):
    """A running ``--mock`` server subprocess with a token file; stopped after the test."""
    with ServerProcess(tmp_path, ["--mock", "--seed", "1"]) as server:
        yield server


class _ControlModules:
    """Initializes control modules for a test and quits them all afterwards (which releases the
    server they auto-started)."""

    def __init__(self, qtbot) -> None:
        self.qtbot = qtbot
        self.modules: list = []

    def init(self, module, group: str, port: int, settings: dict):
        module.settings.child(group, "pyrpl", "server_port").setValue(port)
        for key, value in settings.items():
            module.settings.child(group, key).setValue(value)
        self.modules.append(module)
        with self.qtbot.waitSignal(module.init_signal, timeout=30000) as init:
            module.init_hardware(True)
        assert init.args[0] is True, "initialization failed"
        return module

    def quit_all(self) -> None:
        for module in reversed(self.modules):
            module.quit_fun()


@pytest.fixture
def make_actuator(qtbot):
    """``make_actuator(name, port, axis=None, **settings)``: an initialized DAQ_Move (no UI) with our
    plugin, on the simulated board's server auto-started on ``port``; ``settings`` are top-level
    plugin settings (``actuator_settings/<key>``)."""
    from pymodaq.control_modules.daq_move import DAQ_Move

    modules = _ControlModules(qtbot)

    def make(name: str, port: int, axis: str | None = None, **settings):
        module = DAQ_Move(parent=None, title=f"{name} test")
        module.actuator = name
        if axis is not None:
            module.axis_name = axis
        return modules.init(module, "actuator_settings", port, settings)

    yield make
    modules.quit_all()


@pytest.fixture
def make_viewer(qtbot):
    """``make_viewer(name, port, dim="DAQ0D", **settings)``: an initialized DAQ_Viewer (no UI);
    ``settings`` are top-level plugin settings (``detector_settings/<key>``)."""
    from pymodaq.control_modules.daq_viewer import DAQ_Viewer

    modules = _ControlModules(qtbot)

    def make(name: str, port: int, dim: str = "DAQ0D", **settings):
        module = DAQ_Viewer(parent=None, title=f"{name} test")
        module.daq_type = dim
        module.detector = name
        return modules.init(module, "detector_settings", port, settings)

    yield make
    modules.quit_all()
