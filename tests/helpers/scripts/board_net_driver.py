"""The board link under network faults: a virtual Red Pitaya, our server on the PyRPL path and a
plugin-like session, all inside a test's private network namespace, with iptables faults on the
board's ssh and data ports only (the JSON-RPC port of our server stays clean).

Run INSIDE the namespace (``ip netns exec NS python board_net_driver.py ...``); it changes that
namespace's iptables rules itself (:mod:`iptables_rules`). It runs in this process a
``VirtualRedPitaya(mode="faithful")`` (loopback plant: out1→in1, out2→in2) on free ports S (ssh)
and P (data), starts the server subprocess ``--hostname 127.0.0.1 --ssh-port S --board-port P``
and drives it with one PyRPLClient, subscribed to status pushes (its ``device`` events are
recorded with their monotonic time). Prints progress to stderr and, at the end, one line
``BOARD_NET_RESULT {json}`` to stdout; the caller makes the assertions. Exit status 0 unless the
set-up failed.

The session: asg0 on out1 and asg1 on out2 play a sine of ``AMPLITUDE`` with exactly 10 periods
per trace around an offset, the scope records in1 and in2 (131 µs, immediate trigger). Two threads
share the client, as the plugins of one PyMoDAQ process do:

- scope: before each trace, asg0's and asg1's offsets are set to a value of that trace; both
  channels' means must equal it (``MEAN_TOLERANCE``): a trace armed before the sets, or a trace
  fetched of an older acquisition, does not. A trace after a failed set is not checked (the
  value on the board is unknown) but counted.
- values: ``set``/``get`` pairs on pid0's setpoint (a get returns the last value confirmed or one
  of the later ones whose set failed), and every 5th pair an ``acquire`` of iq0.

Every call's outcome (ok, -32004, CallTimeout, anything else: a problem) and elapsed time against
its own timeout are recorded.

Phases (``--phases``, in this order):

1. ``clean``: the session for ``--clean`` seconds on a clean link (the loss-free figures).
2. ``loss``: the session for ``--loss-seconds`` with ``--loss`` random drop both ways on ports S
   and P; also the ``lost`` device events and the ``monitor_server`` starts and ``killall``s in
   the board's ssh command log.
3. ``late``: the board's data port stalls while a ``get`` runs, so its reply is late (one missed
   deadline: the link stays ``ready``, the reply owed), and answers again ``LATE_SECONDS`` later:
   the next phase starts on a board that says ``ready`` but whose link the next request finds
   silent past the silence bound, as after lossy wifi when TCP's backoff delays a last reply.
4. faults, each on a board ready and answering (:meth:`Rig.wait_ready`) with the session
   stopped, ``get`` calls from the fault's start until the board is ready again: ``pull`` (100 %
   DROP: a pulled cable) and ``reset`` (every packet answered by a TCP reset), each for ``--cut``
   seconds; and, on the virtual board itself (no iptables: these run outside a namespace too),
   ``stall`` (its data port stops answering for ``--cut`` s), ``fin``/``rst`` (every
   ``monitor_server`` killed, the connection ended by a FIN or a reset), ``garbage`` (one
   corrupted header echo) and ``reboot`` (ports closed for ``REBOOT_SECONDS``, registers back to
   their power-on values). Measured: when ``lost`` came (from the fault's start) and ``ready``
   (from its end), the board's register writes from the fault to the first request after
   ``ready`` (a ``get``), the client's and the board's sessions, the ``monitor_server`` starts
   and ``killall``s of the ssh command log, and asg0 afterwards (settings read back, a trace of
   its sine).
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from call_log import CallLog
from iptables_rules import Rules

from pymodaq_plugins_pyrpl.hardware import errors
from pymodaq_plugins_pyrpl.hardware.client import ACQUIRE_MARGIN, PyRPLClient
from pymodaq_plugins_pyrpl.hardware.server_process import start_server
from pymodaq_plugins_pyrpl.virtual_board.board import LinkSettings
from pymodaq_plugins_pyrpl.virtual_board.command_log import is_killall_monitor
from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya

SERVER_MODULE = "pymodaq_plugins_pyrpl.hardware.server"
SHORTEST = 131.072e-6
"""The scope's shortest duration: 16384 samples at 125 MS/s."""
TONE = 10 / SHORTEST
"""asg frequency: exactly 10 periods per trace, so a trace's mean is the offset."""
AMPLITUDE = 0.1
MEAN_TOLERANCE = 2e-3
"""A channel's mean may differ this much from the offset set (V): noise, 14-bit steps."""
TIMEOUT = 3.0
"""Timeout of each set/get call, and the server-side timeout of each acquisition (s)."""
RETRY_PAUSE = 0.1
"""The session waits this long after a call that failed before its next one (s), as a plugin's
next grab or move comes later."""
READY_WAIT = 15.0
"""Longest wait for the board to be ready and answering again after a phase (s): a bound of the
driver, not of the product."""
LATE_SECONDS = 6.0
"""How long the ``late`` phase's stall lasts (s): past the end of the first request after it,
which waits behind the late one (≤ 1.5 s) and drains it to its own deadline (1.5 s)."""


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


OUTCOMES = ("ok", "not_ready", "timeout", "error")


def call_summary(calls: CallLog, start: float = -np.inf, end: float = np.inf) -> dict[str, Any]:
    """Counts by outcome, and the latest end of a call past its own timeout (s), of the calls
    started in [start, end)."""
    rs = calls.started_between(start, end)
    out: dict[str, Any] = {"calls": len(rs)}
    for outcome in OUTCOMES:
        out[outcome] = sum(r["outcome"] == outcome for r in rs)
    out["by_kind"] = {k: {o: sum(r["kind"] == k and r["outcome"] == o for r in rs)
                          for o in OUTCOMES}
                      for k in sorted({r["kind"] for r in rs})}
    out["worst_overrun"] = max((r["elapsed"] - r["limit"] for r in rs), default=None)
    return out


def new_call_log() -> CallLog:
    """A call log whose outcomes are ``ok``, ``not_ready`` (-32004), ``timeout`` (CallTimeout)
    and ``error`` (anything else: a problem)."""
    return CallLog([(errors.DeviceNotReady, "not_ready"), (errors.CallTimeout, "timeout")])


class Events:
    """The client's connection events (``device`` ones with the state), with their time."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[tuple[float, str, dict[str, Any]]] = []

    def connection(self, event: str, info: dict[str, Any]) -> None:
        with self.cond:
            self.items.append((time.monotonic(), event, dict(info)))
            self.cond.notify_all()

    def states(self, after: float = -np.inf) -> list[tuple[float, str]]:
        """(time, state) of the ``device`` events after ``after``."""
        with self.cond:
            return [(t, i.get("state")) for t, e, i in self.items if e == "device" and t >= after]

    def names(self, after: float = -np.inf) -> list[str]:
        with self.cond:
            return [e for t, e, _ in self.items if t >= after]

    def wait_state(self, state: str, after: float, timeout: float) -> float | None:
        """Time of the first ``device`` event of ``state`` after ``after`` (waiting up to
        ``timeout``), or None."""
        def first() -> float | None:
            return next((t for t, s in self.states(after) if s == state), None)

        with self.cond:
            self.cond.wait_for(lambda: first() is not None, timeout)
        return first()


class Session:
    """The plugin-like session (two threads on one client) until :meth:`stop`."""

    def __init__(self, client: PyRPLClient, calls: CallLog) -> None:
        self.client = client
        self.calls = calls
        self._stop = threading.Event()
        self.traces: list[dict[str, Any]] = []
        self._threads = [threading.Thread(target=self._scope, name="scope"),
                         threading.Thread(target=self._values, name="values")]
        self._k = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(4 * (TIMEOUT + ACQUIRE_MARGIN))
            if thread.is_alive():
                self.calls.problem(f"the {thread.name} thread still runs: a call hangs")

    def _scope(self) -> None:
        while not self._stop.is_set():
            self._k += 1
            value = round(-0.45 + 0.009 * (self._k % 100), 6)
            sets = [self.calls.run("set", TIMEOUT, lambda m=m, v=value: self.client.set(
                m, {"offset": v}, timeout=TIMEOUT))[0] for m in ("asg0", "asg1")]
            outcome, trace = self.calls.run(
                "acquire scope", TIMEOUT + ACQUIRE_MARGIN,
                lambda: self.client.acquire("scope", timeout=TIMEOUT))
            if outcome != "ok" or "ok" not in sets:
                self._stop.wait(RETRY_PAUSE)
            if outcome != "ok":
                continue
            means = [float(np.mean(trace[ch])) for ch in ("ch1", "ch2")]
            checked = sets == ["ok", "ok"]
            self.traces.append({"value": value, "means": means, "checked": checked,
                                "sequence": trace["sequence"]})
            if checked and any(abs(m - value) > MEAN_TOLERANCE for m in means):
                self.calls.problem(f"trace {trace['sequence']}: means {means} after offsets "
                                   f"set to {value}: it mixes acquisitions")

    def _values(self) -> None:
        confirmed = None
        unknown: list[float] = []
        k = 0
        while not self._stop.is_set():
            k += 1
            value = round(-0.7 + 0.0013 * (k % 1000), 6)
            outcome, result = self.calls.run("set", TIMEOUT, lambda v=value: self.client.set(
                "pid0", {"setpoint": v}, timeout=TIMEOUT))
            if outcome == "ok":
                confirmed, unknown = result["setpoint"], []
            else:
                unknown.append(value)
                self._stop.wait(RETRY_PAUSE)
            outcome, result = self.calls.run("get", TIMEOUT, lambda: self.client.get(
                "pid0", ["setpoint"], timeout=TIMEOUT))
            if outcome == "ok" and confirmed is not None:
                got = result["setpoint"]
                if abs(got - confirmed) > 1e-3 and not any(abs(got - v) <= 1e-3
                                                           for v in unknown):
                    self.calls.problem(f"pid0.setpoint read {got}, expected {confirmed} or one "
                                       f"of {unknown}")
            if k % 5 == 0:
                self.calls.run("acquire iq0", TIMEOUT + ACQUIRE_MARGIN,
                               lambda: self.client.acquire("iq0", timeout=TIMEOUT))


class Rig:
    """The board, the server and the client, inside the namespace."""

    def __init__(self, iptables: str, folder: Path) -> None:
        self.vrp = VirtualRedPitaya(mode="faithful", seed=7)
        self.ssh_port, self.port = self.vrp.start(0, 0)
        self.rules = Rules([self.ssh_port, self.port], iptables)
        self.log_path = folder / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in close)
        token_file = folder / "token"
        self.server, ready = start_server(
            [sys.executable, "-m", SERVER_MODULE, "--hostname", "127.0.0.1", "--ssh-port",
             str(self.ssh_port), "--board-port", str(self.port), "--port", "0", "--token-file",
             str(token_file)], 90, stderr=self._log)
        self.events = Events()
        self.client = PyRPLClient("127.0.0.1", ready.port, token_file.read_text().strip(),
                                  "board-net-driver", timeout=10)
        self.client.add_connection_callback(self.events.connection)
        self.client.connect(timeout=10)
        self.session = self.client.session
        for module in ("asg0", "asg1", "pid0", "iq0", "scope"):
            self.client.lease(module, timeout=10)
        self.client.subscribe(timeout=10)

    def set_up(self) -> None:
        for module, out in (("asg0", "out1"), ("asg1", "out2")):
            self.client.set(module, {"waveform": "sin", "frequency": TONE,
                                     "amplitude": AMPLITUDE, "offset": 0.0,
                                     "output_direct": out, "trigger_source": "immediately"},
                            timeout=10)
        self.client.set("scope", {"input1": "in1", "input2": "in2", "duration": SHORTEST,
                                  "trigger_source": "immediately"}, timeout=10)
        self.client.set("iq0", {"input": "in1", "frequency": 100e3, "bandwidth": [1e3, 1e3],
                                "output_direct": "off"}, timeout=10)

    def device(self) -> dict[str, Any]:
        return self.client.status(timeout=10)["device"]

    def wait_ready(self, timeout: float) -> bool:
        """Whether the board became ``ready`` and answered a request (a ``get`` of asg0's
        offset) within ``timeout`` s (+ one get's TIMEOUT). ``ready`` alone is not enough: a reply
        owed from the phase before may still be late, and the next request would find the link
        silent past the silence bound (``lost``, -32004)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.device()["state"] == "ready":
                try:
                    self.client.get("asg0", ["offset"], timeout=TIMEOUT)
                    return True
                except (errors.DeviceNotReady, errors.CallTimeout):
                    pass
            time.sleep(0.1)
        return False

    def board_commands(self, since: float) -> dict[str, int]:
        lines = [c.line for c in self.vrp.commands.entries(since=since)]
        return {"monitor_server_starts": sum("monitor_server" in line and
                                             not is_killall_monitor(line) for line in lines),
                "killalls": sum(is_killall_monitor(line) for line in lines)}

    def close(self) -> int | None:
        self.rules.clear()
        self.vrp.board.faults.resume()
        self.client.close()
        if self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(20)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(5)
        self._log.close()
        self.vrp.close()
        return self.server.returncode


def session_phase(rig: Rig, seconds: float, loss: float | None) -> dict[str, Any]:
    """The session for ``seconds``, with ``loss`` drop on the board's ports if given."""
    calls = new_call_log()
    session = Session(rig.client, calls)
    if loss is not None:
        rig.rules.loss(loss)
    t0 = time.monotonic()
    session.start()
    time.sleep(seconds)  # the phase's duration: the session runs meanwhile
    end = time.monotonic()
    session.stop()
    rig.rules.clear()
    stopped = time.monotonic()
    ready_again = rig.wait_ready(READY_WAIT)
    states = rig.events.states(t0)
    outages = _outages(states, t0)
    elapsed = stopped - t0
    summary = call_summary(calls)
    return {"loss": loss, "seconds": elapsed, "summary": summary, "problems": calls.problems,
            "traces": len(session.traces),
            "traces_checked": sum(t["checked"] for t in session.traces),
            "traces_per_s": len(session.traces) / elapsed,
            "calls_per_s": summary["ok"] / elapsed,
            "states": [(round(t - t0, 3), s) for t, s in states],
            "outages": outages,
            "ready_after": ready_again, "window": end - t0,
            **rig.board_commands(t0)}


def _outages(states: list[tuple[float, str]], t0: float) -> list[list[float | None]]:
    """[lost, ready] times (from ``t0``) of each outage seen in ``states`` (a ``device`` event
    in the same state, e.g. one more recovery attempt, is part of the same outage); ready None:
    not over when the phase ended."""
    out: list[list[float | None]] = []
    for t, state in states:
        if state == "lost" and (not out or out[-1][1] is not None):
            out.append([t - t0, None])
        elif state == "ready" and out and out[-1][1] is None:
            out[-1][1] = t - t0
    return out


def late_reply_phase(rig: Rig, seconds: float) -> dict[str, Any]:
    """The ``late`` phase: the data port stalls, a ``get`` (client timeout 0.5 s) leaves its
    request unanswered on the link, and the port answers again ``seconds`` later (in a timer
    thread: the phase returns at once). ``get``: that get's outcome; ``state``: the device state
    when the phase ended."""
    board = rig.vrp.board
    board.faults.stall()
    resume = threading.Timer(seconds, board.faults.resume)
    resume.daemon = True
    resume.start()
    calls = new_call_log()
    outcome, _ = calls.run("get", 0.5, lambda: rig.client.get("asg0", ["offset"], timeout=0.5))
    return {"seconds": seconds, "get": outcome, "problems": calls.problems,
            "state": rig.device()["state"]}


REBOOT_SECONDS = 2.0
"""How long the virtual board's reboot keeps its ports closed (s)."""


class Fault:
    """One fault of the board link: ``begin()``, then after ``seconds`` ``end()`` (None: the
    fault is over at once, e.g. a killed ``monitor_server``; ``end`` may wait for its end, e.g.
    the end of a reboot)."""

    def __init__(self, begin: Callable[[], Any], end: Callable[[], Any] | None,
                 seconds: float) -> None:
        self.begin, self.end, self.seconds = begin, end, seconds


def faults(rig: Rig, cut: float) -> dict[str, Fault]:
    """The faults by name: on the network (``pull``, ``reset``: iptables, in a namespace) and on
    the virtual board itself (``stall``: its data port stops answering; ``fin``/``rst``: every
    ``monitor_server`` killed, its connection ended by a FIN or a reset, as another program's
    ``killall`` does; ``garbage``: the next header echo corrupted; ``reboot``)."""
    board = rig.vrp.board

    def killall(close: str) -> None:
        board.link = LinkSettings(mode=board.link.mode, killall_close=close)
        rig.vrp.killall_monitors()

    return {"pull": Fault(rig.rules.cut, rig.rules.clear, cut),
            "reset": Fault(rig.rules.reset, rig.rules.clear, cut),
            "stall": Fault(board.faults.stall, board.faults.resume, cut),
            "fin": Fault(lambda: killall("fin"), None, 0.0),
            "rst": Fault(lambda: killall("rst"), None, 0.0),
            "garbage": Fault(lambda: board.faults.corrupt_echoes(1), None, 0.0),
            "reboot": Fault(lambda: rig.vrp.reboot(REBOOT_SECONDS),
                            lambda: rig.vrp.wait_rebooted(REBOOT_SECONDS + READY_WAIT), 0.0)}


def fault_phase(rig: Rig, kind: str, fault: Fault) -> dict[str, Any]:
    """``fault`` on a board ready and answering, with an idle session, ``get`` calls from its
    start until the board is ready again (or READY_WAIT after its end); then the first request
    after it."""
    if not rig.wait_ready(READY_WAIT):
        return {"problems": [f"the board was not ready before the {kind}"]}
    before = rig.client.get("asg0", ["frequency", "amplitude", "offset", "output_direct",
                                     "trigger_source"], timeout=10)
    device_session = rig.device()["session"]
    calls = new_call_log()
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            calls.run("get", TIMEOUT, lambda: rig.client.get("asg0", ["offset"],
                                                             timeout=TIMEOUT))
            stop.wait(0.1)

    time.sleep(1.5)  # the link idle for more than the heartbeat: a fault between two heartbeats
    writes = rig.vrp.board.counts.writes
    started = time.monotonic()
    fault.begin()
    thread = threading.Thread(target=caller)
    thread.start()
    time.sleep(fault.seconds)  # the fault's duration
    if fault.end is not None:
        fault.end()
    restored = time.monotonic()
    ready = rig.events.wait_state("ready", restored, READY_WAIT)
    stop.set()
    thread.join(2 * TIMEOUT)
    lost = rig.events.wait_state("lost", started, 0)
    out: dict[str, Any] = {
        "seconds": fault.seconds,
        "problems": calls.problems + (["a get call still runs after the fault"]
                                      if thread.is_alive() else []),
        "lost_after_fault": None if lost is None else lost - started,
        "ready_after_restore": None if ready is None else ready - restored,
        "ready_before_restore": [round(t - started, 3) for t, s in rig.events.states(started)
                                 if s == "ready" and started < t < restored],
        "during": call_summary(calls), "device": rig.device(),
        "board_serves": [f"{ip}:{port}" for ip, port in rig.vrp.board.monitor_clients()]}
    if ready is not None:
        asked = time.monotonic()
        out["writes_to_first_request"] = rig.vrp.board.counts.writes - writes
        out["written_addresses"] = sorted({hex(a) for t, a, _ in rig.vrp.board.write_log
                                           if started <= t <= asked})
        out["asg0_before"] = before
        out["asg0_after"] = rig.client.get("asg0", list(before), timeout=10)
        x = np.asarray(rig.client.acquire("scope", timeout=TIMEOUT)["ch1"], dtype=float)
        out["trace_mean"], out["trace_amplitude"] = float(x.mean()), float(x.std() * 2**0.5)
        out["device_session_same"] = rig.device()["session"] == device_session
    out.update({"events": rig.events.names(started),
                "states": [(round(t - started, 3), s) for t, s in rig.events.states(started)],
                "session_same": rig.client.session == rig.session,
                **rig.board_commands(started)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iptables", default="iptables", help="path of the iptables command")
    parser.add_argument("--phases", default="clean,loss,pull,reset",
                        help="comma-separated, in this order: clean, loss, late, pull, reset, "
                             "stall, fin, rst, garbage, reboot")
    parser.add_argument("--clean", type=float, default=10.0, help="seconds of the clean phase")
    parser.add_argument("--loss", type=float, default=0.2, help="drop probability")
    parser.add_argument("--loss-seconds", type=float, default=60.0)
    parser.add_argument("--cut", type=float, default=5.0, help="seconds of each cut")
    args = parser.parse_args()
    phases = args.phases.split(",")
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # the board's ssh side: a probe
    # that connects and closes is logged as a failed handshake
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="board-net-") as folder:
        rig = Rig(args.iptables, Path(folder))
        try:
            rig.set_up()
            result["ports"] = {"ssh": rig.ssh_port, "data": rig.port}
            if "clean" in phases:
                log(f"clean: {args.clean} s")
                result["clean"] = session_phase(rig, args.clean, None)
            if "loss" in phases:
                log(f"loss {args.loss:.0%}: {args.loss_seconds} s")
                result["loss"] = session_phase(rig, args.loss_seconds, args.loss)
            if "late" in phases:
                log(f"late: {LATE_SECONDS} s")
                result["late"] = late_reply_phase(rig, LATE_SECONDS)
            for kind, fault in faults(rig, args.cut).items():
                if kind in phases:
                    log(f"{kind}: {fault.seconds} s")
                    result[kind] = fault_phase(rig, kind, fault)
            result["killalls_total"] = rig.vrp.commands.killalls()
        finally:
            code = rig.close()
            result["server_exit"] = code
            result["server_log_tail"] = rig.log_path.read_text(errors="replace")[-4000:]
    print("BOARD_NET_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
