"""Plugin figures side by side, in one run, on the simulated board (headless PyMoDAQ).

Usage: ``python bench/plugin_bench.py [--runs N] [--seconds S] [--duration D] [--json]``

- plugin initialization, server auto-start included, to the first scope frame through DAQ_Viewer;
- continuous scope grab through DAQ_Viewer vs. the raw client at the same settings (frames/s, ratio).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYMODAQ_PYRPL_RUNTIME_DIR", tempfile.mkdtemp(prefix="pyrpl_bench_"))

from pymodaq_plugins_pyrpl import __version__  # noqa: E402
from pymodaq_plugins_pyrpl.demo import Demo, _free_port  # noqa: E402
from pymodaq_plugins_pyrpl.hardware import runtime  # noqa: E402
from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient  # noqa: E402


def first_frame_times(runs: int, duration: float) -> list[float]:
    times = []
    for _ in range(runs):
        demo = Demo(_free_port())
        t0 = time.perf_counter()
        scope = demo.viewer("PyRPL_Scope_TCP", "Scope", "DAQ1D", duration=duration)
        demo.snap(scope)
        times.append(time.perf_counter() - t0)
        demo.close()
    return times


def plugin_rate(demo: Demo, scope, seconds: float) -> float:
    frames = []
    scope.grab_done_signal.connect(lambda dte: frames.append(time.perf_counter()))
    demo.wait(scope.grab_done_signal, lambda: scope.grab_data(grab_state=True))
    start, first = time.perf_counter(), len(frames)
    loop_until = start + seconds
    loop = demo.QtCore.QEventLoop()  # idle like an application's main loop, not spinning
    demo.QtCore.QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    scope.stop_grab()
    done = [t for t in frames[first:] if t <= loop_until]
    return len(done) / seconds


def raw_rate(port: int, seconds: float) -> float:
    state = runtime.read_state(port)
    with PyRPLClient("127.0.0.1", port, state.token, "bench raw") as client:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            client.acquire("scope")
            count += 1
        return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=1.048576e-3,
                        help="scope trace duration for the rate comparison (s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from pymodaq_gui.qt_utils import mkQApp

    app = mkQApp("plugin bench")
    startup = first_frame_times(args.runs, args.duration)
    demo = Demo(_free_port())
    scope = demo.viewer("PyRPL_Scope_TCP", "Scope", "DAQ1D", duration=args.duration)
    rates = {"raw_client": raw_rate(demo.port, args.seconds),
             "daq_viewer": plugin_rate(demo, scope, args.seconds)}
    demo.close()
    app.processEvents()
    result = {"machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                          "package": __version__},
              "first_frame_s": {"median": statistics.median(startup), "min": min(startup),
                                "max": max(startup)},
              "rate_per_s": rates, "ratio": rates["daq_viewer"] / rates["raw_client"],
              "duration_s": args.duration}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m, f = result["machine"], result["first_frame_s"]
    print(f"pymodaq_plugins_pyrpl {m['package']} | Python {m['python']} | {m['cpu_count']} cores")
    print(f"{'plugin init (server auto-start) to first frame':48s} {f['median']:.3f} s "
          f"({f['min']:.3f}–{f['max']:.3f})  target ≤ 2 s")
    print(f"{'continuous scope grab, raw client':48s} {rates['raw_client']:.1f} frames/s "
          f"(trace {args.duration * 1e3:.3f} ms)")
    print(f"{'continuous scope grab, DAQ_Viewer':48s} {rates['daq_viewer']:.1f} frames/s "
          f"= {result['ratio'] * 100:.0f} % of raw  target ≥ 90 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
