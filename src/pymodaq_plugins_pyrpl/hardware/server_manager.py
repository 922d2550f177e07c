"""TCPServerManager: start a local PyRPL server on demand, share it, stop it with its last user.

Pinned API (plugins rely on it)::

    m = TCPServerManager(host="localhost", port=6341, hostname=None)  # None or "": simulated board
    client = m.ensure_server_running()   # reuse a compatible running server, or spawn one
    m.release_server()                   # drop this reference

Sharing, within a process: every manager for the same host and port shares ONE :class:`PyRPLClient`
(one connection, a reference count of managers). Across processes: a local server is described by its
state file (:mod:`.runtime`), which every server writes once it listens, whether a manager or a
user started it; a compatible running server is reused, a server for another board (or, simulated,
another plant) is an error naming both. The server counts holding sessions (``hold: true``); a server this module started
(``--auto-stop``) stops when the last holder says goodbye, or soon after the last holder vanished.

Every state file is judged by :func:`runtime.server_process` (the pid must still be that server:
a pid the kernel gave to another process is not); a stale one is removed, never obeyed, and no
signal goes to a process that fails the check. A server removes its own state file when it exits by
itself or is stopped, so a missing state file means "stopped".

Crash recovery and takeover: if the held local server dies, the shared client's reconnect loop calls
:meth:`TCPServerManager._revive`, which restarts it on the same port with the same token, under the
port lock, only if the state file still names this token and its server no longer runs. A state file
with another token means the server was taken over (``pymodaq-pyrpl takeover``): the client stops for
good with AuthenticationFailed. No state file means it was stopped (or stopped by itself): ServerGone.
So two programs can never restart each other's servers in a loop.

Locking: starting or connecting to the server of one port holds that port's lock only (a
``threading.Lock`` per host and port within a process, :func:`runtime.port_lock` across processes),
so a slow start on one port never delays another port.

A manager given a token, and any manager of a remote host (anything but localhost / 127.x / ::1),
never spawns: it connects with that token to the server running at that address, loopback included
(e.g. a server of another runtime folder or user).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import psutil

from . import board_address, protocol, runtime
from .client import PyRPLClient
from .errors import (AuthenticationFailed, CertificateMismatch, ConnectionFailed, PortInUse,
                     PyrplPluginError, ServerError, ServerGone, ServerMismatch, ServerNotReady,
                     ServerShuttingDown)
from .physics.plants import plant_spec
from .runtime import ServerState
from .server_process import start_server
from .sockets import is_loopback

logger = logging.getLogger(__name__)


@dataclass
class _Shared:
    """The connection shared by every manager of one process for one host and port."""

    client: PyRPLClient
    backend: str
    hostname: str
    config: str
    plant: str
    ports: tuple[int, int]
    references: int = 0


_shared: dict[tuple[str, int], _Shared] = {}
_shared_lock = threading.Lock()
"""Guards ``_shared``, the reference counts and ``_key_locks``; never held while connecting."""
_key_locks: dict[tuple[str, int], threading.Lock] = {}
"""One lock per host and port: connecting to (or starting) that server, one thread at a time."""
_children: list[subprocess.Popen] = []


def _key_lock(key: tuple[str, int]) -> threading.Lock:
    with _shared_lock:
        return _key_locks.setdefault(key, threading.Lock())


def is_local(host: str) -> bool:
    """True if a server at ``host`` runs on this machine: the empty host or a loopback one."""
    return host == "" or is_loopback(host)


def requested_backend(hostname: str | None) -> tuple[str, str]:
    """(backend, board hostname) for a plugin's hostname setting (None or "": the simulator)."""
    return ("pyrpl", hostname) if hostname else ("mock", "")


def requested_plant(backend: str, hostname: str, plant: str) -> str:
    """The canonical spec of the simulated ``plant`` (:func:`physics.plants.plant_spec`) for the
    simulator backend and the virtual board, "" for a real board (which has no simulated plant).
    Raises ServerError if the spec is not a plant."""
    if backend != "mock" and hostname != board_address.VIRTUAL:
        return ""
    try:
        return plant_spec(plant)
    except ValueError as exc:
        raise ServerError(f"simulated plant: {exc}") from None


class TCPServerManager:
    """Start, share and release the PyRPL server a plugin needs.

    ``hostname`` selects the board (None or "": the simulated board; ``virtual``: the real PyRPL
    path on a virtual board the server starts); ``plant`` what connects the simulated or virtual
    board's outputs to its inputs (``name[:key=value,...]``, see the server's ``--plant``;
    ignored for a real board). ``ssh_port`` and ``board_port`` are the ports of a
    network board (PyRPL's ``sshport`` and ``port``; ignored for the simulated, virtual and fake
    boards): with the hostname, they identify the board. ``python`` is the interpreter that runs
    a spawned server (default: this one), so PyRPL may live in an environment of its own.
    ``token``: connect to the server running at ``host`` with this token, never start one
    (needed for a remote server; a local server started here, or by hand, is found through its
    state file without it). ``startup_timeout`` bounds spawning a server (PyRPL loading its FPGA
    bitfile on a real board takes ~10 s), ``connect_timeout`` connecting to a running one.
    ``auto_stop`` and ``session_grace`` are passed to a spawned server (see its ``--help``).
    ``tls``, ``tls_ca`` and ``tls_fingerprint`` are given to the client of a remote server (see
    :class:`PyRPLClient`); a local server is always plain TCP on the loopback interface.
    ``take_over``: a server spawned for a network board starts even if another program's client
    is on the board (``--take-over``); not part of which board a server serves (a running server
    is used as it is).
    """

    def __init__(self, host: str = "localhost", port: int = protocol.DEFAULT_PORT,
                 hostname: str | None = None, *, config: str = "", plant: str = "loopback",
                 ssh_port: int = board_address.DEFAULT_SSH_PORT,
                 board_port: int = board_address.DEFAULT_BOARD_PORT, token: str = "",
                 python: str | None = None, startup_timeout: float = 60.0,
                 connect_timeout: float = 10.0, auto_stop: float = 10.0,
                 session_grace: float = 5.0, client_name: str | None = None,
                 server_args: tuple[str, ...] = (), tls: bool = False, tls_ca: str | None = None,
                 tls_fingerprint: str | None = None, take_over: bool = False) -> None:
        self.host = host
        self.port = port
        self.backend, self.hostname = requested_backend(hostname)
        self.config = config or ""
        self.plant = requested_plant(self.backend, self.hostname, plant)
        self.ports = (ssh_port, board_port) if board_address.has_ports(self.hostname) else None
        """The network board's ports; None: the board has none (not compared)."""
        self.token = token
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        self.connect_timeout = connect_timeout
        self.auto_stop = auto_stop
        self.session_grace = session_grace
        self.client_name = client_name or f"{os.path.basename(sys.argv[0]) or 'python'} (pid {os.getpid()})"
        self.server_args = tuple(server_args)
        self.tls = {"tls": tls, "tls_ca": tls_ca, "tls_fingerprint": tls_fingerprint}
        self.take_over = take_over
        self._shared: _Shared | None = None

    @property
    def key(self) -> tuple[str, int]:
        return ("localhost" if is_local(self.host) else self.host, self.port)

    @property
    def client(self) -> PyRPLClient:
        """The shared client. Raises ServerError if this manager holds no server."""
        if self._shared is None:
            raise ServerError("no server is held: call ensure_server_running() first")
        return self._shared.client

    def ensure_server_running(self) -> PyRPLClient:
        """Hold a compatible server for this manager and return the shared client.

        Reuses this process's connection, or a running local server (state file + handshake), or
        spawns one. Calling it again on a holding manager changes nothing. A shared connection that
        failed for good (taken over, server stopped) is not handed out again: a new one is made.
        Raises ServerMismatch (the server serves another board, or another plant), PortInUse (the
        port is held by something else), ServerError (the server could not start; the message has the end of its
        log), ConnectionFailed (a remote server cannot be reached), AuthenticationFailed (wrong token),
        CertificateMismatch (a remote TLS server's certificate fails the checks).
        Only this host and port's lock is held meanwhile: other ports are not delayed.
        """
        with _key_lock(self.key):
            with _shared_lock:
                if self._shared is not None:
                    return self._shared.client
                shared = _shared.get(self.key)
                if shared is not None and shared.client.failure is None:
                    self._check_compatible(shared.backend, shared.hostname, shared.config,
                                           shared.plant, shared.ports)
                    return self._hold(shared)
            client = (self._connect_given() if self.token or not is_local(self.host)
                      else self._connect_local())
            with _shared_lock:
                shared = _shared[self.key] = _Shared(
                    client, self.backend, self.hostname, self.config, self.plant,
                    self._served_ports(client))
                return self._hold(shared)

    def _hold(self, shared: _Shared) -> PyRPLClient:
        """Count this manager's reference to ``shared`` (caller holds ``_shared_lock``)."""
        shared.references += 1
        self._shared = shared
        return shared.client

    def release_server(self) -> None:
        """Drop this manager's reference; the last one closes the connection (goodbye).

        An auto-started server stops when its last holding client, in any process, has left.
        """
        with _shared_lock:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            shared.references -= 1
            if shared.references > 0:
                return
            if _shared.get(self.key) is shared:
                del _shared[self.key]
        shared.client.close()
        _reap_children()

    # -- a running server, given its token (remote, or local but not ours to start) ---------------

    def _connect_given(self) -> PyRPLClient:
        client = PyRPLClient(self.host, self.port, self.token, self.client_name,
                             timeout=self.connect_timeout, **self.tls)
        try:
            info = client.connect()
        except CertificateMismatch:
            raise
        except ConnectionFailed as exc:
            if is_local(self.host):
                advice = ("a plugin given a token connects to a running server and starts none: "
                          f"start it (pymodaq-pyrpl server --mock --port {self.port}), or clear "
                          "the token to let the plugins start one")
            else:
                advice = ("a server on another computer is not started from here: start it there "
                          "with `pymodaq-pyrpl server --hostname RP --bind 0.0.0.0 --token-file "
                          "FILE` and put the token of FILE in the plugin's settings")
            raise ConnectionFailed(f"{exc} — {advice}") from None
        self._check_hello(client, info)
        return client

    # -- local -------------------------------------------------------------------------------------

    def _connect_local(self) -> PyRPLClient:
        """Connect to the running server of the port, or to one started now. A server found shutting
        down is waited for, then replaced; ``startup_timeout`` bounds the whole."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            state = self._running_or_new_server()
            client = PyRPLClient("127.0.0.1", self.port, state.token, self.client_name, hold=True,
                                 timeout=self.connect_timeout,
                                 revive=functools.partial(self._revive, state.token))
            try:
                info = client.connect(self.startup_timeout)
            except (ConnectionFailed, ServerShuttingDown) as exc:
                client.close()
                if not self._outlived_shutdown(state, exc, deadline):
                    raise
                continue
            self._check_hello(client, info)
            return client

    def _running_or_new_server(self) -> ServerState:
        """The state of the compatible server running on the port, or of one started now."""
        with runtime.port_lock(self.port, self.startup_timeout):
            state = runtime.read_live_state(self.port)
            if state is None:
                self._check_port_free()
                return self._spawn(secrets.token_hex(32))
            self._check_compatible(state.backend, state.hostname, state.config, state.plant,
                                   (state.ssh_port or 0, state.board_port or 0))
            return state

    def _outlived_shutdown(self, state: ServerState, error: Exception, deadline: float) -> bool:
        """Whether ``error`` (connecting to the server of ``state``) came from a server shutting
        down (it answered -32008, or no longer listens) that has now exited. Raises ServerError if
        it still runs at ``deadline``."""
        if not isinstance(error, ServerShuttingDown) and probe_port(self.port, 1.0) != "free":
            return False
        logger.info("the PyRPL server on port %d (pid %d) is shutting down; waiting for it to exit",
                    self.port, state.pid)
        if runtime.wait_gone(state, deadline - time.monotonic()):
            return True
        raise ServerError(f"the PyRPL server on port {self.port} (pid {state.pid}) is shutting down "
                          f"and has not exited within {self.startup_timeout:g} s; try again later, "
                          f"or stop it: pymodaq-pyrpl stop --port {self.port}")

    def _check_hello(self, client: PyRPLClient, info: dict) -> None:
        try:
            self._check_compatible(info["backend"], info["hostname"], self.config,
                                   info.get("plant", ""), self._served_ports(client))
        except ServerMismatch:
            client.close()
            raise

    @staticmethod
    def _served_ports(client: PyRPLClient) -> tuple[int, int]:
        """The board ports the server of ``client`` reported in its hello (0 if it did not)."""
        info = client.hello_info or {}
        return info.get("ssh_port", 0), info.get("board_port", 0)

    def _check_compatible(self, backend: str, hostname: str, config: str, plant: str,
                          ports: tuple[int, int]) -> None:
        """Raise ServerMismatch unless the server serves the board this manager asks for."""
        if (backend, hostname, config, plant) == (self.backend, self.hostname, self.config,
                                                  self.plant) and self.ports in (None, ports):
            return
        served = runtime.describe_board(backend, hostname, config, plant, *ports)
        wanted = runtime.describe_board(self.backend, self.hostname, self.config, self.plant,
                                        *(self.ports or (0, 0)))
        raise ServerMismatch(
            f"the PyRPL server on port {self.port} serves {served}, but this plugin asks for "
            f"{wanted}. Use another port for this board, or stop that server (pymodaq-pyrpl stop "
            f"--port {self.port}).")

    def _check_port_free(self) -> None:
        """Raise PortInUse if something listens on the port without a state file of ours."""
        kind = probe_port(self.port, min(self.startup_timeout, 3.0))
        if kind == "free":
            return
        if kind == "pyrpl":
            raise PortInUse(f"a PyRPL server runs on port {self.port} without a state file in "
                            f"this user's runtime folder ({runtime.runtime_dir()}): another user's, "
                            "one using another runtime folder, or an older version's. Give its "
                            "token in the plugin settings to use it, or stop it, or use another "
                            "port")
        raise PortInUse(f"port {self.port} is used by another program that is not a PyRPL server; "
                        "choose another port in the plugin settings")

    def _server_command(self, token_file: str) -> list[str]:
        board = (["--mock", "--plant", self.plant] if self.backend == "mock"
                 else ["--hostname", self.hostname])
        if self.hostname == board_address.VIRTUAL:
            board += ["--plant", self.plant]
        if self.ports is not None:
            board += ["--ssh-port", str(self.ports[0]), "--board-port", str(self.ports[1])]
            if self.take_over:
                board.append("--take-over")
        command = [self.python, "-m", runtime.SERVER_MODULE, *board, "--port", str(self.port),
                   "--bind", "127.0.0.1", "--token-file", token_file,
                   "--auto-stop", str(self.auto_stop), "--session-grace", str(self.session_grace),
                   "--log-file", str(runtime.log_path(self.port))]
        if self.config:
            command += ["--config", self.config]
        return command + list(self.server_args)

    def _spawn(self, token: str) -> ServerState:
        """Start a server with ``token`` (caller holds the port lock); return the state it wrote."""
        return spawn_server(self._server_command(str(runtime.token_path(self.port))), self.port,
                            token, self.startup_timeout)

    def _revive(self, token: str) -> None:
        """Reconnect hook of the shared client: restart the server if it crashed.

        Raises AuthenticationFailed if it was taken over (another token in the state file), ServerGone
        if it was stopped (no state file), ServerError (a damaged state file, a server that cannot
        start). Does nothing while the server process runs.
        """
        with runtime.port_lock(self.port, self.startup_timeout):
            state = runtime.read_state(self.port)
            if state is None:
                raise ServerGone(f"the PyRPL server on port {self.port} was stopped (pymodaq-pyrpl "
                                 "stop, a signal, or it stopped by itself); re-initialize the plugin "
                                 "to start a new one")
            if not secrets.compare_digest(state.token, token):
                raise AuthenticationFailed(
                    f"the PyRPL server on port {self.port} was taken over by another program "
                    f"(noticed at {datetime.now().strftime('%H:%M:%S')}); this program stops using "
                    "it. Re-initialize the plugin to connect to the new server.")
            if runtime.server_process(state) is not None:
                return
            logger.warning("the PyRPL server on port %d (pid %d) died; restarting it", self.port,
                           state.pid)
            self._spawn(token)


# ------------------------------------------------------------------------------------------------
# spawning, probing, stopping (also used by the CLI)


def spawn_server(command: list[str], port: int, token: str, startup_timeout: float) -> ServerState:
    """Write the token file, start ``command`` (:func:`server_process.start_server`, its stderr
    appended to the port's log), wait for its ready line; return the state file the server wrote
    before that line.

    The caller holds the port lock. Raises ServerError if the server exits or is not ready within
    ``startup_timeout`` (with the end of its log; a server that cannot write its state file exits
    saying why), or if the runtime folder cannot be written (full disk, no permission: the message
    names the folder and the fix); then no server is left running.
    """
    token_file = runtime.token_path(port)
    runtime.write_private(token_file, token + "\n")
    log = runtime.log_path(port)
    try:
        log_fd = runtime.open_owner_only_append(log)
    except OSError as exc:
        raise runtime.folder_error(log.parent, exc) from None
    try:
        process, ready = start_server(command, startup_timeout, stderr=log_fd,
                                      start_new_session=True)
    except ServerNotReady as exc:
        port_hint = " (the port may be in use)" if exc.returncode == 3 else ""
        status = (f"exited with status {exc.returncode}{port_hint}" if exc.returncode is not None
                  else f"was not ready within {startup_timeout:g} s")
        raise ServerError(f"the PyRPL server {status}. End of its log ({log}):\n"
                          f"{_log_tail(port)}") from None
    except OSError as exc:
        raise runtime.folder_error(log.parent, exc) from None
    finally:
        os.close(log_fd)
    _children.append(process)
    try:
        state = _registered_state(port, ready.pid, token)
    except ServerError:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        raise
    finally:
        assert process.stdout is not None
        process.stdout.close()
    logger.info("started the PyRPL server for %s on port %d (pid %d)", state.describes(), port,
                state.pid)
    return state


def _registered_state(port: int, pid: int, token: str) -> ServerState:
    """The state file the server announced ready as ``pid`` wrote for ``port``. Raises
    ServerError if it names another server or token, or the server has already exited."""
    state = runtime.read_state(port)
    if state is None or state.pid != pid or state.token != token:
        raise ServerError(f"the PyRPL server (pid {pid}) is ready but its state file "
                          f"{runtime.state_path(port)} does not describe it")
    if runtime.server_process(state) is None:
        raise ServerError(f"the PyRPL server (pid {pid}) exited as soon as it was ready. End of its "
                          f"log ({runtime.log_path(port)}):\n{_log_tail(port)}")
    return state


def _log_tail(port: int, lines: int = 15) -> str:
    """The last ``lines`` lines of the log of the server of ``port``."""
    try:
        text = runtime.log_path(port).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _reap_children() -> None:
    """Collect exited server processes this process started (no zombies left behind)."""
    for process in list(_children):
        if process.poll() is not None:
            _children.remove(process)


def probe_port(port: int, timeout: float) -> str:
    """What listens on localhost:``port``: ``"free"``, ``"pyrpl"`` (speaks this protocol) or
    ``"other"`` (accepts but does not answer within ``timeout`` with JSON-RPC).

    The probe is a ``ping`` without ``hello``: a PyRPL server answers it -32001 (not authenticated)
    without checking any token, so probing never counts as a failed authentication.
    """
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except (ConnectionRefusedError, socket.timeout, OSError):
        return "free"
    with sock:
        try:
            sock.settimeout(timeout)
            sock.sendall(protocol.dumps_line(protocol.request(1, protocol.Method.PING.value)))
            line = sock.makefile("rb").readline(1 << 16)
            reply = json.loads(line)
            return "pyrpl" if reply.get("jsonrpc") == "2.0" else "other"
        except (OSError, ValueError, AttributeError):
            return "other"


def stop_local_server(port: int, timeout: float = 10.0) -> ServerState | None:
    """Stop the local server on ``port`` and remove its state: ``shutdown`` over the wire, then
    SIGTERM, then SIGKILL. Returns its state, or None if none was running."""
    with runtime.port_lock(port, timeout + 5):
        state = runtime.read_live_state(port)
        if state is None:
            return None
        _terminate(state, timeout)
        runtime.remove_state(port, state)
        return state


def takeover_local_server(port: int, startup_timeout: float = 60.0, auto_stop: float = 60.0,
                          python: str | None = None) -> ServerState:
    """Restart the local server on ``port`` with a new token; every old session is refused for good.

    The new token is recorded in the state file before the old server stops, so a program whose
    connection drops sees a token it did not issue and stops instead of restarting the server.
    Raises ServerError if no server runs on the port.
    """
    with runtime.port_lock(port, startup_timeout):
        old = runtime.read_live_state(port)
        if old is None:
            raise ServerError(f"no local PyRPL server runs on port {port}; nothing to take over")
        token = secrets.token_hex(32)
        runtime.write_state(dataclasses.replace(old, token=token))
        _terminate(old, 10.0)
        manager = TCPServerManager(port=port, hostname=old.hostname if old.backend != "mock"
                                   else None, config=old.config, plant=old.plant,
                                   ssh_port=old.ssh_port or 0, board_port=old.board_port or 0,
                                   python=python, startup_timeout=startup_timeout,
                                   auto_stop=auto_stop)
        return manager._spawn(token)


def _terminate(state: ServerState, timeout: float) -> None:
    """Stop the server of ``state``: shutdown request, then SIGTERM, then SIGKILL, each signal only
    to a process that passes :func:`runtime.server_process`. Raises ServerError if it survives."""
    client = PyRPLClient("127.0.0.1", state.port, state.token, "pymodaq-pyrpl", timeout=2.0,
                         reconnect=False)
    try:
        client.connect()
        client.shutdown(state.token)  # the server stops after replying
    except PyrplPluginError as exc:
        logger.info("shutdown request to port %d: %s", state.port, exc)
    finally:
        client.close()
    for sig, wait in ((None, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        process = runtime.server_process(state)
        if process is None:
            break
        if sig is not None:
            logger.warning("sending %s to the PyRPL server (pid %d)", sig.name, state.pid)
            try:
                process.send_signal(sig)  # psutil checks again that the pid was not reused
            except psutil.NoSuchProcess:
                break
        if runtime.wait_gone(state, wait):
            break
    else:
        raise ServerError(f"the PyRPL server (pid {state.pid}) does not stop")
    _reap_children()
