"""The log of the ssh command lines run on the virtual board."""
from __future__ import annotations

import pytest

from pymodaq_plugins_pyrpl.virtual_board.command_log import CommandLog, is_killall_monitor

pytestmark = pytest.mark.timeout(10)


def test_killalls_are_counted_by_session_and_time() -> None:
    now = [0.0]
    log = CommandLog(clock=lambda: now[0])
    ours, theirs = log.new_session(("127.0.0.1", 40000)), log.new_session(("10.0.0.2", 50000))
    assert (ours, theirs) == (1, 2) and log.peer(theirs) == ("10.0.0.2", 50000)
    log.record(ours, "killall monitor_server")
    now[0] = 5.0
    log.record(theirs, "killall nginx")
    log.record(theirs, "/usr/bin/killall -9 monitor_server")
    log.record(ours, "cat /proc/net/tcp")
    assert log.killalls() == 2
    assert (log.killalls(since=5.0), log.killalls(session=ours)) == (1, 1)
    assert log.killalls(since=5.0, session=ours) == 0
    assert [c.line for c in log.entries(since=5.0, session=ours)] == ["cat /proc/net/tcp"]
    with pytest.raises(KeyError):
        log.peer(3)


@pytest.mark.parametrize(("line", "expected"), [
    ("killall monitor_server", True), ("killall -q monitor_server", True),
    ("killall nginx", False), ("echo killall monitor_server", False), ("", False)])
def test_what_counts_as_a_killall_of_monitor_server(line: str, expected: bool) -> None:
    assert is_killall_monitor(line) is expected
