"""Run PyRPL's own test suite (``pyrpl/test`` of the installed package) against a virtual board.

Meant to run INSIDE a private network namespace (``unshare -n python pyrpl_suite.py ...``, as
tests/virtual_board/test_pyrpl_suite.py does): it brings the namespace's loopback up, starts
``pymodaq-pyrpl virtual-board`` on free ports of 127.0.0.1 (the real ssh and monitor_server
sides: PyRPL logs in, uploads and starts its monitor_server, as on a board), runs PyRPL's suite
with ``REDPITAYA_HOSTNAME/SSHPORT/PORT`` naming it, then stops the board. PyRPL's suite finds
boards on the LAN in ``test_widgets/test_startup_widget.py`` (ignored here anyway) and the
namespace has no other interface, so nothing leaves this machine.

Usage: ``pyrpl_suite.py JUNIT_XML WORK_DIR [extra pytest arguments]``; WORK_DIR receives PyRPL's
user folder and HOME. The exit status is the suite's (1 when tests failed) or 3 when the board
did not start.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from pymodaq_plugins_pyrpl.virtual_board.process import VirtualBoardError, start_virtual_board

SUITE = Path(importlib.util.find_spec("pyrpl").submodule_search_locations[0]) / "test"
"""PyRPL's test package, as installed (found without importing PyRPL, which starts Qt)."""
IGNORED = ("test_widgets/test_startup_widget.py",)
"""Files not run: the start-up widget scans the LAN for boards."""
DESELECTED = "not ipython_notebook"
"""The notebook test runs PyRPL's tutorial notebooks, which need Jupyter and a kernel."""


def main(junit: str, work: str, extra: list[str]) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True,
                   env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"})
    home = Path(work) / "home"
    user_dir = Path(work) / "pyrpl_user_dir"
    home.mkdir(parents=True, exist_ok=True)
    user_dir.mkdir(parents=True, exist_ok=True)
    try:
        board = start_virtual_board("loopback")
    except VirtualBoardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    try:
        env = {**os.environ, "REDPITAYA_HOSTNAME": board.host,
               "REDPITAYA_SSHPORT": str(board.ssh_port), "REDPITAYA_PORT": str(board.port),
               "PYRPL_USER_DIR": str(user_dir), "HOME": str(home),
               "QT_QPA_PLATFORM": "offscreen"}
        command = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider",
                   "-p", "no:randomly", "-q", "-rfE", "--rootdir", str(SUITE.parents[1]),
                   "--junitxml", junit,
                   "--continue-on-collection-errors", "-k", DESELECTED,
                   *(f"--ignore={SUITE / path}" for path in IGNORED), *extra]
        return subprocess.run(command, env=env, cwd=work, check=False).returncode
    finally:
        board.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
