"""A virtual board in a child process (``pymodaq-pyrpl virtual-board`` on free ports): what a
server asked for the hostname ``virtual`` connects PyRPL to.

The child holds this process's end of a pipe as its standard input and stops when it closes
(``--until-stdin-closes``), so it never outlives its parent, even one killed by SIGKILL.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time

from ..hardware.server_process import first_line
from .command import Ready, parse_ready_line

logger = logging.getLogger(__name__)

START_TIMEOUT = 30.0
"""Seconds the child has to print its ready line."""
STOP_TIMEOUT = 5.0
"""Seconds the child has to exit after its input closes, and again after SIGTERM."""


class VirtualBoardError(Exception):
    """The virtual board's process could not be started (the message says why)."""


class VirtualBoardProcess:
    """A running virtual board process: where it serves, and :meth:`stop`."""

    def __init__(self, process: subprocess.Popen[bytes], ready: Ready) -> None:
        self.process = process
        self.host = ready.host
        self.ssh_port = ready.ssh_port
        self.port = ready.port

    def stop(self) -> None:
        """Close its input (it stops by itself), then SIGTERM, then SIGKILL; reaped. Idempotent."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        for escalate in (None, self.process.terminate, self.process.kill):
            if escalate is not None:
                logger.warning("the virtual board (pid %d) did not stop: %s", self.process.pid,
                               escalate.__name__)
                escalate()
            try:
                self.process.wait(STOP_TIMEOUT)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.process.stdout is not None:
            self.process.stdout.close()


class StartingVirtualBoard:
    """A virtual board process launched by :func:`launch_virtual_board`, its ready line not read
    yet: the caller does other work meanwhile (the server imports PyRPL), then :meth:`ready`."""

    def __init__(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        self.process = process
        self._deadline = deadline

    def ready(self) -> VirtualBoardProcess:
        """Wait (until the launch's timeout) for the ready line. Raises VirtualBoardError if the
        process exits or is not ready in time (then it is not running)."""
        process = self.process
        line = first_line(process, self._deadline)
        ready = None if line is None else parse_ready_line(line)
        if ready is None:
            self.stop()
            said = f"printed {line[:80]!r}" if line else "printed no ready line"
            raise VirtualBoardError(f"the virtual board process {said} (exit status "
                                    f"{process.returncode}); its messages are in this log")
        logger.info("virtual board started (pid %d): ssh port %d, monitor port %d", process.pid,
                    ready.ssh_port, ready.port)
        return VirtualBoardProcess(process, ready)

    def stop(self) -> None:
        """Stop the process without waiting for its ready line (as :meth:`VirtualBoardProcess.stop`).
        Idempotent."""
        VirtualBoardProcess(self.process, Ready("", 0, 0, self.process.pid)).stop()


def launch_virtual_board(plant: str, mode: str = "shared",
                         timeout: float = START_TIMEOUT) -> StartingVirtualBoard:
    """Launch a virtual board with ``plant`` and ``mode`` on free ports of 127.0.0.1 without
    waiting for it: :meth:`StartingVirtualBoard.ready` waits for its ready line, at most
    ``timeout`` s after this call. Its stderr is this process's. Raises VirtualBoardError if the
    Python interpreter cannot be run."""
    command = [sys.executable, "-m", "pymodaq_plugins_pyrpl.cli", "virtual-board",
               "--plant", plant, "--mode", mode, "--host", "127.0.0.1", "--ssh-port", "0",
               "--port", "0", "--until-stdin-closes"]
    deadline = time.monotonic() + timeout
    try:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    except OSError as exc:
        raise VirtualBoardError(f"{sys.executable} cannot be run: {exc}") from None
    return StartingVirtualBoard(process, deadline)


def start_virtual_board(plant: str, mode: str = "shared",
                        timeout: float = START_TIMEOUT) -> VirtualBoardProcess:
    """Start a virtual board with ``plant`` and ``mode`` on free ports of 127.0.0.1 and wait (at
    most ``timeout`` s) for its ready line: :func:`launch_virtual_board`, then
    :meth:`StartingVirtualBoard.ready`. Raises VirtualBoardError if it exits or is not ready in
    time (then it is not running)."""
    return launch_virtual_board(plant, mode, timeout).ready()
