"""The server's dispatch, bytes in and messages out, without sockets: every error code and method."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import protocol
from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend
from pymodaq_plugins_pyrpl.hardware.server import Connection, Server, acquisition

TOKEN = "s3cret"


class Pipe:
    """A connection double that records what the server pushes."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.connection = Connection(self._send, peer="test")

    async def _send(self, data: bytes) -> None:
        self.sent.append(json.loads(data))


def line(method: str, params: dict[str, Any] | None = None, id_: Any = 1) -> bytes:
    return protocol.dumps_line(protocol.request(id_, method, params))


class Harness:
    def __init__(self, server: Server) -> None:
        self.server = server

    async def call(self, pipe: Pipe, method: str, params: dict[str, Any] | None = None,
                   id_: Any = 1) -> dict[str, Any]:
        reply = await self.server.process_line(pipe.connection, line(method, params, id_))
        assert reply is not None
        return json.loads(protocol.dumps_line(reply))

    async def hello(self, pipe: Pipe, name: str = "t", **params: Any) -> dict[str, Any]:
        reply = await self.call(pipe, "hello", {"token": TOKEN, "client": name, "protocol": 1,
                                                **params})
        assert "result" in reply, reply
        return reply["result"]


def run(coro_fn):
    """Run ``coro_fn(harness)`` against a fresh server with an opened simulator."""
    async def main():
        server = Server(SimulatorBackend(seed=0), TOKEN)
        server.connection_made(Pipe().connection)
        await server.open_backend()
        try:
            return await coro_fn(Harness(server))
        finally:
            await server.close_backend()
    return asyncio.run(main())


def code(reply: dict[str, Any]) -> int:
    assert "error" in reply, reply
    return reply["error"]["code"]


@pytest.mark.parametrize("raw, expected", [
    (b"\x01basdf\n", -32700),
    (b"{not json}\n", -32700),
    (b"\xff\xfe\n", -32700),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}\n', -32700),
    (b"[1, 2]\n", -32600),
    (b'"ping"\n', -32600),
    (b'{"id": 1, "method": "ping"}\n', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 5}\n', -32600),
    (b'{"jsonrpc": "2.0", "id": [1], "method": "ping"}\n', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}\n', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "nope"}\n', -32601),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "get", "params": {"module": "asg0"}}\n', -32001),
])
def test_malformed_and_unauthenticated(raw: bytes, expected: int) -> None:
    async def body(h: Harness):
        return await h.server.process_line(Pipe().connection, raw)
    assert code(run(body)) == expected


def test_request_too_large() -> None:
    async def body(h: Harness):
        big = line("ping", {"pad": "x" * protocol.MAX_REQUEST_BYTES})
        return await h.server.process_line(Pipe().connection, big)
    assert code(run(body)) == -32006


def test_hello_errors_and_result() -> None:
    async def body(h: Harness):
        p = Pipe()
        wrong = await h.call(p, "hello", {"token": "nope", "client": "x", "protocol": 1})
        old = await h.call(p, "hello", {"token": TOKEN, "client": "x", "protocol": 2})
        bad_name = await h.call(p, "hello", {"token": TOKEN, "client": 7, "protocol": 1})
        ok = await h.hello(p, "first")
        again = await h.call(p, "hello", {"token": TOKEN, "client": "x", "protocol": 1})
        return wrong, old, bad_name, ok, again, p
    wrong, old, bad_name, ok, again, _ = run(body)
    assert code(wrong) == -32002 and "do not retry" in wrong["error"]["message"]
    assert code(old) == -32007 and old["error"]["data"] == {"supported": [1]}
    assert code(bad_name) == -32602
    assert ok["protocol"] == 1 and ok["backend"] == "mock" and ok["resumed"] is False
    assert ok["device"]["state"] == "ready" and len(ok["device"]["session"]) == 32
    assert code(again) == -32600


def test_get_set_validation_is_all_or_nothing() -> None:
    async def body(h: Harness):
        p = Pipe()
        await h.hello(p)
        before = (await h.call(p, "get", {"module": "asg0"}))["result"]
        bad = await h.call(p, "set", {"module": "asg0",
                                      "values": {"frequency": 1000, "amplitude": 5.0}})
        after_bad = (await h.call(p, "get", {"module": "asg0"}))["result"]
        good = await h.call(p, "set", {"module": "asg0", "values": {"frequency": 1000,
                                                                     "output_direct": "out1"}})
        got = await h.call(p, "get", {"module": "asg0", "names": ["frequency", "output_direct"]})
        errors = [await h.call(p, m, prm) for m, prm in [
            ("get", {"module": "asg9"}),
            ("get", {"module": "asg0", "names": ["nope"]}),
            ("get", {"module": "asg0", "names": "frequency"}),
            ("set", {"module": "asg0", "values": {"waveform": "SIN"}}),
            ("set", {"module": "asg0", "values": {"frequency": "1 kHz"}}),
            ("set", {"module": "asg0", "values": {}}),
            ("set", {"module": "sampler", "values": {"in1": 0.1}}),
            ("acquire", {"module": "asg0"}),
            ("acquire", {"module": "scope", "timeout": -1}),
            ("lease", {"module": "nope"}),
            ("subscribe", {"status": "yes"}),
        ]]
        return before, bad, after_bad, good, got, errors
    before, bad, after_bad, good, got, errors = run(body)
    assert code(bad) == -32602
    assert bad["error"]["data"]["attribute"] == "amplitude"
    assert "amplitude" in bad["error"]["message"] and "1" in bad["error"]["message"]
    assert after_bad == before
    assert good["result"] == {"frequency": pytest.approx(1000.0076, abs=1e-4),
                              "output_direct": "out1"}
    assert got["result"] == good["result"]
    assert [code(e) for e in errors] == [-32602] * len(errors)


def test_leases_between_sessions() -> None:
    async def body(h: Harness):
        a, b = Pipe(), Pipe()
        await h.hello(a, "alice")
        await h.hello(b, "bob")
        leased = await h.call(a, "lease", {"module": "asg0"})
        refused_set = await h.call(b, "set", {"module": "asg0", "values": {"amplitude": 0.1}})
        refused_lease = await h.call(b, "lease", {"module": "asg0"})
        read = await h.call(b, "get", {"module": "asg0", "names": ["amplitude"]})
        own_set = await h.call(a, "set", {"module": "asg0", "values": {"amplitude": 0.1}})
        status = (await h.call(b, "status"))["result"]
        released = await h.call(a, "release", {"module": "asg0"})
        now_ok = await h.call(b, "set", {"module": "asg0", "values": {"amplitude": 0.2}})
        return leased, refused_set, refused_lease, read, own_set, status, released, now_ok
    leased, refused_set, refused_lease, read, own_set, status, released, now_ok = run(body)
    assert leased["result"] == {"module": "asg0", "leased": True}
    assert code(refused_set) == -32003 and refused_set["error"]["data"]["holder"] == "alice"
    assert code(refused_lease) == -32003
    assert "result" in read and "result" in own_set
    clients = {c["client"]: c for c in status["clients"]}
    assert clients["alice"]["leases"] == ["asg0"] and clients["bob"]["leases"] == []
    assert released["result"]["released"] is True
    assert "result" in now_ok


def test_a_lease_records_its_owner_and_a_bad_owner_changes_nothing() -> None:
    async def body(h: Harness):
        a, b = Pipe(), Pipe()
        await h.hello(a, "PyMoDAQ (pid 7)")
        await h.hello(b, "other")
        bad = [await h.call(a, "lease", {"module": "scope", "owner": owner})
               for owner in (3, "x" * 201, ["Scope"])]
        after_bad = (await h.call(b, "status"))["result"]
        await h.call(a, "lease", {"module": "scope", "owner": "Scope"})
        await h.call(a, "lease", {"module": "asg0"})  # an old client: no owner
        refused = await h.call(b, "lease", {"module": "scope"})
        status = (await h.call(b, "status"))["result"]
        return bad, after_bad, refused, status
    bad, after_bad, refused, status = run(body)
    assert [code(e) for e in bad] == [-32602] * 3 and "'owner'" in bad[0]["error"]["message"]
    assert all(c["leases"] == [] and c["owners"] == {} for c in after_bad["clients"])
    assert code(refused) == -32003
    assert refused["error"]["data"]["owner"] == "Scope"
    assert refused["error"]["data"]["holder"] == "PyMoDAQ (pid 7)"
    assert "'Scope' of client 'PyMoDAQ (pid 7)'" in refused["error"]["message"]
    clients = {c["client"]: c for c in status["clients"]}
    assert clients["PyMoDAQ (pid 7)"]["leases"] == ["asg0", "scope"]
    assert clients["PyMoDAQ (pid 7)"]["owners"] == {"scope": "Scope"}


def test_acquire_shapes_and_timeout() -> None:
    async def body(h: Harness):
        p = Pipe()
        await h.hello(p)
        await h.call(p, "set", {"module": "scope", "values": {"duration": 1e-4}})
        scope = await h.call(p, "acquire", {"module": "scope"})
        iq = await h.call(p, "acquire", {"module": "iq1"})
        sampler = await h.call(p, "acquire", {"module": "sampler"})
        await h.call(p, "set", {"module": "scope", "values": {"trigger_source": "off"}})
        timeout = await h.call(p, "acquire", {"module": "scope", "timeout": 0.2})
        return scope, iq, sampler, timeout
    scope, iq, sampler, timeout = run(body)
    result = protocol.decode_value(scope["result"])
    assert result["ch1"].shape == (16384,) and result["ch1"].dtype == np.dtype("<f4")
    assert result["dt"] == pytest.approx(131.072e-6 / 16384)
    assert result["sequence"] == 1 and result["settings"]["duration"] == pytest.approx(131.072e-6)
    assert set(iq["result"]) >= {"i", "q"}
    assert set(sampler["result"]) >= {"in1", "in2", "out1", "out2"}
    assert code(timeout) == -32005


def test_default_acquire_timeout_follows_a_change_to_longer_traces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Default timeout: trace_average × duration + margin of the current settings, from the
    request's arrival. A trace that never comes (trigger off) is replaced mid-acquisition by
    0.54 s traces, which end after the old settings' deadline but before the new one."""
    monkeypatch.setattr(acquisition, "SCOPE_TIMEOUT_MARGIN", 0.5)

    async def body(h: Harness):
        waiting, changer = Pipe(), Pipe()
        await h.hello(waiting, "waiting")
        await h.hello(changer, "changer")
        await h.call(changer, "set", {"module": "scope", "values": {
            "duration": 131.072e-6, "trigger_source": "off"}})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        acquire = asyncio.ensure_future(h.call(waiting, "acquire", {"module": "scope"}))
        while not h.server.scope._lock.locked():
            await asyncio.sleep(0.001)
        await h.call(changer, "set", {"module": "scope", "values": {
            "duration": 0.536870912, "trigger_source": "immediately"}})
        reply = await acquire
        return reply, loop.time() - t0
    reply, elapsed = run(body)
    assert "result" in reply, reply
    assert protocol.decode_value(reply["result"])["settings"]["duration"] == 0.536870912
    assert elapsed > 0.5  # past the deadline of the settings at the request's arrival


def test_device_not_ready_and_shutting_down() -> None:
    async def main():
        server = Server(SimulatorBackend(seed=0), TOKEN)
        h, p = Harness(server), Pipe()
        await h.hello(p)
        not_ready = await h.call(p, "get", {"module": "asg0"})
        await server.open_backend()
        server.stop("test")
        shutting = await h.call(p, "get", {"module": "asg0"})
        ping = await h.call(p, "ping")
        await server.close_backend()
        return not_ready, shutting, ping
    not_ready, shutting, ping = asyncio.run(main())
    assert code(not_ready) == -32004 and "disconnected" in not_ready["error"]["message"]
    assert code(shutting) == -32008
    assert "result" in ping


def test_internal_error_keeps_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, module):
        raise RuntimeError("simulated failure")
    monkeypatch.setattr(SimulatorBackend, "iq_read", broken)

    async def body(h: Harness):
        p = Pipe()
        await h.hello(p)
        return await h.call(p, "acquire", {"module": "iq0"}), await h.call(p, "ping")
    failed, ping = run(body)
    assert code(failed) == -32603 and "simulated failure" in failed["error"]["message"]
    assert "result" in ping


def test_notifications_get_no_reply_even_when_they_fail() -> None:
    async def body(h: Harness):
        p = Pipe()
        await h.hello(p)
        return [await h.server.process_line(p.connection, protocol.dumps_line(m)) for m in [
            {"jsonrpc": "2.0", "method": "ping"},
            {"jsonrpc": "2.0", "method": "nope"},
            {"jsonrpc": "2.0", "method": "set", "params": {"module": "asg0",
                                                          "values": {"amplitude": 9}}},
        ]]
    assert run(body) == [None, None, None]


def test_session_resume_keeps_leases_and_goodbye_ends_it() -> None:
    async def body(h: Harness):
        h.server.session_grace = 5.0
        a = Pipe()
        first = await h.hello(a, "alice")
        await h.call(a, "lease", {"module": "pid0"})
        h.server.connection_lost(a.connection)
        b = Pipe()
        resumed = await h.hello(b, "alice", session=first["session"])
        bye = await h.call(b, "goodbye")
        status = h.server.status()
        return first, resumed, bye, status, b
    first, resumed, bye, status, pipe = run(body)
    assert resumed["resumed"] is True and resumed["session"] == first["session"]
    assert resumed["leases"] == ["pid0"]
    assert bye["result"] == {"bye": True} and pipe.connection.close_after_reply
    assert status["clients"] == []


def test_subscribe_pushes_status_on_change() -> None:
    async def body(h: Harness):
        a, b = Pipe(), Pipe()
        h.server.connection_made(a.connection)
        await h.hello(a, "watcher")
        first = await h.call(a, "subscribe", {"status": True})
        await h.hello(b, "newcomer")
        for _ in range(10):
            await asyncio.sleep(0)
        return first, a.sent
    first, pushed = run(body)
    assert first["result"]["device"]["state"] == "ready"
    assert any(m.get("method") == "status"
               and any(c["client"] == "newcomer" for c in m["params"]["clients"])
               for m in pushed)


def test_shutdown_needs_token() -> None:
    async def body(h: Harness):
        p = Pipe()
        await h.hello(p)
        refused = await h.call(p, "shutdown", {"token": "nope"})
        stopping_before = h.server.stopping.is_set()
        ok = await h.call(p, "shutdown", {"token": TOKEN})
        await asyncio.sleep(0)
        return refused, stopping_before, ok, h.server.stopping.is_set()
    refused, before, ok, after = run(body)
    assert code(refused) == -32602 and not before
    assert ok["result"] == {"stopping": True} and after


def test_status_never_contains_the_token() -> None:
    async def body(h: Harness):
        p = Pipe()
        await h.hello(p)
        return json.dumps((await h.call(p, "status"))["result"])
    assert TOKEN not in run(body)


@pytest.mark.parametrize("raw", [
    b'{"a": 1}\n',
    b'{"jsonrpc": "2.0", "method": 5}\n',
    b'{"jsonrpc": "2.0", "method": null}\n',
    b'{"jsonrpc": "1.0", "method": "ping"}\n',
    b'{"method": "ping"}\n',
    b'{"jsonrpc": "2.0", "method": "ping", "params": [1]}\n',
    b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}\n',
])
def test_an_invalid_request_without_id_is_answered_with_id_null(raw: bytes) -> None:
    """JSON-RPC 2.0: only a valid request object without id is a notification."""
    async def body(h: Harness):
        p = Pipe()
        await h.hello(p)
        return await h.server.process_line(p.connection, raw)
    reply = run(body)
    assert reply is not None and code(reply) == -32600 and reply["id"] is None, reply


def test_echoes_of_request_text_in_errors_are_truncated() -> None:
    long = "é" * 100_000

    async def body(h: Harness):
        p = Pipe()
        await h.hello(p)
        return [await h.call(p, m, prm) for m, prm in [
            ("get", {"module": "asg0", "names": [long]}),
            ("get", {"module": long}),
            ("set", {"module": "asg0", "values": {long: 1}}),
            ("set", {"module": "asg0", "values": {"waveform": long}}),
            ("set", {"module": "asg0", "values": {"frequency": [long]}}),
            ("set", {"module": "asg0", "values": {"output_direct": {"x": [long[:5000]] * 10}}}),
            ("set", {"module": "pid0", "values": {"paused": long}}),
            (long, {}),
        ]] + [await h.call(Pipe(), "hello", {"token": TOKEN, "client": "x", "protocol": long})]
    for reply in run(body):
        assert code(reply) in (-32602, -32601, -32007), reply
        assert len(protocol.dumps_line(reply)) < 2000, reply["error"]["message"][:200]
