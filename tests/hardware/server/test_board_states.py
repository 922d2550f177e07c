"""The board's device states as the server reports them: the link upkeep, ``since`` and the link
fields of the ``device`` block, -32004 with the state, requests bounded behind a slow backend call,
and ``take_board``. Against a board whose link the test scripts (tests/helpers/scripted_link.py),
through the server's dispatch without sockets."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend
from pymodaq_plugins_pyrpl.hardware.server import Server
from pymodaq_plugins_pyrpl.hardware.server import board as board_module
from tests.hardware.server.test_dispatch import TOKEN, Harness, Pipe, code
from tests.helpers.scripted_link import ScriptedLinkBackend

TAKEN = ("another program took the Red Pitaya at 127.0.0.1 (its client at 10.0.0.5:40000); "
         "Initialize again to take it back")


def run(body: Callable[[Harness, Any], Awaitable[Any]], backend: Any = None) -> Any:
    """``body(harness, backend)`` against a fresh server whose board (scripted by default) is
    open."""
    async def main() -> Any:
        board = backend if backend is not None else ScriptedLinkBackend()
        server = Server(board, TOKEN)
        await server.open_backend()
        try:
            return await body(Harness(server), board)
        finally:
            await server.close_backend()
    return asyncio.run(main())


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Wait on the event loop until ``condition()`` is true; its value. Fails after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := condition()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    return value


def pushed_devices(pipe: Pipe) -> list[dict[str, Any]]:
    return [m["params"]["device"] for m in pipe.sent if m.get("method") == "status"]


def test_the_upkeep_runs_maintain_on_the_backend_thread_until_the_board_closes() -> None:
    async def main():
        board = ScriptedLinkBackend()
        server = Server(board, TOKEN)
        await server.open_backend()
        await until(lambda: board.steps >= 3)
        await server.close_backend()
        stopped_at = board.steps
        await asyncio.sleep(board.pause * 5)  # several pauses: no step after close
        return board.step_threads, stopped_at, board.steps
    threads, stopped_at, steps = asyncio.run(main())
    assert threads and all(name.startswith("backend") for name in threads)
    assert steps == stopped_at


def test_a_backend_without_upkeep_is_never_maintained_again() -> None:
    async def body(h: Harness, board: SimulatorBackend):
        return await until(lambda: h.server.board._upkeep.done())
    assert run(body, SimulatorBackend(seed=0))


def test_a_failing_upkeep_step_is_logged_and_the_upkeep_goes_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(board_module, "UPKEEP_RETRY", 0.02)
    board = ScriptedLinkBackend()
    board.fail_steps = 2

    async def body(h: Harness, board: ScriptedLinkBackend):
        await until(lambda: board.steps >= 5)
    with caplog.at_level(logging.ERROR, logger=board_module.__name__):
        run(body, board)
    failures = [r for r in caplog.records if "link upkeep step failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None


def test_the_device_block_has_since_and_the_link_fields_and_changes_are_pushed() -> None:
    async def body(h: Harness, board: ScriptedLinkBackend):
        pipe = Pipe()
        h.server.connection_made(pipe.connection)
        hello = await h.hello(pipe)
        await h.call(pipe, "subscribe", {"status": True})
        board.script("lost", "no answer from the board for 3.0 s", attempts=1)
        lost = await until(lambda: [d for d in pushed_devices(pipe) if d["state"] == "lost"])
        board.script("lost", "no answer from the board for 3.0 s", attempts=2)
        second = await until(lambda: [d for d in pushed_devices(pipe) if d["attempts"] == 2])
        refused = await h.call(pipe, "get", {"module": "asg0", "names": ["frequency"]})
        board.script("ready", None, attempts=0, board_restarted_at="2026-12-06T16:00:00.000+00:00")
        back = await until(lambda: [d for d in pushed_devices(pipe) if d["state"] == "ready"
                                    and d["board_restarted_at"]])
        served = await h.call(pipe, "get", {"module": "asg0", "names": ["frequency"]})
        return hello["device"], lost[0], second[0], refused, back[0], served
    first, lost, second, refused, back, served = run(body)
    assert (first["state"], first["attempts"], first["board_restarted_at"], first["other"]) == (
        "ready", 0, None, None)
    assert lost["since"] > first["since"] and lost["attempts"] == 1
    assert second["since"] == lost["since"]  # the state stayed: only the attempts changed
    assert code(refused) == -32004
    assert refused["error"]["data"] == {"state": "lost", "since": lost["since"],
                                        "reason": "no answer from the board for 3.0 s"}
    assert "no answer from the board" in refused["error"]["message"]
    assert back["since"] > lost["since"] and back["reason"] is None
    assert "result" in served


def test_a_call_that_fails_on_the_link_is_answered_with_the_new_state() -> None:
    async def body(h: Harness, board: ScriptedLinkBackend):
        pipe = Pipe()
        await h.hello(pipe)
        board.gate.clear()
        call = asyncio.ensure_future(h.call(pipe, "get", {"module": "asg0"}))
        await until(lambda: board.calls == 1)
        board.script("lost", "the board closed the connection")
        board.gate.set()
        return await call
    reply = run(body)
    assert code(reply) == -32004
    assert reply["error"]["data"]["state"] == "lost"
    assert reply["error"]["data"]["reason"] == "the board closed the connection"


def test_a_request_behind_a_slow_call_is_answered_within_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(board_module, "CALL_BOUND", 0.3)

    async def body(h: Harness, board: ScriptedLinkBackend):
        pipe = Pipe()
        await h.hello(pipe)
        board.gate.clear()
        slow = asyncio.ensure_future(h.call(pipe, "get", {"module": "asg0"}))
        await until(lambda: board.calls == 1)
        queued = asyncio.ensure_future(h.call(pipe, "set", {"module": "asg0",
                                                            "values": {"frequency": 1000}}))
        ping = await h.call(pipe, "ping")
        replies = await asyncio.gather(slow, queued)
        calls_while_held = board.calls
        board.gate.set()
        after = await h.call(pipe, "get", {"module": "asg0", "names": ["frequency"]})
        return ping, replies, calls_while_held, after
    ping, (slow, queued), calls_while_held, after = run(body)
    assert "result" in ping
    assert code(slow) == -32004 and "outcome is unknown" in slow["error"]["message"]
    assert code(queued) == -32004 and "nothing was done" in queued["error"]["message"]
    assert slow["error"]["data"]["state"] == "ready"
    assert calls_while_held == 1
    assert after["result"]["frequency"] == 0.0  # the dropped set never ran


def test_a_scope_acquisition_stuck_on_the_board_is_answered_within_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(board_module, "CALL_BOUND", 0.3)

    async def body(h: Harness, board: ScriptedLinkBackend):
        pipe = Pipe()
        await h.hello(pipe)
        first = await h.call(pipe, "acquire", {"module": "scope", "timeout": 5})
        assert "result" in first  # the settings are read: the next acquisition starts by arming
        board.gate.clear()
        try:  # the acquisition's clean-up (scope_stop) must not wait for the stuck arm either
            return await asyncio.wait_for(h.call(pipe, "acquire", {"module": "scope"}), 3.0)
        finally:
            board.gate.set()
    reply = run(body)
    assert code(reply) == -32004 and "outcome is unknown" in reply["error"]["message"]


def test_take_board_takes_a_taken_board_back_and_leaves_a_ready_one_alone() -> None:
    async def body(h: Harness, board: ScriptedLinkBackend):
        pipe = Pipe()
        await h.hello(pipe)
        board.script("taken", TAKEN, other="10.0.0.5:40000")
        refused = await h.call(pipe, "get", {"module": "asg0"})
        taken = (await h.call(pipe, "status"))["result"]["device"]
        took = await h.call(pipe, "take_board")
        takes_after_first = board.takes
        again = await h.call(pipe, "take_board")
        return refused, taken, took, takes_after_first, again, board.takes
    refused, taken, took, takes_after_first, again, takes = run(body)
    assert code(refused) == -32004 and TAKEN in refused["error"]["message"]
    assert (taken["state"], taken["reason"], taken["other"]) == ("taken", TAKEN, "10.0.0.5:40000")
    device = took["result"]["device"]
    assert (device["state"], device["other"]) == ("ready", None) and device["since"] > taken["since"]
    assert takes_after_first == 1
    assert again["result"]["device"]["state"] == "ready" and takes == 1


def test_take_board_that_fails_says_why_and_keeps_the_state() -> None:
    board = ScriptedLinkBackend()
    board.take_refusal = "the board does not answer over ssh"

    async def body(h: Harness, board: ScriptedLinkBackend):
        pipe = Pipe()
        await h.hello(pipe)
        board.script("taken", TAKEN, other="10.0.0.5:40000")
        return await h.call(pipe, "take_board")
    reply = run(body, board)
    assert code(reply) == -32004
    assert reply["error"]["message"] == ("could not take the board back: the board does not "
                                         "answer over ssh")
    assert reply["error"]["data"]["state"] == "taken"


def test_take_board_on_the_simulated_board_changes_nothing() -> None:
    async def body(h: Harness, board: SimulatorBackend):
        pipe = Pipe()
        await h.hello(pipe)
        return await h.call(pipe, "take_board")
    reply = run(body, SimulatorBackend(seed=0))
    assert reply["result"]["device"]["state"] == "ready"
