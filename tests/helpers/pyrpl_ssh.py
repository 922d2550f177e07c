"""Runs ``scripts/pyrpl_ssh_probe.py`` (PyRPL's own ssh code against a board of the test), or
another PyRPL probe script, in a subprocess isolated from the user's machine, and returns what it
observed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .scripts import PYRPL_SSH_PROBE


def pyrpl_environment(folder: Path) -> dict[str, str]:
    """The environment of a PyRPL script isolated from the user's machine: HOME and PyRPL's user
    folder in ``folder`` (made), Qt offscreen, no ``REDPITAYA_*`` overrides."""
    dirs = {name: folder / name.lower() for name in ("HOME", "PYRPL_USER_DIR")}
    for path in dirs.values():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDPITAYA_")}
    env.update({k: str(v) for k, v in dirs.items()}, QT_QPA_PLATFORM="offscreen")
    return env


def probe_command(scenario: str, ssh_port: int, port: int,
                  folder: Path) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the probe running ``scenario`` against the board at
    127.0.0.1:``ssh_port`` (and ``port``): HOME and PyRPL's user folder in ``folder`` (made)."""
    args = [sys.executable, str(PYRPL_SSH_PROBE), scenario, str(ssh_port), str(port), str(folder)]
    return args, pyrpl_environment(folder)


def run_probe(scenario: str, ssh_port: int, port: int, folder: Path,
              timeout: float = 90.0) -> dict[str, Any]:
    """The result of ``scenario`` against the board at 127.0.0.1:``ssh_port`` (and ``port``);
    fails the test if the probe failed. HOME and PyRPL's user folder are in ``folder``."""
    return run_script(*probe_command(scenario, ssh_port, port, folder), timeout)


def run_script(args: list[str], env: dict[str, str], timeout: float = 90.0) -> dict[str, Any]:
    """Run a probe script (``args``, in ``env``) to its end and return its last ``PROBE_RESULT``;
    fails the test if it failed."""
    proc = subprocess.run(args, check=False, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE_RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(lines[-1].split(" ", 1)[1])
    assert "error" not in result, result["error"]
    return result
