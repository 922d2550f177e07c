"""A threaded TCP proxy that injects faults between a client and a server (tests only).

``FaultProxy(target_port)`` listens on a free loopback port and forwards every accepted connection
to ``127.0.0.1:target_port``, one thread per direction. ``set_mode`` switches the behaviour of all
connections, current and new:

=========  ========================================================================================
pass       forward both ways
drop       close both sides of every connection now; new connections are closed as soon as accepted
stall      stop forwarding without closing: bytes read are held (and counted) until the mode changes
truncate   the next bytes toward the client are cut inside a line: a partial line goes out, then
           both sides are closed (new connections too: their first reply is truncated)
slow       toward the client, one byte every ``SLOW_DELAY`` seconds
garble     toward the client, a line that is not JSON before the bytes, connection kept open
=========  ========================================================================================

``accepted`` counts accepted connections and ``lines_from_client`` the newline-terminated requests
read from clients (forwarded or held); :meth:`wait_until` waits for a condition on them.
"""
from __future__ import annotations

import select
import socket
import threading
import time
from typing import Callable

MODES = ("pass", "drop", "stall", "truncate", "slow", "garble")
GARBAGE = b"}{ not JSON\n"
SLOW_DELAY = 0.005
POLL = 0.05
"""The pump threads notice mode changes and close() this often (seconds)."""


class _Pair:
    """A client connection and its upstream connection to the server."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class FaultProxy:
    """Proxy ``127.0.0.1:port`` → ``127.0.0.1:target_port`` with switchable faults (module doc)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self._mode = "pass"
        self._pairs: set[_Pair] = set()
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self.accepted = 0
        self.lines_from_client = 0
        self._spawn(self._accept_loop)

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Switch every connection to ``mode``; ``drop`` closes the current connections at once."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        with self._cond:
            self._mode = mode
            pairs = list(self._pairs) if mode == "drop" else []
            self._cond.notify_all()
        for pair in pairs:
            pair.close()

    def wait_until(self, predicate: Callable[[FaultProxy], bool], timeout: float = 5.0) -> bool:
        """Wait (bounded) until ``predicate(self)`` holds; its last value."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def close(self) -> None:
        self._stopped.set()
        with self._cond:
            pairs = list(self._pairs)
            self._cond.notify_all()
        for pair in pairs:
            pair.close()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- threads ---------------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="faultproxy")
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.accepted += 1
                self._cond.notify_all()
                mode = self._mode
            if mode == "drop":
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()  # the server is down: the client sees its connection closed
                continue
            for sock in (client, upstream):
                sock.settimeout(None)  # reads wait in select(); writes may take their time
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            with self._cond:
                self._pairs.add(pair)
            self._spawn(self._pump, pair, client, upstream, False)
            self._spawn(self._pump, pair, upstream, client, True)

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket,
              to_client: bool) -> None:
        """Read ``source`` continuously (also while stalled) and forward as the mode says."""
        held = bytearray()
        try:
            while not pair.closed.is_set():
                sendable = held and self._mode != "stall"
                readable, _, _ = select.select([source], [], [], 0 if sendable else POLL)
                if readable:
                    data = source.recv(1 << 16)
                    if not data:
                        if self._mode == "pass":
                            sink.sendall(held)
                        break
                    held += data
                    if not to_client:
                        with self._cond:
                            self.lines_from_client += data.count(b"\n")
                            self._cond.notify_all()
                if held and not self._send(held, sink, to_client):
                    break
        except OSError:
            pass
        finally:
            pair.close()
            with self._cond:
                self._pairs.discard(pair)

    def _send(self, held: bytearray, sink: socket.socket, to_client: bool) -> bool:
        """Send (part of) ``held`` as the current mode says, removing what went; False: close."""
        mode = self._mode
        if mode == "stall":
            return True
        if mode == "drop":
            return False
        if mode == "truncate" and to_client:
            sink.sendall(held[:max(1, _line_end(held) // 2)])
            return False
        if mode == "garble" and to_client:
            sink.sendall(GARBAGE + held)
            held.clear()
            return True
        if mode == "slow" and to_client:
            sink.sendall(held[:1])
            del held[:1]
            time.sleep(SLOW_DELAY)
            return True
        sink.sendall(held)
        held.clear()
        return True


def _line_end(data: bytes | bytearray) -> int:
    """Length of the first line in ``data`` without its newline (all of it if there is none)."""
    end = data.find(b"\n")
    return len(data) if end < 0 else end
