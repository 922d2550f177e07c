"""Fuzzing a live server (issue 5): one ``--mock`` server subprocess for the whole module, fed
random bytes, every JSON shape, non-JSON numbers, wrong types for every catalogue attribute, deep
nesting, oversized and invalid UTF-8 lines, partial lines, a trickling client and 1,000 abandoned
connections.

Invariants checked throughout: the server process stays alive; every reply is a well-formed
JSON-RPC 2.0 message with the documented code and, when the request had a valid id, that id; a
separate client (``watchdog``) keeps getting its pings answered between batches; an invalid ``set``
changes nothing; memory and file descriptors stay bounded.
"""
from __future__ import annotations

import json
import math
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymodaq_plugins_pyrpl.hardware import catalogue, protocol
from tests.helpers.support import RawClient, ServerProcess
from tests.helpers.waiting import wait_until

HELLO_TIMEOUT = 1.0
CODES = {-32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005, -32006,
         -32007, -32008, -32009}
METHODS = [m.value for m in protocol.Method]
MISSING = object()

FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------------------
# fixtures and checks


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module; ``--hello-timeout 1`` for the abandoned-connection tests."""
    folder: Path = tmp_path_factory.mktemp("fuzz")
    args = ["--mock", "--seed", "1", "--hello-timeout", str(HELLO_TIMEOUT)]
    with ServerProcess(folder, args) as srv:
        yield srv
        assert srv.proc.poll() is None, "the server died during the fuzz tests:\n" + srv.log[-5000:]
        assert srv.stop() == 0


@pytest.fixture(scope="module")
def watchdog(server: ServerProcess) -> Iterator[RawClient]:
    """A well-behaved client that must keep working whatever the others send."""
    client = server.client("watchdog")
    yield client
    client.close()


def assert_healthy(server: ServerProcess, watchdog: RawClient, timeout: float = 2.0) -> None:
    """The server process is alive and answers another client's ping within ``timeout``."""
    assert server.proc.poll() is None, "server died:\n" + server.log[-5000:]
    watchdog._id += 1
    watchdog.send_raw(protocol.dumps_line(protocol.request(watchdog._id, "ping")))
    deadline = time.monotonic() + timeout
    while True:
        message = watchdog.read_message(max(0.001, deadline - time.monotonic()))
        if message.get("id") == watchdog._id:
            break
    check_reply(message, None, watchdog._id)
    assert "result" in message and message["result"]["time"] > 0


def check_reply(message: Any, code: int | None = None, id_: Any = MISSING) -> dict[str, Any]:
    """``message`` is a well-formed JSON-RPC 2.0 reply; with ``code`` an error of that code (None:
    a result); with ``id_`` the id (same value and JSON type)."""
    assert isinstance(message, dict), message
    assert message.get("jsonrpc") == "2.0", message
    assert "id" in message, message
    assert set(message) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}), message
    reply_id = message["id"]
    assert reply_id is None or type(reply_id) in (int, str), message
    if id_ is not MISSING:
        assert reply_id == id_ and type(reply_id) is type(id_), (id_, message)
    if "error" in message:
        error = message["error"]
        assert isinstance(error, dict) and set(error) <= {"code", "message", "data"}, message
        assert type(error["code"]) is int and error["code"] in CODES, message
        assert isinstance(error["message"], str) and error["message"], message
        if code is not None:
            assert error["code"] == code, (code, message)
        else:
            raise AssertionError(f"expected a result, got {message}")
    elif code is not None:
        raise AssertionError(f"expected error {code}, got {message}")
    return message


def stranger(server: ServerProcess) -> RawClient:
    """A raw client connecting from 127.0.0.2: wrong tokens sent from there cannot make a
    per-IP authentication limit refuse the other tests' hellos (which come from 127.0.0.1)."""
    client = RawClient.__new__(RawClient)
    client.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                           source_address=("127.0.0.2", 0))
    client.timeout = 10.0
    client._buffer = bytearray()
    client.notifications = []
    client._id = 0
    return client


def assert_closed(client: RawClient, timeout: float = 5.0) -> None:
    """The server closes ``client``'s connection within ``timeout`` (a timeout is a failure)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            message = client.read_message(max(0.001, deadline - time.monotonic()))
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout} s") from None
        except (ConnectionError, OSError):
            return
        assert is_push(message), f"unexpected message before the close: {message}"


def is_push(message: Any) -> bool:
    return isinstance(message, dict) and "id" not in message and message.get("method") == "status"


class Probe:
    """A raw connection that sends one fuzz line, then a sentinel ping, and collects the replies.

    The server answers pipelined requests as they complete, so the fuzz line's reply may come
    before or after the sentinel's; a notification (no id) gets none at all.
    """

    def __init__(self, server: ServerProcess, hello: bool = True) -> None:
        self.server = server
        self.client = server.client("fuzz", hello=hello)
        self.sentinel = 0

    def exchange(self, line: bytes, replies: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Send ``line`` (plus its newline), expect ``replies`` (0 or 1) replies to it."""
        self.sentinel += 1
        sentinel = f"sentinel-{self.sentinel}"
        ping = protocol.dumps_line({"jsonrpc": "2.0", "id": sentinel, "method": "ping"})
        self.client.send_raw(line + b"\n" + ping)
        got: list[dict[str, Any]] = []
        seen_sentinel = False
        deadline = time.monotonic() + timeout
        while not seen_sentinel or len(got) < replies:
            message = self.client.read_message(max(0.001, deadline - time.monotonic()))
            if is_push(message):
                continue
            if isinstance(message, dict) and message.get("id") == sentinel and not seen_sentinel:
                check_reply(message, None, sentinel)
                seen_sentinel = True
                continue
            got.append(message)
            assert len(got) <= replies, f"unexpected reply to {line[:200]!r}: {got}"
        return got

    def close(self) -> None:
        try:
            self.client.request("goodbye")  # ends the session: leases taken by the fuzz go
        except OSError:
            pass
        self.client.close()


def expected(message: Any) -> tuple[int, int | None, Any]:
    """(number of replies, error code or None for "any documented outcome", reply id) of a parsed
    request on an authenticated connection, per docs/protocol.md."""
    if not isinstance(message, dict):
        return 1, -32600, None
    id_ = message.get("id")
    if not (id_ is None or isinstance(id_, (str, int)) and not isinstance(id_, bool)):
        return 1, -32600, None
    if message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        return 1, -32600, id_  # an invalid request object is answered, with or without an id
    if not isinstance(message.get("params", {}), dict):
        return 1, -32600, id_
    replies = 0 if "id" not in message else 1  # only a valid request without id is a notification
    if message["method"] not in METHODS:
        return replies, -32601, id_
    if message["method"] == "hello":
        return replies, -32600, id_  # a second hello on the connection
    return replies, None, id_


def check_fuzz_reply(got: list[dict[str, Any]], message: Any) -> str:
    """Check the replies to a fuzzed request; returns the outcome ("result", the error code or
    "no reply") for the tally printed by each fuzz test."""
    replies, code, id_ = expected(message)
    assert len(got) == replies, (message, got)
    if not got:
        return "no reply"
    reply = got[0]
    outcome = str(reply["error"]["code"]) if "error" in reply else "result"
    if code is not None:
        check_reply(reply, code, id_)
        return outcome
    # a known method with arbitrary params: a result or a documented client-side error, never an
    # internal error, a parse error or "device not ready" (the simulated board is always ready)
    if "error" in reply:
        check_reply(reply, reply["error"]["code"] if isinstance(reply.get("error"), dict) else 0,
                    id_)
        assert reply["error"]["code"] in (-32602, -32003, -32005), (message, reply)
    else:
        check_reply(reply, None, id_)
    return outcome


# ------------------------------------------------------------------------------------------------
# strategies

json_scalars = (st.none() | st.booleans() | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12)
MODULE_NAMES = list(catalogue.MODULES)
ATTRIBUTE_NAMES = sorted({a for m in catalogue.MODULES.values() for a in m.attributes})
OPTION_STRINGS = sorted({o for m in catalogue.MODULES.values() for a in m.attributes.values()
                         for o in a.options if isinstance(o, str)})
ids = st.integers() | st.text(max_size=10) | json_values
attribute_values = (json_values | st.sampled_from(OPTION_STRINGS)
                    | st.floats(allow_nan=False, allow_infinity=False)
                    | st.integers(-10**30, 10**30))
params = st.fixed_dictionaries({}, optional={
    "module": st.sampled_from(MODULE_NAMES) | json_values,
    "names": st.lists(st.sampled_from(ATTRIBUTE_NAMES) | st.text(max_size=8), max_size=4)
    | json_values,
    "values": st.dictionaries(st.sampled_from(ATTRIBUTE_NAMES) | st.text(max_size=8),
                              attribute_values, max_size=4) | json_values,
    "timeout": st.floats(-1, 0.05) | json_values,
    "status": st.booleans() | json_values,
    "token": st.text(max_size=70) | json_values,
    "protocol": st.integers() | json_values,
    "client": st.text(max_size=20) | json_values,
})
envelopes = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0") | json_values,
     "method": st.sampled_from([m for m in METHODS if m != "goodbye"]) | st.text(max_size=10)
     | json_values},
    optional={"id": ids, "params": params | json_values})
requests = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": st.integers() | st.text(max_size=10),
     "method": st.sampled_from([m for m in METHODS if m != "goodbye"]), "params": params})


def near_values(attribute: catalogue.Attribute) -> st.SearchStrategy:
    """Values around what ``attribute`` accepts: both sides of its range, its options, other
    types."""
    if attribute.kind == "bool":
        return st.booleans() | json_scalars
    if attribute.kind == "select":
        return st.sampled_from(attribute.options) | st.sampled_from(OPTION_STRINGS) | json_scalars
    if attribute.kind == "filter":
        low, high = attribute.options[0] * 1.2, attribute.options[-1] * 1.2
        number = st.floats(low, high) | st.sampled_from(attribute.options)
        return number | st.lists(number, max_size=attribute.length + 1) | json_scalars
    if attribute.wraps is not None:
        return (st.floats(-1e6, 1e6) | st.floats(allow_nan=False, allow_infinity=False)
                | json_scalars)
    low, high = attribute.minimum, attribute.maximum
    span = high - low
    edges = [low, high, math.nextafter(low, -math.inf), math.nextafter(high, math.inf)]
    return (st.floats(low - 0.1 * span, high + 0.1 * span) | st.sampled_from(edges)
            | st.integers(int(low) - 2, int(high) + 2) | json_scalars)


@st.composite
def set_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A ``set`` of 1-3 real attributes of one module (not the scope: see ``harmless``)."""
    module = catalogue.MODULES[draw(st.sampled_from([m for m in MODULE_NAMES if m != "scope"]))]
    names = draw(st.lists(st.sampled_from(list(module.attributes)), min_size=1, max_size=3,
                          unique=True))
    values = {name: draw(near_values(module.attributes[name])) for name in names}
    return {"module": module.name, "values": values}


def harmless(message: dict[str, Any]) -> bool:
    """Leave the scope alone: a fuzzed scope setting (trigger, duration × trace_average) could make
    a later fuzzed ``acquire`` wait for minutes."""
    p = message.get("params")
    return not (message.get("method") == "set" and isinstance(p, dict)
                and p.get("module") == "scope")


# ------------------------------------------------------------------------------------------------
# random input


def test_random_bytes(server: ServerProcess, watchdog: RawClient) -> None:
    probe = Probe(server)
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(st.binary(max_size=200))
    def fuzz(data: bytes) -> None:
        line = data.replace(b"\n", b"")
        if not line.strip():
            probe.exchange(line, replies=0)  # blank lines are skipped
            outcomes["blank"] += 1
            return
        try:
            message = protocol.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            (reply,) = probe.exchange(line, replies=1)
            check_reply(reply, -32700, None)
            outcomes["-32700"] += 1
            return
        outcomes[check_fuzz_reply(probe.exchange(line, replies=expected(message)[0]), message)] += 1

    fuzz()
    probe.close()
    print(f"random bytes: {dict(outcomes)}")
    assert_healthy(server, watchdog)


def test_every_json_shape(server: ServerProcess, watchdog: RawClient) -> None:
    probe = Probe(server)
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(json_values)
    def fuzz(value: Any) -> None:
        line = json.dumps(value).encode()
        outcomes[check_fuzz_reply(probe.exchange(line, replies=expected(value)[0]), value)] += 1

    fuzz()
    probe.close()
    print(f"JSON shapes: {dict(outcomes)}")
    assert_healthy(server, watchdog)


@pytest.mark.parametrize("strategy, examples", [(envelopes, 300), (requests, 1000)],
                         ids=["envelopes", "requests"])
def test_requests(server: ServerProcess, watchdog: RawClient, strategy: st.SearchStrategy,
                  examples: int) -> None:
    """JSON-RPC envelopes with fuzzed fields, and well-formed requests of every method (but
    goodbye) with fuzzed params."""
    probe = Probe(server)
    outcomes: Counter[str] = Counter()

    @settings(FUZZ, max_examples=examples)
    @given(strategy.filter(harmless))
    def fuzz(message: dict[str, Any]) -> None:
        line = json.dumps(message).encode()
        outcome = check_fuzz_reply(probe.exchange(line, replies=expected(message)[0]), message)
        outcomes[f"{message.get('method')}: {outcome}" if outcome in ("result", "-32602") and
                 isinstance(message.get("method"), str) else outcome] += 1

    fuzz()
    probe.close()
    print(f"{sum(outcomes.values())} requests: {dict(sorted(outcomes.items()))}")
    assert_healthy(server, watchdog)


def test_before_hello(server: ServerProcess, watchdog: RawClient) -> None:
    """On a fresh connection only a correct hello is served; a wrong token closes it."""
    with RawClient(server.port) as c:
        for method in (m for m in METHODS if m != "hello"):
            check_reply(c.request(method, {"module": "asg0"}), -32001, c._id)
        cases = [({"token": server.token, "client": "x", "protocol": 2}, -32007),
                 ({"token": server.token, "client": "x", "protocol": "1"}, -32007),
                 ({"token": server.token, "client": "x"}, -32007),
                 ({"token": server.token, "client": 5, "protocol": 1}, -32602),
                 ({"token": server.token, "client": "x" * 201, "protocol": 1}, -32602),
                 ({"token": server.token, "client": "x", "protocol": 1, "hold": 1}, -32602),
                 ({"token": server.token, "client": "x", "protocol": 1, "session": 7}, -32602)]
        for params_, code in cases:
            check_reply(c.request("hello", params_), code, c._id)
        check_reply(c.request("hello", {"token": server.token, "client": "x", "protocol": 1}),
                    None, c._id)
        check_reply(c.request("goodbye"), None, c._id)
    for token in [None, 5, [], {}, "", "x" * 4000, server.token + " ", server.token.upper()]:
        with stranger(server) as c:
            check_reply(c.request("hello", {"token": token, "client": "x", "protocol": 1}),
                        -32002, c._id)
            assert_closed(c)  # -32002 is final: the server closes the connection
    with stranger(server) as c:  # a line over 4 KiB before hello
        c.send_raw(protocol.dumps_line(protocol.request(1, "hello", {"token": "x" * 10_000})))
        check_reply(c.read_message(), -32006, None)
        assert_closed(c)
    assert_healthy(server, watchdog)


def test_token_with_a_lone_surrogate_is_a_wrong_token(server: ServerProcess) -> None:
    with server.client("x") as authenticated:
        reply = authenticated.request("shutdown", {"token": "\ud800"})
        check_reply(reply, -32602, authenticated._id)
    with stranger(server) as c:
        c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"hello","params":'
                   b'{"token":"\\ud800","client":"x","protocol":1}}\n')
        check_reply(c.read_message(), -32002, 1)
        assert_closed(c)


def test_set_near_the_limits(server: ServerProcess, watchdog: RawClient) -> None:
    """``set`` of real attributes with values on both sides of their limits: refused (-32602)
    exactly when the catalogue refuses them, otherwise applied as the catalogue quantizes them."""
    outcomes: Counter[str] = Counter()
    with server.client("limits") as c:

        @settings(FUZZ, max_examples=400)
        @given(set_requests())
        def fuzz(params_: dict[str, Any]) -> None:
            try:
                applied = catalogue.validate(params_["module"], params_["values"])
            except catalogue.InvalidParams:
                applied = None
            reply = c.request("set", params_)
            if applied is None:
                check_reply(reply, -32602, c._id)
                outcomes["-32602"] += 1
            else:
                check_reply(reply, None, c._id)
                assert reply["result"] == applied, (params_, reply)
                outcomes["result"] += 1

        fuzz()
        c.request("goodbye")
    print(f"set near the limits: {dict(outcomes)}")
    assert_healthy(server, watchdog)


# ------------------------------------------------------------------------------------------------
# numbers JSON cannot carry, and numbers too large to mean anything


def test_nan_infinity_are_parse_errors(server: ServerProcess, watchdog: RawClient) -> None:
    probe = Probe(server)
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        for line in (constant,
                     b'{"jsonrpc":"2.0","id":' + constant + b',"method":"ping"}',
                     b'{"jsonrpc":"2.0","id":1,"method":"set","params":{"module":"asg0",'
                     b'"values":{"amplitude":' + constant + b'}}}',
                     b'{"jsonrpc":"2.0","id":1,"method":"acquire","params":{"module":"scope",'
                     b'"timeout":' + constant + b'}}',
                     b'[1, 2, ' + constant + b']'):
            (reply,) = probe.exchange(line, replies=1)
            check_reply(reply, -32700, None)
    probe.close()
    assert_healthy(server, watchdog)


def test_huge_and_odd_numbers(server: ServerProcess, watchdog: RawClient) -> None:
    probe = Probe(server)

    def call(method: str, params_: dict[str, Any], id_: Any = 1) -> dict[str, Any]:
        line = json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params_})
        (reply,) = probe.exchange(line.encode(), replies=1)
        return reply

    # ids: any JSON integer is a valid id and comes back unchanged; floats are not ids
    check_reply(call("ping", {}, 10**400), None, 10**400)
    check_reply(call("ping", {}, -(10**400)), None, -(10**400))
    for bad_id in (1e308, -0.0, 1.5, 0.0):
        check_reply(call("ping", {}, bad_id), -32600, None)
    # more digits than Python converts (4300): a parse error, not a crash
    (reply,) = probe.exchange(b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ping"}', 1)
    check_reply(reply, -32700, None)
    # 1e400 parses as a float infinity: refused as non-finite
    (reply,) = probe.exchange(b'{"jsonrpc":"2.0","id":2,"method":"set","params":{"module":"pid0",'
                              b'"values":{"p":1e400}}}', 1)
    check_reply(reply, -32602, 2)
    for value in (1e308, -1e308, 10**400, -(10**400)):
        for module, attribute in (("asg0", "frequency"), ("pid0", "p"), ("iq0", "phase"),
                                  ("asg0", "start_phase"), ("scope", "trace_average"),
                                  ("asg1", "cycles_per_burst"), ("pid1", "inputfilter"),
                                  ("iq2", "bandwidth"), ("iq1", "acbandwidth")):
            check_reply(call("set", {"module": module, "values": {attribute: value}}), -32602, 1)
            check_reply(call("set", {"module": module, "values": {attribute: [value]}}), -32602, 1)
    for timeout in (1e308, 10**400, -0.0, 0, -1, 3600.5):
        check_reply(call("acquire", {"module": "iq0", "timeout": timeout}), -32602, 1)
    # -0.0 is a valid number (its sign does not survive the register)
    reply = check_reply(call("set", {"module": "asg1", "values": {"offset": -0.0,
                                                                  "start_phase": -0.0}}))
    assert reply["result"] == {"offset": 0.0, "start_phase": 0.0}
    probe.close()
    assert_healthy(server, watchdog)


# ------------------------------------------------------------------------------------------------
# every attribute of the catalogue, wrong types and out-of-range values


def wrong_values(attribute: catalogue.Attribute) -> list[Any]:
    """Values ``set`` must refuse for this attribute."""
    common = [None, {}, {"value": 1}, {"__ndarray__": "AAAAAA==", "dtype": "<f4", "shape": [1]},
              "nan", "Infinity"]
    if attribute.readonly:
        return [attribute.default, 0.0, 0, True, "x", *common]
    if attribute.kind == "bool":
        return [0, 1, 1.0, 0.0, "true", "True", "false", [], [True], *common]
    if attribute.kind == "select":
        option = attribute.options[0]
        near = [option.upper(), option.capitalize(), f" {option}", f"{option} ", f"{option}\n",
                option + "\x00", "", "\u00e9", "x" * 10_000]
        return [v for v in near if v not in attribute.options] + [
            0, 1, True, False, 1.5, [option], [], {option: option}, *common]
    wrong_types = [True, False, "1", "1.0", "0", "", *common]
    huge = [1e308, -1e308, 10**400, -(10**400)]
    if attribute.kind == "filter":
        low, high = attribute.options[0], attribute.options[-1]
        return [*wrong_types, [None], [True], ["1"], [[1.0]], [{}], [0.0] * (attribute.length + 1),
                high * 2, low * 2, [high * 2], [0.0, low * 2][: attribute.length], *huge,
                [10**400], [1e308]]
    values: list[Any] = [*wrong_types, [], [1.0], [[1.0]]]
    if attribute.wraps is None:
        low, high = attribute.minimum, attribute.maximum
        values += [low - max(1.0, abs(low)), high + max(1.0, abs(high)), *huge, 2**63 + 1,
                   -(2**63) - 1]
        if attribute.kind == "int":
            values += [low - 1, high + 1]
    else:
        values += huge  # a phase wraps modulo 360, but not past what a float can carry
    return values


def valid_value(attribute: catalogue.Attribute) -> Any:
    """A value ``set`` accepts (different from the default where possible)."""
    if attribute.kind == "bool":
        return not attribute.default
    if attribute.kind == "select":
        return next(o for o in attribute.options if o != attribute.default)
    if attribute.kind == "filter":
        return [attribute.options[-1]]
    if attribute.wraps is not None:
        return 90.0
    return attribute.maximum


def steady_state(client: RawClient, module: str) -> dict[str, Any]:
    """``get`` of the whole module without the attributes that change by themselves (the
    simulated board's live values, e.g. a PID integrator or the sampler)."""
    first = client.call("get", module=module)
    second = client.call("get", module=module)
    return {k: v for k, v in second.items() if first.get(k) == v}


def test_wrong_types_for_every_attribute(server: ServerProcess, watchdog: RawClient) -> None:
    count = 0
    with server.client("catalogue") as c:
        for module_name, module in catalogue.MODULES.items():
            before = steady_state(c, module_name)
            writable = [a for a in module.attributes.values() if not a.readonly]
            for attribute in module.attributes.values():
                companion = next((a for a in writable if a.name != attribute.name), None)
                for value in wrong_values(attribute):
                    sets = [{attribute.name: value}]
                    if companion is not None:  # all or nothing: the valid one is not applied
                        sets.append({companion.name: valid_value(companion), attribute.name: value})
                    for values in sets:
                        reply = c.request("set", {"module": module_name, "values": values})
                        check_reply(reply, -32602, c._id)
                        assert reply["error"]["data"]["attribute"] == attribute.name, reply
                        count += 1
            # unknown attributes, misspelled ones, and malformed values objects
            for values in ({"nope": 1}, {attribute.name.upper(): 1}, {}, [], None, "x", 5,
                           {"": 1}, {attribute.name + "\x00": 1}):
                check_reply(c.request("set", {"module": module_name, "values": values}), -32602,
                            c._id)
            for names in ("frequency", [1], [None], ["nope"], {"a": 1}, 5, [[]]):
                check_reply(c.request("get", {"module": module_name, "names": names}), -32602,
                            c._id)
            after = steady_state(c, module_name)
            assert {k: v for k, v in after.items() if k in before} == {
                k: v for k, v in before.items() if k in after}, module_name
            if writable:
                assert len(set(before) & set(after)) >= len(writable) // 2, (before, after)
            assert_healthy(server, watchdog)
        for module_name in ("asg2", "ASG0", "", " asg0", None, 0, ["asg0"], {"asg0": 1}):
            for method in ("get", "set", "acquire", "lease", "release"):
                check_reply(c.request(method, {"module": module_name, "values": {"x": 1}}),
                            -32602, c._id)
        for module_name in ("asg0", "pid0"):
            check_reply(c.request("acquire", {"module": module_name}), -32602, c._id)
    print(f"catalogue: {count} invalid sets refused, nothing applied")
    assert count > 1500


# ------------------------------------------------------------------------------------------------
# deep nesting, long lines, invalid UTF-8


@pytest.mark.parametrize("opening, closing", [(b"[", b"]"), (b'{"a":', b"}")],
                         ids=["lists", "objects"])
def test_deep_nesting(server: ServerProcess, watchdog: RawClient, opening: bytes,
                      closing: bytes) -> None:
    """100,000 levels: a parse error (the parser's recursion limit) or a closed connection."""
    with server.client("deep") as c:
        depth = 100_000
        c.send_raw(opening * depth + b"1" * (opening == b'{"a":') + closing * depth + b"\n")
        try:
            reply = c.read_message(timeout=10)
        except ConnectionError:
            pass
        else:
            check_reply(reply, -32700, None)
            assert c.call("ping")  # the connection survived
    assert_healthy(server, watchdog)


@pytest.mark.parametrize("depth", [10, 100, 300])
def test_nested_params_get_a_reply(server: ServerProcess, watchdog: RawClient, depth: int) -> None:
    """Nesting the parser accepts, inside params, is answered like any wrong value."""
    nested = b"[" * depth + b"]" * depth
    with server.client("nested") as c:
        for method, params_ in ((b"get", b'{"module":' + nested + b"}"),
                                (b"set", b'{"module":' + nested + b"}"),
                                (b"set",
                                 b'{"module":"asg0","values":{"amplitude":' + nested + b"}}"),
                                (b"set", b'{"module":"asg0","values":' + nested + b"}"),
                                (b"get", b'{"module":"asg0","names":' + nested + b"}"),
                                (b"acquire", b'{"module":"iq0","timeout":' + nested + b"}")):
            c.send_raw(b'{"jsonrpc":"2.0","id":3,"method":"' + method + b'","params":' + params_
                       + b"}\n")
            check_reply(c.read_message(timeout=5), -32602, 3)
    assert_healthy(server, watchdog)


def test_deeply_nested_module_name_gets_a_reply(server: ServerProcess) -> None:
    depth = 900
    with server.client("nested") as c:
        c.send_raw(b'{"jsonrpc":"2.0","id":4,"method":"get","params":{"module":'
                   + b"[" * depth + b"]" * depth + b"}}\n")
        check_reply(c.read_message(timeout=2), -32602, 4)


def _padded_ping(total: int, id_: int = 9) -> bytes:
    """A ping request line of exactly ``total`` bytes, the newline included."""
    head = b'{"jsonrpc":"2.0","id":%d,"method":"ping","params":{"pad":"' % id_
    tail = b'"}}\n'
    return head + b"x" * (total - len(head) - len(tail)) + tail


def test_long_lines(server: ServerProcess, watchdog: RawClient) -> None:
    limit = protocol.MAX_REQUEST_BYTES
    with server.client("long") as c:
        # right at the limit (the newline counts): served
        c.send_raw(_padded_ping(limit))
        check_reply(c.read_message(timeout=10), None, 9)
        # a long string value near the limit, echoed in an error message: answered
        name = "m" * (limit - 200)
        reply = c.request("get", {"module": name})
        check_reply(reply, -32602, c._id)
        assert c.call("ping")
    # one byte over: -32006
    with server.client("long") as c:
        c.send_raw(_padded_ping(limit + 1))
        check_reply(c.read_message(timeout=10), -32006, None)
    # far over without a newline (the server cannot even find the line's end): -32006, closed
    with server.client("long") as c:
        c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"'
                   + b"x" * (limit + 1000))
        check_reply(c.read_message(timeout=10), -32006, None)
        assert_closed(c)
    assert_healthy(server, watchdog)


def test_line_just_over_the_limit_closes_the_connection(server: ServerProcess) -> None:
    with server.client("long") as c:
        c.send_raw(_padded_ping(protocol.MAX_REQUEST_BYTES + 1))
        check_reply(c.read_message(timeout=10), -32006, None)
        assert_closed(c, timeout=2)


INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\x80", b"\xc0\xaf", b"\xe2\x82", b"\xf4\x90\x80\x80",
                b"\xed\xa0\x80\xed\xb0\x80"[:2]]


@pytest.mark.parametrize("bad", INVALID_UTF8, ids=lambda b: b.hex())
def test_invalid_utf8(server: ServerProcess, watchdog: RawClient, bad: bytes) -> None:
    probe = Probe(server)
    for line in (bad, b'"' + bad + b'"', b'{"jsonrpc":"2.0","id":1,"method":"' + bad + b'"}',
                 b'{"jsonrpc":"2.0","id":1,"method":"get","params":{"module":"' + bad + b'"}}',
                 b'{"jsonrpc":"2.0","id":1,"method":"ping"}' + bad):
        (reply,) = probe.exchange(line, replies=1)
        check_reply(reply, -32700, None)
    probe.close()
    assert_healthy(server, watchdog)


@pytest.mark.parametrize("line", [
    '{"jsonrpc":"2.0","id":1,"method":"ping"}\n'.encode("utf-16-be"),
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xed\xa0\x80"}}\n'],
    ids=["utf-16-be", "cesu-8-surrogate"])
def test_other_encodings_are_parse_errors(server: ServerProcess, line: bytes) -> None:
    with server.client("encoding") as c:
        c.send_raw(line)
        check_reply(c.read_message(timeout=5), -32700, None)


# ------------------------------------------------------------------------------------------------
# slow, half-finished and abandoned connections


def test_partial_lines_then_close(server: ServerProcess, watchdog: RawClient) -> None:
    request = b'{"jsonrpc":"2.0","id":1,"method":"get","params":{"module":"asg0"}}\n'
    for i in range(60):
        c = server.client("partial", hello=i % 2 == 0)
        c.send_raw(request[: 1 + i % (len(request) - 1)])
        if i % 3 == 0:  # a reset instead of an orderly close
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    assert_healthy(server, watchdog)


def test_slow_client_does_not_block_others(server: ServerProcess, watchdog: RawClient) -> None:
    """A client trickling 1 byte every 20 ms for ~2 s: others are served meanwhile, and its own
    request is answered once complete."""
    line = _padded_ping(100, id_=77)
    done = threading.Event()
    errors: list[BaseException] = []
    with server.client("slow") as slow, server.client("fast") as fast:
        def trickle() -> None:
            try:
                for byte in line:
                    slow.send_raw(bytes([byte]))
                    done.wait(0.02)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=trickle)
        thread.start()
        latencies = []
        while not done.is_set():
            t0 = time.perf_counter()
            assert fast.call("ping")["time"] > 0
            latencies.append(time.perf_counter() - t0)
        thread.join(10)
        assert not errors
        check_reply(slow.read_message(timeout=5), None, 77)
    assert len(latencies) > 10
    assert max(latencies) < 0.5, latencies  # generous: blocking would take the whole 2 s
    assert_healthy(server, watchdog)


def test_slow_client_before_hello_is_closed(server: ServerProcess, watchdog: RawClient) -> None:
    """Trickling bytes does not extend the hello timeout (slowloris)."""
    with RawClient(server.port) as c:
        t0 = time.monotonic()
        c.sock.settimeout(0.02)  # the pace of the trickle: one byte per 20 ms
        deadline = t0 + HELLO_TIMEOUT + 5
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                c.send_raw(b"x")
                closed = not c.sock.recv(1024)
            except socket.timeout:
                pass
            except (ConnectionError, OSError):
                closed = True
        assert closed, "a trickling client kept its connection past the hello timeout"
        assert time.monotonic() - t0 < HELLO_TIMEOUT + 5
    assert_healthy(server, watchdog)


def _server_fds(server: ServerProcess) -> int:
    return psutil.Process(server.pid).num_fds()


def test_1000_abandoned_connections(server: ServerProcess, watchdog: RawClient) -> None:
    """1,000 connections that never say hello (silent, mid-line, garbage then silent): those
    beyond the cap of connections waiting for their hello are refused at once (one -32009 line),
    the hello timeout closes the others, others are served meanwhile, and the descriptors come
    back."""
    baseline = _server_fds(server)
    sockets: list[socket.socket] = []
    try:
        for i in range(1000):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            kind = i % 3
            if kind == 1:
                s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"hel')
            elif kind == 2:
                s.sendall(b"garbage\n")
            sockets.append(s)
            if i % 250 == 249:
                assert_healthy(server, watchdog)
        peak = _server_fds(server)
        # every connection gets closed by the server within the hello timeout (plus slack)
        deadline = time.monotonic() + HELLO_TIMEOUT + 15
        pending = {s.fileno(): s for s in sockets}
        received: dict[int, bytes] = {}
        with selectors.DefaultSelector() as selector:  # epoll: more than FD_SETSIZE sockets
            for s in sockets:
                selector.register(s, selectors.EVENT_READ)
            while pending and time.monotonic() < deadline:
                for key, _ in selector.select(0.5):
                    s = key.fileobj
                    try:
                        chunk = s.recv(65536)
                    except ConnectionError:
                        chunk = b""
                    if chunk:
                        received[s.fileno()] = received.get(s.fileno(), b"") + chunk
                    else:
                        del pending[s.fileno()]
                        selector.unregister(s)
        assert not pending, f"{len(pending)} connections still open after the hello timeout"
        refused = 0
        for fileno, data in received.items():  # refusals, and parse errors for garbage lines
            codes = [json.loads(line)["error"]["code"] for line in data.splitlines()]
            refused += codes == [-32009]
            for line in data.splitlines():
                check_reply(json.loads(line), -32009 if codes == [-32009] else -32700, None)
        assert refused > 0  # one address may have 16 connections waiting for their hello
        assert_healthy(server, watchdog)
    finally:
        for s in sockets:
            s.close()
    wait_until(lambda: _server_fds(server) <= baseline + 2, 10,
               lambda: f"the descriptors back to {baseline} + 2 (now {_server_fds(server)})")
    fds = _server_fds(server)
    print(f"server fds: baseline {baseline}, with 1000 connections {peak}, after {fds}")
    assert fds <= baseline + 2, (baseline, fds)


# ------------------------------------------------------------------------------------------------
# bounded memory


def _bad_requests(start: int, count: int) -> list[tuple[bytes, int, Any]]:
    """``count`` bad request lines with their expected (code, reply id); ids unique from
    ``start``."""
    attrs = [(m, a) for m, module in catalogue.MODULES.items() for a in module.attributes]
    requests: list[tuple[bytes, int, Any]] = []
    for n in range(start, start + count):
        kind = n % 6
        if kind == 0:
            requests.append((b"not json %d" % n, -32700, None))
        elif kind == 1:
            requests.append((b'{"jsonrpc":"2.0","id":%d,"method":"ping","params":[1]}' % n,
                             -32600, n))
        elif kind == 2:
            requests.append((b'{"jsonrpc":"2.0","id":%d,"method":"nope%d"}' % (n, n), -32601, n))
        elif kind == 3:
            module, attribute = attrs[n % len(attrs)]
            requests.append((json.dumps({"jsonrpc": "2.0", "id": n, "method": "set", "params": {
                "module": module, "values": {attribute: {"bad": "x" * (n % 500)}}}}).encode(),
                -32602, n))
        elif kind == 4:
            requests.append((json.dumps({"jsonrpc": "2.0", "id": str(n), "method": "get",
                                         "params": {"module": f"asg{n}"}}).encode(),
                             -32602, str(n)))
        else:
            requests.append((b'{"jsonrpc":"2.0","id":%d,"method":"acquire","params":'
                             b'{"module":"iq0","timeout":-%d}}' % (n, n), -32602, n))
    return requests


def _send_batches(c: RawClient, server: ServerProcess, watchdog: RawClient, start: int,
                  total: int, batch: int = 250) -> None:
    for first in range(start, start + total, batch):
        requests = _bad_requests(first, batch)
        c.send_raw(b"".join(line + b"\n" for line, _, _ in requests))
        expected_by_id = {id_: code for _, code, id_ in requests if id_ is not None}
        parse_errors = sum(1 for _, _, id_ in requests if id_ is None)
        for _ in range(batch):
            reply = c.read_message(timeout=10)
            id_ = reply.get("id")
            if id_ is None:
                check_reply(reply, -32700, None)
                parse_errors -= 1
            else:
                check_reply(reply, expected_by_id.pop(id_), id_)
        assert not expected_by_id and parse_errors == 0
        assert_healthy(server, watchdog)


def test_memory_bounded_after_10000_bad_requests(server: ServerProcess,
                                                 watchdog: RawClient) -> None:
    process = psutil.Process(server.pid)
    with server.client("flood") as c:
        _send_batches(c, server, watchdog, 0, 2000)  # warm up the allocator and caches
        before = process.memory_info().rss
        _send_batches(c, server, watchdog, 2000, 10_000)
        after = process.memory_info().rss
    growth = (after - before) / 2**20
    print(f"server RSS: {before / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB after 10,000 bad "
          f"requests (growth {growth:+.2f} MiB)")
    assert growth < 20, growth
    assert_healthy(server, watchdog)
