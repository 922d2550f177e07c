"""Test isolation and shared fixtures.

Everything a test could write outside its temporary folders is redirected at import time, before any
test imports PyMoDAQ or PyRPL: HOME (PyMoDAQ's ~/.pymodaq, PyRPL's ~/pyrpl_user_dir), PYRPL_USER_DIR,
XDG_RUNTIME_DIR, the server runtime folder and PyMoDAQ's system folder (/etc/.pymodaq, see
tests/isolation/sitecustomize.py). Qt runs offscreen.
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
_SITE = str(Path(__file__).parent / "isolation")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_SITE, os.environ.get("PYTHONPATH")]))
_spec = importlib.util.spec_from_file_location("_pyrpl_test_isolation", f"{_SITE}/sitecustomize.py")
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))

from support import ServerProcess, free_port  # noqa: E402  (after the environment is isolated)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--rp-host", default=None,
                     help="hostname of a real Red Pitaya for the tests marked 'hardware'")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--rp-host"):
        return
    skip = pytest.mark.skip(reason="needs a Red Pitaya: pass --rp-host HOST")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rp_host(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--rp-host")


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def mock_server(tmp_path: Path):
    """A running ``--mock`` server subprocess with a token file; stopped after the test."""
    with ServerProcess(tmp_path, ["--mock", "--seed", "1"]) as server:
        yield server
