"""PyRPL's ssh ``delay`` as the PyRPL backend sets it: short for the virtual board (hostname
``virtual``), PyRPL's own (its default, or a named config's) for every other board, also after a
named config was used with the virtual board.

PyRPL runs in a subprocess (it creates a QApplication at import), its backend driven from one
thread as in the server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymodaq_plugins_pyrpl.hardware.backends.pyrpl import VIRTUAL_SSH_DELAY

pytestmark = [pytest.mark.pyrpl, pytest.mark.timeout(180)]

PYRPL_DEFAULT_DELAY = 0.05
"""PyRPL 0.9.9's default ``delay`` (``pyrpl.redpitaya.defaultparameters``)."""

_SCRIPT = """\
import json, sys
from concurrent.futures import ThreadPoolExecutor
from pymodaq_plugins_pyrpl.hardware.backends.pyrpl import PyrplBackend

worker = ThreadPoolExecutor(1)
backend = PyrplBackend("virtual", config=sys.argv[1])
worker.submit(backend.open).result(120)
delay = worker.submit(lambda: backend._rp.ssh.delay).result(10)
worker.submit(backend.close).result(60)
print("DELAY " + json.dumps(delay), flush=True)
"""


def _open_virtual(folder: Path, config: str) -> float:
    """Open and close a PyRPL backend on ``virtual`` with the named ``config`` (PyRPL's user dir
    in ``folder``); the ``delay`` of PyRPL's ssh shell while it was open."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REDPITAYA_")}
    environment.update(HOME=str(folder), PYRPL_USER_DIR=str(folder / "pyrpl"),
                       QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, config], capture_output=True, text=True,
                          timeout=150, env=environment, stdin=subprocess.DEVNULL, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DELAY ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(lines[-1].split(" ", 1)[1])


def _stored(folder: Path, config: str) -> dict[str, Any]:
    text = (folder / "pyrpl" / "config" / f"{config}.yml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["redpitaya"]


def test_the_virtual_board_gets_the_short_delay_and_the_config_keeps_pyrpl_s(
        tmp_path: Path) -> None:
    assert _open_virtual(tmp_path, "lab") == VIRTUAL_SSH_DELAY
    stored = _stored(tmp_path, "lab")
    assert stored["delay"] == PYRPL_DEFAULT_DELAY  # what a real board opened with it will use
    assert stored["hostname"] == "127.0.0.1"  # PyRPL did write its connection settings


def test_a_config_s_own_delay_is_kept(tmp_path: Path) -> None:
    (tmp_path / "pyrpl" / "config").mkdir(parents=True)
    (tmp_path / "pyrpl" / "config" / "slow.yml").write_text("redpitaya:\n  delay: 0.2\n",
                                                             encoding="utf-8")
    assert _open_virtual(tmp_path, "slow") == VIRTUAL_SSH_DELAY
    assert _stored(tmp_path, "slow")["delay"] == 0.2
