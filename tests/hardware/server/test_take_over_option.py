"""``--take-over`` (start on a board another program uses): only for a network board, passed by the
server manager to a server it spawns for one."""
from __future__ import annotations

from pathlib import Path

import pytest

from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager
from tests.helpers.support import ServerProcess


@pytest.mark.parametrize("board", [["--mock"], ["--hostname", "virtual"],
                                   ["--hostname", "_FAKE_"]])
def test_take_over_is_for_network_boards(tmp_path: Path, board: list[str]) -> None:
    server = ServerProcess(tmp_path, [*board, "--take-over"], startup_timeout=60)
    assert server.ready_line == "" and server.proc.wait(30) == 2
    assert "--take-over is for a network board" in server.log


@pytest.mark.parametrize("hostname, take_over, passed", [
    ("rp-f0a1b2.local", True, True), ("rp-f0a1b2.local", False, False),
    (None, True, False), ("virtual", True, False)])
def test_the_manager_asks_a_spawned_server_to_take_over_a_network_board_only(
        hostname: str | None, take_over: bool, passed: bool) -> None:
    manager = TCPServerManager(port=6341, hostname=hostname, take_over=take_over)
    assert ("--take-over" in manager._server_command("token-file")) is passed
