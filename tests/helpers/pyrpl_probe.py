"""Run a probe script that imports PyRPL (never imported in the pytest or bench process) in an
isolated environment, and return its JSON result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_probe(script: Path, folder: Path, *args: str, timeout: float = 120.0) -> dict[str, Any]:
    """``python script *args`` with HOME, PyRPL's user folder and XDG_RUNTIME_DIR in ``folder``
    (kept across runs), Qt offscreen, no ``REDPITAYA_*`` variables: the JSON of its last stdout
    line starting with ``PROBE_RESULT``. Raises AssertionError (with its stderr) if it exits
    with a status other than 0 or prints no result, subprocess.TimeoutExpired after
    ``timeout`` s."""
    dirs = {name: folder / name.lower() for name in ("HOME", "PYRPL_USER_DIR", "XDG_RUNTIME_DIR")}
    for path in dirs.values():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDPITAYA_")}
    env.update({k: str(v) for k, v in dirs.items()}, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE_RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(lines[-1].split(" ", 1)[1])
