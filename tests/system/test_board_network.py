"""The board link on real kernel TCP under lossy wifi, a pulled cable and a resetting router.

A private network namespace (nothing outside it is touched) holds a virtual Red Pitaya in
faithful mode (one client per ``monitor_server``, as the C server), our server on the PyRPL path
at its ports and a plugin-like client session: tests/helpers/scripts/board_net_driver.py, which
puts iptables faults on the board's ssh and data ports only (the JSON-RPC port stays clean),
before the pull also a reply late past the silence bound (its ``late`` phase), and prints its
figures as JSON. This test starts it once, asserts, and prints the figures (``pytest -s`` shows
them). Needs root and the ``ip`` and ``iptables`` commands (.ci/run installs them).
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.helpers.netns import IPTABLES, exec_in
from tests.helpers.scripts import BOARD_NET_DRIVER

pytestmark = [pytest.mark.network, pytest.mark.timeout(300)]

LOSS = 0.2
LOSS_SECONDS = 30.0
"""The lossy phase here (the bench runs 60 s: ``bench/board_link.py``)."""
CLEAN_SECONDS = 5.0
CUT = 5.0
MARGIN = 0.5
"""A call may end this much later than its own timeout."""
LOST_WITHIN = 4.5
"""A silent link is ``lost`` within this after the fault (s): the backend's 3 s of silence
while a reply is expected, plus the heartbeat's 1 s and the server's note of the change."""
READY_WITHIN = 3.0
"""``ready`` again within this after the fault ends (s): issue 14, item 6."""
OUTAGES_PER_10_S = 1
"""No reconnect storm: at most this many outages per 10 s of the lossy phase (and one more)."""
AMPLITUDE, MEAN_TOLERANCE = 0.1, 2e-3
"""The driver's asg amplitude (V) and a trace mean's tolerance (V)."""


def _calls(s: dict[str, Any]) -> str:
    failed = s["not_ready"] + s["timeout"] + s["error"]
    return (f"{failed} failed ({s['not_ready']} -32004, {s['timeout']} timed out, "
            f"{s['error']} other) / {s['ok']} succeeded")


def report(result: dict[str, Any]) -> None:
    for name in ("clean", "loss"):
        phase = result[name]
        label = "loss-free" if phase["loss"] is None else f"{phase['loss']:.0%} loss both ways"
        print(f"\n-- {label}, {phase['seconds']:.1f} s: {phase['traces_per_s']:.2f} traces/s, "
              f"{phase['calls_per_s']:.1f} calls/s; calls {_calls(phase['summary'])}; worst end "
              f"past its timeout {phase['summary']['worst_overrun']:+.2f} s; outages (lost, "
              f"ready s) {phase['outages']}; monitor_server starts "
              f"{phase['monitor_server_starts']}, killalls {phase['killalls']}")
    for name in ("pull", "reset"):
        cut = result[name]
        print(f"-- {name} {cut['seconds']:g} s: lost {cut['lost_after_fault']} s after the "
              f"fault, ready {cut['ready_after_restore']} s after the restore; calls meanwhile "
              f"{_calls(cut['during'])}; writes to the first request "
              f"{cut.get('writes_to_first_request')}; monitor_server starts "
              f"{cut['monitor_server_starts']}, killalls {cut['killalls']}; states "
              f"{cut['states'][:8]}{' ...' if len(cut['states']) > 8 else ''}")


@pytest.fixture(scope="module")
def run(netns: str) -> dict[str, Any]:
    """The driver in the namespace, once for this module's tests: its figures (printed)."""
    driver = subprocess.run(
        exec_in(netns, sys.executable, str(BOARD_NET_DRIVER), "--iptables", str(IPTABLES),
                "--phases", "clean,loss,late,pull,reset", "--clean", str(CLEAN_SECONDS),
                "--loss", str(LOSS), "--loss-seconds", str(LOSS_SECONDS), "--cut", str(CUT)),
        check=False, capture_output=True, text=True, timeout=240)
    lines = [line for line in driver.stdout.splitlines() if line.startswith("BOARD_NET_RESULT ")]
    assert driver.returncode == 0 and lines, (driver.stdout[-3000:], driver.stderr[-3000:])
    result = json.loads(lines[-1].split(" ", 1)[1])
    report(result)
    return result


def test_server_stops_cleanly_after_the_faults(run: dict[str, Any]) -> None:
    """SIGTERM after the faults: exit status 0 (the board's ssh connection of the start-up may
    have died in a cut)."""
    assert run["server_exit"] == 0, run["server_log_tail"]


def test_loss_free_session(run: dict[str, Any]) -> None:
    clean = run["clean"]
    assert clean["problems"] == [], clean["problems"]
    assert clean["summary"]["ok"] == clean["summary"]["calls"] > 0, clean["summary"]
    assert clean["traces_checked"] == clean["traces"] > 0
    assert clean["outages"] == []


def test_lossy_link_calls_end_in_time_and_traces_are_whole(run: dict[str, Any]) -> None:
    """20 % drop both ways on the board's ports while the session streams traces, sets and gets
    values and reads iq0: every call ends with its result, -32004 or CallTimeout within its
    timeout + MARGIN; no trace mixes two acquisitions (the driver checks each trace's means
    against the offsets set before it); no reconnect storm; ready once the loss ends."""
    loss = run["loss"]
    assert loss["problems"] == [], loss["problems"]
    assert loss["summary"]["error"] == 0, loss["summary"]
    assert loss["summary"]["worst_overrun"] <= MARGIN, loss["summary"]
    assert loss["traces_checked"] > 0 and loss["summary"]["ok"] > 0, loss
    outages = loss["outages"]
    assert len(outages) <= 1 + OUTAGES_PER_10_S * loss["seconds"] / 10, outages
    assert loss["monitor_server_starts"] <= len(outages), loss
    assert loss["killalls"] == 0
    assert loss["ready_after"], (outages, run["server_log_tail"])


def test_a_reply_late_at_the_end_of_a_phase_leaves_the_board_ready(run: dict[str, Any]) -> None:
    """The ``late`` phase's scenario held: a get timed out on a stalled data port and the board
    still said ``ready`` (the link is found silent only by the next request); the pull after it
    (test_cut_board_link_comes_back_untouched[pull]) started once the board answered again, as
    it must after the lossy phase, whose last reply TCP's backoff may delay the same way."""
    late = run["late"]
    assert late["problems"] == [], late
    assert late["get"] == "timeout" and late["state"] == "ready", late


@pytest.mark.parametrize("kind", ["pull", "reset"])
def test_cut_board_link_comes_back_untouched(run: dict[str, Any], kind: str) -> None:
    """100 % drop (a pulled cable) or every packet answered by a reset (a router) for CUT s:
    ``lost`` within LOST_WITHIN, ``ready`` within READY_WITHIN of the restore, the client's
    session and the board's session unchanged, no register written from the fault to the first
    request after it, no ``killall``, asg0 still playing what it played."""
    cut = run[kind]
    assert cut["problems"] == [], cut["problems"]
    assert cut["during"]["error"] == 0 and cut["during"]["worst_overrun"] <= MARGIN, cut["during"]
    assert cut["lost_after_fault"] is not None and cut["lost_after_fault"] <= LOST_WITHIN, cut
    assert cut["ready_before_restore"] == [], cut["states"]
    assert cut["ready_after_restore"] is not None, (cut["device"], cut["board_serves"])
    assert cut["ready_after_restore"] <= READY_WITHIN, cut["states"]
    assert "new_session" not in cut["events"] and cut["session_same"], cut["events"]
    assert cut["device_session_same"]
    assert cut["writes_to_first_request"] == 0, cut["written_addresses"]
    assert cut["killalls"] == 0 and cut["monitor_server_starts"] <= 1, cut
    assert cut["asg0_after"] == cut["asg0_before"]
    assert cut["trace_mean"] == pytest.approx(cut["asg0_before"]["offset"], abs=MEAN_TOLERANCE)
    assert cut["trace_amplitude"] == pytest.approx(AMPLITUDE, rel=0.05)
