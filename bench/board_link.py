"""The board link's faults, one row each: how soon the server notices, how soon the board is ready
again after the fault ends, the calls failed and succeeded meanwhile, the registers the recovery
wrote; and the throughput of a plugin-like session on a lossy link next to a loss-free one.

Usage: ``python -m bench.board_link [--loss-seconds S] [--cut S] [--json]`` from the repository
root. Prints the tables in Markdown (docs/reliability.md, *Board link*).

Each row comes from tests/helpers/scripts/board_net_driver.py (what it does and measures is in its
docstring): a virtual Red Pitaya in faithful mode in the driver's process, our server on the
PyRPL path at its ports, one PyRPLClient. The faults of the virtual board itself (a stalled data
port, ``monitor_server`` killed with a FIN or a reset, a garbled reply, a reboot) run here
directly; the network ones (20 % random drop both ways for ``--loss-seconds`` while the session
streams, a pulled cable, a resetting router: iptables on the board's ssh and data ports) in a
private network namespace (tests/helpers/netns.py), when this runs as root with ``ip`` and
``iptables``; otherwise their rows say why they were skipped. The other program's reconnects
(a second PyRPL taking the board) are measured by tests/hardware/backends/test_pyrpl_link.py,
not here. About 2 minutes (with the network rows and 60 s of loss).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from tests.helpers.netns import IPTABLES, NamespaceUnavailable, exec_in, private_namespace
from tests.helpers.scripts import BOARD_NET_DRIVER

BOARD_FAULTS = {"stall": "data port stalled {cut:g} s", "fin": "monitor_server killed (FIN)",
                "rst": "monitor_server killed (RST)", "garbage": "one garbled reply",
                "reboot": "board reboot (2 s)"}
NETWORK_FAULTS = {"pull": "cable pulled {cut:g} s (100 % drop)",
                  "reset": "router resets {cut:g} s (TCP RST)"}
DRIVER_TIMEOUT = 600.0
"""Bound of one driver run (s)."""


def run_driver(command: list[str]) -> dict[str, Any]:
    """The driver's result. Raises RuntimeError with its output if it failed."""
    done = subprocess.run(command, check=False, capture_output=True, text=True,
                          timeout=DRIVER_TIMEOUT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BOARD_NET_RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the driver failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def measure(loss_seconds: float, cut: float) -> dict[str, Any]:
    """Every fault's result by name (``skipped``: why not measured)."""
    driver = [sys.executable, str(BOARD_NET_DRIVER), "--cut", str(cut)]
    result = run_driver(driver + ["--phases", ",".join(BOARD_FAULTS)])
    try:
        with private_namespace("pyrpl-bench") as ns:
            result.update(run_driver(exec_in(
                ns, *driver, "--iptables", str(IPTABLES), "--phases", "clean,loss,pull,reset",
                "--clean", "10", "--loss-seconds", str(loss_seconds))))
    except NamespaceUnavailable as exc:
        for name in ("clean", "loss", *NETWORK_FAULTS):
            result[name] = {"skipped": str(exc)}
    return result


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _calls(s: dict[str, Any]) -> str:
    failed = s["not_ready"] + s["timeout"] + s["error"]
    detail = ", ".join(f"{n} {what}" for n, what in ((s["not_ready"], "-32004"),
                                                    (s["timeout"], "timed out"),
                                                    (s["error"], "other")) if n)
    return f"{failed}{f' ({detail})' if detail else ''} / {s['ok']}"


def fault_row(label: str, r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"| {label} | skipped: {r['skipped']} | | | | |"
    if "during" not in r:
        return f"| {label} | not measured: {'; '.join(r['problems'])} | | | | |"
    written = r.get("writes_to_first_request")
    writes = "— (never ready)" if written is None else str(written)
    if written and r["device"].get("board_restarted_at"):
        writes += " (the restore of the settings applied)"
    recovery = _seconds(r["ready_after_restore"])
    if r["monitor_server_starts"] or r["killalls"]:
        recovery += (f" ({r['monitor_server_starts']} monitor_server start, "
                     f"{r['killalls']} killall)")
    return (f"| {label} | lost after {_seconds(r['lost_after_fault'])} | {recovery} | "
            f"{_calls(r['during'])} | {writes} | — |")


def loss_row(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"| 20 % random drop both ways | skipped: {r['skipped']} | | | | |"
    label = f"{r['loss'] * 100:.0f} % random drop both ways, {r['seconds']:.0f} s"
    outages = r["outages"]
    lost = ", ".join(f"{a:.1f} s" for a, _ in outages) or "none"
    back = ", ".join("never" if b is None else f"{b - a:.2f} s" for a, b in outages) or "—"
    return (f"| {label} | {len(outages)} outage(s), lost at {lost} | back after {back} "
            f"({r['monitor_server_starts']} monitor_server start, {r['killalls']} killall) | "
            f"{_calls(r['summary'])} | — (the session writes) | — |")


def throughput_row(name: str, r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"| {name} | skipped: {r['skipped']} | | |"
    s = r["summary"]
    return (f"| {name} | {r['traces_per_s']:.2f} ({r['traces']} in {r['seconds']:.0f} s) | "
            f"{r['calls_per_s']:.1f} | {_calls(s)}; worst end past its timeout "
            f"{s['worst_overrun']:+.2f} s |")


def table(result: dict[str, Any], cut: float) -> str:
    header = ("| fault | detection time | recovery time after the fault ends | calls failed / "
              "succeeded | registers written by the recovery | other program's reconnects |")
    lines = [header, "|---|---|---|---|---|---|"]
    for name, label in {**BOARD_FAULTS, **NETWORK_FAULTS}.items():
        lines.append(fault_row(label.format(cut=cut), result[name]))
    lines.append(loss_row(result["loss"]))
    lines += ["", "| session | traces/s | calls/s (succeeded) | calls failed / succeeded |",
              "|---|---|---|---|",
              throughput_row("loss-free", result["clean"]),
              throughput_row("20 % drop both ways", result["loss"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss-seconds", type=float, default=60.0)
    parser.add_argument("--cut", type=float, default=5.0, help="seconds of each cut and stall")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["PYMODAQ_PYRPL_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="pyrpl_bench_")
    result = measure(args.loss_seconds, args.cut)
    if args.json:
        print(json.dumps(result))
        return
    print(table(result, args.cut))


if __name__ == "__main__":
    main()
