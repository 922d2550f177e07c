"""Starting a server process and waiting for its ready line: the one way the server manager, the
tests and the benchmarks start a server (the line's format: :func:`protocol.ready_line`)."""
from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Union

from . import protocol
from .errors import ServerNotReady

READY_LINE_MAX = 4096
"""A first line of stdout longer than this (bytes) is not a ready line."""
EXIT_WAIT = 5.0
"""After stdout closed without a ready line, how long (at most) to wait for the exit status."""

Stderr = Union[int, IO[Any], None]
"""Where the server's stderr goes: a file, a file descriptor, ``subprocess.DEVNULL``, or None
(this process's stderr)."""


def start_server(command: Sequence[str], timeout: float, *, stderr: Stderr = None,
                 env: Mapping[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None,
                 start_new_session: bool = False) -> tuple[subprocess.Popen[bytes], protocol.Ready]:
    """Start the server ``command`` (stdin closed, stdout a pipe) and wait for its ready line.

    Returns the process and its :class:`protocol.Ready` (port, pid, the line). Nothing past the
    ready line's newline is read: the caller owns ``process.stdout`` (and closes it).
    ``timeout`` (seconds) covers everything from the start of the process to the end of its ready
    line, and the wait for its exit status when its stdout closes, or its first line is not a ready
    line, before that.

    Raises ServerNotReady if the first line of stdout is not a ready line or none came within
    ``timeout``: its ``returncode`` is the exit status of a process that exited (reaped), or None
    for one that did not exit, which is then killed and reaped. So after ServerNotReady no process
    is left running. Raises OSError if the process cannot be started.
    """
    deadline = time.monotonic() + timeout
    process = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=stderr, env=None if env is None else dict(env),
                               preexec_fn=preexec_fn, start_new_session=start_new_session)
    try:
        line = first_line(process, deadline)
        ready = None if line is None else protocol.parse_ready_line(line)
        if ready is not None:
            return process, ready
        try:  # stdout closed, or not a ready line: the process is exiting
            process.wait(timeout=max(0.0, min(EXIT_WAIT, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
        returncode = process.returncode
        if returncode is not None:
            message = f"exited with status {returncode} before its ready line"
        elif line is None:
            message = f"was not ready within {timeout:g} s"
        else:
            message = f"printed {line[:80]!r} instead of its ready line"
        raise ServerNotReady(f"the server {message}", returncode)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait(EXIT_WAIT)
        assert process.stdout is not None
        process.stdout.close()
        raise


def first_line(process: subprocess.Popen[bytes], deadline: float) -> str | None:
    """The first line of the process's stdout (without newline), read byte by byte so nothing
    after it is consumed; None if stdout closed first or no whole line came before ``deadline``
    (``time.monotonic()``). A line longer than READY_LINE_MAX bytes is returned cut there. Also
    how a virtual board's ready line is awaited (``virtual_board.process``)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    line = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while len(line) < READY_LINE_MAX:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not selector.select(timeout=min(0.1, remaining)):
                if process.poll() is not None:  # exited, its stdout held open by another process
                    return None
                continue
            byte = os.read(fd, 1)
            if not byte:
                return None
            if byte == b"\n":
                break
            line += byte
    return line.decode(errors="replace")
