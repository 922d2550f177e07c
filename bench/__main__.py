"""All performance figures of pymodaq_plugins_pyrpl in one run, one table (issue 6).

Usage: ``python -m bench [--runs N] [--quick] [--json]`` from the repository root.

Every figure is the median of several runs (or samples) with its min–max and its target; what each
figure means is in docs/performance.md. The bench uses a private runtime folder and free ports, so it
never touches a server of the user's.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata

os.environ["PYMODAQ_PYRPL_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="pyrpl_bench_")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="pyrpl_bench_xdg_"))  # Qt's

import psutil  # noqa: E402

from bench import analyzers, calls, pyrpl_path, transport, viewer  # noqa: E402
from bench.common import SHORTEST, Server, percentile, summary  # noqa: E402
from pymodaq_plugins_pyrpl.hardware import protocol  # noqa: E402
from pymodaq_plugins_pyrpl.hardware.sockets import free_port  # noqa: E402

# --- (5)/(6) scaling and server memory --------------------------------------------------------------

def scaling(server: Server, clients: int, seconds: float) -> dict[str, float]:
    members = [server.new_client(f"bench {i}") for i in range(clients)]
    for c in members:
        c.set("scope", {"duration": SHORTEST})
    counts = [0] * clients
    start = threading.Barrier(clients + 1)
    end_at = [0.0]

    def stream(i: int) -> None:
        start.wait()
        while time.perf_counter() < end_at[0]:
            members[i].acquire("scope")
            counts[i] += 1

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    server.process.cpu_percent(None)
    end_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    rss = []
    while time.perf_counter() < end_at[0]:
        rss.append(server.process.memory_info().rss)
        time.sleep(min(0.2, max(0.0, end_at[0] - time.perf_counter())))
    cpu = server.process.cpu_percent(None)
    for t in threads:
        t.join(30)
    elapsed = time.perf_counter() - t0
    for c in members:
        c.close()
    rates = [c / elapsed for c in counts]
    return {"aggregate": sum(rates), "client_min": min(rates), "client_max": max(rates),
            "fairness": min(rates) / statistics.mean(rates) if sum(rates) else 0.0,
            "server_cpu_percent": cpu, "server_rss_mb": max(rss) / 1e6}


# --- (6) client overhead ---------------------------------------------------------------------------

_BARE = "import numpy, sys; print('ready', flush=True); sys.stdin.readline()"
_CLIENT = ("import numpy, sys\n"
           "from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient\n"
           "c = PyRPLClient('127.0.0.1', int(sys.argv[1]), sys.argv[2], 'bench rss'); c.connect()\n"
           "print('ready', flush=True); sys.stdin.readline(); c.close()\n")


def process_rss(code: str, *args: str) -> float:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("bench subprocess failed")
        rss = psutil.Process(proc.pid).memory_info().rss
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    return rss / 1e6


# --- the run ---------------------------------------------------------------------------------------

def machine() -> dict:
    versions = {}
    for name in ("pymodaq_plugins_pyrpl", "pymodaq", "pymodaq_utils", "pymodaq_data", "pyrpl",
                 "numpy", "psutil"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "packages": versions}


def run(runs: int, quick: bool) -> dict:
    traces = 30 if quick else 200
    n_calls = 300 if quick else 2000
    seconds = 1.0 if quick else 3.0
    startup_runs = min(runs, 2) if quick else runs
    fig: dict[str, dict] = {}

    def put(key: str, label: str, s: dict, unit: str, target: str = "", ok: bool | None = None):
        fig[key] = {"label": label, **s, "unit": unit, "target": target, "ok": ok,
                    "section": section(key)}

    # (1) trace transport
    a = transport.in_process_trace_times(traces)
    server = Server()
    b = transport.client_trace_times(server, traces)
    ch1, ch2 = transport.trace_channels()
    c = transport.pymodaq_trace_times(ch1, ch2, traces)
    d = transport.json_list_trace_times(ch1, ch2, max(5, traces // 4))
    codec = transport.codec_pair_times(ch1, ch2, traces)
    floor = transport.floor_times(
        len(protocol.dumps_line(transport.reply_message(ch1, ch2))), traces)
    a_med = statistics.median(a)
    b_over = statistics.median(b) - a_med
    c_over, d_over = statistics.median(c), statistics.median(d)
    put("trace_a_in_process_ms", "trace (a) simulator in-process (limit)", summary(a, 1e3), "ms")
    put("trace_b_client_ms", "trace (b) PyRPLClient over loopback", summary(b, 1e3), "ms")
    put("trace_c_pymodaq_ms", "trace (c) = (a) + DataToExport serializer/socketpair",
        summary([a_med + x for x in c], 1e3), "ms")
    put("trace_d_json_lists_ms", "trace (d) = (a) + JSON number lists/socketpair",
        summary([a_med + x for x in d], 1e3), "ms")
    put("trace_b_overhead_ms", "  overhead (b) − (a)", summary([x - a_med for x in b], 1e3), "ms",
        "≤ 1.5 ms", b_over * 1e3 <= 1.5)
    put("trace_c_overhead_ms", "  overhead (c) − (a)", summary(c, 1e3), "ms")
    put("trace_d_overhead_ms", "  overhead (d) − (a)", summary(d, 1e3), "ms")
    for key, xs in (("b", b), ("c", [a_med + x for x in c]), ("d", [a_med + x for x in d])):
        put(f"trace_ratio_{key}", f"  ratio ({key}) / (a)", summary([x / a_med for x in xs]), "×")
    b_over = max(b_over, 1e-6)  # (b) can't beat (a) by more than noise
    for key, xs, over in (("c", c, c_over), ("d", d, d_over)):
        put(f"trace_overhead_{key}_over_b", f"  overhead ({key}) / overhead (b)",
            summary([x / b_over for x in xs]), "×", "≥ 10", over / b_over >= 10)
    put("trace_codec_pair_ms", "  our codec alone on the socketpair of (c), (d)",
        summary(codec, 1e3), "ms")
    put("trace_overhead_c_over_codec", "  overhead (c) / our codec alone",
        summary([x / statistics.median(codec) for x in c]), "×")
    put("trace_floor_ms", "  floor: same bytes, 2 processes, raw sockets", summary(floor, 1e3),
        "ms")
    put("trace_b_above_floor_ms", "  overhead (b) − floor", summary(
        [x - a_med - statistics.median(floor) for x in b], 1e3), "ms")

    # (6) server RSS idle (before any streaming client but the one above), then (5) scaling
    idle = [server.process.memory_info().rss / 1e6]
    scale = {}
    for n in (1, 2, 4, 8, 16):
        scale[n] = [scaling(server, n, seconds) for _ in range(1 if quick else max(1, runs // 2))]
    server.close()
    for n, results in scale.items():
        for k, label, unit, target, good in (
                ("aggregate", "traces/s aggregate", "/s", "", None),
                ("client_min", "traces/s per client min", "/s", "", None),
                ("client_max", "traces/s per client max", "/s", "", None),
                ("fairness", "fairness min/mean", "%", "≥ 50 %", lambda v: v >= 50),
                ("server_cpu_percent", "server CPU", "%", "", None),
                ("server_rss_mb", "server RSS", "MB", "", None)):
            s = summary([r[k] for r in results], 100 if k == "fairness" else 1)
            put(f"scaling_{n}_{k}", f"{n:2d} clients: {label}", s, unit, target,
                good(s["median"]) if good else None)
    best = max(statistics.median(r["aggregate"] for r in results) for results in scale.values())
    retained = summary([r["aggregate"] / best for r in scale[16]], 100)
    put("scaling_16_retained", "16 clients: aggregate / best of 1–16", retained, "%", "≥ 90 %",
        retained["median"] >= 90)
    full = [r["server_rss_mb"] for r in scale[16]]
    put("server_rss_idle_mb", "server RSS idle (mock)", summary(idle), "MB", "≤ 80 MB",
        statistics.median(idle) <= 80)
    put("server_rss_full_rate_mb", "server RSS at full rate, 16 clients (mock)", summary(full),
        "MB", "≤ 80 MB", statistics.median(full) <= 80)

    # (2) small calls
    pings = [calls.ping_latencies(n_calls) for _ in range(max(1, runs // 2 if quick else runs))]
    put("get_ping_p50_ms", "ping, 1 thread, p50", summary([percentile(v, 50) for v in pings], 1e3),
        "ms")
    put("get_ping_p99_ms", "ping, 1 thread, p99", summary([percentile(v, 99) for v in pings], 1e3),
        "ms")
    single_p99 = None
    for method in ("get", "set"):
        for n in (1, 8, 32):
            per_run = [calls.call_latencies(n, max(n_calls // n, 20), method)
                       for _ in range(max(1, runs // 2 if quick else runs))]
            p50 = summary([percentile(v, 50) for v in per_run], 1e3)
            p99 = summary([percentile(v, 99) for v in per_run], 1e3)
            put(f"{method}_{n}_threads_p50_ms", f"{method}, {n} thread(s), p50", p50, "ms",
                "≤ 0.3 ms" if n == 1 else "", p50["median"] <= 0.3 if n == 1 else None)
            put(f"{method}_{n}_threads_p99_ms", f"{method}, {n} thread(s), p99", p99, "ms",
                "≤ 2 ms" if n == 8 else "", p99["median"] <= 2 if n == 8 else None)
            if (method, n) == ("get", 1):
                single_p99 = p99["median"]
    streaming = [calls.get_latencies_while_streaming(n_calls)[0]
                 for _ in range(max(1, runs // 2 if quick else runs))]
    put("get_streaming_p50_ms", "get, 1 thread, another client streaming, p50",
        summary([percentile(v, 50) for v in streaming], 1e3), "ms")
    s99 = summary([percentile(v, 99) for v in streaming], 1e3)
    put("get_streaming_p99_ms", "get, 1 thread, another client streaming, p99", s99, "ms")
    added = {k: v - single_p99 for k, v in s99.items()}
    put("get_streaming_added_p99_ms", "  streaming adds to p99", added, "ms", "≤ 1 ms",
        added["median"] <= 1)

    # (3) start-up
    mock = calls.startup_times(startup_runs)
    put("startup_mock_s", "ensure_server_running() to first reply, mock", summary(mock), "s",
        "≤ 1.5 s", statistics.median(mock) <= 1.5)
    fake = calls.startup_times(startup_runs, hostname="_FAKE_")
    put("startup_pyrpl_fake_s", "ensure_server_running() to first reply, PyRPL _FAKE_",
        summary(fake), "s", "≤ 3 s", statistics.median(fake) <= 3)
    restart = calls.reconnect_times(startup_runs)
    put("startup_restart_after_kill_s", "server SIGKILLed → next call answered (restarted)",
        summary(restart), "s", "≤ 2 s", statistics.median(restart) <= 2)

    # (3)/(4) plugin, through DAQ_Viewer
    from pymodaq_gui.qt_utils import mkQApp

    app = mkQApp("bench")
    duration = 1.048576e-3
    first = viewer.first_frame_times(startup_runs, duration)
    put("plugin_first_frame_s", "plugin init to first frame (DAQ_Viewer)", summary(first), "s",
        "≤ 2 s", statistics.median(first) <= 2)
    raw, through, cpu = [], [], []
    for _ in range(1 if quick else runs):  # the ratio varies most from run to run: every run
        demo = viewer.Demo(free_port())
        scope = demo.viewer("PyRPL_Scope_TCP", "Scope", "DAQ1D", duration=duration)
        raw.append(viewer.raw_rate(demo.port, seconds))
        rate, used = viewer.plugin_rate(demo, scope, seconds)
        through.append(rate)
        cpu.append(used)
        demo.close()
        app.processEvents()
    put("plugin_rate_raw_per_s", "scope grab rate, raw client (1 ms traces)", summary(raw), "/s")
    put("plugin_rate_viewer_per_s", "scope grab rate, DAQ_Viewer", summary(through), "/s")
    ratio = summary([v / r for v, r in zip(through, raw)], 100)
    put("plugin_rate_ratio", "  DAQ_Viewer / raw client", ratio, "%", "≥ 90 %",
        ratio["median"] >= 90)
    put("plugin_rate_viewer_cpu_percent", "  CPU of the viewer's process meanwhile", summary(cpu),
        "%")

    # (6) client overhead per plugin process
    server = Server()
    bare = [process_rss(_BARE) for _ in range(2)]
    with_client = [process_rss(_CLIENT, str(server.manager.port), server.state.token)
                   for _ in range(2)]
    server.close()
    put("client_overhead_rss_mb", "client overhead per plugin process (RSS)",
        summary([w - statistics.median(bare) for w in with_client]), "MB")

    # (7) the real PyRPL path on the virtual board
    path = pyrpl_path.figures(1 if quick else runs, seconds, 2.0 if quick else 5.0)
    for key, label in (("mock", "--mock"), ("fake", "PyRPL _FAKE_"),
                       ("virtual", "PyRPL, --hostname virtual (board started too)"),
                       ("ports", "PyRPL, a running virtual board by its ports")):
        xs = path[f"startup_{key}"]
        pyrpl_board = key in ("virtual", "ports")
        put(f"vboard_startup_{key}_s", f"server start to ready line, {label}", summary(xs), "s",
            "≤ 3 s" if pyrpl_board else "", statistics.median(xs) <= 3 if pyrpl_board else None)
    for key, label in (("mock", "PyRPLClient, --mock server"),
                       ("server", "PyRPLClient, server on the virtual board"),
                       ("in_process", "PyRPL in-process scope.single(), same board")):
        put(f"vboard_rate_{key}_per_s", f"scope traces/s (131 µs), {label}",
            summary(path[f"rate_{key}"]), "/s")
    put("vboard_idle_cpu_percent", "virtual board CPU while idle, PyRPL connected",
        summary(path["idle_cpu"]), "%", "≤ 1 %", statistics.median(path["idle_cpu"]) <= 1)

    # (8) the analyzers: spectrum analyzer at its widest span (131 µs traces)
    sa = analyzers.sa_figures(1 if quick else runs, seconds)
    for key, label in (("sa_mock", "spectra/s, PyRPLClient, --mock server"),
                       ("scope_mock", "  scope traces/s, same server and traces"),
                       ("sa_virtual", "spectra/s, PyRPLClient, server on the virtual board"),
                       ("scope_virtual", "  scope traces/s, same server and traces"),
                       ("sa_pyrpl_in_process",
                        "spectra/s, PyRPL's own spectrumanalyzer.single(), same board")):
        put(f"sa_{key.removeprefix('sa_')}_per_s", f"SA span 125 MHz: {label}", summary(sa[key]),
            "/s")

    # (8) the analyzers: the network analyzer on the virtual board and on the simulator
    na = analyzers.na_figures(1 if quick else max(1, runs // 2))
    for key, label in (("server", "server + client, as the NA viewer"),
                       ("backend", "PyRPL backend alone, no server"),
                       ("pyrpl", "PyRPL's own NetworkAnalyzer in-process"),
                       ("minimum", "physical minimum Σ (0.5 + avg)/rbw")):
        put(f"na_{key}_s", f"NA sweep, {label}", summary(na[key]), "s")
    ratio = summary(na["server_over_pyrpl"])
    put("na_server_over_pyrpl", "  server + client / PyRPL's own", ratio, "×", "≤ 1.1",
        ratio["median"] <= 1.1)
    put("na_backend_over_pyrpl", "  backend alone / PyRPL's own", summary(na["backend_over_pyrpl"]),
        "×")
    for key, label in (("pyrpl", "PyRPL's own"), ("server", "server + client")):
        put(f"na_{key}_over_minimum", f"  {label} / physical minimum",
            summary(na[f"{key}_over_minimum"]), "×")
    put("na_mock_s", "NA sweep, --mock server + client", summary(na["mock"]), "s")
    put("na_mock_minimum_s", "  its physical minimum", summary(na["mock_minimum"]), "s")
    ratio = summary(na["mock_over_minimum"])
    put("na_mock_over_minimum", "  --mock / physical minimum", ratio, "×", "≤ 1.1",
        ratio["median"] <= 1.1)
    scan = analyzers.daq_scan_figures(1 if quick else max(1, runs // 2))
    mock_point = statistics.median(na["mock_per_point"])
    put("na_mock_per_point_ms", "  --mock NA, time per point", summary(na["mock_per_point"], 1e3),
        "ms")
    put("na_daq_scan_per_point_ms", "DAQ_Scan (IQ actuator + IQ viewer), --mock, time per point",
        summary(scan, 1e3), "ms")
    put("na_daq_scan_over_mock", "  DAQ_Scan / --mock NA, per point",
        summary([x / mock_point for x in scan]), "×")
    fig = dict(sorted(fig.items(), key=lambda item: section(item[0])))  # stable: keeps the order
    return {"machine": machine(), "runs": runs, "quick": quick, "figures": fig}


SECTIONS = (("trace_", 1), ("get_", 2), ("set_", 2), ("startup_", 3), ("plugin_first", 3),
            ("plugin_rate", 4), ("scaling_", 5), ("server_rss", 6), ("client_overhead", 6), ("vboard_", 7),
            ("sa_", 8), ("na_", 8))


def section(key: str) -> int:
    """The issue's section of a figure: 1 transport, 2 small calls, 3 start-up, 4 plugin rate,
    5 scaling, 6 memory, 7 the real PyRPL path on the virtual board, 8 the analyzers."""
    return next(n for prefix, n in SECTIONS if key.startswith(prefix))


def table(result: dict) -> str:
    m = result["machine"]
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [f"{m['cores']} cores | Python {m['python']} | {m['platform']}", pk,
             f"runs: {result['runs']}{' (quick)' if result['quick'] else ''}", ""]
    titles = {1: "(1) trace transport, 2×16384 samples", 2: "(2) small calls", 3: "(3) start-up",
              4: "(4) plugin rate", 5: "(5) scaling, shortest traces", 6: "(6) memory",
              7: "(7) real PyRPL path, virtual board (loopback plant)",
              8: "(8) analyzers (NA: 1001 points, rbw 1 kHz, 1214 Hz applied; DAQ_Scan: 21 points)"}
    rows = [(f["section"], f["label"], f"{f['median']:.3f} {f['unit']}",
             f"{f['min']:.3f}–{f['max']:.3f}", f["target"],
             "" if f["ok"] is None else ("ok" if f["ok"] else "MISSED"))
            for f in result["figures"].values()]
    w = max(len(r[1]) for r in rows)
    lines.append(f"{'figure':{w}s}  {'median':>14s}  {'min–max':>19s}  target")
    current = None
    for sec, name, med, rng, target, ok in rows:
        if sec != current:
            current = sec
            lines.append(titles[sec])
        lines.append(f"{name:{w}s}  {med:>14s}  {rng:>19s}  {target} {ok}".rstrip())
    return "\n".join(lines)


def configure_logging() -> None:
    """The bench's output is its table: on stderr only its own warnings and anyone's errors (not
    PyMoDAQ's INFO/DEBUG records nor its warnings about optional packages)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    handler.addFilter(lambda record: record.levelno >= logging.ERROR
                      or record.name == "bench" or record.name.startswith("bench."))
    logging.getLogger().addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="under a minute: fewer runs and shorter durations, every figure")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    configure_logging()
    runs = min(args.runs, 2) if args.quick else args.runs
    result = run(runs, args.quick)
    bad = [k for k, f in result["figures"].items()
           if not all(math.isfinite(f[x]) for x in ("median", "min", "max"))]
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
