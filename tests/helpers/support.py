"""Test helpers: a server subprocess with guaranteed cleanup, a raw-socket protocol client, and
whether a local port accepts connections.

``RawClient`` speaks docs/protocol.md by hand (no package client), so the tests also check that the
documentation is enough to talk to the server.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from pymodaq_plugins_pyrpl.hardware import protocol
from pymodaq_plugins_pyrpl.hardware.errors import ServerNotReady
from pymodaq_plugins_pyrpl.hardware.server_process import start_server

SERVER_MODULE = "pymodaq_plugins_pyrpl.hardware.server"


class _Exited:
    """The ``proc`` of a server that exited before its ready line (already reaped)."""

    stdout = None
    pid = 0

    def __init__(self, returncode: int) -> None:
        self.returncode = returncode

    def poll(self) -> int:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


class ServerProcess:
    """``python -m ...server ARGS --port 0 --token-file TMP/token``, started by
    :func:`server_process.start_server`; ``ready_line`` is "" if it exited before its ready line.

    Always cleaned up: SIGTERM, then SIGKILL after 10 s. ``stderr`` goes to a file of ``tmp_path``,
    read by ``log``. Raises TimeoutError (the process killed) if it neither printed its ready line
    nor exited within ``startup_timeout``.
    """

    def __init__(self, tmp_path: Path, args: list[str], startup_timeout: float = 30.0,
                 token_file: bool = True, env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.token_path = tmp_path / "token"
        cmd = [sys.executable, "-m", SERVER_MODULE, *args]
        if "--port" not in args:
            cmd += ["--port", "0"]
        if token_file:
            cmd += ["--token-file", str(self.token_path)]
        tmp_path.mkdir(mode=0o700, parents=True, exist_ok=True)  # as the server makes it
        self._log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop)
            dir=tmp_path, prefix="stderr-", suffix=".log", delete=False)
        self.log_path = Path(self._log_file.name)
        self._stdout: queue.Queue[str] = queue.Queue()
        try:
            self.proc, ready = start_server(cmd, startup_timeout, stderr=self._log_file,
                                            env={**os.environ, **(env or {})},
                                            preexec_fn=preexec_fn)
        except ServerNotReady as exc:
            if exc.returncode is None:
                self._log_file.close()
                raise TimeoutError(f"server not ready within {startup_timeout} s; log:\n"
                                   + self.log) from None
            self.proc = _Exited(exc.returncode)
            self.ready_line, self.port, self.pid, self.token = "", 0, 0, ""
            return
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout.put),
                         daemon=True).start()
        self.ready_line = ready.line
        self.port: int = ready.port
        self.pid: int = ready.pid
        self.token = self.token_path.read_text().strip() if token_file else ""

    @staticmethod
    def _pump(stream, put) -> None:
        for raw in stream:
            put(raw.decode(errors="replace").rstrip("\n"))

    @property
    def log(self) -> str:
        """What the server wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    @property
    def log_lines(self) -> list[str]:
        return self.log.splitlines()

    def stdout_lines(self) -> list[str]:
        """The lines the server printed after its ready line, so far."""
        lines = []
        while not self._stdout.empty():
            lines.append(self._stdout.get())
        return lines

    def client(self, name: str = "test", hello: bool = True, **hello_params: Any) -> RawClient:
        c = RawClient(self.port)
        if hello:
            c.hello(self.token, name, **hello_params)
        return c

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RawClient:
    """A minimal synchronous client on a raw socket: one call at a time, pushes kept aside."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self._buffer = bytearray()
        self.notifications: list[dict[str, Any]] = []
        self._id = 0

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_message(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; socket.timeout if none within ``timeout`` (default: the client's)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self._buffer:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._buffer += chunk
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        return json.loads(line)

    def read_reply(self, id_: Any = None) -> dict[str, Any]:
        while True:
            message = self.read_message()
            if "id" not in message:
                self.notifications.append(message)
                continue
            if id_ is None or message["id"] == id_:
                return message

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return the whole reply message (result or error)."""
        self._id += 1
        self.send_raw(protocol.dumps_line(protocol.request(self._id, method, params)))
        return self.read_reply(self._id)

    def call(self, method: str, **params: Any) -> Any:
        """The decoded result; raises AssertionError with the error object on an error reply."""
        reply = self.request(method, params)
        assert "error" not in reply, reply["error"]
        return protocol.decode_value(reply["result"])

    def hello(self, token: str, client: str = "test", **params: Any) -> dict[str, Any]:
        return self.call("hello", token=token, client=client, protocol=1, **params)

    def wait_notification(self, predicate=lambda m: True, timeout: float = 5.0) -> dict[str, Any]:
        """The first push (kept or new) matching ``predicate``; TimeoutError after ``timeout``."""
        for message in self.notifications:
            if predicate(message):
                self.notifications.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.read_message(deadline - time.monotonic())
            except (socket.timeout, TimeoutError):
                break
            if "id" in message:
                continue
            if predicate(message):
                return message
            self.notifications.append(message)
        raise TimeoutError("no matching notification")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def acquire_while_scope_settings_change(server: ServerProcess, timeout: float,
                                        period: float = 0.02, limit: float = 8.0
                                        ) -> tuple[dict[str, Any], float, int]:
    """``acquire(scope, timeout)`` by one client while another changes a scope setting every
    ``period`` s (for at most ``limit`` s): (the reply, seconds until it came, changes made)."""
    answered = threading.Event()
    changes = [0]

    def change() -> None:
        with server.client("changer") as changer:
            end = time.monotonic() + limit
            while not answered.wait(period) and time.monotonic() < end:
                delay = 1e-6 * (changes[0] % 2)
                assert "error" not in changer.request(
                    "set", {"module": "scope", "values": {"trigger_delay": delay}})
                changes[0] += 1

    with server.client("acquirer") as acquirer:
        changer = threading.Thread(target=change)
        changer.start()
        t0 = time.monotonic()
        reply = acquirer.request("acquire", {"module": "scope", "timeout": timeout})
        elapsed = time.monotonic() - t0
        answered.set()
        changer.join(limit + 10)
    return reply, elapsed, changes[0]


def accepts_connections(port: int, timeout: float = 2.0) -> bool:
    """True if something listens on 127.0.0.1:``port``, False if the connection is refused; other
    failures (e.g. ``socket.timeout`` after ``timeout`` s) raise."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
    except ConnectionRefusedError:
        return False
    return True
