"""(1) Trace transport: one 2×16384-sample trace in-process (the limit), through our client, and
through the peers (PyMoDAQ's serializer, JSON number lists) on a socketpair; our codec alone and the
floor of any two-process transport, for reference."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from bench.common import SHORTEST, Server
from pymodaq_plugins_pyrpl.hardware import catalogue, protocol
from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend


def in_process_trace_times(n: int) -> list[float]:
    """The limit: arm, wait (spinning, the most precise wait there is), fetch, in-process."""
    backend = SimulatorBackend(seed=1)
    backend.open()
    backend.set("scope", {"duration": SHORTEST})
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend.scope_arm()
        while not backend.scope_ready():
            pass
        backend.scope_fetch()
        times.append(time.perf_counter() - t0)
    return times


def trace_channels() -> tuple[np.ndarray, np.ndarray]:
    backend = SimulatorBackend(seed=1)
    backend.open()
    backend.set("scope", {"duration": SHORTEST})
    time.sleep(backend.scope_arm())
    while not backend.scope_ready():
        time.sleep(0.0005)
    trace = backend.scope_fetch()
    return np.asarray(trace.ch1), np.asarray(trace.ch2)


def client_trace_times(server: Server, n: int) -> list[float]:
    client = server.client
    client.set("scope", {"duration": SHORTEST})
    client.acquire("scope")  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.acquire("scope")
        times.append(time.perf_counter() - t0)
    return times


def _pair_times(n: int, send, receive) -> list[float]:
    """Times of a request (one byte) to a helper thread that answers with ``send``, + ``receive``
    here, over a fresh socketpair: the same request-reply pattern as (b), without a process hop."""
    a, b = socket.socketpair()
    a.settimeout(30)  # a failing side must not hang the bench
    b.settimeout(30)

    def sender() -> None:
        while a.recv(1) == b"r":
            send(a)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    times = []
    try:
        for i in range(n + 1):
            t0 = time.perf_counter()
            b.sendall(b"r")
            receive(b)
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - t0)
    finally:
        try:
            b.sendall(b"q")
        except OSError:
            pass
        thread.join(5)
        a.close()
        b.close()
    return times


def reply_message(ch1: np.ndarray, ch2: np.ndarray) -> dict:
    """The reply to ``acquire("scope")`` as the server sends it (float32 samples)."""
    settings = {name: "in1" for name in catalogue.MODULES["scope"].attributes}
    return protocol.result(1, {"ch1": ch1.astype("<f4"), "ch2": ch2.astype("<f4"), "t0": 0.0,
                               "dt": SHORTEST / ch1.size, "sequence": 1, "timestamp": time.time(),
                               "settings": settings})


def pymodaq_trace_times(ch1: np.ndarray, ch2: np.ndarray, n: int) -> list[float]:
    """The DataToExport the scope plugin emits (float32 channels, linear time axis) through
    PyMoDAQ's serializer."""
    from pymodaq.utils.data import Axis, DataFromPlugins, DataToExport
    from pymodaq_utils.serialize.factory import SerializableFactory
    from pymodaq_utils.serialize.mysocket import Socket
    from serializall.utils import bytes_to_int

    ch1, ch2 = ch1.astype("<f4"), ch2.astype("<f4")
    axis = Axis("Time", units="s", offset=0.0, scaling=SHORTEST / ch1.size, size=ch1.size,
                index=0)
    dte = DataToExport("PyRPL scope", data=[DataFromPlugins(
        name="Scope", data=[ch1, ch2], dim="Data1D", labels=["in1", "in2"], units="V",
        axes=[axis])])
    factory = SerializableFactory()
    received = []

    def send(sock: socket.socket) -> None:
        Socket(sock).check_sended_with_serializer(dte)

    def receive(sock: socket.socket) -> None:
        s = Socket(sock)
        length = bytes_to_int(s.check_received_length(4))
        received.append(factory.get_apply_deserializer(s.check_received_length(length)))

    times = _pair_times(n, send, receive)
    assert np.array_equal(received[-1][0].data[0], ch1)
    return times


def _line_receiver(decode):
    """``receive(sock)``: read one line, keep ``decode(line)``; its ``.out`` holds the last."""
    buffer, chunk = bytearray(), bytearray(1 << 20)

    def receive(sock: socket.socket) -> None:
        while (end := buffer.find(b"\n")) < 0:
            buffer.extend(memoryview(chunk)[:sock.recv_into(chunk)])
        with memoryview(buffer) as view:
            receive.out = decode(bytes(view[:end]))
        del buffer[:end + 1]

    return receive


def json_list_trace_times(ch1: np.ndarray, ch2: np.ndarray, n: int) -> list[float]:
    """The same trace as JSON number lists, one line per message."""
    ch1, ch2 = ch1.astype("<f4"), ch2.astype("<f4")

    def send(sock: socket.socket) -> None:
        sock.sendall(json.dumps({"ch1": ch1.tolist(), "ch2": ch2.tolist()}).encode() + b"\n")

    receive = _line_receiver(lambda line: {k: np.array(v) for k, v in json.loads(line).items()})
    times = _pair_times(n, send, receive)
    assert np.array_equal(receive.out["ch1"], ch1)
    return times


def codec_pair_times(ch1: np.ndarray, ch2: np.ndarray, n: int) -> list[float]:
    """Our codec (``dumps_line`` / ``decode_line``) on the socketpair of (c) and (d)."""
    message = reply_message(ch1, ch2)

    def send(sock: socket.socket) -> None:
        sock.sendall(protocol.dumps_line(message))

    receive = _line_receiver(protocol.decode_line)
    times = _pair_times(n, send, receive)
    assert np.array_equal(receive.out["result"]["ch1"], message["result"]["ch1"])
    return times


_FLOOR_SERVER = ("import socket, sys\n"
                 "s = socket.create_server(('127.0.0.1', 0)); print(s.getsockname()[1], flush=True)\n"
                 "c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
                 "reply = b'x' * int(sys.argv[1]) + b'\\n'\n"
                 "while c.recv(65536):\n"
                 "    c.sendall(reply)\n")


def floor_times(size: int, n: int) -> list[float]:
    """A request line and a ``size``-byte reply between two processes over loopback: blocking
    raw sockets, no encoding, no event loop, no threads. No transport between processes is faster."""
    proc = subprocess.Popen([sys.executable, "-c", _FLOOR_SERVER, str(size - 1)],
                            stdout=subprocess.PIPE, text=True)
    try:
        sock = socket.create_connection(("127.0.0.1", int(proc.stdout.readline())), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        chunk, times = bytearray(1 << 20), []
        with sock:
            for i in range(n + 1):
                t0 = time.perf_counter()
                sock.sendall(b"r\n")
                got = 0
                while got < size:
                    got += sock.recv_into(chunk)
                if i:
                    times.append(time.perf_counter() - t0)
    finally:
        proc.kill()
        proc.wait(5)
    return times
