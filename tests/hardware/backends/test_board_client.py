"""The board client against the virtual board's ``monitor_server``, in-process, on real sockets:
registers round-trip, every fault of the data port (stall, latency, FIN, RST, garbage echo, reboot,
an unserved connection in faithful mode) ends the request within its deadline with its own error,
a late reply is drained and never read as the next answer, bad requests send nothing, and requests
from several threads do not mix.

Every wait has a deadline: the client's own (asserted with :data:`MARGIN`) or pytest's timeout.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware.backends.board_link.client import BoardClient
from pymodaq_plugins_pyrpl.hardware.backends.board_link.errors import (
    LinkClosed,
    LinkError,
    LinkGarbage,
    LinkNotConnected,
    LinkRefused,
    LinkReset,
    LinkTimeout,
)
from pymodaq_plugins_pyrpl.virtual_board import MonitorServer, VirtualBoard
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

SHORT = 0.3
"""Request timeout (s) of the tests that wait for a deadline to pass."""
LONG = 5.0
"""Request timeout (s) of the tests where the deadline must not be what ends the request."""
MARGIN = 1.0
"""Seconds a failed request may take beyond its deadline on a loaded machine."""
HK_ID, LED = 0x40000000, 0x40000030
ASG_WRAP = (0x40200008, 0x40200028)
SCOPE_CH1 = 0x40110000


@pytest.fixture
def board() -> Iterator[VirtualBoard]:
    board = VirtualBoard(seed=1)
    yield board
    board.faults.clear()
    board.close()


@pytest.fixture
def server(board: VirtualBoard) -> Iterator[MonitorServer]:
    server = MonitorServer(board)
    server.start(0)
    yield server
    server.stop()


@pytest.fixture
def client(server: MonitorServer) -> Iterator[BoardClient]:
    client = BoardClient.connect("127.0.0.1", server.port, LONG)
    yield client
    client.close()


def timed(call: Callable[[], object]) -> tuple[BaseException, float]:
    """The exception ``call`` raised and the seconds it took (fails if it returned)."""
    start = time.monotonic()
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - returned to the test
        return exc, time.monotonic() - start
    raise AssertionError("the call returned instead of raising")


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException | object]]:
    """Run ``call`` in a thread; the list gets its result or exception."""
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# -- registers -------------------------------------------------------------------------------------

def test_reads_and_writes_round_trip_registers(board: VirtualBoard, client: BoardClient) -> None:
    before = (board.counts.reads, board.counts.writes)
    assert client.writes(LED, [0x5A]) is True
    assert client.writes(ASG_WRAP[0], np.array([0x12345678, 0x0BCDEF01], dtype=np.uint32))
    words = client.reads(ASG_WRAP[0], 2)
    assert words.dtype == np.uint32 and words.tolist() == [0x12345678, 0x0BCDEF01]
    assert client.reads(LED, 1).tolist() == [0x5A]
    assert client.reads(HK_ID, 1).tolist() == [1]
    trace = client.reads(SCOPE_CH1, 16384)
    assert trace.dtype == np.uint32 and trace.shape == (16384,)
    assert (board.counts.reads, board.counts.writes) == (before[0] + 4, before[1] + 2)
    assert (client._read_counter, client._write_counter) == (4, 2)
    assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert client.owed_bytes == 0 and client.silent_for() == 0.0


@pytest.mark.parametrize("call", [
    lambda c: c.reads(LED, 0),
    lambda c: c.reads(LED, 65536),
    lambda c: c.reads(0x40100000 + 128 * 1024 - 4, 2),
    lambda c: c.reads(-4, 1),
    lambda c: c.reads(2**32, 1),
    lambda c: c.writes(LED, []),
    lambda c: c.writes(0x4011FFFC, [1, 2]),
], ids=["read-0", "read-65536", "read-crossing-window", "negative-address", "address-2**32",
        "write-empty", "write-crossing-window"])
def test_bad_requests_raise_value_error_and_send_nothing(
        board: VirtualBoard, client: BoardClient, call: Callable[[BoardClient], object]) -> None:
    before = (board.counts.reads, board.counts.writes)
    with pytest.raises(ValueError):
        call(client)
    assert client.reads(HK_ID, 1).tolist() == [1]  # still in step
    assert (board.counts.reads, board.counts.writes) == (before[0] + 1, before[1])


def test_connect_refused_is_link_refused(server: MonitorServer) -> None:
    port = server.port
    server.stop()
    with pytest.raises(LinkRefused) as info:
        BoardClient.connect("127.0.0.1", port, LONG)
    assert info.value.operation == "connect" and f"127.0.0.1:{port}" in str(info.value)
    with pytest.raises(ValueError):
        BoardClient.connect("127.0.0.1", port, 0.0)


# -- a board that does not answer ----------------------------------------------------------------

def test_stalled_board_times_out_and_the_late_reply_is_not_the_next_answer(
        board: VirtualBoard, client: BoardClient) -> None:
    client.writes(LED, [0x5A])
    client.timeout = SHORT
    reads_before = board.counts.reads
    board.faults.stall()
    exc, took = timed(lambda: client.reads(LED, 1))
    assert isinstance(exc, LinkTimeout) and isinstance(exc, LinkError)
    assert (exc.operation, exc.address, exc.length) == ("read", LED, 1)
    assert took <= client.deadline_for(1) + MARGIN
    assert client.owed_bytes == 12 and client.silent_for() > 0
    # still stalled: the next request is not sent while the late reply is owed
    exc, took = timed(lambda: client.reads(HK_ID, 1))
    assert isinstance(exc, LinkTimeout) and exc.address == HK_ID and "not sent" in str(exc)
    assert took <= client.deadline_for(1) + 12 / 200e3 + MARGIN
    board.faults.resume()
    client.timeout = LONG
    assert client.reads(HK_ID, 1).tolist() == [1]  # not the LED's 0x5A of the late reply
    assert board.counts.reads == reads_before + 2  # the late read and this one, nothing else
    assert client.owed_bytes == 0 and client.silent_for() == 0.0


def test_slow_reply_is_drained_before_the_next_request(board: VirtualBoard,
                                                       client: BoardClient) -> None:
    client.writes(LED, [0x33])
    client.timeout = SHORT
    board.faults.latency = SHORT + 0.5
    exc, took = timed(lambda: client.reads(LED, 1))
    assert isinstance(exc, LinkTimeout) and took <= client.deadline_for(1) + MARGIN
    board.faults.latency = 0.0
    client.timeout = LONG
    assert client.writes(ASG_WRAP[1], [77]) is True  # waits for the late read, then its echo
    assert client.reads(ASG_WRAP[1], 1).tolist() == [77]
    assert client.reads(LED, 1).tolist() == [0x33]


def test_late_scope_trace_never_mixes_into_the_next(board: VirtualBoard,
                                                    client: BoardClient) -> None:
    client.writes(ASG_WRAP[0], [0x2AAA5555])
    client.timeout = SHORT
    board.faults.stall()
    exc, _ = timed(lambda: client.reads(SCOPE_CH1, 16384))
    assert isinstance(exc, LinkTimeout) and client.owed_bytes == 8 + 4 * 16384
    board.faults.resume()
    client.timeout = LONG
    assert client.reads(ASG_WRAP[0], 1).tolist() == [0x2AAA5555]
    assert client.reads(SCOPE_CH1, 16384).shape == (16384,)


def test_unserved_connection_in_faithful_mode_times_out(board: VirtualBoard,
                                                        server: MonitorServer) -> None:
    """Faithful mode: the server serves its first client only; a second one is accepted by the
    kernel (listen backlog) and never answered, as when another program holds the board."""
    server.stop()
    board.link.mode = "faithful"
    port = server.start(0)
    first = BoardClient.connect("127.0.0.1", port, LONG)
    second = BoardClient.connect("127.0.0.1", port, SHORT)
    try:
        assert first.reads(HK_ID, 1).tolist() == [1]
        exc, took = timed(lambda: second.reads(HK_ID, 1))
        assert isinstance(exc, LinkTimeout) and took <= second.deadline_for(1) + MARGIN
        assert first.reads(HK_ID, 1).tolist() == [1]
    finally:
        second.close()
        first.close()


# -- a board that ends the connection ------------------------------------------------------------

@pytest.mark.parametrize("mode", ["shared", "faithful"])
@pytest.mark.parametrize(("close", "error"), [("fin", LinkClosed), ("rst", LinkReset)])
def test_killall_ends_an_idle_client_with_its_own_error(
        board: VirtualBoard, server: MonitorServer, mode: str, close: str,
        error: type[LinkError]) -> None:
    server.stop()
    board.link.mode, board.link.killall_close = mode, close
    port = server.start(0)
    client = BoardClient.connect("127.0.0.1", port, LONG)
    try:
        assert client.reads(HK_ID, 1).tolist() == [1]
        server.killall()
        exc, took = timed(lambda: client.reads(HK_ID, 1))
        assert type(exc) is error, exc
        assert took < LONG  # detected from the socket, not by the deadline
        assert client.closed
        with pytest.raises(LinkNotConnected):
            client.writes(LED, [1])
    finally:
        client.close()


@pytest.mark.parametrize(("close", "error"), [("fin", LinkClosed), ("rst", LinkReset)])
def test_killall_during_a_request_ends_it_at_once(board: VirtualBoard, server: MonitorServer,
                                                  client: BoardClient, close: str,
                                                  error: type[LinkError]) -> None:
    board.link.killall_close = close
    board.faults.stall()
    thread, outcome = in_thread(lambda: client.reads(LED, 1))
    wait_until(lambda: client.silent_for() > 0, LONG, "the read to be sent")
    start = time.monotonic()
    server.killall()
    thread.join(LONG)
    assert not thread.is_alive() and time.monotonic() - start < LONG
    assert type(outcome[0]) is error, outcome


def test_reboot_resets_the_connection_and_refuses_until_it_is_over(
        board: VirtualBoard, client: BoardClient) -> None:
    assert client.reads(HK_ID, 1).tolist() == [1]
    port = client.port
    board.reboot(60.0)
    exc, _ = timed(lambda: client.reads(HK_ID, 1))
    assert isinstance(exc, LinkReset)
    with pytest.raises(LinkRefused):
        BoardClient.connect("127.0.0.1", port, LONG)


def test_garbage_echo_closes_the_client(board: VirtualBoard, client: BoardClient) -> None:
    client.writes(LED, [7])
    board.faults.corrupt_echoes(1)
    exc, took = timed(lambda: client.reads(LED, 1))
    assert isinstance(exc, LinkGarbage) and took < LONG
    assert exc.address == LED and "echoed" in str(exc)
    assert client.closed
    with pytest.raises(LinkNotConnected):
        client.reads(LED, 1)


def test_garbage_echo_of_a_write(board: VirtualBoard, client: BoardClient) -> None:
    board.faults.corrupt_echoes(1)
    with pytest.raises(LinkGarbage) as info:
        client.writes(LED, [9])
    assert info.value.operation == "write"


# -- threads and closing -------------------------------------------------------------------------

def test_threads_get_their_own_answers(board: VirtualBoard, client: BoardClient) -> None:
    registers = {ASG_WRAP[0]: 0x11111111, ASG_WRAP[1]: 0x22222222, LED: 0x33, HK_ID: 1}
    for address, value in registers.items():
        if address != HK_ID:
            client.writes(address, [value])
    wrong: list[str] = []

    def hammer(address: int) -> None:
        for _ in range(200):
            got = int(client.reads(address, 1)[0])
            if got != registers[address]:
                wrong.append(f"{address:#x}: {got:#x}")

    threads = [threading.Thread(target=hammer, args=(a,), daemon=True) for a in registers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads) and not wrong
    assert client._read_counter == 4 * 200


def test_a_call_waiting_for_another_keeps_its_own_deadline(board: VirtualBoard,
                                                          client: BoardClient) -> None:
    board.faults.stall()
    thread, outcome = in_thread(lambda: client.reads(LED, 1))
    wait_until(lambda: client.silent_for() > 0, LONG, "the first read to be sent")
    client.timeout = SHORT
    exc, took = timed(lambda: client.reads(HK_ID, 1))
    assert isinstance(exc, LinkTimeout) and "another request" in str(exc)
    assert took <= client.deadline_for(1) + MARGIN
    board.faults.resume()
    thread.join(LONG)
    assert outcome and not isinstance(outcome[0], BaseException)


def test_close_is_idempotent_and_ends_a_running_request(board: VirtualBoard,
                                                        client: BoardClient) -> None:
    board.faults.stall()
    thread, outcome = in_thread(lambda: client.reads(LED, 1))
    wait_until(lambda: client.silent_for() > 0, LONG, "the read to be sent")
    client.close()
    thread.join(LONG)
    assert not thread.is_alive() and isinstance(outcome[0], LinkNotConnected)
    client.close()
    assert client.closed
    with pytest.raises(LinkNotConnected):
        client.reads(LED, 1)
