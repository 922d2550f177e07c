"""The virtual board's ssh server (paramiko): password login, ``session`` channels with a pty and
an interactive shell (:class:`.shell.BoardShell`), single commands (``exec``) and the ``scp -t``
sink (:mod:`.scp_sink`). What PyRPL's ``SshShell`` and ``SCPClient`` need, simulated: no command
ever runs on this machine.

The host key is an ECDSA key generated in memory when the server is created: a new one per
start, never stored (PyRPL accepts any key; an OpenSSH client will warn when a port is reused).
"""
from __future__ import annotations

import hmac
import logging
import shlex
import socket
import threading
from collections.abc import Callable

import paramiko

from ..hardware.sockets import close_listener, configure_stream
from .files import BoardFiles
from .proc_net_tcp import ESTABLISHED, LISTEN, NO_PEER, TcpSocket
from .scp_sink import ScpError, receive
from .shell import HOME, BoardControl, BoardShell, encode

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
"""ssh connections served at once; more are closed at once (OpenSSH's MaxStartups is 10)."""
SCP_TIMEOUT = 30.0
"""Seconds an scp upload may stall before the board gives up on it."""
CLOSE_WAIT = 10.0
"""Seconds a finished command waits for its client to close the channel."""
STOP_TIMEOUT = 5.0
"""Seconds :meth:`SshServer.close` waits for each session thread to end."""
_CONNECTION_ENDED = (OSError, EOFError, paramiko.SSHException)
"""What paramiko raises on a channel whose connection broke, stalled or was closed."""


class SshServer:
    """Serves ssh on ``host`` for one board: its ``files`` and its ``control``.

    ``user``/``password`` is the one login accepted (PyRPL's default root/root); ``host_key``
    its key (default: a new one). :meth:`start` listens; :meth:`close` closes the listener and
    every connection, for good. Sessions run on threads of
    their own; the files and the control must be thread-safe.
    """

    def __init__(self, files: BoardFiles, control: BoardControl, host: str = "127.0.0.1",
                 user: str = "root", password: str = "root",
                 host_key: paramiko.PKey | None = None) -> None:
        self.files = files
        self.control = control
        self.host = host
        self.user = user
        self.password = password
        self.port = 0
        self._host_key = host_key or paramiko.ECDSAKey.generate()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._lock = threading.Lock()
        self._transports: dict[paramiko.Transport, tuple[tuple[str, int], tuple[str, int]]] = {}
        """The connections, each with its (local, peer) address as accepted."""
        self._sessions: set[threading.Thread] = set()
        self._closed = threading.Event()

    def start(self, port: int = 0) -> int:
        """Listen on ``port`` (0: a free one) and serve; return the port. Raises OSError if it
        cannot listen there."""
        listener = socket.create_server((self.host, port), reuse_port=False)
        self._listener = listener
        self._bound: tuple[str, int] = listener.getsockname()[:2]
        self.port = self._bound[1]
        self._accepting = threading.Thread(target=self._accept_loop, name=f"ssh-{self.port}",
                                           daemon=True)
        self._accepting.start()
        logger.info("ssh on %s:%d", self.host, self.port)
        return self.port

    def close(self) -> None:
        """Stop listening, close every connection, wait (bounded) for the sessions to end.
        Idempotent."""
        self._closed.set()
        if self._listener is not None:
            close_listener(self._listener)
        if self._accepting is not None:
            self._accepting.join(STOP_TIMEOUT)
        with self._lock:
            transports, sessions = list(self._transports), list(self._sessions)
        for transport in transports:
            transport.close()
        for thread in sessions:
            thread.join(STOP_TIMEOUT)

    # -- connections -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:  # closed by close()
                return
            with self._lock:
                self._transports = {t: a for t, a in self._transports.items() if t.is_active()}
                full = len(self._transports) >= MAX_CONNECTIONS
            if full:
                logger.warning("ssh connection from %s refused: %d connections already",
                               peer, MAX_CONNECTIONS)
            if full or self._closed.is_set():
                sock.close()
                continue
            self._serve(sock, peer)

    def _serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        configure_stream(sock)  # as OpenSSH's sshd: TCP_NODELAY and keepalive
        transport = paramiko.Transport(sock)
        transport.add_server_key(self._host_key)
        with self._lock:
            self._transports[transport] = (sock.getsockname()[:2], peer[:2])
        session = self.control.new_session(peer)
        try:
            # with an event the negotiation runs on the transport's own thread
            transport.start_server(threading.Event(), server=_Login(self, session))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            logger.info("ssh negotiation failed: %s", exc)
            transport.close()

    def run_session(self, target: Callable[[], None], name: str) -> None:
        """Run ``target`` (a channel's session) on a thread of its own, waited for by close()."""
        def run() -> None:
            try:
                target()
            finally:
                with self._lock:
                    self._sessions.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._sessions.add(thread)
        thread.start()

    def new_shell(self, session: int) -> BoardShell:
        """A shell for a channel of ssh ``session`` (:meth:`.shell.BoardControl.new_session`)."""
        return BoardShell(self.files, self.control, self.user, session)

    def tcp_sockets(self) -> list[TcpSocket]:
        """The listening socket (while listening) and the open connections."""
        with self._lock:
            listener = None if self._closed.is_set() else self._listener
            connections = [a for t, a in self._transports.items() if t.is_active()]
        sockets = [] if listener is None else [TcpSocket(self._bound, NO_PEER, LISTEN)]
        return sockets + [TcpSocket(local, peer, ESTABLISHED) for local, peer in connections]


class _Login(paramiko.ServerInterface):
    """One connection's answers to the client's requests."""

    def __init__(self, server: SshServer, session: int) -> None:
        self.server = server
        self.session = session
        self._pty: set[int] = set()
        """Ids of the channels with a pty (echo, ``\\r\\n``, prompt)."""

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        valid = (hmac.compare_digest(username.encode(), self.server.user.encode())
                 & hmac.compare_digest(password.encode(), self.server.password.encode()))
        return paramiko.AUTH_SUCCESSFUL if valid else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, channel: paramiko.Channel, term: bytes, width: int,
                                  height: int, pixelwidth: int, pixelheight: int,
                                  modes: bytes) -> bool:
        self._pty.add(channel.get_id())
        return True

    def check_channel_window_change_request(self, channel: paramiko.Channel, width: int,
                                            height: int, pixelwidth: int,
                                            pixelheight: int) -> bool:
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        terminal = channel.get_id() in self._pty
        shell = self.server.new_shell(self.session)
        self.server.run_session(lambda: _interactive(shell, channel, terminal),
                                f"ssh-shell-{self.server.port}")
        return True

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        line = command.decode(errors="replace")
        self.server.run_session(lambda: _execute(self.server, channel, line, self.session),
                                f"ssh-exec-{self.server.port}")
        return True


def _interactive(shell: BoardShell, channel: paramiko.Channel, terminal: bool) -> None:
    """An interactive shell on ``channel`` until the client closes it or types ``exit``. With a
    ``terminal`` (pty), typed characters are echoed, line ends are ``\\r\\n`` and a prompt is
    shown, except while a monitor server started here runs in the foreground.

    What the typed text of one received packet produces (its echo, the commands' output, the
    prompts) leaves in one packet: an answer is never split, however late the client reads it."""
    end = "\r\n" if terminal else "\n"
    pending: list[str] = []

    def send(text: str) -> None:
        pending.append(text)

    def flush() -> None:
        if pending:
            channel.sendall(encode("".join(pending).replace("\n", end)))
            pending.clear()

    try:
        if terminal:
            send(shell.prompt())
            flush()
        line = ""
        while data := channel.recv(4096):
            for char in data.decode(errors="replace"):
                if char == "\x03":
                    shell.interrupt()
                    line = ""
                    if terminal:
                        send("^C\n" + shell.prompt())
                elif char in "\r\n":
                    if terminal:
                        send("\n")
                    if line.strip() in ("exit", "logout"):
                        send("logout\n")
                        flush()
                        channel.send_exit_status(0)
                        return
                    send(shell.run(line).output)
                    line = ""
                    if terminal and not shell.in_foreground():
                        send(shell.prompt())
                elif char in "\x7f\b":
                    if line and terminal:
                        send("\b \b")
                    line = line[:-1]
                else:
                    line += char
                    if terminal:
                        send(char)
            flush()
    except _CONNECTION_ENDED as exc:  # the connection broke, or the server closes
        logger.debug("ssh shell ended: %s", exc)
    finally:
        _close(channel)


def _execute(server: SshServer, channel: paramiko.Channel, line: str, session: int) -> None:
    """One command (``ssh board COMMAND``) of ssh ``session``, or the scp sink for ``scp -t
    TARGET``; then the exit status and the channel's end."""
    status = 0
    try:
        words = shlex.split(line) if line.startswith("scp ") else []
        if words[:1] == ["scp"]:
            status = _scp(server, channel, words)
        else:
            result = server.new_shell(session).run(line)
            channel.sendall(encode(result.output))
            status = result.status
        channel.send_exit_status(status)
        _wait_closed_by_client(channel)
    except (*_CONNECTION_ENDED, ValueError) as exc:  # broke, stalled, closed; bad quoting
        logger.info("ssh command %r ended: %s", line[:80], exc)
    finally:
        _close(channel)


def _close(channel: paramiko.Channel) -> None:
    """Close ``channel``; nothing if its connection has ended (paramiko raises then)."""
    try:
        channel.close()
    except _CONNECTION_ENDED as exc:
        logger.debug("ssh channel closed with its connection: %s", exc)


def _wait_closed_by_client(channel: paramiko.Channel) -> None:
    """Send EOF and wait (at most CLOSE_WAIT s) for the client to close the channel: closing it
    first could overtake paramiko's reply to the client's request (sent after the request's
    callback returns), and the client would take the command as refused."""
    channel.shutdown_write()
    channel.settimeout(CLOSE_WAIT)
    while channel.recv(4096):
        pass


def _scp(server: SshServer, channel: paramiko.Channel, words: list[str]) -> int:
    """``scp [-p] [-r] -t TARGET``: receive files (directories and ``-f``, sending, are
    refused). The exit status."""
    if "-t" not in words or "-r" in words or len(words) < 3:
        channel.sendall(b"\1scp: only 'scp -t TARGET' (receiving files) is supported\n")
        return 1
    channel.settimeout(SCP_TIMEOUT)
    try:
        written = receive(channel, words[-1], server.files, cwd=HOME)
    except ScpError as exc:
        logger.info("scp upload failed: %s", exc)
        return 1
    logger.info("scp received %s", ", ".join(written) or "nothing")
    return 0
