"""Wire protocol: line-delimited JSON-RPC 2.0 over TCP (contract in docs/protocol.md).

=========  ===========================================================================
framing    one UTF-8 JSON object per line, terminated by ``\\n``; at most 1 MiB per request line
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
from enum import Enum
from typing import Any, Callable

import numpy as np
import pybase64

PROTOCOL_VERSION = 1
DEFAULT_PORT = 6341
MAX_REQUEST_BYTES = 1 << 20
"""Longest request line the server accepts (replies, which carry traces, are not limited)."""
READY_PREFIX = "PYRPL_SERVER_READY"
"""The server prints ``PYRPL_SERVER_READY {"port": N, "pid": P}`` once, when it serves."""


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


NOTIFICATION_STATUS = "status"


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
    if isinstance(value, dict):
        if "__ndarray__" in value:
            try:
                raw = pybase64.b64decode(value["__ndarray__"], validate=True)
                dtype = np.dtype(value["dtype"])
                if dtype.hasobject:
                    raise ValueError("object arrays are not allowed")
                shape = tuple(int(n) for n in value["shape"])
                return np.frombuffer(raw, dtype=dtype).reshape(shape)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"malformed array object: {exc}") from None
        return {k: decode_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def loads(line: bytes | str) -> Any:
    """Parse one line of strict UTF-8 JSON (no other encoding, no byte-order mark, no
    ``NaN``/``Infinity``). Raises ValueError (UnicodeDecodeError is one)."""
    text = line.decode("utf-8") if isinstance(line, (bytes, bytearray)) else line
    return json.loads(text, parse_constant=_reject_constant)


def dumps_line(message: dict[str, Any]) -> bytes:
    """Serialize one message as a JSON line (non-finite floats outside arrays become ``null``).

    Arrays are base64-encoded and spliced into the JSON text after ``json.dumps``: base64 needs no
    escaping, and scanning a 350 kB trace through the JSON encoder would double the cost.
    """
    arrays: list[str] = []
    nonce = ""

    def placeholder(array: np.ndarray) -> str:
        nonlocal nonce
        nonce = nonce or secrets.token_hex(8)
        arrays.append(_b64(array))
        return f"@{nonce}:{len(arrays) - 1}@"

    text = json.dumps(encode_value(message, placeholder), separators=(",", ":"), allow_nan=False)
    for i, data in enumerate(arrays):
        text = text.replace(f'"@{nonce}:{i}@"', f'"{data}"', 1)
    return (text + "\n").encode()


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
