"""The virtual board's data port on real sockets: PyRPL's monitor_server protocol (echo, lengths,
the 128 KiB window, unknown commands), the shared and faithful modes, killall with FIN or RST, and
the injectable faults (reboot, a stalled port, corrupted echoes, latency).

Every socket read has a timeout; every wait for the board has a deadline.
"""
from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import monitor_wire
from pymodaq_plugins_pyrpl.virtual_board import BoardDown, LinkSettings, MonitorServer, VirtualBoard
from pymodaq_plugins_pyrpl.virtual_board.proc_net_tcp import (
    ESTABLISHED,
    LISTEN,
    NO_PEER,
    TcpSocket,
)
from tests.helpers.support import accepts_connections

TIMEOUT = 5.0
"""Seconds any socket operation of a test may block."""
QUIET = 0.3
"""Seconds a test waits to conclude that no answer comes (a lower bound, never a speed claim)."""
HK_ID, LED = 0x40000000, 0x40000030


@pytest.fixture
def board() -> VirtualBoard:
    return VirtualBoard(seed=1)


@pytest.fixture
def server(board: VirtualBoard) -> Iterator[MonitorServer]:
    server = MonitorServer(board)
    server.start(0)
    yield server
    server.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def read(sock: socket.socket, address: int, length: int = 1) -> tuple[bytes, np.ndarray]:
    """(echoed header, words) of a read request."""
    sock.sendall(monitor_wire.header(b"r", length, address))
    echo = recv_exact(sock, monitor_wire.HEADER_SIZE)
    return echo, np.frombuffer(recv_exact(sock, 4 * length), dtype="<u4")


def write(sock: socket.socket, address: int, *words: int) -> bytes:
    """The echoed header of a write request."""
    payload = struct.pack(f"<{len(words)}I", *words)
    sock.sendall(monitor_wire.header(b"w", len(words), address) + payload)
    return recv_exact(sock, monitor_wire.HEADER_SIZE)


def assert_closed(sock: socket.socket, how: str) -> None:
    """The server ended ``sock`` with a FIN (orderly EOF) or an RST."""
    if how == "fin":
        assert sock.recv(1) == b""
    else:
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


# -- protocol --------------------------------------------------------------------------------------


def test_read_echoes_the_header_then_the_words(server: MonitorServer) -> None:
    with connect(server.port) as sock:
        echo, words = read(sock, HK_ID, 3)
    assert echo == monitor_wire.header(b"r", 3, HK_ID)
    assert words[0] == 1  # board id: release 1


def test_write_echoes_the_header_and_keeps_the_register_width(server: MonitorServer) -> None:
    with connect(server.port) as sock:
        assert write(sock, LED, 0xFFFFFFFF) == monitor_wire.header(b"w", 1, LED)
        assert read(sock, LED)[1][0] == 0xFF  # 8 LEDs


def test_zero_length_requests_are_ignored_whatever_the_command(server: MonitorServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(monitor_wire.header(b"r", 0, LED) + monitor_wire.header(b"c", 0, 0)
                     + monitor_wire.header(b"x", 0, 0))
        echo, words = read(sock, HK_ID)
    assert echo == monitor_wire.header(b"r", 1, HK_ID) and words[0] == 1


@pytest.mark.parametrize("command", [b"x", b"c"])
def test_unknown_or_close_command_ends_the_connection(server: MonitorServer,
                                                      command: bytes) -> None:
    with connect(server.port) as sock:
        sock.sendall(monitor_wire.header(command, 1, HK_ID))
        assert_closed(sock, "fin")
    with connect(server.port) as sock:  # shared mode: the server goes on
        assert read(sock, HK_ID)[1][0] == 1


def test_a_request_crossing_a_128_kib_window_resets_the_connection(
        server: MonitorServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(monitor_wire.header(b"r", 2, 0x40100000 + monitor_wire.WINDOW - 4))
        assert_closed(sock, "rst")


def test_the_largest_request_fills_one_window(server: MonitorServer) -> None:
    """32768 words (128 KiB) from the start of a window: the most one request can read."""
    with connect(server.port) as sock:
        echo, words = read(sock, 0x40100000, monitor_wire.WINDOW // 4)
    assert echo == monitor_wire.header(b"r", monitor_wire.WINDOW // 4, 0x40100000)
    assert len(words) == monitor_wire.WINDOW // 4


def test_writes_are_counted(board: VirtualBoard, server: MonitorServer) -> None:
    before = board.counts.writes
    with connect(server.port) as sock:
        write(sock, LED, 1)
        write(sock, LED, 2, 3)
        read(sock, LED)
    assert board.counts.writes - before == 2
    assert board.counts.words_written >= 3


# -- modes -----------------------------------------------------------------------------------------


def test_write_log_names_the_registers_written(board: VirtualBoard, server: MonitorServer) -> None:
    with connect(server.port) as sock:
        write(sock, LED, 1, 2)
    assert [(address, words) for _, address, words in board.write_log] == [(LED, 2)]


def test_closing_the_board_stops_its_servers(board: VirtualBoard, server: MonitorServer) -> None:
    with connect(server.port) as sock:
        read(sock, HK_ID)
        board.close()
        assert_closed(sock, "fin")
    assert not accepts_connections(server.port, TIMEOUT)


def test_shared_mode_serves_many_clients_on_one_board(server: MonitorServer) -> None:
    with connect(server.port) as a, connect(server.port) as b:
        write(a, LED, 0x5A)
        assert read(b, LED)[1][0] == 0x5A
        write(b, LED, 0x11)
        assert read(a, LED)[1][0] == 0x11


def test_clients_and_tcp_sockets_name_the_connections_served(board: VirtualBoard,
                                                             server: MonitorServer) -> None:
    clients = [connect(server.port), connect(server.port)]
    try:
        for sock in clients:
            read(sock, HK_ID)  # served: accepted by the server
        names = {sock.getsockname() for sock in clients}
        assert set(server.clients()) == set(board.monitor_clients()) == names
        assert board.counts.connections == 2
        local = ("127.0.0.1", server.port)
        assert set(board.tcp_sockets()) == {TcpSocket(local, NO_PEER, LISTEN)} | {
            TcpSocket(local, name, ESTABLISHED) for name in names}
    finally:
        for sock in clients:
            sock.close()
    server.killall()
    assert board.monitor_clients() == [] and board.tcp_sockets() == []
    assert board.counts.connections == 2


def test_faithful_mode_serves_one_client_and_ends_with_it(board: VirtualBoard) -> None:
    board.link.mode = "faithful"
    server = MonitorServer(board)
    port = server.start(0)
    try:
        first = connect(port)
        assert read(first, HK_ID)[1][0] == 1
        second = connect(port)  # queued in the listen backlog, never served
        second.sendall(monitor_wire.header(b"r", 1, HK_ID))
        second.settimeout(QUIET)
        with pytest.raises(TimeoutError):
            second.recv(1)
        second.settimeout(TIMEOUT)
        first.close()  # the client leaves: the C server exits
        assert_closed(second, "rst")
        assert not accepts_connections(port, TIMEOUT)
        assert not server.listening
        assert server.start(port) == port  # started again, as PyRPL does over ssh
        with connect(port) as third:
            assert read(third, HK_ID)[1][0] == 1
    finally:
        server.stop()


def test_faithful_mode_ends_on_an_unknown_command(board: VirtualBoard) -> None:
    board.link.mode = "faithful"
    server = MonitorServer(board)
    port = server.start(0)
    try:
        with connect(port) as sock:
            sock.sendall(monitor_wire.header(b"x", 1, HK_ID))
            assert_closed(sock, "fin")
        assert not accepts_connections(port, TIMEOUT)
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_killall_ends_every_connection_with_fin_or_rst(board: VirtualBoard, server: MonitorServer,
                                                       how: str) -> None:
    board.link.killall_close = how
    with connect(server.port) as a, connect(server.port) as b:
        read(a, HK_ID)
        read(b, HK_ID)
        server.killall()
        assert_closed(a, how)
        assert_closed(b, how)
    assert not accepts_connections(server.port, TIMEOUT)
    assert server.connections == 0


def test_start_again_on_the_same_port_after_killall(server: MonitorServer) -> None:
    port = server.port
    with connect(port) as sock:
        read(sock, HK_ID)
        server.killall()
    assert server.start(port) == port
    with connect(port) as sock:
        assert read(sock, HK_ID)[1][0] == 1


def test_start_twice_is_refused(server: MonitorServer) -> None:
    with pytest.raises(RuntimeError, match="already listening"):
        server.start(0)


def test_settings_are_validated() -> None:
    board = VirtualBoard()
    with pytest.raises(ValueError):
        LinkSettings(mode="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        board.faults.latency = -1.0


# -- faults ----------------------------------------------------------------------------------------


def test_reboot_resets_connections_refuses_the_port_then_comes_back(
        board: VirtualBoard, server: MonitorServer) -> None:
    port, downtime = server.port, 1.0
    with connect(port) as sock:
        write(sock, LED, 0x42)
        started = time.monotonic()
        board.reboot(downtime)
        assert_closed(sock, "rst")
    assert not accepts_connections(port, TIMEOUT)
    with pytest.raises(BoardDown):
        MonitorServer(board).start(0)
    assert board.wait_rebooted(TIMEOUT)
    assert time.monotonic() - started >= downtime
    with connect(port) as sock:
        assert read(sock, LED)[1][0] == 0  # registers at their power-up values


def test_reboot_in_faithful_mode_leaves_the_server_down(board: VirtualBoard,
                                                        server: MonitorServer) -> None:
    board.link.mode = "faithful"
    board.reboot(0.0)
    assert board.wait_rebooted(TIMEOUT)
    assert not accepts_connections(server.port, TIMEOUT)


def test_corrupted_echo_executes_the_request(board: VirtualBoard, server: MonitorServer) -> None:
    with connect(server.port) as sock:
        board.faults.corrupt_echoes(1)
        sent = monitor_wire.header(b"w", 1, LED)
        echo = write(sock, LED, 0x33)
        assert echo != sent and echo[0] == sent[0] and echo[2:] == sent[2:]
        echo, words = read(sock, LED)
        assert echo == monitor_wire.header(b"r", 1, LED) and list(words) == [0x33]


def test_latency_delays_every_answer(board: VirtualBoard, server: MonitorServer) -> None:
    board.faults.latency = 0.2
    with connect(server.port) as sock:
        started = time.monotonic()
        read(sock, HK_ID)
        read(sock, HK_ID)
    assert time.monotonic() - started >= 0.4


def test_a_stalled_port_answers_nothing_until_resumed(board: VirtualBoard,
                                                      server: MonitorServer) -> None:
    with connect(server.port) as sock:
        board.faults.stall()
        sock.sendall(monitor_wire.header(b"w", 1, LED) + struct.pack("<I", 7))
        sock.settimeout(QUIET)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert board.counts.writes == 0  # not executed either
        sock.settimeout(TIMEOUT)
        board.faults.resume()
        assert recv_exact(sock, 8) == monitor_wire.header(b"w", 1, LED)
        assert read(sock, LED)[1][0] == 7


def test_killall_ends_a_stalled_connection(board: VirtualBoard, server: MonitorServer) -> None:
    board.link.killall_close = "rst"
    with connect(server.port) as sock:
        board.faults.stall()
        sock.sendall(monitor_wire.header(b"r", 1, HK_ID))
        server.killall()  # returns once the connection's thread ended
        assert server.connections == 0
        assert_closed(sock, "rst")
