"""The protocol codec and the error classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymodaq_plugins_pyrpl.hardware import errors, protocol


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<i2", "<u4", "<c16", "|b1"])
def test_array_round_trip(dtype: str) -> None:
    array = (np.arange(24) % 3).astype(dtype).reshape(2, 3, 4)
    line = protocol.dumps_line({"a": array})
    decoded = protocol.decode_value(protocol.loads(line))["a"]
    assert decoded.dtype == np.dtype(dtype) and decoded.shape == (2, 3, 4)
    np.testing.assert_array_equal(decoded, array)


def test_array_travels_as_base64_object() -> None:
    message = json.loads(protocol.dumps_line({"x": np.zeros(4, "<f4")}))
    assert message["x"] == {"__ndarray__": "AAAAAAAAAAAAAAAAAAAAAA==", "dtype": "<f4",
                            "shape": [4]}


def test_scalars_and_non_finite() -> None:
    line = protocol.dumps_line({"f": np.float64(1.5), "i": np.int32(3), "b": np.bool_(True),
                                "nan": float("nan"), "inf": np.float32("inf"), "t": (1, 2)})
    assert json.loads(line) == {"f": 1.5, "i": 3, "b": True, "nan": None, "inf": None,
                                "t": [1, 2]}
    assert line.endswith(b"\n") and line.count(b"\n") == 1


@pytest.mark.parametrize("bad", [
    {"__ndarray__": "!!!", "dtype": "<f4", "shape": [1]},
    {"__ndarray__": "AAAA", "dtype": "<f4", "shape": [2]},
    {"__ndarray__": "AAAA", "dtype": "nope", "shape": [1]},
    {"__ndarray__": "AAAA", "dtype": "|O", "shape": [1]},
    {"__ndarray__": "AAAA"},
])
def test_malformed_arrays_raise_value_error(bad: dict) -> None:
    with pytest.raises(ValueError):
        protocol.decode_value(bad)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"x": -Infinity}'])
def test_loads_refuses_non_json_constants(text: str) -> None:
    with pytest.raises(ValueError):
        protocol.loads(text)


def test_every_code_maps_to_its_class() -> None:
    classes = [errors.ParseError, errors.InvalidRequest, errors.MethodNotFound,
               errors.InvalidParams, errors.InternalError, errors.NotAuthenticated,
               errors.AuthenticationFailed, errors.ModuleLeased, errors.DeviceNotReady,
               errors.AcquisitionTimeout, errors.RequestTooLarge, errors.UnsupportedProtocol,
               errors.ServerShuttingDown]
    assert sorted(c.code for c in classes) == sorted(
        [-32700, -32600, -32601, -32602, -32603] + list(range(-32008, -32000)))
    for cls in classes:
        exc = errors.error_from_wire(cls("why", {"k": 1}).to_wire())
        assert type(exc) is cls and exc.message == "why" and exc.data == {"k": 1}


def test_unknown_code_keeps_its_number() -> None:
    exc = errors.error_from_wire({"code": -32050, "message": "new in a later version"})
    assert type(exc) is errors.RemoteError and exc.code == -32050


def _same(a, b) -> bool:
    """Equal values, arrays compared by dtype, shape and content."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _plain(line: bytes):
    try:
        return protocol.decode_value(protocol.loads(line))
    except ValueError as exc:
        return type(exc)


def _fast(line: bytes):
    try:
        return protocol.decode_line(line)
    except ValueError as exc:
        return type(exc)


def test_decode_line_is_decode_value_of_loads_for_our_lines() -> None:
    trace = {"ch1": np.arange(16384, dtype="<f4"), "ch2": np.zeros(16384, "<f4"),
             "empty": np.zeros(0, "<f8"), "nested": [{"a": np.ones((2, 3), "<i2")}],
             "text": '{"__ndarray__":"AAAA"} in a string', "dt": 8e-9}
    line = protocol.dumps_line(protocol.result(7, trace))
    assert _same(protocol.decode_line(line), _plain(line))
    assert _same(protocol.decode_line(line)["result"]["text"], trace["text"])


@pytest.mark.parametrize("line", [
    b'{"a":{"__ndarray__":"AAAAAA==","dtype":"<f4","shape":[1]}}',  # not a whole number of f4
    (b'{"a":{"__ndarray__":"AAAA","dtype":"<f4","shape":[1]},"a":{"__ndarray__":"AAAAAAAA",'
    b'"dtype":"<f4","shape":[2]}}'),  # duplicate key: the last one counts
    (b'{"a":{ "__ndarray__":"","dtype":"<f4","shape":[0]},"b":{"__ndarray__":"AAAA",'
    b'"dtype":"<f4","shape":[1]}}'),  # an empty array written differently before a cut one
    (b'{"a":{"dtype":"<f4","__ndarray__":"","shape":[0]},"b":{"__ndarray__":"AAAA",'
    b'"dtype":"<f4","shape":[1]}}'),
    b'{"a":{"__ndarray__":"AA\\u0041A","dtype":"<f4","shape":[1]}}',  # an escape in the base64
    b'{"a":{"__ndarray__":"AA\\"AA","dtype":"<f4","shape":[1]}}',
    b'{"a":{"__ndarray__":"!!!!","dtype":"<f4","shape":[1]}}',
    b'{"a":{"__ndarray__":"AAAA","dtype":"|O","shape":[1]}}',
    b'{"a":{"__ndarray__":"AAAA"',
    b'{"a":{"__ndarray__":"AAAA","dtype":"<f4","shape":[1]}} trailing',
    b'["x{\\"__ndarray__\\":\\"AAAA\\"}", {"__ndarray__":"AAAA","dtype":"<f4","shape":[1]}]',
])
def test_decode_line_matches_the_plain_path_on_odd_lines(line: bytes) -> None:
    assert _same(_fast(line), _plain(line))


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.sampled_from(['{"__ndarray__":"', '"', "\\", "AAAA"])
    | st.builds(lambda n, dtype: np.arange(n).astype(dtype), st.integers(0, 9),
                st.sampled_from(["<f4", "<f8", "<i2", "|u1"])),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["__ndarray__", "dtype", "shape", "a", "b"]), children,
                      max_size=4),
    max_leaves=12))
def test_decode_line_equals_the_plain_path(value) -> None:
    line = protocol.dumps_line({"v": value})
    assert _same(_fast(line), _plain(line))
