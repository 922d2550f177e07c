"""PyrplBackend through real PyRPL code, on PyRPL's fake board (``_FAKE_``) and a virtual board.

PyRPL is never imported in the pytest process (it creates a QApplication and configures logging at
import): ``pyrpl_backend_probe.py`` drives the backend in a subprocess, from one dedicated thread as the
server does, and prints its observations as JSON; the tests assert on them. The module-scoped probe
runs happen once per board (ids ``fake`` and ``virtual``). Fake-board artifacts (random scope noise,
constant sampler and IQ values, garbage filter cutoffs) are tolerated on ``fake`` only: on
``virtual`` the filters quantize like the catalogue, the scope shows the ASG's square wave and the
sampler reads it.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue, errors
from pymodaq_plugins_pyrpl.hardware.backends.pyrpl import PyrplBackend
from pymodaq_plugins_pyrpl.hardware.sockets import free_port
from tests.helpers.scripts import PYRPL_BACKEND_PROBE

pytestmark = pytest.mark.pyrpl



def run_probe(folder: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the probe in an isolated environment; its JSON result. The process must exit with 0."""
    dirs = {name: folder / sub for name, sub in (("HOME", "home"), ("PYRPL_USER_DIR", "pyrpl"),
                                                 ("XDG_RUNTIME_DIR", "xdg"))}
    for path in dirs.values():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REDPITAYA_")}
    environment.update({k: str(v) for k, v in dirs.items()}, QT_QPA_PLATFORM="offscreen")
    environment.update(env or {})
    proc = subprocess.run([sys.executable, str(PYRPL_BACKEND_PROBE), *args], capture_output=True,
                          text=True, timeout=120, env=environment, stdin=subprocess.DEVNULL)
    # exit status 0: also proves close() leaves nothing of Qt for the interpreter to crash on
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE_RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (dirs["HOME"] / "pyrpl_user_dir").exists()
    return json.loads(lines[-1].split(" ", 1)[1])


BOARDS = ("fake", "virtual")
"""The probe's boards: PyRPL's fake board, a virtual board driven over real sockets."""
SQUARE_LEVELS = (-0.4, 0.6)
"""The two levels of the probe's asg1 square wave (amplitude 0.5, offset 0.1) on the scope's ch1."""
LEVEL_TOLERANCE = 2e-3
"""Volts a level may differ on the board: its 14-bit quantization (and the sampler's 8192/8191
scale), with margin."""


@pytest.fixture(scope="module", params=BOARDS)
def full(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Any]:
    return run_probe(tmp_path_factory.mktemp(f"full-{request.param}"), "full", request.param)


@pytest.fixture(scope="module", params=BOARDS)
def priming(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Any]:
    return run_probe(tmp_path_factory.mktemp(f"priming-{request.param}"), "priming",
                     request.param)


def assert_kind(attribute: catalogue.Attribute, value: Any) -> None:
    """``value`` is a plain Python value of the attribute's catalogue kind."""
    if attribute.kind == "bool":
        assert isinstance(value, bool), (attribute.name, value)
    elif attribute.kind == "int":
        assert isinstance(value, int) and not isinstance(value, bool), (attribute.name, value)
    elif attribute.kind == "select":
        assert value in attribute.options, (attribute.name, value)
    elif attribute.kind == "filter":
        assert isinstance(value, list) and 1 <= len(value) <= 4, (attribute.name, value)
        assert all(isinstance(v, float) for v in value), (attribute.name, value)
    else:
        assert isinstance(value, float) and math.isfinite(value), (attribute.name, value)


def assert_applied(attribute: catalogue.Attribute, requested: Any, applied: Any, board: str
                   ) -> None:
    """PyRPL applied the catalogue-quantized value (within one register step)."""
    assert_kind(attribute, applied)
    if attribute.kind in ("bool", "int", "select"):
        assert applied == requested, attribute.name
    elif attribute.kind == "filter" or attribute.name == "acbandwidth":
        # the filters snap to cutoffs computed from FPGA constants, which the fake board gets
        # wrong; a board reports the FPGA's, the catalogue's
        if board != "fake":
            assert applied == requested, attribute.name
    elif attribute.kind == "float":
        step = attribute.step or 1e-9
        assert applied == pytest.approx(requested, abs=step), attribute.name


def near_a_square_level(value: float) -> bool:
    return min(abs(value - level) for level in SQUARE_LEVELS) < LEVEL_TOLERANCE


def test_open_runs_pyrpl_in_the_backend_thread(full: dict[str, Any]) -> None:
    assert full["state_before_open"] == ["error", "not connected"]
    assert full["state_after_open"] == ["ready", None]
    assert full["pyrpl_thread_is_backend_thread"] is True


def test_get_returns_every_attribute_as_plain_values(full: dict[str, Any]) -> None:
    for name, spec in catalogue.MODULES.items():
        values = full["get"][name]
        assert list(values) == list(spec.attributes), name
        for attr_name, value in values.items():
            assert_kind(spec.attributes[attr_name], value)
    # python-side defaults: the waveform cannot be read back from the FPGA
    assert full["get"]["asg0"]["waveform"] == "sin"
    assert full["get"]["scope"]["trace_average"] == 1
    assert full["get"]["scope"]["sampling_time"] == pytest.approx(
        full["get"]["scope"]["duration"] / catalogue.SCOPE_SAMPLES)


def test_set_applies_each_attribute_and_reads_it_back(full: dict[str, Any]) -> None:
    for name, attributes in full["set"].items():
        spec = catalogue.MODULES[name]
        for attr_name, entry in attributes.items():
            assert entry["applied"]["ok"], (name, attr_name, entry["applied"])
            applied = entry["applied"]["value"]
            assert list(applied) == [attr_name]
            assert_applied(spec.attributes[attr_name], entry["requested"], applied[attr_name],
                           full["board"])
            # later settings of the same module did not disturb it
            assert full["get_after_set"][name][attr_name] == applied[attr_name], (name, attr_name)
    assert full["get_after_set"]["scope"]["sampling_time"] == pytest.approx(
        full["get_after_set"]["scope"]["duration"] / catalogue.SCOPE_SAMPLES)


def test_set_several_values_at_once(full: dict[str, Any]) -> None:
    assert full["set_many"]["ok"], full["set_many"]
    applied = full["set_many"]["value"]
    assert applied["trigger_source"] == "immediately" and applied["output_direct"] == "out2"
    assert applied["waveform"] == "square"
    assert applied["frequency"] == pytest.approx(1000.0076, abs=1e-3)
    assert applied["amplitude"] == pytest.approx(0.5)
    assert applied["offset"] == pytest.approx(0.0999756, abs=1e-6)


def test_read_only_attribute_is_refused(full: dict[str, Any]) -> None:
    assert full["set_refused"]["error"] == "InvalidParams"


def test_scope_immediately(full: dict[str, Any]) -> None:
    trace = full["scope"]["immediately"]
    duration = catalogue.SCOPE_DURATIONS[3]
    assert trace["applied"]["duration"] == pytest.approx(duration)
    assert trace["wait"] == pytest.approx(duration)
    assert trace["ready"] is True
    assert trace["ch1"] == ["float64", [catalogue.SCOPE_SAMPLES]]
    assert trace["ch2"] == ["float64", [catalogue.SCOPE_SAMPLES]]
    assert trace["finite"] and trace["max_abs"] <= 1.0
    assert trace["t0"] == 0.0
    assert trace["dt"] == pytest.approx(duration / catalogue.SCOPE_SAMPLES)
    if full["board"] != "fake":  # ch1 is asg1's square wave, one period of it at least
        assert trace["ch1_min"] == pytest.approx(SQUARE_LEVELS[0], abs=LEVEL_TOLERANCE)
        assert trace["ch1_max"] == pytest.approx(SQUARE_LEVELS[1], abs=LEVEL_TOLERANCE)


def test_scope_edge_trigger_time_axis(full: dict[str, Any]) -> None:
    trace = full["scope"]["edge"]
    duration, delay = catalogue.SCOPE_DURATIONS[4], 2e-4
    dt = duration / catalogue.SCOPE_SAMPLES
    assert trace["applied"]["trigger_source"] == "ch1_positive_edge"
    assert trace["dt"] == pytest.approx(dt)
    assert trace["t0"] == pytest.approx(delay - duration / 2)  # PyRPL's scope.times[0]
    post_trigger = (round(delay / dt) + catalogue.SCOPE_SAMPLES // 2) * dt
    assert trace["wait"] == pytest.approx(max(duration, post_trigger))
    assert trace["ch1"] == ["float64", [catalogue.SCOPE_SAMPLES]] and trace["finite"]
    if full["board"] != "fake":  # the square's rising edge through the threshold is at t = 0
        threshold = full["scope"]["source"]["threshold"]
        before, after = trace["ch1_around_t0"][:3], trace["ch1_around_t0"][3:]
        assert max(before) < threshold < min(after), trace["ch1_around_t0"]
        assert all(map(near_a_square_level, before + after)), trace["ch1_around_t0"]


def test_scope_stop_cancels(full: dict[str, Any]) -> None:
    assert full["scope"]["ready_after_stop"] is False


@pytest.mark.parametrize("module", ["iq0", "iq1", "iq2"])
def test_iq_read_every_module(full: dict[str, Any], module: str) -> None:
    result = full["iq"][module]
    assert result["ok"], result
    assert set(result["value"]) == {"i", "q"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in result["value"].values())
    assert result["settings_unchanged"] and result["na_registers_restored"]


def test_iq_read_refuses_other_modules(full: dict[str, Any]) -> None:
    assert full["iq"]["asg0"]["error"] == "InvalidParams"


def test_iq_settle_remaining_after_a_set(full: dict[str, Any]) -> None:
    settle = full["iq_settle"]
    settle_time = catalogue.filter_settle_time(settle["applied"]["bandwidth"])
    assert 0.0 < settle["remaining"] <= settle_time
    assert settle["other_module"]["error"] == "InvalidParams"


def test_sampler_read(full: dict[str, Any]) -> None:
    assert list(full["sampler"]) == list(catalogue.SAMPLER_SIGNALS)
    assert all(isinstance(v, float) and -1.01 <= v <= 1.01 for v in full["sampler"].values())
    if full["board"] != "fake":  # asg1 plays the square wave
        assert near_a_square_level(full["sampler"]["asg1"]), full["sampler"]


REQUEST_BOUND = 1.5 + 0.4 + 1.0
"""Seconds a register access may take on a failing link: the board client's request timeout,
the allowance for its bytes, and a margin for a loaded machine."""


def test_silent_board_makes_calls_fail_in_time_then_the_link_lost(full: dict[str, Any]) -> None:
    loss = full["link_loss"]
    for call in ("first", "second", "third"):
        assert loss[call]["error"] == "DeviceNotReady", call
        assert loss[call]["seconds"] < REQUEST_BOUND, call  # never hangs
    # one missed deadline is not a lost link (a lossy link); silence beyond LINK_SILENCE is
    assert loss["second"]["state"][0] == "lost"
    assert "lost the Red Pitaya" in loss["second"]["state"][1]
    # once lost, calls fail at once without touching the link; maintain() reconnects
    assert loss["third"]["seconds"] < 0.5
    assert "reconnecting" in loss["third"]["message"]


def test_closed_board_connection_does_not_hang(priming: dict[str, Any]) -> None:
    # PyRPL's own client would spin forever on the closed socket; the probe's timeout guards this
    loss = priming["link_loss"]
    assert loss["first"]["error"] == "DeviceNotReady"
    assert loss["first"]["seconds"] < REQUEST_BOUND
    assert loss["first"]["state"][0] == "lost"  # an orderly close is a lost link at once
    assert loss["second"]["error"] == "DeviceNotReady"


def test_close_is_idempotent_and_final(full: dict[str, Any]) -> None:
    assert full["state_after_close"] == ["error", "closed"]
    assert full["get_after_close"]["error"] == "DeviceNotReady"


@pytest.mark.parametrize("board", BOARDS)
def test_close_leaves_the_outputs_running(tmp_path: Path, board: str) -> None:
    # stopping the server must not change the board: a running lock keeps running
    result = run_probe(tmp_path, "closing", board)
    assert result["writes_during_close"] == []
    assert result["memory_unchanged"] and result["registers"] > 0  # not a vacuous comparison


def test_reads_never_write_select_registers(priming: dict[str, Any]) -> None:
    # a previous session's register state survives open() and reading every attribute
    assert priming["after_open"] == priming["preload"]
    assert priming["after_get"] == priming["preload"]
    assert priming["writes_during_get"] == []
    assert priming["asg0"] == {"trigger_source": "immediately", "output_direct": "out1"}
    assert priming["pid0"] == {"input": "in2", "output_direct": "out2"}
    assert priming["iq1"] == {"output_signal": "pfd"}


def test_empty_hostname_refused_without_importing_pyrpl() -> None:
    imported_before = "pyrpl" in sys.modules
    for hostname in ("", "  "):
        backend = PyrplBackend(hostname)
        with pytest.raises(errors.BackendUnavailable, match="--hostname"):
            backend.open()
        assert backend.device_state()[0] == "error"
    assert ("pyrpl" in sys.modules) == imported_before


def test_unreachable_board(tmp_path: Path) -> None:
    closed_port = free_port()  # a local port nobody listens on: ssh is refused at once
    result = run_probe(tmp_path, "open-error", "127.0.0.1",
                       env={"REDPITAYA_SSHPORT": str(closed_port)})
    assert result["error"] == "BackendUnavailable"
    assert "'127.0.0.1'" in result["message"] and "ssh" in result["message"]
    assert "\x1b" not in result["message"]
    assert result["state"][0] == "error"
    assert result["children"] == []


@pytest.mark.parametrize("hostname", [pytest.param("_FAKE_", id="fake"),
                                      pytest.param("virtual", id="virtual")])
def test_pyrpl_import_failure(tmp_path: Path, hostname: str) -> None:
    # with ``virtual``, PyRPL is imported while the board's process starts: that one is stopped
    fake = tmp_path / "broken" / "pyrpl"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated broken PyRPL install')\n")
    pythonpath = os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))
    result = run_probe(tmp_path, "open-error", hostname, env={"PYTHONPATH": pythonpath})
    assert result["error"] == "BackendUnavailable"
    assert "simulated broken PyRPL install" in result["message"]
    assert "install-pyrpl" in result["message"]
    assert result["children"] == []
