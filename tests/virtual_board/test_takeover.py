"""A second unmodified PyRPL started on a board in faithful mode takes it from the first (issue
14, item 5): its start-up's ``killall monitor_server`` ends the first one's data connection, its
own monitor server serves it alone, and the board shows that over ssh (``/proc/net/tcp``) and in
its command log. Both PyRPLs run in subprocesses (``pyrpl_ssh_probe.py hold``)."""
from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pymodaq_plugins_pyrpl.virtual_board.board import LinkSettings
from pymodaq_plugins_pyrpl.virtual_board.proc_net_tcp import hex_address
from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya
from tests.helpers.pyrpl_ssh import probe_command

pytestmark = [pytest.mark.timeout(180), pytest.mark.pyrpl]

START_TIMEOUT = 90.0
"""Seconds a PyRPL may take to start on the board (loaded machine) and to report."""


class Holder:
    """A PyRPL holding the board (``hold`` scenario) in a subprocess; its stdout lines in a
    queue, read by a thread (so every wait has a deadline)."""

    def __init__(self, board: VirtualRedPitaya, folder: Path) -> None:
        args, env = probe_command("hold", board.ssh_port, board.port, folder)
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # end of output

    def report(self, tag: str) -> dict[str, Any]:
        """The JSON of the next ``tag`` line; fails with the probe's stderr if it exits first."""
        while True:
            try:
                line = self.lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                line = ""
            if line.startswith(tag + " "):
                return json.loads(line.split(" ", 1)[1])
            if not line:
                self.proc.kill()
                _, err = self.proc.communicate(timeout=10)
                pytest.fail(f"no {tag} from the PyRPL probe: {err[-4000:]}")

    def release(self) -> dict[str, Any]:
        """Let it go: what it saw of its data connection; it exits without a killall."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        result = self.report("PROBE_RESULT")
        assert self.proc.wait(timeout=10) == 0
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def faithful_board() -> Iterator[VirtualRedPitaya]:
    board = VirtualRedPitaya(mode="faithful", seed=5)
    board.start(0, 0)
    yield board
    board.close()


def _established_on(board: VirtualRedPitaya) -> set[str]:
    """Remote addresses (hex) of the ESTABLISHED rows of the data port in /proc/net/tcp."""
    port = hex_address(("127.0.0.1", board.port))
    rows = [line.split() for line in board.net_tcp().splitlines()[1:]]
    return {row[2] for row in rows if row[1] == port and row[3] == "01"}


@pytest.mark.parametrize("killall_close", ["fin", "rst"])
def test_a_second_pyrpl_takes_the_board_from_the_first(faithful_board: VirtualRedPitaya,
                                                       killall_close: str, tmp_path: Path) -> None:
    board = faithful_board
    board.board.link = LinkSettings("faithful", killall_close)  # type: ignore[arg-type]
    first = Holder(board, tmp_path / "first")
    second: Holder | None = None
    try:
        held = first.report("PROBE_READY")
        assert held["led"] == 0b0110
        assert board.board.monitor_clients() == [tuple(held["data"])]
        assert _established_on(board) == {hex_address(tuple(held["data"]))}
        taken_at, connects = board.board.clock(), board.board.counts.connections

        second = Holder(board, tmp_path / "second")
        took = second.report("PROBE_READY")
        assert took["led"] == 0b0110
        assert board.board.monitor_clients() == [tuple(took["data"])]
        assert _established_on(board) == {hex_address(tuple(took["data"]))}
        sessions = {c.session for c in board.commands.entries(since=taken_at)}
        assert {board.commands.peer(s) for s in sessions} == {tuple(took["ssh"])}
        assert board.commands.killalls(since=taken_at) == 1  # the second's start-up's
        assert board.board.counts.connections == connects + 1  # the second's one connect

        assert first.release() == {"data_connection": killall_close}
        assert second.release() == {"data_connection": "open"}
        assert board.commands.killalls(since=taken_at) == 1  # neither ran another
        assert board.board.counts.connections == connects + 1  # nor reconnected
    finally:
        for holder in (first, second):
            if holder is not None:
                holder.kill()
