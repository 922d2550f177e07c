"""The shipped PyMoDAQ experiments: their content, ``pymodaq-pyrpl experiments``, and each one loaded
into a headless PyMoDAQ Dashboard (snap every detector, move every actuator, close, server stops).

PyMoDAQ's folders are redirected by tests/conftest.py: the experiments folder is under
``$PYMODAQ_PYRPL_TEST_ETC/.pymodaq`` (PyMoDAQ's "system" folder, /etc/.pymodaq for root otherwise).
"""
from __future__ import annotations

import importlib
import json
import os
import pwd
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymodaq_gui.parameter import Parameter, ioxml

from pymodaq_plugins_pyrpl import cli, experiment_states
from pymodaq_plugins_pyrpl.hardware import catalogue, runtime
from tests.helpers.plugins import default_to_board
from tests.helpers.scripts import DASHBOARD_QUIT
from tests.helpers.waiting import wait_until

SHIPPED = sorted(cli.EXPERIMENTS.glob("*.xml"))
NAMES = [path.stem for path in SHIPPED]
MODULES = {"ASG": ("actuator", None, "PyRPL_ASG_TCP"), "PID": ("actuator", None, "PyRPL_PID_TCP"),
           "Scope": ("detector", "DAQ1D", "PyRPL_Scope_TCP"),
           "IQ": ("detector", "DAQ0D", "PyRPL_IQ_TCP"),
           "Sampler": ("detector", "DAQ0D", "PyRPL_Sampler_TCP")}
"""module name → (kind, dim, plugin) of pyrpl_demo and pyrpl_hardware_template."""
RESONANCE = {"IQ frequency": ("actuator", None, "PyRPL_IQ_TCP"),
             "IQ": ("detector", "DAQ0D", "PyRPL_IQ_TCP"),
             "Network analyzer": ("detector", "DAQ1D", "PyRPL_NA_TCP")}
"""module name → (kind, dim, plugin) of pyrpl_resonance: one IQ module, moved and read, and the
network analyzer."""
CONTENT = {"pyrpl_demo": MODULES, "pyrpl_hardware_template": MODULES,
           "pyrpl_resonance": RESONANCE}
"""The modules of each shipped experiment."""
PLUGINS = {m for modules in CONTENT.values() for m in modules.values()}


@pytest.fixture(scope="module", autouse=True)
def pymodaq_theme(qapp):
    """The Dashboard's UI needs a theme (PyMoDAQ's mkQApp sets one, pytest-qt's QApplication not)."""
    from pymodaq_gui.qt_utils import apply_styling_rules

    apply_styling_rules(qapp)


def experiments_folder() -> Path:
    from pymodaq.utils.config import get_set_experiment_path

    return Path(get_set_experiment_path())


def experiment_modules(path: Path) -> dict[str, tuple[str, str | None, str, str, int]]:
    """name → (kind, dim, plugin, controller status, controller ID), as PyMoDAQ reads the file."""
    settings = Parameter.create(name="Preset", type="group",
                                children=ioxml.XML_file_to_parameter(path))
    modules = {}
    for kind in ("actuator", "detector"):
        for child in settings.child(kind).children():
            dim = child["info", "dim"] if kind == "detector" else None
            modules[child["name"]] = (kind, dim, child["info", "type"],
                                      child["controller", "controller_status"],
                                      child["controller", "controller_ID"])
    return modules


def plugin_class(kind: str, dim: str | None, plugin: str):
    """The plugin class, or None if its module is not there (yet)."""
    if kind == "actuator":
        module, name = f"daq_move_plugins.daq_move_{plugin}", f"DAQ_Move_{plugin}"
    else:
        d = dim[3:]
        module = f"daq_viewer_plugins.plugins_{d}.daq_{d}viewer_{plugin}"
        name = f"DAQ_{d}Viewer_{plugin}"
    try:
        return getattr(importlib.import_module(f"pymodaq_plugins_pyrpl.{module}"), name)
    except ModuleNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------
# content


def test_shipped_experiments_hold_their_instruments() -> None:
    assert NAMES == sorted(CONTENT)
    for path in SHIPPED:
        modules = experiment_modules(path)
        assert {name: m[:3] for name, m in modules.items()} == CONTENT[path.stem], path.name
        # every module is a Master of its own (they share one connection anyway)
        assert {m[3] for m in modules.values()} == {"Master"}
        assert len({m[4] for m in modules.values()}) == len(modules)
    template = SHIPPED[1].read_text()
    assert "[board]" in template and 'hostname = "' in template and "config_pyrpl.toml" in template


def test_experiments_name_installed_plugins() -> None:
    from pymodaq.control_modules.instruments import ACTUATOR_NAMES, DET_TYPES

    missing = []
    for kind, dim, plugin in PLUGINS:
        known = ACTUATOR_NAMES if kind == "actuator" else [p["name"] for p in DET_TYPES[dim]]
        if plugin not in known:
            missing.append(plugin)
    actuators = [m[2] for m in PLUGINS if m[0] == "actuator"]
    assert not set(actuators) & set(missing)
    if missing:
        pytest.xfail(f"viewer plugins not there yet: {missing}")


# ------------------------------------------------------------------------------------------------
# pymodaq-pyrpl experiments


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``pymodaq-pyrpl experiments ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        status = cli.main(["experiments", *args])
    except SystemExit as exc:  # argparse usage errors
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_installs_into_the_isolated_pymodaq_folder(capsys) -> None:
    folder = experiments_folder()
    isolated = Path(os.environ["PYMODAQ_PYRPL_TEST_ETC"]) / ".pymodaq" / "experiments"
    assert folder == isolated
    real = [Path("/etc/.pymodaq/experiments"),
            Path(pwd.getpwuid(os.getuid()).pw_dir) / ".pymodaq" / "experiments"]
    already = {p: {n for n in NAMES if (p / f"{n}.xml").exists()} for p in real}
    for name in NAMES:
        (folder / f"{name}.xml").unlink(missing_ok=True)
    states = {name: state_path(name) for name in experiment_states.STATES}
    # the demo was loaded before its state was installed: PyMoDAQ made an empty default state
    states["pyrpl_demo"].write_bytes(empty_state())
    states["pyrpl_resonance"].unlink(missing_ok=True)

    status, out, _ = run_cli(capsys, "list")
    assert status == 0 and str(folder) in out
    assert all(f"{name}  " in out for name in NAMES) and out.count("not installed") == len(NAMES)

    # the console script, in a process of its own (same isolation through the environment)
    first = subprocess.run([sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "experiments",
                            "install"], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    for path in SHIPPED:
        assert (folder / path.name).read_bytes() == path.read_bytes()
        assert str(folder / path.name) in first.stdout
    for name, state in states.items():  # PyMoDAQ's empty default replaced by the shipped one
        modules = {n: kind for n, (kind, _, _) in CONTENT[name].items()}
        assert state.read_bytes() == experiment_states.state_bytes(name, modules)
        assert str(state) in first.stdout
    assert "replaced PyMoDAQ's empty" in first.stdout
    assert "not installed" not in run_cli(capsys, "list")[1]
    status, out, _ = run_cli(capsys, "install")
    assert status == 0 and out.count("already installed") == len(NAMES) + len(states)

    # a state the user changed is kept unless --force, like an experiment
    shipped_state = states["pyrpl_resonance"].read_bytes()
    states["pyrpl_resonance"].write_bytes(shipped_state[:-10])
    status, out, err = run_cli(capsys, "install")
    assert status == 1 and "pyrpl_resonance" in err and "default state" in out
    assert states["pyrpl_resonance"].read_bytes() == shipped_state[:-10]
    assert run_cli(capsys, "install", "--force")[0] == 0
    assert states["pyrpl_resonance"].read_bytes() == shipped_state

    # a user's change is kept unless --force
    demo = folder / "pyrpl_demo.xml"
    demo.write_text(demo.read_text().replace(">ASG<", ">My generator<"))
    status, out, err = run_cli(capsys, "install")
    assert status == 1 and "--force" in out and "pyrpl_demo" in err
    assert ">My generator<" in demo.read_text()
    assert "modified" in run_cli(capsys, "list")[1]
    status, out, _ = run_cli(capsys, "install", "--force")
    assert status == 0 and "replaced" in out
    assert demo.read_bytes() == SHIPPED[0].read_bytes()

    assert run_cli(capsys)[0] == 2  # no action
    for path in real:  # nothing written outside the test's folders
        assert {n for n in NAMES if (path / f"{n}.xml").exists()} == already[path]


def state_path(name: str) -> Path:
    """Where PyMoDAQ reads the default state of the experiment ``name``."""
    from pymodaq.utils.config import get_set_state_path

    return Path(get_set_state_path(name)) / f"{experiment_states.STATE_NAME}.state"


def empty_state() -> bytes:
    """A state without steps, as PyMoDAQ's StateManager writes its default one."""
    from serializall import SerializableFactory

    serialize = SerializableFactory().get_apply_serializer
    return serialize(False) + serialize(True)


# ------------------------------------------------------------------------------------------------
# headless Dashboard


@pytest.fixture
def dashboard_port(port: int, monkeypatch: pytest.MonkeyPatch):
    """Every PyRPL plugin class defaults to ``port`` (an experiment stores no plugin settings; the
    default normally comes from config_pyrpl.toml) and to the simulated board."""
    classes = (plugin_class(kind, dim, plugin) for kind, dim, plugin in PLUGINS)
    default_to_board(monkeypatch, [cls for cls in classes if cls is not None], port)
    return port


def install_for_dashboard(name: str) -> str:
    """Install the shipped experiment (minus plugins that are not there yet); its entry name."""
    shipped = cli.EXPERIMENTS / f"{name}.xml"
    modules = CONTENT[name]
    present = {n for n, (kind, dim, plugin) in modules.items() if plugin_class(kind, dim, plugin)}
    if present == set(modules):
        (experiments_folder() / shipped.name).write_bytes(shipped.read_bytes())
        install_default_state(name)
        return name
    warnings.warn(f"loading {name} without {sorted(set(modules) - present)}: plugins missing")
    settings = Parameter.create(name="Preset", type="group",
                                children=ioxml.XML_file_to_parameter(shipped))
    for kind in ("actuator", "detector"):
        for child in settings.child(kind).children():
            if child["name"] not in present:
                settings.child(kind).removeChild(child)
    ioxml.parameter_to_xml_file(settings, experiments_folder() / f"{name}_available.xml")
    return f"{name}_available"


def install_default_state(name: str) -> None:
    """Install the experiment's default state, as ``pymodaq-pyrpl experiments install`` does."""
    if name in experiment_states.STATES:
        modules = {n: kind for n, (kind, _, _) in CONTENT[name].items()}
        state_path(name).write_bytes(experiment_states.state_bytes(name, modules))


def check_default_state(name: str, dashboard, first_frames: dict, port: int) -> None:
    """What the experiment's default state did, seen in the first frame of each detector."""
    if name == "pyrpl_demo":  # the ASG's sine on the scope's in1 at the first grab
        (scope,) = first_frames["Scope"].get_data_from_dim("Data1D")
        in1 = scope.data[0]
        dt = scope.axes[0].scaling
        spectrum = np.abs(np.fft.rfft(in1 - in1.mean()))
        peak = np.fft.rfftfreq(in1.size, dt)[int(np.argmax(spectrum))]
        assert peak == pytest.approx(experiment_states.ASG_DEMO_FREQUENCY, rel=0.15)
        assert (in1.max() - in1.min()) / 2 == pytest.approx(experiment_states.ASG_DEMO_AMPLITUDE,
                                                            rel=0.1)
        asg = dashboard.modules_manager.get_mod_from_name("ASG", "actuator")
        assert asg.axis_name == "Frequency" and asg.units == "Hz"
        assert asg.current_value.value() == pytest.approx(experiment_states.ASG_DEMO_FREQUENCY,
                                                          rel=1e-3)
    elif name == "pyrpl_resonance":  # the resonator plant, excited by the IQ
        assert runtime.read_live_state(port).plant.startswith("resonator:f0=100000,q=30,")
        iq = dashboard.modules_manager.get_mod_from_name("IQ", "detector")
        assert iq.settings["detector_settings", "amplitude"] == pytest.approx(
            experiment_states.RESONANCE_EXCITATION, abs=1e-4)  # as applied (quantized)
        assert iq.settings["detector_settings", "output_direct"] == "out1"
        na = dashboard.modules_manager.get_mod_from_name("Network analyzer", "detector")
        for name, value in experiment_states.RESONANCE_SWEEP.items():
            assert na.settings["detector_settings", name] == pytest.approx(value, rel=1e-3), name
        (magnitude, *_) = first_frames["Network analyzer"].get_data_from_dim("Data1D")
        frequencies = magnitude.axes[0].get_data()
        peak = frequencies[int(np.argmax(magnitude.data[0]))]
        assert peak == pytest.approx(100e3, rel=0.01)  # the resonator's f0


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_loads_the_experiment_and_drives_every_module(qtbot, dashboard_port, name):
    from pymodaq.dashboard import create_load_dashboard
    from qtpy import QtWidgets

    entry = install_for_dashboard(name)
    shared_ui, dashboard = create_load_dashboard(show_dashboard=False)
    server_pid = None
    try:
        manager = dashboard.experiment_manager
        assert entry in manager.entries
        manager.entry = entry
        with qtbot.waitSignal(manager.applied_entry, timeout=60000):
            manager.execute_entry(experiments_folder() / f"{entry}.xml")
        modules = dashboard.actuators_modules + dashboard.detector_modules
        assert modules and all(m.initialized_state for m in modules)
        state = runtime.read_live_state(dashboard_port)
        assert state is not None and state.backend == "mock"
        server_pid = state.pid

        first_frames = {}
        for det in dashboard.detector_modules:
            with qtbot.waitSignal(det.grab_done_signal, timeout=15000) as grabbed:
                det.snap()
            first_frames[det.title] = grabbed.args[0]
            dim = CONTENT[name][det.title][1].replace("DAQ", "Data")
            data = grabbed.args[0].get_data_from_dim(dim)
            assert len(data) >= 1 and data[0].data[0].size > 0, det.title
            if det.title == "Network analyzer":
                assert data[0].data[0].size == experiment_states.RESONANCE_SWEEP["points"]
            elif dim == "Data1D":
                assert data[0].data[0].size == catalogue.SCOPE_SAMPLES
        check_default_state(name, dashboard, first_frames, dashboard_port)

        targets = {"ASG": (2000.0, pytest.approx(catalogue.MODULES["asg0"].attributes[
                       "frequency"].validate(2000.0))),  # pyrpl_demo's state put it at 1 kHz
                   "PID": (0.125, 0.125),  # default axes: Frequency, Setpoint, Frequency
                   "IQ frequency": (1e5, pytest.approx(catalogue.MODULES["iq0"].attributes[
                       "frequency"].validate(1e5)))}
        for act in dashboard.actuators_modules:
            target, expected = targets[act.title]
            with qtbot.waitSignal(act.move_done_signal, timeout=10000) as done:
                act.move_abs(target)
            assert done.args[0].value() == expected, act.title
    finally:
        dashboard.quit_fun()
        for widget in (shared_ui.parent, dashboard.tree):
            widget.close()
            widget.deleteLater()
        QtWidgets.QApplication.processEvents()
    # the last module gone, the auto-started server stops
    qtbot.waitUntil(lambda: not runtime.pid_alive(server_pid), timeout=10000)


QUIT_SCENARIOS = (["Scope"], ["IQ"], ["Sampler"], ["Scope", "IQ", "Sampler"])
"""Viewers of pyrpl_demo grabbing continuously when the Dashboard quits, one Dashboard each."""


def _stages_and_end(stderr: bytes | str | None) -> str:
    """The stages dashboard_quit.py announced on ``stderr``, then the end of it (a stack dump)."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
    stages = [line for line in text.splitlines() if line.startswith("STAGE ")]
    return "\n".join(stages) + "\n...\n" + text[-8000:]


def test_quitting_the_dashboard_while_viewers_grab():
    """Quitting a headless Dashboard while our viewers grab continuously (each viewer alone, then
    all three): every worker thread ends by itself (PyMoDAQ terminates a worker still busy after
    5 s, and a terminated worker can freeze the process for good), and the auto-started server
    stops. Run in a subprocess (tests/helpers/scripts/dashboard_quit.py), so a freeze fails the
    test instead of hanging the suite; the failure shows the script's stderr, where it names each
    stage as it begins and dumps the stacks of a stage frozen for its STALL_S. How long each quit
    took is printed (a figure, not asserted)."""
    from pymodaq_plugins_pyrpl.hardware.sockets import free_port

    args = [str(DASHBOARD_QUIT)]
    for detectors in QUIT_SCENARIOS:
        args += [str(free_port()), ",".join(detectors)]
    try:
        run = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=240,
                             check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"no end within {exc.timeout} s; stdout: {exc.stdout!r}; stderr:\n"
                    + _stages_and_end(exc.stderr))
    assert run.returncode == 0, run.stdout + _stages_and_end(run.stderr)
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [r["detectors"] for r in results] == list(QUIT_SCENARIOS)
    for result in results:
        print(f"quit with {result['detectors']} grabbing: {result['quit_s']:.2f} s")
        assert result["terminated"] == [], result
        wait_until(lambda: not runtime.pid_alive(result["server_pid"]), 10,
                   f"the server to stop: {result}")
