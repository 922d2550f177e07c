"""The server with the PyRPL backend, as a subprocess, against PyRPL's own fake board (``_FAKE_``)
and a virtual board it starts (``virtual``): the module-scoped server runs once per board."""
from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from tests.helpers.support import ServerProcess, acquire_while_scope_settings_change

pytestmark = pytest.mark.pyrpl


HOSTNAMES = [pytest.param("_FAKE_", id="fake"), pytest.param("virtual", id="virtual")]
"""PyRPL's fake board; a virtual board the server starts and PyRPL drives over real sockets."""


@pytest.fixture(scope="module", params=HOSTNAMES)
def hostname(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def pyrpl_server(hostname: str, tmp_path_factory: pytest.TempPathFactory):
    with ServerProcess(tmp_path_factory.mktemp("pyrpl"), ["--hostname", hostname],
                       startup_timeout=60) as server:
        assert server.ready_line, server.log
        yield server


def test_hello_reports_the_pyrpl_backend(pyrpl_server: ServerProcess, hostname: str) -> None:
    with pyrpl_server.client() as c:
        status = c.call("status")
        assert status["device"]["backend"] == "pyrpl"
        assert status["device"]["hostname"] == hostname
        assert status["device"]["state"] == "ready"


def test_every_module_reads_and_sets(pyrpl_server: ServerProcess) -> None:
    with pyrpl_server.client() as c:
        catalogue = c.call("describe")["modules"]
        for module, spec in catalogue.items():
            values = c.call("get", module=module)
            assert set(values) == set(spec["attributes"]), module
        applied = c.call("set", module="asg0", values={"frequency": 1000, "amplitude": 0.5,
                                                        "waveform": "square",
                                                        "output_direct": "out1"})
        assert applied["frequency"] == pytest.approx(1000.0076, abs=1e-3)
        assert applied["waveform"] == "square" and applied["output_direct"] == "out1"
        # the integrator paused before ival is preset (catalogue order): on a board it runs
        pid = c.call("set", module="pid0", values={"setpoint": 0.1, "p": 0.5, "i": 100,
                                                    "input": "in2", "pause_gains": "i",
                                                    "paused": True, "ival": 0.25})
        assert pid["setpoint"] == pytest.approx(0.0999756) and pid["input"] == "in2"
        assert pid["ival"] == pytest.approx(0.25)
        assert c.call("get", module="pid0", names=["ival"])["ival"] == pytest.approx(0.25)
        c.call("set", module="pid0", values={"paused": False, "i": 0, "ival": 0})


def test_acquisitions_through_real_pyrpl(pyrpl_server: ServerProcess, hostname: str) -> None:
    """asg0 plays a 50 kHz sine of 0.4 V on out1; the scope shows it on in1 (the virtual board's
    loopback) and asg0 (PyRPL's fake board shows random noise)."""
    with pyrpl_server.client() as c:
        c.call("set", module="asg0", values={"waveform": "sin", "frequency": 50e3,
                                             "amplitude": 0.4, "offset": 0.0,
                                             "cycles_per_burst": 0, "output_direct": "out1",
                                             "trigger_source": "immediately"})
        c.call("set", module="scope", values={"duration": 0.001, "trigger_source": "immediately",
                                              "input1": "in1", "input2": "asg0"})
        trace = c.call("acquire", module="scope", timeout=10)
        c.call("set", module="asg0", values={"output_direct": "off"})
        assert trace["ch1"].shape == (16384,) and trace["ch2"].shape == (16384,)
        assert trace["dt"] == pytest.approx(0.001048576 / 16384)
        if hostname != "_FAKE_":
            for channel in ("ch1", "ch2"):  # 50 periods of the sine: rms amplitude / sqrt(2)
                assert np.std(trace[channel]) == pytest.approx(0.4 / 2**0.5, abs=0.01), channel
                assert np.abs(trace[channel]).max() == pytest.approx(0.4, abs=0.02), channel
        for iq in ("iq0", "iq1", "iq2"):
            assert set(c.call("acquire", module=iq)) >= {"i", "q"}
        sampler = c.call("acquire", module="sampler")
        assert set(sampler) >= {"in1", "in2", "out1", "out2"}


def test_unreachable_board_exits_non_zero(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, ["--hostname", ""], startup_timeout=60)
    assert server.ready_line == ""
    assert server.proc.wait(30) == 2


def test_acquire_timeout_holds_while_settings_keep_changing(pyrpl_server: ServerProcess) -> None:
    """Short traces (no wait on the event loop) restarted by settings changes every 60 ms: the
    acquisition still ends at its timeout."""
    with pyrpl_server.client() as c:
        c.call("set", module="scope", values={"duration": 0.001, "trace_average": 50,
                                              "trigger_source": "immediately"})
    reply, elapsed, changes = acquire_while_scope_settings_change(pyrpl_server, timeout=2.0,
                                                                  period=0.06)
    with pyrpl_server.client() as c:
        c.call("set", module="scope", values={"trace_average": 1})
    assert changes > 5
    assert reply["error"]["code"] == -32005, reply
    assert "settings changed" in reply["error"]["message"]
    assert elapsed < 2.0 + 1.5, f"answered after {elapsed:.2f} s"


@pytest.mark.parametrize("board", HOSTNAMES)
def test_named_config_has_every_change_on_disk_owner_only(tmp_path: Path, board: str) -> None:
    """Two changes 0 s apart (PyRPL defers the second to a Qt timer the server never runs), then
    SIGKILL: both are in the YAML, which is 0600 in 0700 folders (it holds the ssh password)."""
    cache = tmp_path / "cache"
    server = ServerProcess(tmp_path, ["--hostname", board, "--config", "kept"],
                           startup_timeout=60,
                           env={"PYRPL_USER_DIR": "", "XDG_CACHE_HOME": str(cache)})
    with server:
        assert server.ready_line, server.log
        with server.client() as c:
            c.call("set", module="asg0", values={"frequency": 1000.0})
            c.call("set", module="asg0", values={"frequency": 2000.0})
            c.call("set", module="pid1", values={"setpoint": 0.25})
        server.proc.kill()
        server.proc.wait(10)
    user_dir = cache / "pymodaq_plugins_pyrpl" / "pyrpl_user_dir"
    config = user_dir / "config" / "kept.yml"
    saved = yaml.safe_load(config.read_text())
    assert saved["asg0"]["frequency"] == pytest.approx(2000.0, abs=0.1)
    assert saved["pid1"]["setpoint"] == pytest.approx(0.25, abs=1e-3)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(user_dir.stat().st_mode) == 0o700


def test_corrupt_config_file_is_named(tmp_path: Path) -> None:
    user_dir = tmp_path / "pyrpl"
    (user_dir / "config").mkdir(parents=True)
    broken = user_dir / "config" / "broken.yml"
    broken.write_text("pyrpl: [unclosed\n  name: : :\n")
    with ServerProcess(tmp_path, ["--hostname", "_FAKE_", "--config", "broken"],
                       startup_timeout=60, env={"PYRPL_USER_DIR": str(user_dir)}) as server:
        assert server.ready_line == ""
        assert server.proc.wait(30) == 2
    assert f"the PyRPL config file {broken}" in server.log and "is corrupt" in server.log
    assert "cannot connect" not in server.log


def test_sigterm_stops_cleanly(pyrpl_server: ServerProcess, hostname: str) -> None:
    """Last of its board's tests: the shared server stops with status 0 (PyRPL closed on its
    thread), and its virtual board with it."""
    children = psutil.Process(pyrpl_server.proc.pid).children(recursive=True)
    assert bool(children) == (hostname == "virtual")
    with pyrpl_server.client("holder"):
        assert pyrpl_server.stop(timeout=20) == 0
    assert not [child for child in children if child.is_running()
                and child.status() != psutil.STATUS_ZOMBIE]
