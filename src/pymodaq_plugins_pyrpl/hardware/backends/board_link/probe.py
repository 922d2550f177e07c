"""A look at the board over ssh, apart from PyRPL's own ssh session: is its ssh port reachable
(:func:`ssh_reachable`), which boot is it in and who is on its ``monitor_server`` port
(:meth:`BoardShell.look`), and starting a ``monitor_server`` without ending any other
(:meth:`BoardShell.start_monitor_server`).

The look is one ssh exec of ``cat /proc/sys/kernel/random/boot_id; cat /proc/net/tcp``: the boot
id changes at every reboot, and the kernel's TCP table shows the listener on the data port and
the clients connected to it (:func:`parse_net_tcp`; IPv4 only, as ``monitor_server`` listens on
IPv4). Nothing here reads or writes a register, and nothing runs ``killall``.

Failures are typed: a refused ssh login is :class:`LoginRefused` (the user must act); a
connection that cannot be made, breaks or misses its deadline is a :class:`~.errors.LinkError`
(:class:`~.errors.LinkRefused`, :class:`~.errors.LinkClosed`, :class:`~.errors.LinkReset`,
:class:`~.errors.LinkTimeout`, operation ``"ssh"``); an answer that is not what a Red Pitaya
says is :class:`BoardCommandError`.
"""
from __future__ import annotations

import logging
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from .errors import LinkClosed, LinkError, LinkRefused, LinkReset, LinkTimeout

if TYPE_CHECKING:
    import paramiko

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT = 2.0
"""Default seconds one call of :class:`BoardShell` may take, connecting included."""
LOOK_COMMAND = "cat /proc/sys/kernel/random/boot_id; cat /proc/net/tcp"
MONITOR_LOG = "/tmp/monitor_server.log"
"""Where a ``monitor_server`` started by :meth:`BoardShell.start_monitor_server` writes its
messages (``ERROR on binding: …``), read back when it does not start."""
LISTEN_POLL = 0.05
"""Seconds between two looks while waiting for a started ``monitor_server`` to listen."""

_LISTEN = 0x0A
_ESTABLISHED = 0x01

Address = tuple[str, int]


class LoginRefused(Exception):
    """The board refused the ssh login (user name or password): nothing will change until the
    user fixes them."""


class BoardCommandError(Exception):
    """A command on the board did not do what it should (its answer, or its effect, is not what
    a Red Pitaya gives). ``command``: the command line; ``output``: what the board said."""

    def __init__(self, command: str, output: str, what: str) -> None:
        self.command = command
        self.output = output
        super().__init__(f"{what} (command {command!r}; the board said {output.strip()!r})")


@dataclass(frozen=True)
class BoardLook:
    """What the board showed: its ``boot_id`` (a new one at every reboot), whether something
    ``listening`` on the monitor port, and the ``clients`` connected to that port (their
    address, host and port, as the board sees it), in the kernel's order."""

    boot_id: str
    listening: bool
    clients: tuple[Address, ...]


def ssh_reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host``:``port`` (the board's ssh port) is accepted within
    ``timeout`` seconds; the connection is closed at once, nothing is sent. Never raises for a
    network failure (False); ValueError for a timeout that is not > 0.

    Never use it on the data port: a ``monitor_server`` takes the first connection as its one
    client and ends when it closes.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 s, not {timeout!r}")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def parse_net_tcp(text: str, port: int) -> tuple[bool, tuple[Address, ...]]:
    """From the contents of ``/proc/net/tcp``: whether a socket listens on local ``port`` and the
    remote (host, port) of every ESTABLISHED connection to it. Rows in other states (TIME_WAIT…)
    and on other ports are left out. Addresses are as the kernel prints them on a little-endian
    CPU (the Red Pitaya's ARM): ``0100007F:08AE`` is 127.0.0.1:2222. On a real board a
    connection the kernel completed but the server has not accepted (a second client waiting in
    the backlog of a one-client ``monitor_server``) is ESTABLISHED too, so it is listed.

    Raises ValueError if ``text`` is not that table.
    """
    lines = text.splitlines()
    if not lines or lines[0].split()[:3] != ["sl", "local_address", "rem_address"]:
        raise ValueError(f"not a /proc/net/tcp table: {text[:80]!r}")
    listening, clients = False, []
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4 or not fields[0].endswith(":"):
            raise ValueError(f"not a /proc/net/tcp row: {line.strip()!r}")
        local, remote, state = _address(fields[1]), _address(fields[2]), int(fields[3], 16)
        if local[1] != port:
            continue
        if state == _LISTEN:
            listening = True
        elif state == _ESTABLISHED:
            clients.append(remote)
    return listening, tuple(clients)


def _address(text: str) -> Address:
    """``0100007F:08AE`` → ("127.0.0.1", 2222). Raises ValueError for anything else."""
    host, sep, port = text.partition(":")
    if not sep or len(host) != 8 or len(port) != 4:
        raise ValueError(f"not a /proc/net/tcp address: {text!r}")
    return socket.inet_ntoa(int(host, 16).to_bytes(4, "little")), int(port, 16)


def parse_look(output: str, monitor_port: int) -> BoardLook:
    """The answer to :data:`LOOK_COMMAND`: the boot id line, then ``/proc/net/tcp``. Raises
    ValueError if it is not that."""
    boot_id, _, table = output.partition("\n")
    boot_id = boot_id.strip()
    if len(boot_id) != 36 or boot_id.count("-") != 4:
        raise ValueError(f"not a boot id: {boot_id!r}")
    listening, clients = parse_net_tcp(table, monitor_port)
    return BoardLook(boot_id, listening, clients)


class BoardShell:
    """An ssh connection of our own to the board at ``host``:``port`` (paramiko, imported on
    first use), for short commands in exec channels. It connects on first use, and again on the
    next call after its connection broke or a call failed (after a reboot, say); the board's host
    key is not checked (as PyRPL does not).

    Every call returns or raises within its ``timeout`` (default :data:`COMMAND_TIMEOUT`),
    connecting and login included: at the deadline the connection is closed, which ends every
    wait on it. Raises :class:`LoginRefused`, :class:`~.errors.LinkError` (then the connection
    is dropped) or :class:`BoardCommandError`. Thread-safe: one call at a time (a call waiting
    for another counts the wait in its timeout).
    """

    def __init__(self, host: str, port: int = 22, user: str = "root",
                 password: str = "root") -> None:
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self._transport: paramiko.Transport | None = None
        self._lock = threading.Lock()

    def look(self, monitor_port: int, timeout: float = COMMAND_TIMEOUT) -> BoardLook:
        """The board's boot id and who is on ``monitor_port`` (:data:`LOOK_COMMAND`)."""
        output, status = self.run(LOOK_COMMAND, timeout)
        try:
            if status != 0:
                raise ValueError(f"exit status {status}")
            return parse_look(output, monitor_port)
        except ValueError as exc:
            raise BoardCommandError(LOOK_COMMAND, output, f"unexpected answer: {exc}") from None

    def start_monitor_server(self, path: str, port: int,
                             timeout: float = COMMAND_TIMEOUT) -> None:
        """Start the ``monitor_server`` binary at ``path`` on ``port``, detached from the ssh
        session (``nohup PATH PORT > LOG 2>&1 < /dev/null &``: it outlives the exec channel and
        this connection), then look until something listens on ``port``. Ends no other server
        (no ``killall``): call it when the port is free (a server already listening there
        would pass for this one; this one then fails to bind, see :data:`MONITOR_LOG`).

        Raises ValueError for a port not in 1..65535; :class:`BoardCommandError` with the
        server's messages if nothing listens on ``port`` after three quarters of ``timeout``
        (wrong binary, port taken…; the last quarter reads the messages), and as :meth:`run`.
        """
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, not {port!r}")
        deadline = time.monotonic() + timeout
        give_up = deadline - timeout / 4
        command = f"nohup {shlex.quote(path)} {port} > {MONITOR_LOG} 2>&1 < /dev/null &"
        output, status = self.run(command, _remaining(deadline))
        if status != 0:
            raise BoardCommandError(command, output, f"exit status {status}")
        while not self.look(port, _remaining(deadline)).listening:
            if time.monotonic() + LISTEN_POLL >= give_up:
                log = self.run(f"cat {MONITOR_LOG}", _remaining(deadline))[0]
                raise BoardCommandError(command, log, f"nothing listens on port {port} "
                                                      f"{timeout * 3 / 4:g} s after the start")
            time.sleep(LISTEN_POLL)
        logger.info("monitor_server started on %s port %d", self.host, port)

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[str, int]:
        """Run ``command`` in an exec channel: its output (error messages included) and its
        exit status. Raises ValueError for a timeout that is not > 0, and as the class says."""
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 s, not {timeout!r}")
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            raise LinkTimeout("ssh", None, None, f"{command!r}: another command held the "
                                                 f"connection for {timeout:g} s")
        try:
            transport = self._connected(deadline)
            try:
                return _execute(transport, command, deadline)
            except LinkError:
                self._drop()
                raise
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close the connection (the next call makes a new one). Idempotent."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def _connected(self, deadline: float) -> paramiko.Transport:
        """The connection, made anew if there is none or it ended."""
        if self._transport is not None and self._transport.is_active():
            return self._transport
        self._drop()
        self._transport = _login(self.host, self.port, self.user, self.password, deadline)
        return self._transport


def _login(host: str, port: int, user: str, password: str,
           deadline: float) -> paramiko.Transport:
    """A new ssh connection, logged in, before ``deadline`` (monotonic)."""
    import paramiko

    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=_remaining(deadline))
    except TimeoutError:
        raise LinkRefused("ssh", None, None, f"{where} did not accept in time") from None
    except ConnectionResetError as exc:  # accepted, then reset before connect() returned
        raise LinkReset("ssh", None, None, f"{where}: the board reset the connection") from exc
    except OSError as exc:
        raise LinkRefused("ssh", None, None, f"{where}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms per command
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.auth_timeout = _remaining(deadline)
    with _closed_at(deadline, transport) as expired:
        try:
            transport.start_client(timeout=_remaining(deadline))
            transport.auth_password(user, password)
        except paramiko.AuthenticationException as exc:
            transport.close()
            raise LoginRefused(f"the Red Pitaya at {host} refused the ssh login of user "
                               f"{user!r}: {exc}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            _raise_link_error(expired(), f"login at {where}", exc)
    logger.debug("ssh connection to %s for board looks", where)
    return transport


def _execute(transport: paramiko.Transport, command: str,
             deadline: float) -> tuple[str, int]:
    """``command`` in a new exec channel of ``transport``: (output, exit status)."""
    import paramiko

    chunks: list[bytes] = []
    with _closed_at(deadline, transport) as expired:
        try:
            channel = transport.open_session(timeout=_remaining(deadline))
            try:
                channel.set_combine_stderr(True)
                channel.exec_command(command)
                channel.settimeout(_remaining(deadline))
                while data := channel.recv(65536):
                    chunks.append(data)
                    channel.settimeout(_remaining(deadline))
                finished = channel.status_event.wait(_remaining(deadline))
            finally:
                channel.close()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            _raise_link_error(expired(), repr(command), exc)
        if expired():
            raise LinkTimeout("ssh", None, None, f"{command!r}: no complete answer in time")
        if not finished or channel.exit_status < 0:
            raise LinkClosed("ssh", None, None, f"{command!r}: the connection ended before the "
                                                "command's exit status")
    return b"".join(chunks).decode(errors="replace"), channel.exit_status


def _raise_link_error(expired: bool, what: str, exc: BaseException) -> NoReturn:
    """Raise the LinkError for ``exc`` during ``what``: a timeout if the deadline closed the
    connection or the socket timed out, a reset for an RST, else the connection ended."""
    if expired or isinstance(exc, TimeoutError):
        raise LinkTimeout("ssh", None, None, f"{what}: not done in time") from exc
    said = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionResetError):
        raise LinkReset("ssh", None, None, f"{what}: the board reset the connection ({said})") \
            from exc
    raise LinkClosed("ssh", None, None, f"{what}: the connection ended ({said})") from exc


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 1e-3)


@contextmanager
def _closed_at(deadline: float, transport: paramiko.Transport) -> Iterator[_Expiry]:
    """Close ``transport`` at ``deadline`` if the block still runs (paramiko has waits without a
    timeout: a channel request waits for the reply); yields a callable saying whether it did."""
    expiry = _Expiry()

    def expire() -> None:
        expiry.fired = True
        transport.close()

    timer = threading.Timer(_remaining(deadline), expire)
    timer.daemon = True
    timer.start()
    try:
        yield expiry
    finally:
        timer.cancel()


class _Expiry:
    """Whether a :func:`_closed_at` deadline closed the connection."""

    fired = False

    def __call__(self) -> bool:
        return self.fired
