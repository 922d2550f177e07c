"""PyRPLClient and server over a lossy, then cut, network link (real kernel TCP, real packet loss).

A private network namespace (its own loopback, its own iptables rules; nothing outside it is
touched) holds the ``--mock`` server and a client driver (tests/helpers/scripts/net_driver.py);
the driver drops packets of the server port with iptables' ``statistic`` match, then cuts the link
twice (silently, then with resets), and prints its figures as JSON. This test starts them, asserts, and prints the
figures (``pytest -s`` shows them). Needs root and the ``ip`` and ``iptables`` commands
(.ci/run installs them).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pymodaq_plugins_pyrpl.hardware.errors import ServerNotReady
from pymodaq_plugins_pyrpl.hardware.server_process import start_server
from tests.helpers.netns import IPTABLES, exec_in
from tests.helpers.scripts import NET_DRIVER
from tests.helpers.support import SERVER_MODULE

pytestmark = pytest.mark.network

TIMEOUT = 2.0
"""Per-call timeout of the driver's set/get calls (s); acquire: 1 s for the server + the client's
2 s margin."""
MARGIN = 0.5
"""A call may end this much later than its own timeout."""
LOSS = 0.2
CUT = 5.0
RESUME_LIMIT = 3.0
"""After a cut of CUT seconds is restored, the client has resumed its session within this (s): a
silent cut is detected by the client's liveness probe (no byte for 2.5 s while a call waits), and
its reconnection attempts are bounded (1.5 s) and spaced by at most 1 s."""


class NsServer:
    """The ``--mock`` server inside the namespace; waits for its ready line; always stopped."""

    def __init__(self, ns: str, tmp: Path) -> None:
        self.token_file = tmp / "token"
        self.log_path = tmp / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        try:
            self.proc, ready = start_server(
                exec_in(ns, sys.executable, "-m", SERVER_MODULE, "--mock", "--seed", "1", "--port",
                        "0", "--token-file", str(self.token_file)), 30,
                stderr=self._log)
        except ServerNotReady as exc:
            self._log.close()
            raise AssertionError(f"server did not start: {exc}\n{self.log}") from None
        self.port = ready.port

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def _fmt(latency: dict[str, float]) -> str:
    if not latency:
        return "-"
    return (f"p50 {latency['p50'] * 1e3:.1f} ms, p99 {latency['p99'] * 1e3:.0f} ms, "
            f"max {latency['max'] * 1e3:.0f} ms")


def report(result: dict) -> None:
    loss = result["loss"]
    print(f"\n-- packet loss {loss['probability']:.0%} on the server port, both directions "
          f"({loss['seconds']:.1f} s) --")
    for kind, s in loss["summary"].items():
        print(f"{kind:8} {s['calls']:5d} calls: {s['ok']} ok ({s['success_rate']:.1%}), "
              f"{s['timeout']} timed out, {s['lost']} lost, {s['error']} other; "
              f"ok latency {_fmt(s['latency_ok'])}; worst end past its timeout "
              f"{s['worst_overrun']:+.2f} s")
    print(f"status pushes received: {loss['status_pushes']}; connection events: "
          f"{loss['events'] or 'none'}")
    for kind in ("silent", "reset"):
        cut = result[f"{kind}_cut"]
        during = cut["during"]["all"]
        first, resumed = cut["first_ok_after_restore"], cut["resumed_after_restore"]
        print(f"-- {kind} cut {cut['seconds']:g} s: {during['calls']} calls "
              f"({during['timeout']} timed out, {during['ok']} ok); first success "
              + ("never" if first is None else f"{first:.2f} s after the restore")
              + f"; events {cut['events']}"
              + ("" if resumed is None else f"; resumed {resumed:.2f} s after the restore"))


@pytest.fixture(scope="module")
def run(netns: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The server and the driver in the namespace, once for this module's tests: the driver's
    figures (printed), after checking that both ended cleanly."""
    tmp = tmp_path_factory.mktemp("network")
    server = NsServer(netns, tmp)
    try:
        driver = subprocess.run(
            exec_in(netns, sys.executable, str(NET_DRIVER), "--iptables", str(IPTABLES),
                    "--port", str(server.port), "--token-file", str(server.token_file),
                    "--loss", str(LOSS), "--pairs", "500", "--workers", "4", "--traces", "50",
                    "--timeout", str(TIMEOUT), "--cut", str(CUT)),
            check=False, capture_output=True, text=True, timeout=240)
    finally:
        code = server.stop()
    lines = [line for line in driver.stdout.splitlines() if line.startswith("NET_RESULT ")]
    assert driver.returncode == 0 and lines, (driver.stdout, driver.stderr[-3000:])
    result = json.loads(lines[-1].split(" ", 1)[1])
    report(result)
    assert code == 0, server.log[-3000:]
    return result


def test_calls_under_packet_loss_end_in_time_with_right_replies(run: dict) -> None:
    loss = run["loss"]
    summary = loss["summary"]
    # every call ended within its timeout + MARGIN, with its result or CallTimeout (ConnectionLost:
    # sets only); no other error, no wrong or stale reply (net_driver checks each one)
    assert loss["problems"] == [], loss["problems"]
    assert summary["all"]["error"] == 0
    assert summary["get"]["lost"] == summary["acquire"]["lost"] == 0
    assert summary["all"]["worst_overrun"] <= MARGIN, summary
    assert summary["set"]["calls"] == summary["get"]["calls"] == 500
    assert summary["acquire"]["calls"] == 50
    # the link is lossy, not dead: most calls get through; traces in order, none twice
    assert summary["all"]["success_rate"] > 0.5, summary
    assert len(loss["sequences"]) == summary["acquire"]["ok"] > 0
    assert loss["sequences"] == sorted(set(loss["sequences"]))
    assert loss["status_pushes"] > 0 and loss["bad_pushes"] == 0
    assert "new_session" not in loss["events"] and "failed" not in loss["events"]


def test_leases_and_settings_intact_after_the_loss(run: dict) -> None:
    check = run["check"]
    assert check["session_same"] and check["leases"] == check["expected_leases"], check
    for key, final in check["finals"].items():
        # the last value this client set, or one of the later ones whose outcome is unknown
        allowed = [final["confirmed"], *final["unknown"]]
        assert any(abs(final["got"] - v) < 1e-3 for v in allowed), (key, final)
        if not final["unknown"]:
            assert final["got"] == final["confirmed"], (key, final)


def test_silent_cut_the_client_resumes_its_session(run: dict) -> None:
    """100 % drop for CUT s (a pulled cable): the client's liveness probe declares the silent link
    dead, calls time out meanwhile, and the client resumes the same session soon after the
    restore, without waiting for TCP's own retransmission backoff."""
    cut = run["silent_cut"]
    assert cut["problems"] == [], cut["problems"]
    assert cut["during"]["all"]["worst_overrun"] <= MARGIN, cut
    assert cut["during"]["all"]["timeout"] > 0 and cut["ok_during_cut"] == 0, cut
    assert cut["events"] == ["lost", "resumed"], cut
    assert cut["resumed_after_restore"] <= RESUME_LIMIT, cut
    assert cut["first_ok_after_restore"] <= RESUME_LIMIT, cut


def test_reset_cut_the_client_resumes_its_session(run: dict) -> None:
    """Every packet answered by a TCP reset for CUT s: both sides see the connection die; the
    client reconnects (refused meanwhile) and resumes the same session after the restore."""
    cut = run["reset_cut"]
    assert cut["problems"] == [], cut["problems"]
    assert cut["during"]["all"]["worst_overrun"] <= MARGIN, cut
    assert cut["events"] == ["lost", "resumed"], cut
    assert cut["resumed_after_restore"] <= RESUME_LIMIT, cut
    assert cut["first_ok_after_restore"] <= RESUME_LIMIT, cut
    after = run["after_cuts"]
    assert after["session_same"] and after["leases"] == run["check"]["expected_leases"], after
