"""The virtual board's own figures: CPU while idle, one register round trip, one scope read, one
network-analyzer point.

Usage: ``python -m bench.virtual_board [--runs N] [--idle SECONDS] [--json]`` from the repository
root. The board and its monitor server run in this process (threads), the client is a raw socket
speaking PyRPL's protocol (no PyRPL: its own client adds its Python overhead on top, see
docs/performance.md).

- idle CPU: the CPU time of this whole process (board, server, one connected idle client and the
  sleeping main thread) over ``--idle`` seconds, as a fraction of one core.
- register round trip: one 1-word read of a plain register (hk LEDs), header out, echo and word
  back, median over 2000 requests per run.
- scope read: PyRPL's read of a finished trace, two 16384-word requests (ch1, ch2); "computed" is
  the first read of a new acquisition (the physics evaluates 2 × 16384 samples), "cached" a read
  again of the same trace.
- network-analyzer point: the three requests PyRPL's network analyzer makes per frequency (write
  iq2's frequency, which starts an average; read its four accumulator words; read its amplitude),
  median over 500 points per run of a 1 kHz-10 kHz sweep at 1 MHz resolution bandwidth (the
  average is over before the read), iq2 exciting out1 and demodulating in1 through the loopback
  with iq0 and iq1 in use too, as after PyRPL's start-up; next to it the same three requests on
  plain registers, so that the difference is the physics of a frequency step.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import time

import psutil

from pymodaq_plugins_pyrpl.hardware import catalogue, monitor_wire
from pymodaq_plugins_pyrpl.virtual_board import MonitorServer, VirtualBoard, decode

LED, SCOPE = 0x40000030, 0x40100000
DSP, DSP_SPAN = 0x40300000, 0x10000
ROUND_TRIPS = 2000
NA_POINTS = 500


def _recv(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the board closed the connection")
        data += chunk
    return bytes(data)


def _read(sock: socket.socket, address: int, length: int) -> bytes:
    sock.sendall(monitor_wire.header(b"r", length, address))
    return _recv(sock, 8 + 4 * length)


def _write(sock: socket.socket, address: int, value: int) -> None:
    sock.sendall(monitor_wire.header(b"w", 1, address) + value.to_bytes(4, "little"))
    _recv(sock, 8)


def idle_cpu(sock: socket.socket, seconds: float) -> float:
    """Fraction of one core this process used while the connected board idled."""
    process = psutil.Process()
    _read(sock, LED, 1)
    before, start = process.cpu_times(), time.monotonic()
    time.sleep(seconds)  # the measurement window: nothing to wait for
    after, elapsed = process.cpu_times(), time.monotonic() - start
    used = after.user + after.system - before.user - before.system
    return max(0.0, used) / elapsed  # CPU times tick in 10 ms: below 0.2 % of 5 s reads 0


def round_trip(sock: socket.socket) -> float:
    """Median seconds of one 1-word register read."""
    times = []
    for _ in range(ROUND_TRIPS):
        start = time.perf_counter()
        _read(sock, LED, 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scope_read(sock: socket.socket) -> tuple[float, float]:
    """(computed, cached) seconds of reading both channels of a finished 131 µs trace."""
    _write(sock, SCOPE + 0x14, 1)  # decimation 1
    _write(sock, SCOPE + 0x0, 0b10)  # reset
    _write(sock, SCOPE + 0x10, 16384)  # delay: the whole buffer after the trigger
    _write(sock, SCOPE + 0x0, 0b01)  # arm
    _write(sock, SCOPE + 0x4, 1)  # software trigger
    deadline = time.monotonic() + 5.0
    while int.from_bytes(_read(sock, SCOPE, 1)[8:], "little") & 0b101:
        if time.monotonic() > deadline:
            raise TimeoutError("the scope trace did not finish")
    reads = []
    for _ in range(2):
        start = time.perf_counter()
        _read(sock, SCOPE + 0x10000, 16384)
        _read(sock, SCOPE + 0x20000, 16384)
        reads.append(time.perf_counter() - start)
    return reads[0], reads[1]


def _iq(k: int) -> int:
    return DSP + decode.DSP_NUMBERS[f"iq{k}"] * DSP_SPAN


def na_setup(sock: socket.socket) -> None:
    """iq2 as PyRPL's network analyzer sets it up (1 MHz bandwidth, one average per point), iq0
    and iq1 demodulating in1 at 100 kHz with a 1 kHz bandwidth."""
    bandwidth = decode.IQ_QUADRATURE_FILTERS[2]
    for k in (0, 1):
        _write(sock, _iq(k) + 0x0, decode.DSP_NUMBERS["in1"])
        _write(sock, _iq(k) + 0x124, decode.IQ_QUADRATURE_FILTERS[k].word([1e3, 1e3]))
        _write(sock, _iq(k) + 0x108, catalogue.IQ_FREQUENCY.word(100e3))
    iq2 = _iq(2)
    _write(sock, iq2 + 0x0, decode.DSP_NUMBERS["in1"])
    _write(sock, iq2 + 0x4, 1)  # output_direct: out1
    _write(sock, iq2 + 0x10C, catalogue.IQ_OUTPUT_SIGNALS.index("output_direct"))
    _write(sock, iq2 + 0x124, bandwidth.word([1e6, 1e6]))
    _write(sock, iq2 + 0x130, 125)  # averages: 125 MHz / rbw
    _write(sock, iq2 + 0x134, 62)  # sleep cycles: half of that
    _write(sock, iq2 + 0x114, catalogue.IQ_AMPLITUDE.word(0.1))
    _write(sock, iq2 + 0x100, 1)


def na_point(sock: socket.socket, plain: bool) -> float:
    """Median seconds of one network-analyzer point (its three requests on plain registers if
    ``plain``)."""
    iq2 = _iq(2)
    times = []
    for i in range(NA_POINTS):
        word = catalogue.IQ_FREQUENCY.word(1e3 + 9e3 * i / NA_POINTS)
        start = time.perf_counter()
        if plain:
            _write(sock, LED, i & 0xFF)
            _read(sock, LED, 4)
            _read(sock, LED, 1)
        else:
            _write(sock, iq2 + 0x108, word)
            _read(sock, iq2 + 0x140, 4)
            _read(sock, iq2 + 0x114, 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    board = VirtualBoard(seed=1)
    server = MonitorServer(board)
    port = server.start(0)
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            figures = {"idle_cpu_fraction": idle_cpu(sock, args.idle)}
            trips = [round_trip(sock) for _ in range(args.runs)]
            scopes = [scope_read(sock) for _ in range(args.runs)]
            na_setup(sock)
            points = [(na_point(sock, False), na_point(sock, True)) for _ in range(args.runs)]
    finally:
        server.stop()
    figures["register_round_trip_us"] = statistics.median(trips) * 1e6
    figures["scope_read_computed_ms"] = statistics.median(s[0] for s in scopes) * 1e3
    figures["scope_read_cached_ms"] = statistics.median(s[1] for s in scopes) * 1e3
    figures["na_point_us"] = statistics.median(p[0] for p in points) * 1e6
    figures["na_point_plain_registers_us"] = statistics.median(p[1] for p in points) * 1e6
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:28s} {value:10.4g}")


if __name__ == "__main__":
    main()
