"""PyRPL's own suite against the virtual board (tests/helpers/scripts/pyrpl_suite.py, in a private
network namespace), run as one background subprocess per test session.

It takes about three minutes and only its report is checked, so the session starts it as soon as
its tests are collected (tests/conftest.py) and the other tests run meanwhile;
tests/virtual_board/test_pyrpl_suite.py waits for it and reads the report.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).parent / "scripts" / "pyrpl_suite.py"


def unavailable() -> str | None:
    """Why PyRPL's suite cannot run here, or None: it needs root, ``unshare`` and ``ip`` (CI runs
    as root), and a network namespace must be creatable."""
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip", path=path) is None:
        return ("needs root, unshare and ip: PyRPL's suite runs in a private network namespace "
                "(CI runs as root)")
    probe = subprocess.run(["unshare", "-n", "true"], check=False, capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


@dataclass
class SuiteResult:
    """How the run ended: the script's exit status, the end of its output and the JUnit report
    (which exists only if the suite ran)."""

    returncode: int
    log: str
    junit: Path


class SuiteRun:
    """The session's one run of PyRPL's suite: :meth:`start` launches it, :meth:`wait` (which
    starts it if need be) returns its result, :meth:`stop` ends a run nobody waited for."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._started = 0.0
        self._work: Path | None = None

    def start(self) -> None:
        """Launch the run (once; later calls do nothing)."""
        if self._process is not None:
            return
        self._work = Path(tempfile.mkdtemp(prefix="pyrpl_suite_"))
        out = (self._work / "output.log").open("w")
        self._process = subprocess.Popen(
            ["unshare", "-n", sys.executable, str(SCRIPT), str(self._work / "pyrpl-suite.xml"),
             str(self._work)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        self._started = time.monotonic()

    def wait(self, timeout: float) -> SuiteResult:
        """The run's result, waiting for it at most until ``timeout`` seconds after its start.
        Raises subprocess.TimeoutExpired (the run is then killed)."""
        self.start()
        assert self._process is not None and self._work is not None
        remaining = max(0.0, self._started + timeout - time.monotonic())
        try:
            returncode = self._process.wait(remaining)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        log = (self._work / "output.log").read_text(errors="replace")
        return SuiteResult(returncode, log[-10000:], self._work / "pyrpl-suite.xml")

    def stop(self) -> None:
        """Kill a run still going (the session ends without its test), remove its folder."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(30)
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)


SUITE_RUN = SuiteRun()
"""This session's run."""
