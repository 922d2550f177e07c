"""Soak: does the server stay flat under continuous load? (not part of the test suite)

Usage: ``python bench/soak.py [--minutes 10] [--clients 4] [--interval 60] [--json FILE]``

A ``--mock`` server subprocess; ``--clients`` client processes (one PyRPLClient each, so the
clients do not share a GIL) calling at full rate, back to back, a mix of
``get`` (40 %), ``set`` (30 %, each client on a module it leases), ``acquire`` of the sampler or an
IQ module (20 %) and ``acquire`` of a scope trace at the shortest duration (10 %); plus one status
subscriber in this process. Every ``--interval`` seconds (default: a minute) one row: server RSS,
open file descriptors and threads (psutil), calls and errors in the interval, status pushes
received, and the p50/p99 latency of each call type. A ``set`` is read back with a ``get`` of the
same attribute by the same client (it holds the lease), so a wrong reply counts as an error.

At the end a verdict line: ``flat`` if, between the first and the last row, RSS grew by at most
10 % + 5 MB, fds and threads by at most 2, and no call type's p99 more than doubled (+ 1 ms);
``growing`` (with what grew) otherwise. The first row includes the warm-up.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from pymodaq_plugins_pyrpl.hardware import server_process
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.errors import ServerNotReady

SHORTEST = 131.072e-6
KINDS = ("get", "set", "acq_small", "acq_scope")
LEASED = ("asg0", "asg1", "pid0", "pid1", "pid2", "iq0", "iq1", "iq2")
FLUSH = 0.5
"""Workers hand their samples over this often (seconds)."""


def start_server(tmp: Path) -> tuple[subprocess.Popen, int, str]:
    with open(tmp / "server.log", "wb") as log:
        try:
            proc, ready = server_process.start_server(
                [sys.executable, "-m", "pymodaq_plugins_pyrpl.hardware.server", "--mock", "--seed",
                 "1", "--port", "0", "--token-file", str(tmp / "token"), "-q"], 60, stderr=log)
        except ServerNotReady as exc:
            raise SystemExit(f"{exc}; log in {tmp / 'server.log'}") from None
    return proc, ready.port, (tmp / "token").read_text().strip()


def worker(index: int, port: int, token: str, end: float, out: mp.Queue) -> None:
    """One client at full rate until ``end`` (time.time()); samples go to ``out`` every FLUSH."""
    rng = random.Random(index)
    module = LEASED[index % len(LEASED)]
    attribute = "offset" if module.startswith("asg") else ("setpoint" if module.startswith("pid")
                                                            else "amplitude")
    small = "sampler" if index % 2 == 0 else "iq0"
    client = PyRPLClient("127.0.0.1", port, token, f"soak-{index}", timeout=10)
    client.connect()
    client.lease(module)
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    errors: list[str] = []
    flushed = time.time()
    value = 0.0
    while time.time() < end:
        r = rng.random()
        t0 = time.perf_counter()
        try:
            if r < 0.4:
                client.get("asg0" if r < 0.2 else module)
                kind = "get"
            elif r < 0.7:
                value = round(rng.uniform(-0.5, 0.5), 3)
                applied = client.set(module, {attribute: value})[attribute]
                kind = "set"
                samples[kind].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                back = client.get(module, [attribute])[attribute]
                kind = "get"
                if back != applied:
                    errors.append(f"{module}.{attribute}: set {applied}, got {back}")
            elif r < 0.9:
                client.acquire(small, timeout=5)
                kind = "acq_small"
            else:
                trace = client.acquire("scope", timeout=5)
                kind = "acq_scope"
                if trace["ch1"].shape != (16384,):
                    errors.append(f"scope trace of shape {trace['ch1'].shape}")
            samples[kind].append(time.perf_counter() - t0)
        except Exception as exc:  # counted, reported, and the soak goes on
            errors.append(f"{type(exc).__name__}: {exc}")
        now = time.time()
        if now - flushed >= FLUSH:
            out.put((now, samples, errors))
            samples = {kind: [] for kind in KINDS}
            errors = []
            flushed = now
    out.put((time.time(), samples, errors))
    client.close()


def server_figures(proc: psutil.Process) -> dict[str, float]:
    with proc.oneshot():
        return {"rss_mb": proc.memory_info().rss / 2**20, "fds": proc.num_fds(),
                "threads": proc.num_threads()}


def row_text(row: dict) -> str:
    cells = [f"{row['minute']:>4}", f"{row['rss_mb']:7.1f}", f"{row['fds']:4d}",
             f"{row['threads']:4d}", f"{row['calls']:7d}", f"{row['errors']:4d}",
             f"{row['pushes']:4d}"]
    for kind in KINDS:
        p = row["latency_ms"].get(kind)
        cells.append(f"{p[0]:6.2f}/{p[1]:7.2f}" if p else f"{'-':>14}")
    return "| " + " | ".join(cells) + " |"


HEADER = ("| min | RSS MB | fds | thr | calls | err | push | get p50/p99 ms | set p50/p99 ms "
          "| sampler/iq p50/p99 | scope p50/p99 ms |")
RULE = "|" + "|".join("---" for _ in range(HEADER.count("|") - 1)) + "|"


def verdict(first: dict, last: dict) -> tuple[bool, list[str]]:
    grew = []
    if last["rss_mb"] > first["rss_mb"] * 1.10 + 5:
        grew.append(f"RSS {first['rss_mb']:.1f} → {last['rss_mb']:.1f} MB")
    for key in ("fds", "threads"):
        if last[key] > first[key] + 2:
            grew.append(f"{key} {first[key]} → {last[key]}")
    for kind in KINDS:
        a, b = first["latency_ms"].get(kind), last["latency_ms"].get(kind)
        if a and b and b[1] > 2 * a[1] + 1:
            grew.append(f"{kind} p99 {a[1]:.2f} → {b[1]:.2f} ms")
    return not grew, grew


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="seconds per row (default 60)")
    parser.add_argument("--json", type=Path, help="also write the rows and verdict here")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="pyrpl_soak_"))
    server, port, token = start_server(tmp)
    ps = psutil.Process(server.pid)
    subscriber = PyRPLClient("127.0.0.1", port, token, "soak-status", timeout=10)
    pushes = [0]
    lock = threading.Lock()

    def on_status(status: dict) -> None:
        with lock:
            pushes[0] += 1

    subscriber.add_status_callback(on_status)
    subscriber.connect()
    subscriber.set("scope", {"duration": SHORTEST, "trigger_source": "immediately"})
    subscriber.subscribe()

    duration = args.minutes * 60
    start = time.time()
    end = start + duration
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    workers = [ctx.Process(target=worker, args=(i, port, token, end, out), daemon=True)
               for i in range(args.clients)]
    for w in workers:
        w.start()

    print(f"soak: {args.clients} clients at full rate + 1 status subscriber on a --mock server "
          f"(pid {server.pid}), {args.minutes:g} min, a row every {args.interval:g} s; "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}", flush=True)
    print(HEADER, flush=True)
    print(RULE, flush=True)
    rows: list[dict] = []
    n_rows = max(1, int(round(duration / args.interval)))
    buckets = [{kind: [] for kind in KINDS} for _ in range(n_rows)]
    bucket_errors: list[list[str]] = [[] for _ in range(n_rows)]
    figures: dict[int, dict] = {}
    push_marks: dict[int, int] = {}
    next_row = 0
    try:
        while next_row < n_rows:
            try:
                stamp, samples, errors = out.get(timeout=0.2)
                k = min(n_rows - 1, max(0, int((stamp - start) / args.interval)))
                for kind in KINDS:
                    buckets[k][kind].extend(samples[kind])
                bucket_errors[k].extend(errors)
            except queue.Empty:
                pass
            now = time.time()
            boundary = start + (next_row + 1) * args.interval
            if now >= boundary and next_row not in figures:
                figures[next_row] = server_figures(ps)
                with lock:
                    push_marks[next_row] = pushes[0]
            if now >= boundary + 2 * FLUSH + 0.5 or (next_row == n_rows - 1 and now >= end
                                                    and not any(w.is_alive() for w in workers)
                                                    and next_row in figures):
                if next_row not in figures:
                    continue
                b = buckets[next_row]
                row = {"minute": round((next_row + 1) * args.interval / 60, 2),
                       **figures[next_row],
                       "calls": sum(len(v) for v in b.values()),
                       "errors": len(bucket_errors[next_row]),
                       "pushes": push_marks[next_row] - (push_marks[next_row - 1]
                                                         if next_row else 0),
                       "latency_ms": {kind: [float(np.percentile(v, 50)) * 1e3,
                                             float(np.percentile(v, 99)) * 1e3]
                                      for kind, v in b.items() if v}}
                rows.append(row)
                print(row_text(row), flush=True)
                for message in sorted(set(bucket_errors[next_row]))[:5]:
                    print(f"    error: {message}", flush=True)
                buckets[next_row] = {}
                next_row += 1
    finally:
        for w in workers:
            w.join(15)
            if w.is_alive():
                w.kill()
        subscriber.close()
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()

    flat, grew = verdict(rows[0], rows[-1])
    total_calls = sum(r["calls"] for r in rows)
    total_errors = sum(r["errors"] for r in rows)
    line = (f"verdict: {'flat' if flat else 'growing'} ({len(rows)} rows, {total_calls} calls, "
            f"{total_errors} errors, server exit status {code})"
            + ("" if flat else ": " + "; ".join(grew)))
    print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "flat": flat, "grew": grew,
                                         "calls": total_calls, "errors": total_errors,
                                         "exit": code}, indent=1))
    return 0 if flat and total_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
