"""``python -m bench --quick --json`` runs and produces every figure (not their values: those depend
on the machine; docs/performance.md has a real run)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TRACE = ["trace_a_in_process_ms", "trace_b_client_ms", "trace_c_pymodaq_ms",
         "trace_d_json_lists_ms", "trace_b_overhead_ms", "trace_c_overhead_ms",
         "trace_d_overhead_ms", "trace_ratio_b", "trace_ratio_c", "trace_ratio_d",
         "trace_overhead_c_over_b", "trace_overhead_d_over_b", "trace_codec_pair_ms",
         "trace_overhead_c_over_codec", "trace_floor_ms", "trace_b_above_floor_ms"]
CALLS = ["get_ping_p50_ms", "get_ping_p99_ms"] + [
    f"{m}_{n}_threads_{q}_ms" for m in ("get", "set") for n in (1, 8, 32)
    for q in ("p50", "p99")] + [
    "get_streaming_p50_ms", "get_streaming_p99_ms", "get_streaming_added_p99_ms"]
STARTUP = ["startup_mock_s", "startup_pyrpl_fake_s", "startup_restart_after_kill_s",
           "plugin_first_frame_s"]
RATE = ["plugin_rate_raw_per_s", "plugin_rate_viewer_per_s", "plugin_rate_ratio",
        "plugin_rate_viewer_cpu_percent"]
SCALING = [f"scaling_{n}_{k}" for n in (1, 2, 4, 8, 16)
           for k in ("aggregate", "client_min", "client_max", "fairness", "server_cpu_percent",
                     "server_rss_mb")] + ["scaling_16_retained"]
MEMORY = ["server_rss_idle_mb", "server_rss_full_rate_mb", "client_overhead_rss_mb"]
PYRPL_PATH = [f"vboard_startup_{k}_s" for k in ("mock", "fake", "virtual", "ports")] + [
    f"vboard_rate_{k}_per_s" for k in ("mock", "server", "in_process")] + [
    "vboard_idle_cpu_percent"]
SPECTRUM_ANALYZER = [f"sa_{k}_per_s" for k in ("mock", "scope_mock", "virtual", "scope_virtual",
                                               "pyrpl_in_process")]
NETWORK_ANALYZER = [f"na_{k}_s" for k in ("server", "backend", "pyrpl", "minimum", "mock",
                                            "mock_minimum")] + [
    f"na_{k}" for k in ("server_over_pyrpl", "backend_over_pyrpl", "pyrpl_over_minimum",
                        "server_over_minimum", "mock_over_minimum", "daq_scan_over_mock")] + [
    "na_mock_per_point_ms", "na_daq_scan_per_point_ms"]
EVERY_FIGURE = (TRACE + CALLS + STARTUP + RATE + SCALING + MEMORY + PYRPL_PATH
                + SPECTRUM_ANALYZER + NETWORK_ANALYZER)


def test_quick_bench_produces_every_figure():
    # the environment is the conftest's isolated one (HOME, runtime folder, PyMoDAQ's etc folder)
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json"], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    chatter = [line for line in done.stderr.splitlines() if line.startswith(("INFO", "DEBUG"))
               or line.startswith("WARNING") and not line.startswith("WARNING bench")]
    assert not chatter, chatter[:10]  # the table (here JSON) and the bench's own warnings only
    result = json.loads(done.stdout)
    machine = result["machine"]
    assert machine["cores"] and machine["python"] and machine["packages"]["pymodaq_plugins_pyrpl"]
    figures = result["figures"]
    missing = [key for key in EVERY_FIGURE if key not in figures]
    assert not missing, f"figures missing: {missing}"
    for key in EVERY_FIGURE:
        figure = figures[key]
        for field in ("median", "min", "max"):
            assert isinstance(figure[field], float) and math.isfinite(figure[field]), (key, field)
        assert figure["min"] <= figure["median"] <= figure["max"], key
        assert figure["unit"] and figure["label"]
