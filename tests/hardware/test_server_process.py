"""Starting a server process and waiting for its ready line (hardware/server_process.py), with
small stand-in programs for the ways a start can go wrong; the real server's start is exercised by
every test that runs one."""
from __future__ import annotations

import sys
import time

import psutil
import pytest

from pymodaq_plugins_pyrpl.hardware import protocol
from pymodaq_plugins_pyrpl.hardware.errors import ServerError, ServerNotReady
from pymodaq_plugins_pyrpl.hardware.server_process import start_server


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_ready_line_is_parsed_and_nothing_after_it_is_read() -> None:
    line = protocol.ready_line(6341, 4242)
    process, ready = start_server(python(
        f"import sys; print({line!r}); print('more', flush=True); sys.stdin.read()"), 30)
    try:
        assert ready == protocol.Ready(6341, 4242, line)
        assert process.stdout.readline() == b"more\n"  # the caller reads on from there
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()


def test_an_exit_before_the_ready_line_gives_its_status() -> None:
    with pytest.raises(ServerNotReady, match="exited with status 3") as info:
        start_server(python("import sys; sys.exit(3)"), 30)
    assert info.value.returncode == 3 and isinstance(info.value, ServerError)


@pytest.mark.parametrize("code", ["import time; time.sleep(60)",
                                  "import time; print('hello', flush=True); time.sleep(60)"],
                         ids=["silent", "another line"])
def test_a_process_without_a_ready_line_is_killed_within_the_timeout(code: str) -> None:
    before = set(psutil.Process().children())
    started = time.monotonic()
    with pytest.raises(ServerNotReady) as info:
        start_server(python(code), 1.0)
    assert time.monotonic() - started < 1.0 + 2.0  # the timeout, and the kill
    assert info.value.returncode is None
    assert set(psutil.Process().children()) <= before  # killed and reaped: not even a zombie


def test_ready_lines_round_trip_and_others_are_not_ready_lines() -> None:
    line = protocol.ready_line(1234, 56)
    assert line == 'PYRPL_SERVER_READY {"port": 1234, "pid": 56}'
    assert protocol.parse_ready_line(line + "\n") == protocol.Ready(1234, 56, line)
    for other in ("", "hello", "PYRPL_SERVER_READY", "PYRPL_SERVER_READY {",
                  'PYRPL_SERVER_READY {"port": 1}', 'PYRPL_SERVER_READY {"port": "1", "pid": 2}',
                  'PYRPL_SERVER_READY [1, 2]', 'PYRPL_SERVER_READYX {"port": 1, "pid": 2}'):
        assert protocol.parse_ready_line(other) is None, other
