"""The receiving end of scp (``scp -t TARGET``), writing into the board's in-memory files: how
PyRPL uploads its FPGA bitfile and device-tree overlay (``reloadfpga=True``) or its monitor_server.

The protocol, as OpenSSH's sink speaks it: the sink sends ``\\0`` when ready; the source sends
``T<mtime> 0 <atime> 0\\n`` (optional, answered ``\\0``) and ``C<mode> <size> <name>\\n``; the sink
answers ``\\0``, reads ``size`` bytes and a ``\\0``, stores the file and answers ``\\0``; and so
on until the source closes. A file goes to TARGET if TARGET is not a folder, else into it under
``name``. An error is ``\\1`` + message + ``\\n``, after which the transfer ends.
"""
from __future__ import annotations

import posixpath
import re
from typing import Protocol

from .files import BoardFiles, normalize

MAX_FILE_SIZE = 64 << 20
"""Largest file accepted (bytes): PyRPL's bitfile is 2 MB; memory stays bounded."""

_FILE_HEADER = re.compile(rb"^C[0-7]{4} (\d+) ([^/\n]+)$")
_LINE_MAX = 4096


class Stream(Protocol):
    """A channel's byte stream (a paramiko ``Channel``); ``recv`` returns b"" at the end and
    raises ``socket.timeout`` when the peer is silent too long."""

    def recv(self, nbytes: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...


class ScpError(Exception):
    """The transfer failed; the message is what the source was told."""


def receive(stream: Stream, target: str, files: BoardFiles, cwd: str) -> list[str]:
    """Run the sink of ``scp -t target`` on ``stream`` until the source closes; return the paths
    written. Raises ScpError (after telling the source) on a protocol error, a file too large or
    a path that cannot be written; OSError (``socket.timeout``) if the source stalls."""
    target = normalize(target, cwd)
    written: list[str] = []
    stream.sendall(b"\0")
    try:
        while (line := _read_line(stream)) is not None:
            if not line.startswith(b"T"):
                written.append(_receive_file(stream, line, target, files))
            stream.sendall(b"\0")
    except ScpError as exc:
        stream.sendall(b"\1scp: " + str(exc).encode() + b"\n")
        raise
    return written


def _receive_file(stream: Stream, header: bytes, target: str, files: BoardFiles) -> str:
    """Receive the file announced by ``header`` (``C<mode> <size> <name>``) into ``target``;
    return its path. Raises ScpError."""
    match = _FILE_HEADER.match(header)
    if match is None:
        raise ScpError(f"unexpected message {header[:40]!r} (only files are received)")
    size, name = int(match.group(1)), match.group(2).decode(errors="replace")
    if size > MAX_FILE_SIZE:
        raise ScpError(f"{name}: file too large ({size} bytes, at most {MAX_FILE_SIZE})")
    path = posixpath.join(target, name) if files.is_folder(target) else target
    stream.sendall(b"\0")
    data = _read_exactly(stream, size + 1)[:size]
    try:
        files.write(path, data)
    except (FileNotFoundError, IsADirectoryError):
        raise ScpError(f"{path}: No such file or directory") from None
    return path


def _read_line(stream: Stream) -> bytes | None:
    """One ``\\n``-terminated line without its end; None if the source closed before a line
    began. Raises ScpError on a line too long or cut."""
    line = b""
    while not line.endswith(b"\n"):
        byte = stream.recv(1)
        if not byte:
            if not line:
                return None
            raise ScpError("connection closed in a message")
        line += byte
        if len(line) > _LINE_MAX:
            raise ScpError("message too long")
    return line[:-1]


def _read_exactly(stream: Stream, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.recv(min(left, 1 << 16))
        if not chunk:
            raise ScpError("connection closed in a file")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
