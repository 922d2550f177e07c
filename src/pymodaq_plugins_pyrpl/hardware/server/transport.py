"""TCP and TLS: listening, accepting within the admission caps, and each connection's reader loop
feeding :meth:`.core.Server.process_line` with its lines."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import time
from typing import Any, Callable

from .. import protocol
from ..errors import RequestTooLarge, RetryLater
from ..sockets import configure_stream
from .auth import MAX_PENDING_PER_ADDRESS, Admission, open_files_limit, pending_limit
from .connection import Connection
from .core import Server

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64
"""Requests one connection may have pending at once; further lines wait for a slot."""
ACCEPT_RETRY = 0.1
"""After a failed accept (out of file descriptors or memory), the next one waits this long (s)."""
LOG_BURST_PERIOD = 60.0
"""A warning that comes in bursts (failed accepts, refused connections) is logged at most once per
this many seconds, with a count of the ones left out."""
LISTEN_BACKLOG = 128
"""Connections the kernel queues before the server accepts them."""


class _Throttled:
    """A warning that can come in bursts: logged at most once per ``period`` seconds, with the
    number of occurrences left out since the previous one."""

    def __init__(self, message: str, period: float = LOG_BURST_PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._message = message
        self._period = period
        self._clock = clock
        self._next = -math.inf
        self._left_out = 0

    def __call__(self, *args: Any) -> None:
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return
        logger.warning(self._message + "%s", *args,
                       f" ({self._left_out} more like it not logged since the last)"
                       if self._left_out else "")
        self._left_out = 0
        self._next = now + self._period


async def _read_line(reader: asyncio.StreamReader, limit: int) -> bytes:
    """The next line, ``\\n`` included, of at most ``limit`` bytes; what the reader holds meanwhile
    stays within its own limit (plus one receive). Raises asyncio.LimitOverrunError (the line is
    longer: the stream cannot be read further), asyncio.IncompleteReadError (end of stream)."""
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            part = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            if size + exc.consumed > limit:
                raise
            parts.append(await reader.readexactly(exc.consumed))
            size += exc.consumed
            continue
        if size + len(part) > limit:
            raise asyncio.LimitOverrunError(f"line longer than {limit} bytes", size + len(part))
        parts.append(part)
        return b"".join(parts) if len(parts) > 1 else part


class _Requests:
    """The requests of one connection in progress: at most MAX_IN_FLIGHT at once, each answered
    (and the connection closed if its reply says so) as soon as it completes."""

    def __init__(self, server: Server, connection: Connection) -> None:
        self._server = server
        self._connection = connection
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, line: bytes) -> asyncio.Task[None]:
        """Start answering ``line`` once a slot is free (waits for one); its task."""
        await self._slots.acquire()
        task = asyncio.ensure_future(self._answer(line))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _answer(self, line: bytes) -> None:
        try:
            reply = await self._server.process_line(self._connection, line)
            if reply is not None:
                self._connection.send(reply)
            if self._connection.close_after_reply:
                self._connection.close()
        finally:
            self._slots.release()

    async def finish(self, answer_pending: bool) -> None:
        """Cancel the requests in progress; with ``answer_pending`` (the client closed its sending
        side, a half-close), first answer them while the connection stays open."""
        try:
            while answer_pending and self._tasks and not self._connection.closed:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in self._tasks:
                task.cancel()


async def _serve_connection(server: Server, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, hello_timeout: float,
                            accepted_at: float, said_hello: Callable[[], None]) -> None:
    """Serve one connection until it closes. It must say hello within ``hello_timeout`` of
    ``accepted_at`` (loop time); until then its lines are read one at a time, each of at most
    MAX_LINE_BEFORE_HELLO bytes, and ``said_hello`` is called once when it has."""
    ip, port = writer.get_extra_info("peername")[:2]
    peer = f"{ip}:{port}"
    sock = writer.get_extra_info("socket")
    if sock is not None:  # asyncio sets TCP_NODELAY only on sockets it created itself
        configure_stream(sock)

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    def write_now(data: bytes) -> bool:
        """Write if the transport holds nothing unsent (never blocks); False: queue it instead."""
        transport = writer.transport
        if transport.is_closing() or transport.get_write_buffer_size():
            return False
        writer.write(data)
        return True

    connection = Connection(send, peer, close=writer.close, ip=ip, abort=writer.transport.abort,
                            write_now=write_now)
    server.connection_made(connection)
    requests = _Requests(server, connection)
    loop = asyncio.get_running_loop()
    hello_deadline = accepted_at + hello_timeout
    end_of_stream = False
    try:
        while not connection.closed:
            timeout = None if connection.session else hello_deadline - loop.time()
            if timeout is not None and timeout <= 0:
                logger.info("closing %s: no hello within %g s", peer, hello_timeout)
                break
            limit = (protocol.MAX_LINE_BEFORE_HELLO if connection.session is None
                     else protocol.MAX_REQUEST_BYTES)
            try:
                line = await asyncio.wait_for(_read_line(reader, limit), timeout)
            except asyncio.TimeoutError:
                continue
            except asyncio.LimitOverrunError:
                connection.send(protocol.error(None, RequestTooLarge(
                    f"request line exceeds {limit} bytes"
                    f"{' before hello' if connection.session is None else ''}; connection closed"
                ).to_wire()))
                break
            except asyncio.IncompleteReadError:
                end_of_stream = True
                break
            if not line.strip():
                continue
            task = await requests.submit(line)
            # before hello, one line at a time: the next line's limit and deadline depend on it
            if connection.session is None:
                await asyncio.wait([task])
                if connection.session is not None:
                    said_hello()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            await requests.finish(answer_pending=end_of_stream)
        finally:
            server.connection_lost(connection)  # closes once the queued replies are written


async def serve(server: Server, bind: str, port: int, hello_timeout: float = 10.0,
                ready: Callable[[int], None] | None = None,
                tls_context: ssl.SSLContext | None = None) -> None:
    """Open the backend, listen on ``bind:port`` (TLS with ``tls_context``) and serve until
    ``server.stop()``.

    A connection must end its TLS handshake and say hello within ``hello_timeout`` of its
    acceptance. Connections that have not said hello yet are capped (:class:`Admission`): one more
    is refused at once, with a RetryLater line on plain TCP, closed before the handshake with TLS.
    Raises BackendUnavailable (before listening) if the board cannot be reached, OSError if the
    port cannot be opened.
    """
    await server.open_backend()
    try:
        listeners = _listen(bind, port)
    except OSError:
        await server.close_backend()
        raise
    loop = asyncio.get_running_loop()
    admission = Admission(pending_limit(open_files_limit()), MAX_PENDING_PER_ADDRESS,
                          hello_timeout)
    refused = _Throttled("refusing connections: %d have not said hello yet (at most %d, %d per "
                         "address); the latest refused came from %s")
    accept_failed = _Throttled("cannot accept connections: %s; retrying every %g s")
    connection_tasks: set[asyncio.Task[None]] = set()

    async def handle(sock: socket.socket, ip: str, ticket: object, accepted_at: float) -> None:
        try:
            reader = asyncio.StreamReader(limit=protocol.MAX_LINE_BEFORE_HELLO)
            stream = asyncio.StreamReaderProtocol(reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: stream, sock, ssl=tls_context,
                    ssl_handshake_timeout=(max(0.001, accepted_at + hello_timeout - loop.time())
                                           if tls_context else None))
            except OSError as exc:  # the TLS handshake failed or did not end in time
                sock.close()
                logger.info("closing %s: no TLS handshake within the hello timeout (%g s): %s",
                            ip, hello_timeout, exc)
                return
            writer = asyncio.StreamWriter(transport, stream, reader, loop)
            await _serve_connection(server, reader, writer, hello_timeout, accepted_at,
                                    lambda: admission.leave(ticket))
        except asyncio.CancelledError:
            pass  # the server is stopping; a cancelled handler would be logged as an error
        finally:
            admission.leave(ticket)

    async def accept(listener: socket.socket) -> None:
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # out of file descriptors or memory: wait, do not spin
                accept_failed(exc, ACCEPT_RETRY)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            ip = address[0]
            wait = admission.wait_for(ip)
            if wait is not None:
                refused(len(admission), admission.total, admission.per_address, ip)
                _refuse(sock, wait, plain=tls_context is None)
                continue
            task = asyncio.ensure_future(handle(sock, ip, admission.enter(ip), loop.time()))
            connection_tasks.add(task)
            task.add_done_callback(connection_tasks.discard)

    accepting = [asyncio.ensure_future(accept(listener)) for listener in listeners]
    server.port = listeners[0].getsockname()[1]
    if ready is not None:
        ready(server.port)
    watcher = asyncio.ensure_future(server.watch())
    try:
        await server.stopping.wait()
    finally:
        for task in accepting:
            task.cancel()
        await asyncio.gather(*accepting, return_exceptions=True)
        for listener in listeners:
            listener.close()
        for task in list(connection_tasks):
            task.cancel()
        await asyncio.gather(*connection_tasks, return_exceptions=True)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await server.close_backend()


def _listen(bind: str, port: int) -> list[socket.socket]:
    """Non-blocking listening sockets on every address of ``bind``, all on one port (``port``, or
    the free one the first got for 0). Raises OSError."""
    listeners: list[socket.socket] = []
    try:
        for family, _, _, _, address in dict.fromkeys(socket.getaddrinfo(
                bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)):
            if listeners:
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            listener = socket.create_server(address, family=family, backlog=LISTEN_BACKLOG)
            listener.setblocking(False)
            listeners.append(listener)
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _refuse(sock: socket.socket, wait: float, plain: bool) -> None:
    """Close a connection that is not admitted; on plain TCP, after one RetryLater line (id null)
    saying when to come back. What the peer has sent already (its hello) is read and dropped
    first: closing with unread input would reset the connection and could lose that line."""
    with sock, contextlib.suppress(OSError):
        if plain:
            sock.send(protocol.dumps_line(protocol.error(None, RetryLater(
                "too many connections have not said hello yet; retry later",
                {"retry_after": round(max(0.1, wait), 1)}).to_wire())))
        sock.recv(protocol.MAX_LINE_BEFORE_HELLO)
        sock.shutdown(socket.SHUT_WR)

