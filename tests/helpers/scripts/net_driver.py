"""Client side of tests/system/test_network.py: a plugin-like PyRPLClient session on a lossy link.

Runs INSIDE the test's network namespace (``ip netns exec NS python net_driver.py ...``), next to
the ``--mock`` server, and changes that namespace's iptables rules itself (it is root there; the
namespace is private, so the rules touch nothing else). Prints progress to stderr and, at the end,
one line ``NET_RESULT {json}`` to stdout; the test makes the assertions.

Phases:

1. ``loss``: every packet to or from the server port is dropped with probability ``--loss``
   (iptables ``statistic --mode random``: client→server packets in OUTPUT, server→client packets
   in INPUT, so each packet meets exactly one rule). One client shared by threads like the plugins
   of one PyMoDAQ process: ``--workers`` set/get threads (each on its own leased module and
   attribute, ``--pairs`` set/get pairs in all, distinct values, so a wrong or stale reply is
   detected), one scope thread (``--traces`` traces at the shortest duration, shape, dtype and a
   strictly increasing ``sequence`` checked) and the status subscription (pushes counted and
   checked). Each call has its own timeout; its elapsed time and outcome are recorded.
2. ``check``: loss off; leases and settings read back.
3. ``silent cut``: 100 % drop for ``--cut`` seconds (a pulled cable: packets vanish), then
   restore; calls go on meanwhile; the time from the restore to the first successful call.
4. ``reset cut``: for ``--cut`` seconds every packet is answered by a TCP reset (iptables REJECT
   --reject-with tcp-reset: a router that resets), so both sides see the connection die; after the
   restore, the time until the client's ``resumed`` event (same session, leases kept).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import numpy as np
from call_log import CallLog
from iptables_rules import Rules

from pymodaq_plugins_pyrpl.hardware import errors
from pymodaq_plugins_pyrpl.hardware.client import ACQUIRE_MARGIN, PyRPLClient

SHORTEST = 131.072e-6
TARGETS = [("asg0", "offset"), ("asg1", "offset"), ("pid0", "setpoint"), ("pid1", "setpoint"),
           ("pid2", "setpoint"), ("iq0", "amplitude")]
"""(module, attribute) of each set/get thread: one leased module each, values in [-1, 1]."""


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def new_call_log() -> CallLog:
    """A call log whose outcomes are ``ok``, ``timeout`` (CallTimeout), ``lost``
    (ConnectionLost: a problem unless the call says it is fine) and ``error`` (anything else: a
    problem)."""
    return CallLog([(errors.CallTimeout, "timeout"), (errors.ConnectionLost, "lost")],
                   problem_outcomes=("error", "lost"))


def set_get_worker(client: PyRPLClient, calls: CallLog, module: str, attribute: str, step: float,
                   pairs: int, index: int, timeout: float, out: dict[str, Any]) -> None:
    """``pairs`` set/get pairs of distinct values. A get must return the value of the last set
    this client knows was applied (its reply came), or one of the values of the later sets whose
    outcome is unknown (timed out or lost): anything else is a wrong, stale or duplicated reply."""
    key = f"{module}.{attribute}"
    confirmed = client.get(module, [attribute], timeout=10)[attribute]
    unknown: list[float] = []
    for k in range(pairs):
        value = round(-0.8 + 0.0031 * k + 0.0007 * index, 6)
        outcome, result = calls.run("set", timeout, lambda: client.set(
            module, {attribute: value}, timeout=timeout), fine=("lost",))
        if outcome == "ok":
            if set(result) != {attribute} or abs(result[attribute] - value) > step:
                calls.problem(f"wrong set reply for {key}={value}: {result}")
            confirmed, unknown = result[attribute], []
        else:
            unknown.append(value)
        outcome, result = calls.run("get", timeout, lambda: client.get(
            module, [attribute], timeout=timeout))
        if outcome == "ok":
            got = result.get(attribute) if set(result) == {attribute} else None
            if got != confirmed and not any(abs(got - v) <= step for v in unknown
                                            if got is not None):
                calls.problem(f"wrong get reply for {key}: {result}, expected {confirmed} "
                              f"or one of {unknown}")
    out[key] = {"confirmed": confirmed, "unknown": unknown}


def scope_worker(client: PyRPLClient, calls: CallLog, traces: int, timeout: float,
                 out: dict[str, Any]) -> None:
    sequences: list[int] = []
    for _ in range(traces):
        outcome, result = calls.run("acquire", timeout + ACQUIRE_MARGIN,
                                    lambda: client.acquire("scope", timeout=timeout))
        if outcome != "ok":
            continue
        ok = (all(isinstance(result.get(ch), np.ndarray) and result[ch].shape == (16384,)
                  and result[ch].dtype == np.float32 for ch in ("ch1", "ch2"))
              and result.get("dt", 0) > 0 and result["settings"]["duration"] == SHORTEST)
        if not ok:
            shapes = {k: getattr(v, "shape", v) for k, v in result.items()}
            calls.problem(f"malformed trace: {shapes}")
        if sequences and result["sequence"] <= sequences[-1]:
            calls.problem(f"trace sequence {result['sequence']} after {sequences[-1]}")
        sequences.append(result["sequence"])
    out["sequences"] = sequences


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
            "max": float(max(values))}


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = sorted({r["kind"] for r in records})
    out: dict[str, Any] = {}
    for kind in kinds + ["all"]:
        rs = [r for r in records if kind in ("all", r["kind"])]
        outcomes = {o: sum(r["outcome"] == o for r in rs) for o in ("ok", "timeout", "lost",
                                                                    "error")}
        out[kind] = {"calls": len(rs), **outcomes,
                     "success_rate": outcomes["ok"] / len(rs) if rs else None,
                     "latency_ok": percentiles([r["elapsed"] for r in rs if r["outcome"] == "ok"]),
                     "worst_overrun": max((r["elapsed"] - r["limit"] for r in rs), default=None)}
    return out


class Events:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[tuple[float, str, dict[str, Any]]] = []
        self.statuses: list[dict[str, Any]] = []

    def connection(self, event: str, info: dict[str, Any]) -> None:
        with self.cond:
            self.items.append((time.monotonic(), event, info))
            self.cond.notify_all()

    def status(self, status: dict[str, Any]) -> None:
        with self.cond:
            self.statuses.append(status)

    def wait(self, event: str, after: float, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: any(t >= after and e == event for t, e, _ in self.items),
                               timeout)
            times = [t for t, e, _ in self.items if t >= after and e == event]
            return times[0] if times else None

    def names(self, after: float = 0.0) -> list[str]:
        with self.cond:
            return [e for t, e, _ in self.items if t >= after]


def cut_phase(client: PyRPLClient, net: Rules, kind: str, seconds: float, timeout: float,
              events: Events) -> dict[str, Any]:
    """Cut (silently or with resets) for exactly ``seconds`` while a thread keeps calling ``get``
    back to back; then restore and wait for the first call that succeeds."""
    calls = new_call_log()
    ok_times: list[float] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            outcome, _ = calls.run("get", timeout, lambda: client.get("asg0", ["offset"],
                                                                       timeout=timeout))
            if outcome == "ok":
                ok_times.append(time.monotonic())
            stop.wait(0.05)

    started = time.monotonic()
    (net.cut if kind == "silent" else net.reset)()
    thread = threading.Thread(target=caller)
    thread.start()
    time.sleep(seconds)
    net.clear()
    restored = time.monotonic()
    deadline = restored + 20
    while time.monotonic() < deadline and not any(t >= restored for t in ok_times):
        time.sleep(0.01)
    stop.set()
    thread.join(timeout + 5)
    if thread.is_alive():
        calls.problem("a call hangs after the cut")
    first_ok = next((t for t in ok_times if t >= restored), None)
    resumed = events.wait("resumed", started, 10)
    return {"seconds": seconds, "during": summary(list(calls.records)),
            "problems": calls.problems,
            "ok_during_cut": sum(started < t < restored for t in ok_times),
            "first_ok_after_restore": None if first_ok is None else first_ok - restored,
            "events": events.names(started),
            "resumed_after_restore": None if resumed is None else resumed - restored}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--iptables", default="iptables", help="path of the iptables command")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--loss", type=float, default=0.2)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--traces", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--cut", type=float, default=5.0)
    parser.add_argument("--phases", default="loss,silent,reset",
                        help="comma-separated, in this order: loss, silent, reset")
    args = parser.parse_args()
    phases = args.phases.split(",")
    token = open(args.token_file).read().strip()
    net = Rules([args.port], args.iptables)
    events = Events()
    client = PyRPLClient("127.0.0.1", args.port, token, "net-driver", timeout=args.timeout)
    client.add_connection_callback(events.connection)
    client.add_status_callback(events.status)
    result: dict[str, Any] = {}
    try:
        hello = client.connect(timeout=10)
        session = hello["session"]
        catalogue = client.describe(timeout=10)["modules"]
        targets = TARGETS[:args.workers]
        for module in sorted({m for m, _ in targets}):
            client.lease(module, timeout=10)
        client.set("scope", {"duration": SHORTEST, "trigger_source": "immediately"}, timeout=10)
        client.subscribe(timeout=10)

        # -- 1. loss ------------------------------------------------------------------------
        outs: dict[str, Any] = {}
        if "loss" in phases:
            log(f"loss {args.loss:.0%}: {args.pairs} set/get pairs in {len(targets)} threads, "
                f"{args.traces} traces")
            calls = new_call_log()
            pushes_before = len(events.statuses)
            net.loss(args.loss)
            t0 = time.monotonic()
            steps = [catalogue[m]["attributes"][a]["step"] for m, a in targets]
            shares = [args.pairs // len(targets) + (i < args.pairs % len(targets))
                      for i in range(len(targets))]
            threads = [threading.Thread(target=set_get_worker, args=(
                client, calls, module, attribute, steps[i], shares[i], i, args.timeout, outs))
                for i, (module, attribute) in enumerate(targets)]
            threads.append(threading.Thread(target=scope_worker,
                                            args=(client, calls, args.traces, 1.0, outs)))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
                if thread.is_alive():
                    calls.problem("a worker thread still runs after 300 s: a call hangs")
            duration = time.monotonic() - t0
            net.clear()
            statuses = events.statuses[pushes_before:]
            bad_pushes = [s for s in statuses if not (isinstance(s, dict) and "server" in s
                                                      and "clients" in s)]
            result["loss"] = {"probability": args.loss, "seconds": duration,
                              "summary": summary(calls.records), "problems": calls.problems,
                              "status_pushes": len(statuses), "bad_pushes": len(bad_pushes),
                              "sequences": outs.get("sequences", []),
                              "events": events.names(t0)}
            log(f"loss phase: {duration:.1f} s")

        # -- 2. check: leases and settings, on a clean link ------------------------------------
        status = client.status(timeout=10)
        mine = [c for c in status["clients"] if c["id"] == session[:8]]
        finals = {}
        for module, attribute in targets:
            key = f"{module}.{attribute}"
            got = client.get(module, [attribute], timeout=10)[attribute]
            finals[key] = {"got": got, **outs.get(key, {})}
        result["check"] = {"session_same": client.session == session,
                           "leases": mine[0]["leases"] if mine else None,
                           "expected_leases": sorted({m for m, _ in targets}),
                           "finals": finals}

        # -- 3./4. cuts -----------------------------------------------------------------------
        for kind in [k for k in ("silent", "reset") if k in phases]:
            log(f"{kind} cut: {args.cut} s")
            result[f"{kind}_cut"] = cut_phase(client, net, kind, args.cut, args.timeout, events)
        status = client.status(timeout=10)
        mine = [c for c in status["clients"] if c["id"] == session[:8]]
        result["after_cuts"] = {"session_same": client.session == session,
                                "leases": mine[0]["leases"] if mine else None,
                                "events": events.names()}
    finally:
        net.clear()
        client.close()
    print("NET_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
