"""The client's ``device`` event and ``take_board``: the package's client over TCP against the
package's server serving a board whose link the test scripts (tests/helpers/scripted_link.py)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.client.device import DeviceWatch
from pymodaq_plugins_pyrpl.hardware.errors import DeviceNotReady
from tests.hardware.client.test_client import Recorder
from tests.helpers.scripted_link import InProcessServer, ScriptedLinkBackend

TAKEN = ("another program took the Red Pitaya at 127.0.0.1 (its client at 10.0.0.5:40000); "
         "Initialize again to take it back")
RESTARTED = "2026-12-06T16:00:00.000000+00:00"


@pytest.fixture
def board() -> ScriptedLinkBackend:
    return ScriptedLinkBackend()


@pytest.fixture
def client(board: ScriptedLinkBackend) -> Iterator[PyRPLClient]:
    with InProcessServer(board) as server:
        client = PyRPLClient("127.0.0.1", server.port, server.token, "device events", timeout=5)
        try:
            yield client
        finally:
            client.close()


def devices(recorder: Recorder) -> list[dict]:
    return [info for kind, info in recorder.items if kind == "device"]


def test_status_pushes_give_one_device_event_per_change_on_the_events_thread(
        board: ScriptedLinkBackend, client: PyRPLClient) -> None:
    events = Recorder()
    client.add_connection_callback(events)
    client.connect()
    client.subscribe()
    board.script("lost", "no answer from the board for 3.0 s", attempts=1)
    lost = events.wait("device", where=lambda d: d["state"] == "lost")
    board.script("lost", "no answer from the board for 3.0 s", attempts=2)
    events.wait("device", where=lambda d: d["attempts"] == 2)
    board.script("ready", None, attempts=0, board_restarted_at=RESTARTED)
    back = events.wait("device", where=lambda d: d["state"] == "ready")
    client.status()  # a reply without a change: no event
    assert [(d["state"], d["attempts"]) for d in devices(events)] == [
        ("lost", 1), ("lost", 2), ("ready", 0)]
    assert lost["reason"] == "no answer from the board for 3.0 s"
    assert back["board_restarted_at"] == RESTARTED and back["since"] > lost["since"]
    assert events.threads == {"pyrpl-client-events"}


def test_a_refused_call_tells_the_state_and_take_board_takes_the_board_back(
        board: ScriptedLinkBackend, client: PyRPLClient) -> None:
    events = Recorder()
    client.add_connection_callback(events)
    client.connect()  # not subscribed: the -32004 and the take_board reply tell the state
    board.script("taken", TAKEN, other="10.0.0.5:40000")
    with pytest.raises(DeviceNotReady, match="Initialize again to take it back") as refused:
        client.get("asg0", ["frequency"])
    assert refused.value.data["state"] == "taken"
    taken = events.wait("device", where=lambda d: d["state"] == "taken")
    assert taken["reason"] == TAKEN
    device = client.take_board()
    assert (device["state"], device["other"]) == ("ready", None) and board.takes == 1
    events.wait("device", where=lambda d: d["state"] == "ready")
    assert client.get("asg0", ["frequency"]) == {"frequency": 0.0}


def test_take_board_refused_raises_with_the_reason(board: ScriptedLinkBackend,
                                                   client: PyRPLClient) -> None:
    board.take_refusal = "the board does not answer over ssh"
    client.connect()
    board.script("taken", TAKEN, other="10.0.0.5:40000")
    with pytest.raises(DeviceNotReady, match="could not take the board back: the board does not "
                                             "answer over ssh"):
        client.take_board()


def test_an_older_block_does_not_undo_a_newer_one() -> None:
    emitted: list[dict] = []
    watch = DeviceWatch(emitted.append)
    watch.observe({"state": "ready", "reason": None, "since": "2026-12-06T16:00:00+00:00",
                   "attempts": 0})
    watch.observe({"state": "lost", "reason": "cut", "since": "2026-12-06T16:00:05+00:00",
                   "attempts": 1})
    watch.observe({"state": "ready", "reason": None, "since": "2026-12-06T16:00:00+00:00"})
    watch.observe("not a block")
    assert [(d["state"], d["attempts"]) for d in emitted] == [("lost", 1)]
    assert watch.seen["state"] == "lost"
