"""The README's main job: ``pymodaq-pyrpl demo`` on the simulated board, as a user runs it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    png = tmp_path / "demo.png"
    # no desktop session (a root shell, ssh): Qt would warn about XDG_RUNTIME_DIR
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    result = subprocess.run([sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "demo",
                             "--png", str(png)], capture_output=True, text=True, timeout=180,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "XDG_RUNTIME_DIR" not in result.stdout + result.stderr
    rows = dict(line.split("  ", 1) for line in result.stdout.splitlines() if "  " in line)
    rows = {key.strip(): value.strip() for key, value in rows.items()}
    assert rows["server stopped at the end"] == "yes"
    assert abs(float(rows["scope: dominant frequency"].split()[0]) - 1000) < 119  # one FFT bin
    assert abs(float(rows["IQ at 1000 Hz: Amplitude"]) - 0.5) < 0.02
    assert abs(float(rows["PID: in1 after 200 ms"].split()[0]) - 0.3) < 0.01
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gui_needs_a_display(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "demo", "--gui"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and "needs a display" in result.stderr
