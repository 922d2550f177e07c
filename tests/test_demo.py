"""The README's main job: ``pymodaq-pyrpl demo`` on the simulated board, as a user runs it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pymodaq_plugins_pyrpl.demo import samples_until


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
    f0 = float(rows["NA sweep of the resonator: f0 (fit)"].split()[0])
    q = float(rows["NA sweep of the resonator: Q (fit)"].split()[0])
    assert abs(f0 / 100e3 - 1) < 0.005 and abs(q / 30 - 1) < 0.05  # the plant's f0 and Q
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gui_needs_a_display(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "demo", "--gui"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and "needs a display" in result.stderr


def test_settling_is_sampled_at_least_once_on_a_slow_machine() -> None:
    """The setpoint move itself took longer than the settling window (a loaded machine): the
    demo still reads the PID's input once, instead of failing on an empty list of samples."""
    reads = []

    def read() -> float:
        reads.append(time.perf_counter())
        return 0.3

    t0 = time.perf_counter() - 1.0  # the move returned 1 s after t0, past the 0.2 s window
    samples = samples_until(read, t0, 0.2)
    assert len(samples) == len(reads) == 1
    assert samples[0][0] >= 1.0 and samples[0][1] == 0.3


def test_settling_is_sampled_until_its_window_ends() -> None:
    t0 = time.perf_counter()
    samples = samples_until(lambda: 0.3, t0, 0.05)
    assert len(samples) > 1 and samples[0][0] < 0.05 <= time.perf_counter() - t0
    assert all(start < 0.05 for start, _ in samples)  # each read started within the window
    assert [start for start, _ in samples] == sorted(start for start, _ in samples)
