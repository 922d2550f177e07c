"""The server with the PyRPL backend, against PyRPL's own fake board, as a subprocess."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from tests.helpers.support import ServerProcess, acquire_while_scope_settings_change

pytestmark = pytest.mark.pyrpl


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory):
    with ServerProcess(tmp_path_factory.mktemp("fake"), ["--hostname", "_FAKE_"],
                       startup_timeout=60) as server:
        assert server.ready_line, server.log
        yield server


def test_hello_reports_the_pyrpl_backend(fake_server: ServerProcess) -> None:
    with fake_server.client() as c:
        status = c.call("status")
        assert status["device"]["backend"] == "pyrpl"
        assert status["device"]["hostname"] == "_FAKE_"
        assert status["device"]["state"] == "ready"


def test_every_module_reads_and_sets(fake_server: ServerProcess) -> None:
    with fake_server.client() as c:
        catalogue = c.call("describe")["modules"]
        for module, spec in catalogue.items():
            values = c.call("get", module=module)
            assert set(values) == set(spec["attributes"]), module
        applied = c.call("set", module="asg0", values={"frequency": 1000, "amplitude": 0.5,
                                                        "waveform": "square",
                                                        "output_direct": "out1"})
        assert applied["frequency"] == pytest.approx(1000.0076, abs=1e-3)
        assert applied["waveform"] == "square" and applied["output_direct"] == "out1"
        pid = c.call("set", module="pid0", values={"setpoint": 0.1, "p": 0.5, "i": 100,
                                                    "input": "in2", "ival": 0.25})
        assert pid["setpoint"] == pytest.approx(0.0999756) and pid["input"] == "in2"
        assert pid["ival"] == pytest.approx(0.25)


def test_acquisitions_through_real_pyrpl(fake_server: ServerProcess) -> None:
    with fake_server.client() as c:
        c.call("set", module="scope", values={"duration": 0.001, "trigger_source": "immediately"})
        trace = c.call("acquire", module="scope", timeout=10)
        assert trace["ch1"].shape == (16384,) and trace["ch2"].shape == (16384,)
        assert trace["dt"] == pytest.approx(0.001048576 / 16384)
        for iq in ("iq0", "iq1", "iq2"):
            assert set(c.call("acquire", module=iq)) >= {"i", "q"}
        sampler = c.call("acquire", module="sampler")
        assert set(sampler) >= {"in1", "in2", "out1", "out2"}


def test_unreachable_board_exits_non_zero(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, ["--hostname", ""], startup_timeout=60)
    assert server.ready_line == ""
    assert server.proc.wait(30) == 2


def test_acquire_timeout_holds_while_settings_keep_changing(fake_server: ServerProcess) -> None:
    """Short traces (no wait on the event loop) restarted by settings changes every 60 ms: the
    acquisition still ends at its timeout."""
    with fake_server.client() as c:
        c.call("set", module="scope", values={"duration": 0.001, "trace_average": 50,
                                              "trigger_source": "immediately"})
    reply, elapsed, changes = acquire_while_scope_settings_change(fake_server, timeout=2.0,
                                                                  period=0.06)
    with fake_server.client() as c:
        c.call("set", module="scope", values={"trace_average": 1})
    assert changes > 5
    assert reply["error"]["code"] == -32005, reply
    assert "settings changed" in reply["error"]["message"]
    assert elapsed < 2.0 + 1.5, f"answered after {elapsed:.2f} s"


def test_named_config_has_every_change_on_disk_owner_only(tmp_path: Path) -> None:
    """Two changes 0 s apart (PyRPL defers the second to a Qt timer the server never runs), then
    SIGKILL: both are in the YAML, which is 0600 in 0700 folders (it holds the ssh password)."""
    cache = tmp_path / "cache"
    server = ServerProcess(tmp_path, ["--hostname", "_FAKE_", "--config", "kept"],
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


def test_sigterm_stops_cleanly(fake_server: ServerProcess) -> None:
    """Last in this module: the shared server stops with status 0 (PyRPL closed on its thread)."""
    with fake_server.client("holder"):
        assert fake_server.stop(timeout=20) == 0
