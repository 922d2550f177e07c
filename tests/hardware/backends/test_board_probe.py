"""The ssh look at a board (``board_link.probe``): the parser on kernel-format ``/proc/net/tcp``
text, and :class:`BoardShell` against the in-process virtual board on real sockets: boot id,
listener and clients of the data port, reboot, starting a monitor server that outlives the ssh
connection without any ``killall``, and every failure typed and within its deadline (refused
login, closed port, a server that never answers, a command that never ends).

Every wait has a deadline: the call's own (asserted with :data:`MARGIN`) or pytest's timeout.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from pymodaq_plugins_pyrpl.hardware.backends.board_link.client import BoardClient
from pymodaq_plugins_pyrpl.hardware.backends.board_link.errors import (
    LinkClosed,
    LinkRefused,
    LinkReset,
    LinkTimeout,
)
from pymodaq_plugins_pyrpl.hardware.backends.board_link.probe import (
    MONITOR_LOG,
    BoardCommandError,
    BoardLook,
    BoardShell,
    LoginRefused,
    parse_look,
    parse_net_tcp,
    ssh_reachable,
)
from pymodaq_plugins_pyrpl.virtual_board import proc_net_tcp
from pymodaq_plugins_pyrpl.virtual_board.files import BoardFiles
from pymodaq_plugins_pyrpl.virtual_board.proc_net_tcp import ESTABLISHED, LISTEN, TcpSocket
from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya
from pymodaq_plugins_pyrpl.virtual_board.ssh_server import SshServer
from tests.helpers.recording_control import RecordingControl
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

SHORT = 0.5
"""Timeout (s) of the calls that are to miss their deadline."""
MARGIN = 1.0
"""Seconds a failed call may take beyond its deadline on a loaded machine."""
SERVER = "//opt//pyrpl///monitor_server"
"""The binary's path as PyRPL 0.9.9 names it (``serverdirname + "/" + name``)."""
HK_ID = 0x40000000

KERNEL_TABLE = "".join(line + "\n" for line in (
    ('  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt  '
     ' uid  timeout inode'),
    ('   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000    '
     ' 0        0 1322 1 00000000ea0b90ce 100 0 0 10 0'),
    ('   1: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000    '
     ' 0        0 5521 1 00000000c1a2b3d4 100 0 0 10 0'),
    ('   2: 6401A8C0:08AE 6501A8C0:C448 01 00000000:00000000 00:00000000 00000000    '
     ' 0        0 5530 1 000000007fe974d9 20 4 30 10 -1'),
    ('   3: 6401A8C0:08AE 0A01A8C0:9C40 06 00000000:00000000 03:0000166F 00000000    '
     ' 0        0 0 3 0000000031f81d01'),
    ('   4: 6401A8C0:0016 6501A8C0:D2F0 01 00000000:00000000 02:000A7D4C 00000000    '
     ' 0        0 5540 2 00000000f7d0f28f 20 4 29 10 -1'),
    ('   5: 0100007F:08AF 0100007F:08AE 01 00000000:00000000 00:00000000 00000000    '
     ' 0        0 5550 1 000000001f2e3d4c 20 4 30 10 -1'),
))
"""``/proc/net/tcp`` of a board at 192.168.1.100 as its kernel prints it (the padding of each row
to 149 characters left out): ssh and data port listeners, a data client, a TIME_WAIT, an ssh
client, a connection of the board's own from port 2223 to 2222."""


def test_the_kernel_table_gives_the_data_ports_listener_and_its_established_clients() -> None:
    """Port 2222 (08AE): a listener, a client from 192.168.1.101:50248, a TIME_WAIT left out;
    the ssh rows (0016) and a connection *from* local port 2223 to 2222 are other ports."""
    assert parse_net_tcp(KERNEL_TABLE, 2222) == (True, (("192.168.1.101", 50248),))
    assert parse_net_tcp(KERNEL_TABLE, 22) == (True, (("192.168.1.101", 54000),))
    assert parse_net_tcp(KERNEL_TABLE, 2223) == (False, (("127.0.0.1", 2222),))
    assert parse_net_tcp(KERNEL_TABLE.splitlines(keepends=True)[0], 2222) == (False, ())


def test_the_virtual_boards_table_parses_as_it_was_made() -> None:
    sockets = [TcpSocket(("127.0.0.1", 40000), proc_net_tcp.NO_PEER, LISTEN),
               TcpSocket(("127.0.0.1", 40000), ("127.0.0.1", 51000), ESTABLISHED),
               TcpSocket(("127.0.0.1", 40000), ("10.0.0.7", 51001), ESTABLISHED)]
    assert parse_net_tcp(proc_net_tcp.render(sockets), 40000) == (
        True, (("127.0.0.1", 51000), ("10.0.0.7", 51001)))


@pytest.mark.parametrize("text", ["", "cat: /proc/net/tcp: No such file or directory\n",
                                  KERNEL_TABLE + "   6: 0100007F 01\n",
                                  KERNEL_TABLE + "   6: 0100007F:08AE 0100007F:ZZZZ 01 x\n"])
def test_text_that_is_not_the_table_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_net_tcp(text, 2222)


def test_the_look_is_the_boot_id_line_then_the_table() -> None:
    boot = "5b1f3c52-8a7e-4d2b-9f0e-2c4d6e8fa0b1"
    assert parse_look(f"{boot}\n{KERNEL_TABLE}", 2222) == BoardLook(
        boot, True, (("192.168.1.101", 50248),))
    with pytest.raises(ValueError, match="boot id"):
        parse_look(f"cat: nothing\n{KERNEL_TABLE}", 2222)


# -- against the virtual board ------------------------------------------------------------------


@pytest.fixture
def vrp() -> Iterator[VirtualRedPitaya]:
    board = VirtualRedPitaya(mode="faithful", seed=1)
    board.start()
    yield board
    board.close()


@pytest.fixture
def shell(vrp: VirtualRedPitaya) -> Iterator[BoardShell]:
    shell = BoardShell(vrp.host, vrp.ssh_port)
    yield shell
    shell.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ssh_reachable_says_whether_the_ssh_port_accepts(vrp: VirtualRedPitaya) -> None:
    assert ssh_reachable(vrp.host, vrp.ssh_port, 1.0)
    assert not ssh_reachable("127.0.0.1", _free_port(), 1.0)
    with pytest.raises(ValueError):
        ssh_reachable(vrp.host, vrp.ssh_port, 0)


def test_the_look_shows_the_boot_the_listener_and_each_client(vrp: VirtualRedPitaya,
                                                              shell: BoardShell) -> None:
    assert shell.look(vrp.port) == BoardLook(vrp.board.boot_id, True, ())
    client = BoardClient.connect(vrp.host, vrp.port)
    try:
        assert client.reads(HK_ID, 1) is not None  # served: a client of the monitor server
        ours = client.socket.getsockname()[:2]
        assert shell.look(vrp.port) == BoardLook(vrp.board.boot_id, True, (ours,))
    finally:
        client.close()
    # faithful: the server ended with its client; one ssh connection served every look
    wait_until(lambda: shell.look(vrp.port) == BoardLook(vrp.board.boot_id, False, ()), 5.0,
               "the monitor server ending with its client")
    assert len({c.session for c in vrp.commands.entries()}) == 1


def test_after_a_reboot_the_next_look_connects_again_and_shows_a_new_boot_id(
        vrp: VirtualRedPitaya, shell: BoardShell) -> None:
    before = shell.look(vrp.port).boot_id
    vrp.reboot(0.3)
    assert vrp.wait_rebooted(10.0)
    after = wait_until(lambda: _look_or_none(shell, vrp.port), 10.0, "a look after the reboot")
    assert after.boot_id == vrp.board.boot_id != before


def _look_or_none(shell: BoardShell, port: int) -> BoardLook | None:
    try:
        return shell.look(port)
    except LinkRefused:  # the ssh port may still refuse for a moment
        return None


def test_a_started_monitor_server_outlives_the_ssh_connection_and_kills_nothing(
        vrp: VirtualRedPitaya, shell: BoardShell) -> None:
    assert vrp.killall_monitors() == 1  # the board as after a killall: nothing on the port
    port = _free_port()
    start = vrp.board.clock()
    shell.start_monitor_server(SERVER, port)
    shell.close()
    assert BoardShell(vrp.host, vrp.ssh_port).look(port).listening
    client = BoardClient.connect(vrp.host, port)
    try:
        assert int(client.reads(HK_ID, 1)[0]) == vrp.board.read(HK_ID, 1)[0]
    finally:
        client.close()
    lines = [c.line for c in vrp.commands.entries(since=start)]
    assert f"nohup {SERVER} {port} > {MONITOR_LOG} 2>&1 < /dev/null &" in lines
    assert vrp.commands.killalls(since=start) == 0


def test_a_server_that_does_not_start_is_reported_with_its_messages(
        vrp: VirtualRedPitaya, shell: BoardShell) -> None:
    with pytest.raises(BoardCommandError, match="failed to run command"):
        shell.start_monitor_server("/opt/pyrpl/no_such_server", _free_port(), timeout=1.0)
    with socket.create_server(("127.0.0.1", 0)) as other:  # the port is taken on this machine
        begun = time.monotonic()
        with pytest.raises(BoardCommandError, match="ERROR on binding"):
            shell.start_monitor_server(SERVER, other.getsockname()[1], timeout=1.0)
        assert time.monotonic() - begun < 1.0 + MARGIN
    with pytest.raises(ValueError):
        shell.start_monitor_server(SERVER, 0)


def test_a_refused_login_is_its_own_error(vrp: VirtualRedPitaya) -> None:
    with pytest.raises(LoginRefused, match="'root'"):
        BoardShell(vrp.host, vrp.ssh_port, password="wrong").look(vrp.port)


def test_a_closed_ssh_port_is_refused() -> None:
    with pytest.raises(LinkRefused):
        BoardShell("127.0.0.1", _free_port()).look(2222)


def test_an_ssh_server_that_never_answers_times_out_at_the_deadline() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), says nothing
        shell = BoardShell("127.0.0.1", silent.getsockname()[1])
        begun = time.monotonic()
        with pytest.raises(LinkTimeout):
            shell.look(2222, timeout=SHORT)
        assert time.monotonic() - begun < SHORT + MARGIN


def test_an_ssh_port_that_hangs_up_at_once_is_a_closed_link() -> None:
    """The connection accepted, then reset (a board going down); paramiko reports the reset
    during login as an end of file, so either class is right."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def hang_up() -> None:
            sock, _ = listener.accept()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        with pytest.raises((LinkClosed, LinkReset)):
            BoardShell("127.0.0.1", listener.getsockname()[1]).look(2222, timeout=5.0)
        thread.join(5.0)


class _StuckControl(RecordingControl):
    """A board whose ``/proc/net/tcp`` read hangs until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def net_tcp(self) -> str:
        self.release.wait(30.0)
        return proc_net_tcp.render([])


def test_a_command_that_never_ends_times_out_and_the_next_call_connects_again() -> None:
    control = _StuckControl()
    server = SshServer(BoardFiles(), control)
    server.start(0)
    shell = BoardShell("127.0.0.1", server.port)
    try:
        assert shell.run("echo up") == ("up\n", 0)
        begun = time.monotonic()
        with pytest.raises(LinkTimeout):
            shell.look(2222, timeout=SHORT)
        assert time.monotonic() - begun < SHORT + MARGIN
        control.release.set()
        assert shell.look(2222) == BoardLook(control.boot, False, ())
        assert len(control.sessions) == 2  # the timed-out connection was dropped
    finally:
        control.release.set()
        shell.close()
        server.close()
