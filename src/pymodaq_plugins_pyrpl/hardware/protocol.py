"""Wire protocol: line-delimited JSON-RPC 2.0 over TCP (contract in docs/protocol.md).

=========  ===========================================================================
framing    one UTF-8 JSON object per line, terminated by ``\\n``; at most 1 MiB per request line
           (4 KiB before ``hello``)
request    ``{"jsonrpc": "2.0", "id": 7, "method": "get", "params": {...}}``
reply      ``{"jsonrpc": "2.0", "id": 7, "result": ...}`` or ``... "error": {"code", "message", "data"}``
push       ``{"jsonrpc": "2.0", "method": "status", "params": {...}}`` (no id)
arrays     ``{"__ndarray__": "<base64 of the raw bytes>", "dtype": "<f4", "shape": [16384]}``
=========  ===========================================================================
"""
from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

import numpy as np
import pybase64

from .errors import InvalidRequest, ParseError, RemoteError, RequestTooLarge

PROTOCOL_VERSION = 1
DEFAULT_PORT = 6341
MAX_REQUEST_BYTES = 1 << 20
"""Longest request line the server accepts (a single reply is not limited: a trace is 350 kB).
The server's transport reads no more of a line than this (it holds no more), :func:`parse_request`
refuses a longer line whatever reads it, and the client does not send one."""
MAX_LINE_BEFORE_HELLO = 4 << 10
"""Longest line the server reads from a connection that has not said hello yet. The longest hello
this package's client sends (64-character token, session id, a 200-character client name written
as escaped surrogate pairs) is 2.6 kB."""
MAX_OUTPUT_BYTES = 8 << 20
"""Most bytes of replies and pushes the server keeps queued for one connection: a client that does
not read its replies while sending requests is disconnected when its backlog would pass this (its
session stays for resume). Room for 20 scope traces."""
READY_PREFIX = "PYRPL_SERVER_READY"
"""The server prints ``PYRPL_SERVER_READY {"port": N, "pid": P}`` once, when it serves
(:func:`ready_line`)."""


class Method(str, Enum):
    """Methods every server answers."""

    HELLO = "hello"
    PING = "ping"
    STATUS = "status"
    DESCRIBE = "describe"
    GET = "get"
    SET = "set"
    ACQUIRE = "acquire"
    LEASE = "lease"
    RELEASE = "release"
    SUBSCRIBE = "subscribe"
    GOODBYE = "goodbye"
    SHUTDOWN = "shutdown"
    TAKE_BOARD = "take_board"
    STOP = "stop"


NOTIFICATION_STATUS = "status"
NOTIFICATION_PROGRESS = "progress"
"""The progress of an acquisition (the network analyzer's sweep), pushed to the connection that
asked for it."""


def _b64(array: np.ndarray) -> str:
    return pybase64.b64encode(np.ascontiguousarray(array).data).decode("ascii")


def encode_value(value: Any, array_data: Callable[[np.ndarray], str] = _b64) -> Any:
    """Make ``value`` JSON-ready: ndarrays become base64 objects, numpy scalars plain numbers.

    ``array_data`` gives the ``__ndarray__`` string of an array (its base64 by default).
    """
    if isinstance(value, np.ndarray):
        return {"__ndarray__": array_data(value), "dtype": value.dtype.str,
                "shape": list(value.shape)}
    if isinstance(value, dict):
        return {str(k): encode_value(v, array_data) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_value(v, array_data) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value`: base64 array objects become (read-only) ndarrays.

    Raises ValueError for a malformed array object.
    """
    return _decode(value, None)


def _decode(value: Any, raws: list[bytes] | None) -> Any:
    """:func:`decode_value`; with ``raws``, an array object whose ``__ndarray__`` is ``""`` takes
    its bytes from the front of ``raws`` instead (see :func:`decode_line`)."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            try:
                data = value["__ndarray__"]
                if raws is not None and data == "":
                    if not raws:
                        raise _NotSpliced()
                    raw = raws.pop(0)
                else:
                    raw = pybase64.b64decode(data, validate=True)
                dtype = np.dtype(value["dtype"])
                if dtype.hasobject:
                    raise ValueError("object arrays are not allowed")
                shape = tuple(int(n) for n in value["shape"])
                return np.frombuffer(raw, dtype=dtype).reshape(shape)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"malformed array object: {exc}") from None
        return {k: _decode(v, raws) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, raws) for v in value]
    return value


class _NotSpliced(Exception):
    """The fast path of :func:`decode_line` does not apply to this line."""


_ARRAY_START = b'{"__ndarray__":"'


def decode_line(line: bytes) -> Any:
    """One line's value with its arrays decoded: ``decode_value(loads(line))``, faster.

    The base64 text of each array as :func:`dumps_line` writes it (``{"__ndarray__":"...``) is cut
    out and decoded before the JSON parser sees the rest: scanning a trace's 175 kB of base64
    through ``json`` would cost more than all the rest of a reply. Any line this does not fit
    (other spacing or key order, invalid base64, ...) is parsed the plain way, so the value and the
    errors are always those of ``decode_value(loads(line))``. Raises ValueError.
    """
    if _ARRAY_START in line:
        try:
            return _decode_spliced(line)
        except (_NotSpliced, ValueError, RecursionError):
            pass
    return decode_value(loads(line))


def _decode_spliced(line: bytes) -> Any:
    kept: list[bytes] = []
    raws: list[bytes] = []
    view = memoryview(line)
    position = 0
    while (start := line.find(_ARRAY_START, position)) >= 0:
        begin = start + len(_ARRAY_START)
        end = line.find(b'"', begin)
        if end < 0:
            raise _NotSpliced()
        raws.append(pybase64.b64decode(view[begin:end], validate=True))
        kept.append(view[position:begin])
        position = end
    kept.append(view[position:])
    value = _decode(loads(b"".join(kept)), raws)
    if raws:  # an array the parser did not see where it was cut (a duplicate key, ...)
        raise _NotSpliced()
    return value


@dataclass(frozen=True)
class Request:
    """A valid JSON-RPC 2.0 request object."""

    id: str | int | None
    method: str
    params: dict[str, Any]
    notification: bool
    """No ``id`` member: executed, never answered (not even with an error)."""


class BadRequest(Exception):
    """A line that is not a valid request: the error to answer, and the id to answer it with (the
    request's if it could be read, else None). Always answered, with or without an id."""

    def __init__(self, id_: str | int | None, error: RemoteError) -> None:
        super().__init__(error.message)
        self.id = id_
        self.error = error


def parse_request(line: bytes) -> Request:
    """The request on one line. Raises BadRequest: -32006 (longer than MAX_REQUEST_BYTES), -32700
    (not strict UTF-8 JSON) or -32600 (not a JSON-RPC 2.0 request object: not an object, ``id``
    neither a string nor an integer, ``jsonrpc`` not ``"2.0"``, ``method`` not a string,
    ``params`` not an object)."""
    if len(line) > MAX_REQUEST_BYTES:
        raise BadRequest(None, RequestTooLarge(f"request of {len(line)} bytes exceeds the limit of "
                                               f"{MAX_REQUEST_BYTES} bytes"))
    try:
        message = loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest(None, ParseError(f"not a JSON line: {exc}")) from None
    if not isinstance(message, dict):
        raise BadRequest(None, InvalidRequest("a request must be a JSON object"))
    id_ = message.get("id")
    if not (id_ is None or isinstance(id_, (str, int)) and not isinstance(id_, bool)):
        raise BadRequest(None, InvalidRequest("'id' must be a string or an integer"))
    method = message.get("method")
    params = message.get("params", {})
    if message.get("jsonrpc") != "2.0" or not isinstance(method, str):
        raise BadRequest(id_, InvalidRequest(
            "expected {\"jsonrpc\": \"2.0\", \"id\": ..., \"method\": str}"))
    if not isinstance(params, dict):
        raise BadRequest(id_, InvalidRequest("'params' must be an object"))
    return Request(id_, method, params, notification="id" not in message)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def loads(line: bytes | str) -> Any:
    """Parse one line of strict UTF-8 JSON (no other encoding, no byte-order mark, no
    ``NaN``/``Infinity``). Raises ValueError (UnicodeDecodeError is one)."""
    text = line.decode("utf-8") if isinstance(line, (bytes, bytearray)) else line
    return json.loads(text, parse_constant=_reject_constant)


def dumps_line(message: dict[str, Any]) -> bytes:
    """Serialize one message as a JSON line (non-finite floats outside arrays become ``null``).

    Arrays are base64-encoded and joined into the JSON text after ``json.dumps``: base64 needs no
    escaping, and passing a 175 kB trace through the JSON encoder would double the cost.
    """
    arrays: list[bytes] = []
    marker = ""

    def placeholder(array: np.ndarray) -> str:
        nonlocal marker
        marker = marker or f"@{secrets.token_hex(8)}@"
        arrays.append(pybase64.b64encode(np.ascontiguousarray(array).data))
        return marker

    text = json.dumps(encode_value(message, placeholder), separators=(",", ":"), allow_nan=False)
    if not arrays:
        return (text + "\n").encode()
    parts = text.encode().split(marker.encode())
    if len(parts) != len(arrays) + 1:  # the marker occurs in a string of the message: 2**-64
        raise ValueError("a string of the message contains the array marker")
    pieces = [parts[0]]
    for data, part in zip(arrays, parts[1:]):
        pieces += (data, part)
    pieces.append(b"\n")
    return b"".join(pieces)


@dataclass(frozen=True)
class Ready:
    """What a server's ready line says: the port it listens on and its process id."""

    port: int
    pid: int
    line: str
    """The line as printed, without its newline."""


def ready_line(port: int, pid: int) -> str:
    """The line (without newline) a server prints to stdout once it serves ``port``."""
    return f"{READY_PREFIX} {json.dumps({'port': port, 'pid': pid})}"


def parse_ready_line(line: str) -> Ready | None:
    """The :class:`Ready` of a server's ready line (trailing whitespace ignored), or None if
    ``line`` is not one."""
    line = line.rstrip()
    prefix, _, payload = line.partition(" ")
    if prefix != READY_PREFIX:
        return None
    try:
        info = json.loads(payload)
        port, pid = info["port"], info["pid"]
    except (ValueError, TypeError, KeyError):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (port, pid)):
        return None
    return Ready(port, pid, line)


def request(id_: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return message


def result(id_: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": value}


def error(id_: Any, error_object: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": error_object}


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}
