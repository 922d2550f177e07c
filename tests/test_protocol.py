"""The protocol codec and the error classes."""
from __future__ import annotations

import json

import numpy as np
import pytest

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
