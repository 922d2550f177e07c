"""The network analyzer of the server (``na``): a real ``--mock`` server subprocess, spoken to over
raw sockets as docs/protocol.md says, and through the client."""
from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue, protocol
from pymodaq_plugins_pyrpl.hardware.analysis import network
from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.errors import ClientClosed, ModuleLeased
from pymodaq_plugins_pyrpl.hardware.server import Server
from tests.hardware.server.test_dispatch import TOKEN, Harness, Pipe
from tests.helpers.support import RawClient, ServerProcess
from tests.helpers.waiting import wait_until

CABLE_DELAY = 16e-9
"""The loopback plant's cable delay (its default)."""
LONG_SWEEP = {"start_freq": 1e3, "stop_freq": 1e5, "points": 2001, "rbw": 1000,
              "logscale": True}
"""A sweep of about 2.5 s on the simulated board: long enough to act on while it runs."""


@pytest.fixture
def resonator_server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path, ["--mock", "--seed", "2", "--plant",
                                  "resonator:f0=100e3,q=30"]) as server:
        yield server


def start_acquire(client: RawClient, params: dict[str, Any], id_: int = 1000) -> int:
    """Send an ``acquire`` of ``na`` without waiting for its reply; its id."""
    client.send_raw(protocol.dumps_line(protocol.request(id_, "acquire",
                                                         {"module": "na", **params})))
    return id_


def reply_result(client: RawClient, id_: int) -> dict[str, Any]:
    reply = client.read_reply(id_)
    assert "error" not in reply, reply["error"]
    return protocol.decode_value(reply["result"])


def stop_sweep(client: RawClient, acquire_id: int) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """Send ``stop`` while the acquire ``acquire_id`` is pending: (the stop's result, seconds until
    it came, the acquire's result)."""
    started = time.monotonic()
    client.send_raw(protocol.dumps_line(protocol.request(2000, "stop", {"module": "na"})))
    replies: dict[int, tuple[dict[str, Any], float]] = {}
    while len(replies) < 2:
        message = client.read_message()
        if "id" not in message:
            client.notifications.append(message)
        elif message["id"] in (2000, acquire_id):
            assert "error" not in message, message["error"]
            replies[message["id"]] = (protocol.decode_value(message["result"]),
                                      time.monotonic() - started)
    return replies[2000][0], replies[2000][1], replies[acquire_id][0]


def first_progress(client: RawClient, timeout: float = 5.0) -> dict[str, Any]:
    push = client.wait_notification(lambda m: m.get("method") == "progress", timeout)
    return protocol.decode_value(push["params"])


def amplitude(client: RawClient, iq: str = "iq2") -> float:
    return client.call("get", module=iq, names=["amplitude"])["amplitude"]


def fit_resonance(frequencies: np.ndarray, data: np.ndarray) -> tuple[float, float]:
    """(f0, q) of ``data`` = g / (1 - (f/f0)**2 + j f/(f0 q)): 1/data is linear in 1, f**2 (real
    part) and f (imaginary part)."""
    inverse = 1.0 / data
    a, b = np.linalg.lstsq(np.stack([np.ones_like(frequencies), frequencies**2], 1),
                           inverse.real, rcond=None)[0]
    c = np.linalg.lstsq(frequencies[:, None], inverse.imag, rcond=None)[0][0]
    f0 = float(np.sqrt(-a / b))
    return f0, float(a / (c * f0))


# ------------------------------------------------------------------------------------------------
# the catalogue module


def test_na_module_is_described_with_pyrpl_defaults(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        described = c.call("describe")["modules"]["na"]
        assert described["kind"] == "na"
        values = c.call("get", module="na")
    attributes = described["attributes"]
    assert attributes["sweep_time"]["readonly"]
    assert attributes["rbw"]["options"] == [f for f in catalogue.MODULES["iq2"].attributes[
        "bandwidth"].options if f > 0]
    assert attributes["acbandwidth"]["options"] == list(
        catalogue.MODULES["iq2"].attributes["acbandwidth"].options)
    assert {k: v for k, v in values.items() if k != "sweep_time"} == {
        "iq": "iq2", "input": "in1", "output_direct": "out1",
        "start_freq": pytest.approx(1e3, abs=0.03), "stop_freq": pytest.approx(1e6, abs=0.03),
        "points": 1001, "rbw": pytest.approx(607.137, abs=1e-3), "average_per_point": 1,
        "trace_average": 1, "amplitude": pytest.approx(0.1, abs=1e-5),
        "acbandwidth": pytest.approx(37.9455, abs=1e-3), "logscale": True}
    assert values["sweep_time"] == pytest.approx(1003 * 1.5 / values["rbw"], rel=1e-5)


def test_bad_settings_are_refused_and_change_nothing(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        before = c.call("get", module="na")
        for values in ({"points": 0}, {"points": 10, "rbw": "fast"}, {"iq": "iq3"},
                       {"sweep_time": 1.0}, {"start_freq": 0.0}, {"amplitude": 1.5},
                       {"rbw": 1.2, "average_per_point": 41}):
            reply = c.request("set", {"module": "na", "values": values})
            assert reply["error"]["code"] == -32602, values
        assert "at most 40 at rbw 1.1858 Hz" in reply["error"]["message"]
        assert reply["error"]["data"]["attribute"] == "average_per_point"
        assert c.call("get", module="na") == before


# ------------------------------------------------------------------------------------------------
# measurements


def test_direct_cable_reads_0_db_and_the_cable_delay(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        c.call("set", module="na", values={"rbw": 1000, "points": 201})
        result = c.call("acquire", module="na")
    f, data = result["frequencies"], result["data"]
    assert result["complete"] and result["done"] == 201 and result["averages"] == 1
    assert f[0] == pytest.approx(1e3, abs=0.03) and f[-1] == pytest.approx(1e6, abs=0.03)
    settings = result["settings"]
    np.testing.assert_array_equal(f, network.frequencies(settings["start_freq"],
                                                         settings["stop_freq"], 201, True))
    np.testing.assert_allclose(20 * np.log10(np.abs(data)), 0.0, atol=0.1)
    np.testing.assert_allclose(np.angle(data, deg=True), -360.0 * f * CABLE_DELAY, atol=1.0)
    assert result["iq"] == "iq2" and result["settings"]["points"] == 201


def test_resonator_shows_its_f0_and_q(resonator_server: ServerProcess) -> None:
    with resonator_server.client() as c:
        c.call("set", module="na", values={"start_freq": 85e3, "stop_freq": 115e3, "points": 301,
                                           "logscale": False, "rbw": 1000, "amplitude": 0.02})
        result = c.call("acquire", module="na")
    f0, q = fit_resonance(result["frequencies"], result["data"])
    assert f0 == pytest.approx(100e3, rel=0.005)
    assert q == pytest.approx(30, rel=0.05)
    assert 20 * np.log10(np.abs(result["data"]).max()) == pytest.approx(20 * np.log10(30), abs=0.3)


def test_trace_average_averages_the_sweeps(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        c.call("set", module="na", values={"rbw": 4857, "points": 51, "trace_average": 3,
                                           "amplitude": 0.001})
        result = c.call("acquire", module="na")
        c.call("set", module="na", values={"trace_average": 1})
        single = c.call("acquire", module="na")
    assert result["complete"] and result["averages"] == 3 and result["done"] == 51
    # noise: 1 mV averaged over 1/rbw relative to 1 mV of excitation, sqrt(3) less in 3 sweeps
    spread = np.std(np.abs(result["data"])), np.std(np.abs(single["data"]))
    assert spread[1] == pytest.approx(1e-3 * np.sqrt(2 * 4857 / 125e6) / 1e-3, rel=0.3)
    assert spread[0] == pytest.approx(spread[1] / np.sqrt(3), rel=0.4)


# ------------------------------------------------------------------------------------------------
# progress, stop, timeout


def test_progress_pushes_arrive_and_agree_with_the_result(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        c.call("set", module="na", values={"rbw": 1000, "points": 401, "trace_average": 2})
        id_ = start_acquire(c, {"progress": True})
        result = reply_result(c, id_)
        pushes = [protocol.decode_value(m["params"]) for m in c.notifications
                  if m.get("method") == "progress"]
    assert len(pushes) >= 4
    # at most one push per PROGRESS_PERIOD, the first one after the first chunk
    assert len(pushes) <= result["duration"] / 0.1 + 1
    assert [p["average"] for p in pushes] == sorted(p["average"] for p in pushes)
    assert {p["average"] for p in pushes} == {1, 2}
    for previous, push in itertools.pairwise(pushes):
        if push["average"] == previous["average"]:
            assert push["done"] > previous["done"]
    for push in pushes:
        assert push["module"] == "na" and push["points"] == 401
        done = push["done"]
        assert 0 < done <= 401 and len(push["data"]) == len(push["frequencies"]) == done
        np.testing.assert_array_equal(push["frequencies"], result["frequencies"][:done])
        np.testing.assert_allclose(np.abs(push["data"]), 1.0, atol=0.02)


def test_stop_ends_the_sweep_at_once_and_turns_the_output_off(mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        c.call("set", module="na", values=LONG_SWEEP)
        id_ = start_acquire(c, {"progress": True})
        first_progress(c)
        assert amplitude(c) > 0
        stop, elapsed, result = stop_sweep(c, id_)
        assert stop == {"module": "na", "stopped": True}
        assert elapsed < 0.2
        assert not result["complete"] and 0 < result["done"] < 2001
        assert np.isfinite(result["data"][:result["done"]]).all()
        assert np.isnan(result["data"][result["done"]:]).all()
        assert amplitude(c) == 0.0
        assert c.call("stop", module="na") == {"module": "na", "stopped": False}
        assert c.request("stop", {"module": "iq2"})["error"]["code"] == -32602
        assert c.call("status")["clients"][0]["leases"] == []  # the sweep's lease ended


def test_timeout_ends_the_sweep_with_its_error_and_the_output_off(
        mock_server: ServerProcess) -> None:
    with mock_server.client() as c:
        c.call("set", module="na", values=LONG_SWEEP)
        reply = c.request("acquire", {"module": "na", "timeout": 0.3})
        assert reply["error"]["code"] == -32005
        assert amplitude(c) == 0.0


# ------------------------------------------------------------------------------------------------
# sharing


def test_a_leased_iq_or_na_makes_the_sweep_busy_and_changes_nothing(
        mock_server: ServerProcess) -> None:
    with mock_server.client("alice") as alice, mock_server.client("bob") as bob:
        alice.call("set", module="na", values={"points": 11})
        before = alice.call("get", module="iq2")
        bob.call("lease", module="iq2", owner="IQ viewer")
        reply = alice.request("acquire", {"module": "na"})
        assert reply["error"]["code"] == -32003
        assert reply["error"]["message"].startswith("iq2 is busy: ")
        assert "'IQ viewer' of client 'bob'" in reply["error"]["message"]
        assert reply["error"]["data"]["module"] == "iq2"
        bob.call("release", module="iq2")
        bob.call("lease", module="na")
        reply = alice.request("acquire", {"module": "na"})
        assert reply["error"]["code"] == -32003 and reply["error"]["message"].startswith("na is")
        assert alice.call("get", module="iq2") == before
        assert [c["leases"] for c in alice.call("status")["clients"]] == [[], ["na"]]


def test_one_sweep_at_a_time_and_its_iq_is_not_changed_meanwhile(
        mock_server: ServerProcess) -> None:
    with mock_server.client("alice") as alice, mock_server.client("bob") as bob:
        alice.call("set", module="na", values=LONG_SWEEP)
        id_ = start_acquire(alice, {"progress": True})
        first_progress(alice)
        status = bob.call("status")
        assert {"iq2": "network analyzer"} in [c["owners"] for c in status["clients"]]
        reply = bob.request("acquire", {"module": "na"})
        assert reply["error"]["code"] == -32003
        assert "network analyzer is busy" in reply["error"]["message"]
        for who in (alice, bob):  # the sweep's own session included
            reply = who.request("set", {"module": "iq2", "values": {"frequency": 5.0}})
            assert reply["error"]["code"] == -32003
        # a set of na applies to the next sweep
        assert bob.call("set", module="na", values={"points": 21}) == {"points": 21}
        assert bob.call("stop", module="na") == {"module": "na", "stopped": False}  # not his
        result = stop_sweep(alice, id_)[2]
        assert len(result["frequencies"]) == 2001 and result["settings"]["points"] == 2001
        assert alice.call("get", module="na", names=["points"]) == {"points": 21}
        assert len(alice.call("acquire", module="na")["frequencies"]) == 21
        assert bob.call("set", module="iq2", values={"frequency": 5.0})


def test_other_requests_are_served_during_a_sweep(mock_server: ServerProcess) -> None:
    with mock_server.client("sweeper") as sweeper, mock_server.client("other") as other:
        sweeper.call("set", module="na", values=LONG_SWEEP)
        id_ = start_acquire(sweeper, {})
        latencies = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            started = time.monotonic()
            other.call("ping")
            other.call("get", module="iq0", names=["frequency"])
            latencies.append(time.monotonic() - started)
        assert max(latencies) < 0.2, latencies
        assert other.call("get", module="iq2", names=["amplitude"])["amplitude"] > 0
        assert not stop_sweep(sweeper, id_)[2]["complete"]


def test_a_client_that_vanishes_mid_sweep_leaves_the_output_off(
        mock_server: ServerProcess) -> None:
    with mock_server.client("watcher") as watcher:
        sweeper = mock_server.client("sweeper")
        sweeper.call("set", module="na", values=LONG_SWEEP)
        start_acquire(sweeper, {"progress": True})
        first_progress(sweeper)
        assert amplitude(watcher) > 0
        # a reset connection, as a crashed client's
        sweeper.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sweeper.close()
        wait_until(lambda: amplitude(watcher) == 0.0, 2.0, "the sweep to end")
        owners = [c["owners"] for c in watcher.call("status")["clients"]]
        assert all("iq2" not in o for o in owners)


def test_a_client_that_closes_mid_sweep_leaves_the_output_off(mock_server: ServerProcess) -> None:
    with mock_server.client("watcher") as watcher:
        client = PyRPLClient(port=mock_server.port, token=mock_server.token, name="closing")
        client.connect()
        client.set("na", LONG_SWEEP)
        progressed = threading.Event()
        failure: list[BaseException] = []

        def sweep() -> None:
            try:
                client.acquire("na", progress=lambda params: progressed.set())
            except BaseException as exc:  # noqa: BLE001 (recorded for the assertion)
                failure.append(exc)

        thread = threading.Thread(target=sweep)
        thread.start()
        assert progressed.wait(5)
        client.close()  # says goodbye: the sweep's request ends with the connection
        thread.join(5)
        assert isinstance(failure[0], ClientClosed)
        wait_until(lambda: amplitude(watcher) == 0.0, 2.0, "the sweep to end")


class LinkDropsMidSweep(SimulatorBackend):
    """A simulated board whose link drops once a sweep's second chunk is measured, until the test
    brings it back (``lost``)."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.lost = False
        self.chunks = 0

    def device_state(self) -> tuple[str, str | None]:
        return ("lost", "the link dropped (test)") if self.lost else ("ready", None)

    def na_points(self, first: int, count: int) -> tuple[np.ndarray, float]:
        measured = super().na_points(first, count)
        self.chunks += 1
        self.lost = self.chunks == 2
        return measured


def test_a_board_lost_mid_sweep_is_32004_and_the_output_goes_off_once_it_is_back() -> None:
    async def main() -> tuple[dict[str, Any], float, float, list[str]]:
        backend = LinkDropsMidSweep()
        server = Server(backend, TOKEN)
        await server.open_backend()
        h, p = Harness(server), Pipe()
        await h.hello(p)
        try:
            await h.call(p, "set", {"module": "na", "values": {"points": 2001, "rbw": 4857}})
            reply = await h.call(p, "acquire", {"module": "na"})
            left_on = backend.get("iq2", ["amplitude"])["amplitude"]
            backend.lost = False
            await h.call(p, "status")  # the server notices that the board is back
            for _ in range(100):
                await asyncio.sleep(0.01)
                if backend.get("iq2", ["amplitude"])["amplitude"] == 0.0:
                    break
            leases = (await h.call(p, "status"))["result"]["clients"][0]["leases"]
            return reply, left_on, backend.get("iq2", ["amplitude"])["amplitude"], leases
        finally:
            await server.close_backend()

    reply, left_on, after, leases = asyncio.run(main())
    assert reply["error"]["code"] == -32004 and reply["error"]["data"]["state"] == "lost"
    assert left_on > 0  # the board could not be told
    assert after == 0.0
    assert leases == []


class ThreadedSimulator(SimulatorBackend):
    """The simulated board called on the backend thread, as PyRPL is."""

    needs_own_thread = True


def test_a_server_that_stops_mid_sweep_turns_the_output_off_first() -> None:
    async def main() -> float:
        backend = ThreadedSimulator(seed=0)
        server = Server(backend, TOKEN)
        await server.open_backend()
        h, p = Harness(server), Pipe()
        await h.hello(p)
        await h.call(p, "set", {"module": "na", "values": LONG_SWEEP})
        sweep = asyncio.ensure_future(h.call(p, "acquire", {"module": "na"}))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if backend.get("iq2", ["amplitude"])["amplitude"] > 0:
                break
        sweep.cancel()  # as the transport does with the requests of its connections
        await server.close_backend()
        return backend.get("iq2", ["amplitude"])["amplitude"]

    assert asyncio.run(main()) == 0.0


# ------------------------------------------------------------------------------------------------
# the client


def test_client_acquire_with_progress_and_stop(mock_server: ServerProcess) -> None:
    with PyRPLClient(port=mock_server.port, token=mock_server.token, name="na") as client:
        client.connect()
        client.set("na", LONG_SWEEP)
        pushes: list[tuple[str, dict[str, Any]]] = []
        progressed = threading.Event()

        def progress(params: dict[str, Any]) -> None:
            pushes.append((threading.current_thread().name, params))
            progressed.set()

        result: dict[str, Any] = {}
        sweep = threading.Thread(target=lambda: result.update(client.acquire("na",
                                                                             progress=progress)))
        sweep.start()
        assert progressed.wait(5)
        # a second acquisition of this client is refused; the first one's pushes still come
        refused: list[dict[str, Any]] = []
        with pytest.raises(ModuleLeased, match="network analyzer is busy"):
            client.acquire("na", progress=refused.append)
        progressed.clear()
        assert progressed.wait(2)
        assert refused == []
        assert client.stop("na") == {"module": "na", "stopped": True}
        sweep.join(5)
        assert not result["complete"]
        count = len(pushes)
        assert {name for name, _ in pushes} == {"pyrpl-client-events"}
        assert all(isinstance(p["data"], np.ndarray) and p["data"].dtype == complex
                   for _, p in pushes)
        client.set("na", {"points": 11})
        assert client.acquire("na")["complete"]  # no progress asked: none comes
        assert len(pushes) == count
        with PyRPLClient(port=mock_server.port, token=mock_server.token) as other:
            other.connect()
            other.lease("iq2")
            with pytest.raises(ModuleLeased, match="iq2 is busy"):
                client.acquire("na")
