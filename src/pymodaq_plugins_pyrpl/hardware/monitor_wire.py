"""The Red Pitaya data port's wire format: PyRPL's ``monitor_server`` protocol (``monitor_server.c``
of PyRPL 0.9.9.1, PyRPL's client in ``pyrpl/redpitaya_client.py``). One protocol, one place: the
virtual board's server (:mod:`..virtual_board.monitor_server`) and the PyRPL backend's board client
(:mod:`.backends.board_link.client`) both speak it from here.

Every request starts with an 8-byte header:

=====  ==========================================================================
bytes  meaning
=====  ==========================================================================
0      command: ``b'r'`` read, ``b'w'`` write, ``b'c'`` close (anything else: error)
1      reserved (0)
2-3    length ``n`` in 32-bit words, little-endian unsigned (at most 65 535)
4-7    absolute byte address (e.g. ``0x40100000``), little-endian unsigned
=====  ==========================================================================

- read: the server answers the header echoed byte for byte, then ``4 n`` bytes (``n``
  little-endian uint32 words), in one send.
- write: ``4 n`` payload bytes follow the header; the server stores them and echoes the header.
- A request of length 0 is ignored, whatever its command (no answer; ``'c'`` included).
- ``'c'`` with a length > 0 ends the server; an unknown command with a length > 0 ends it too.
- The C server maps a :data:`WINDOW`-byte page at ``address & ~(WINDOW - 1)`` per request: a
  request that runs past the end of that page reads or writes beyond the mapping (on a board, the
  process dies with a segmentation fault). :func:`crosses_window` tells such requests apart.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

HEADER_SIZE = 8
WORD_SIZE = 4
MAX_WORDS = 65535
"""The largest length a header can carry (16 bits): the C server's MAX_LENGTH."""
WINDOW = 128 * 1024
"""Bytes of FPGA address space the C server maps for one request (MAP_SIZE)."""

READ = ord("r")
WRITE = ord("w")
CLOSE = ord("c")

_HEADER = struct.Struct("<BBHI")


@dataclass(frozen=True)
class Header:
    """One request header, as received (``raw`` is echoed back verbatim)."""

    command: int
    length: int
    address: int
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Header:
        """Decode exactly :data:`HEADER_SIZE` bytes; raises ValueError for another size."""
        if len(raw) != HEADER_SIZE:
            raise ValueError(f"a header is {HEADER_SIZE} bytes, not {len(raw)}")
        command, _, length, address = _HEADER.unpack(raw)
        return cls(command, length, address, bytes(raw))


def header(command: bytes, length: int, address: int) -> bytes:
    """The 8 header bytes of a request (as PyRPL's ``MonitorClient`` builds them)."""
    return _HEADER.pack(ord(command), 0, length, address)


def reply_size(command: bytes, length: int) -> int:
    """Bytes the server answers to a request of ``length`` words (> 0): the header echo, plus the
    words for a read."""
    return HEADER_SIZE + (WORD_SIZE * length if ord(command) == READ else 0)


def crosses_window(address: int, length: int) -> bool:
    """True if ``length`` words from ``address`` run past the :data:`WINDOW` page that the C server
    maps for ``address``."""
    return (address % WINDOW) + WORD_SIZE * length > WINDOW


def pack_words(words: np.ndarray) -> bytes:
    """The bytes of ``words`` (uint32 values) as little-endian uint32."""
    return np.asarray(words, dtype="<u4").tobytes()


def unpack_words(payload: bytes) -> np.ndarray:
    """The little-endian uint32 words of ``payload`` (its length a multiple of 4), as uint32."""
    return np.frombuffer(payload, dtype="<u4").astype(np.uint32)
