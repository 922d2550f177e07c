"""``pymodaq-pyrpl``: run, inspect, stop and take over local PyRPL servers; run a virtual Red
Pitaya; install the shipped PyMoDAQ experiments and their default states.

Exit status: 0 success; 1 the operation failed or there was nothing to act on (the message says
which); 2 wrong usage. ``pymodaq-pyrpl server`` and ``virtual-board`` exit with their own status.

The commands import the client, the runtime folder and the server manager when they run, so
``virtual-board`` (the child process of a server on the hostname ``virtual``) starts without them.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, experiment_states
from .hardware import arguments, board_address, protocol
from .hardware.errors import PyrplPluginError


def _status_rows(timeout: float) -> list[dict[str, Any]]:
    from .hardware import runtime
    from .hardware.client import PyRPLClient

    rows = []
    for state in runtime.live_states():
        row: dict[str, Any] = {"port": state.port, "pid": state.pid, "backend": state.backend,
                               "board": state.hostname or "(simulated)", "plant": state.plant,
                               "ssh_port": state.ssh_port, "board_port": state.board_port,
                               "config": state.config, "started_at": state.started_at}
        client = PyRPLClient("127.0.0.1", state.port, state.token, "pymodaq-pyrpl status",
                             timeout=timeout, reconnect=False)
        try:
            client.connect()
            status = client.status()
            device = status["device"]
            row.update(device=device["state"], reason=device["reason"], since=device["since"],
                       uptime=status["server"]["uptime"],
                       clients=[c for c in status["clients"] if c["client"] != "pymodaq-pyrpl status"])
        except PyrplPluginError as exc:
            row.update(device="unreachable", reason=str(exc), since=None, uptime=None,
                       clients=[])
        finally:
            client.close()
        rows.append(row)
    return rows


def _lease_holder(client: dict[str, Any], module: str) -> str:
    """Who holds ``module`` in a status entry of one client: the lease's owner (the plugins that
    took it) of that client, or the client alone when the lease names no owner."""
    owner = client.get("owners", {}).get(module)
    return f"{owner} of {client['client']}" if owner else client["client"]


def _print_table(rows: list[dict[str, Any]]) -> None:
    """The servers of :func:`_status_rows` as a table; then, for each device with a reason (not
    ready), its state, since when (this computer's clock) and why."""
    from .hardware import runtime
    from .hardware.client.device import local_time

    if not rows:
        print(f"no local PyRPL server is running (runtime folder {runtime.runtime_dir()})")
        return
    header = ("PORT", "PID", "BACKEND", "BOARD", "PLANT", "DEVICE", "CLIENTS", "LEASES", "UPTIME")
    table = [header]
    for r in rows:
        names = ", ".join(c["client"] + ("*" if c["hold"] else "") for c in r["clients"]) or "-"
        leases = "; ".join(f"{m}:{_lease_holder(c, m)}" for c in r["clients"]
                           for m in c["leases"]) or "-"
        uptime = "-" if r["uptime"] is None else _duration(r["uptime"])
        board = r["board"]
        if board_address.has_ports(board):
            board += board_address.describe_ports(r["ssh_port"], r["board_port"])
        table.append((str(r["port"]), str(r["pid"]), r["backend"], board, r["plant"] or "-",
                      r["device"], names, leases, uptime))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("(* = holds the server alive)")
    for r in rows:
        if r["reason"]:
            since = f" since {local_time(r['since'])}" if r["since"] else ""
            print(f"port {r['port']}: {r['device']}{since}: {r['reason']}")


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m{s:02d}s" if hours else f"{m}m{s:02d}s"


def cmd_status(args: argparse.Namespace) -> int:
    rows = _status_rows(args.timeout)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from .hardware import runtime
    from .hardware.server_manager import stop_local_server

    ports = [s.port for s in runtime.live_states()] if args.all else [args.port]
    stopped = 0
    for port in ports:
        state = stop_local_server(port)
        if state is None:
            print(f"no local PyRPL server runs on port {port}")
        else:
            print(f"stopped the PyRPL server on port {port} (pid {state.pid}, {state.describes()})")
            stopped += 1
    return 0 if stopped else 1


def cmd_takeover(args: argparse.Namespace) -> int:
    from .hardware.server_manager import takeover_local_server

    state = takeover_local_server(args.port, startup_timeout=args.startup_timeout,
                                  auto_stop=args.auto_stop)
    print(f"took over port {args.port}: the PyRPL server for {state.describes()} runs again with a new "
          f"token (pid {state.pid}); previous clients are refused for good. It stops after "
          f"{args.auto_stop:g} s without a client holding it.")
    return 0


EXPERIMENTS = Path(__file__).parent / "resources" / "experiments"
"""The experiments (PyMoDAQ presets) shipped with the package."""


@dataclass
class _Shipped:
    """One file an experiment installs: its content and where PyMoDAQ reads it."""

    content: bytes
    target: Path
    replaceable: Callable[[Path], bool] = lambda path: False
    """Whether an installed file that differs is a placeholder, replaced without --force."""

    def state(self) -> str:
        """"not installed", "installed", "placeholder" (replaced without --force) or "modified"."""
        if not self.target.exists():
            return "not installed"
        if self.target.read_bytes() == self.content:
            return "installed"
        return "placeholder" if self.replaceable(self.target) else "modified"


def _experiments() -> tuple[dict[str, list[_Shipped]], Path]:
    """Each shipped experiment's files (the experiment, then its default state if it has one), and
    PyMoDAQ's experiments folder (imports PyMoDAQ)."""
    from pymodaq.utils.config import get_set_experiment_path, get_set_state_path

    folder = Path(get_set_experiment_path())
    shipped = {}
    for path in sorted(EXPERIMENTS.glob("*.xml")):
        files = [_Shipped(path.read_bytes(), folder / path.name)]
        if path.stem in experiment_states.STATES:
            target = Path(get_set_state_path(path.stem)) / f"{experiment_states.STATE_NAME}.state"
            content = experiment_states.state_bytes(path.stem, _experiment_modules(path))
            files.append(_Shipped(content, target, _empty_state))
        shipped[path.stem] = files
    return shipped, folder


def _experiment_modules(path: Path) -> dict[str, str]:
    """module name → "actuator" or "detector", in the experiment file's order."""
    from pymodaq_gui.parameter import Parameter, ioxml

    settings = Parameter.create(name="Preset", type="group",
                                children=ioxml.XML_file_to_parameter(path))
    return {child["name"]: kind for kind in ("actuator", "detector")
            for child in settings.child(kind).children()}


def _empty_state(path: Path) -> bool:
    """A state without steps: the ``default`` PyMoDAQ creates for an experiment loaded before
    its state was installed."""
    from pymodaq_utils.utils import read_binary_and_deserialize

    try:
        data = read_binary_and_deserialize(path)
    except Exception:  # not a state PyMoDAQ can read: the user's to decide (--force)
        return False
    return all(isinstance(item, bool) for item in data)  # only the header's flags


def _experiment_state(files: list[_Shipped]) -> str:
    states = [f.state() for f in files]
    if "modified" in states:
        return "modified"
    return "installed" if set(states) == {"installed"} else "not installed"


def cmd_experiments_list(args: argparse.Namespace) -> int:
    shipped, folder = _experiments()
    width = max(len(name) for name in shipped)
    print(f"experiments shipped with pymodaq_plugins_pyrpl (PyMoDAQ's folder: {folder}):")
    for name, files in shipped.items():
        extra = " (with its default state)" if len(files) > 1 else ""
        print(f"  {name.ljust(width)}  {_experiment_state(files)}{extra}")
    print("install them with 'pymodaq-pyrpl experiments install'; load one with "
          "'dashboard -x NAME'")
    return 0


def cmd_experiments_install(args: argparse.Namespace) -> int:
    shipped, _ = _experiments()
    refused = []
    for name, files in shipped.items():
        for file in files:
            state = file.state()
            what = "experiment" if file is files[0] else "default state"
            if state == "installed":
                print(f"{name}: {what} already installed, unchanged ({file.target})")
            elif state == "modified" and not args.force:
                print(f"{name}: {file.target} differs from the shipped {what}; not overwritten "
                      f"(use --force to replace it)")
                refused.append(name)
            else:
                file.target.parent.mkdir(parents=True, exist_ok=True)
                file.target.write_bytes(file.content)
                done = {"modified": "replaced", "placeholder": "replaced PyMoDAQ's empty"}.get(
                    state, "installed")
                print(f"{name}: {what} {done} ({file.target})")
    if refused:
        names = ", ".join(dict.fromkeys(refused))
        print(f"error: {len(set(refused))} experiment(s) not installed: {names}", file=sys.stderr)
        return 1
    print("load one in PyMoDAQ's dashboard with 'dashboard -x pyrpl_demo' (or its Experiment menu)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pymodaq-pyrpl",
                                     description="Manage the PyRPL servers of pymodaq_plugins_pyrpl.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} "
                        f"(protocol {protocol.PROTOCOL_VERSION})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("server", help="run a server in the foreground (same options as "
                        "python -m pymodaq_plugins_pyrpl.hardware.server; see server --help)",
                        add_help=False)
    commands.add_parser("virtual-board", help="run a virtual Red Pitaya in the foreground, which "
                        "PyRPL drives over ssh and its monitor_server like a real board (see "
                        "virtual-board --help)", add_help=False)
    commands.add_parser("demo", help="drive the simulated board through the real plugins, headless: "
                        "prints a table and writes a plot (see demo --help)", add_help=False)
    status = commands.add_parser("status", help="list the running local servers")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--timeout", type=arguments.seconds(positive=True), default=3.0, help="seconds per server")
    status.set_defaults(run=cmd_status)
    stop = commands.add_parser("stop", help="stop a local server (its board's outputs keep running)")
    which = stop.add_mutually_exclusive_group()
    which.add_argument("--port", type=arguments.port, default=protocol.DEFAULT_PORT,
                       help="port of the server (default %(default)s)")
    which.add_argument("--all", action="store_true", help="stop every local server")
    stop.set_defaults(run=cmd_stop)
    takeover = commands.add_parser(
        "takeover", help="restart a local server with a new token: programs still using it are "
                         "refused for good, and a new program can use the board")
    takeover.add_argument("--port", type=arguments.port, default=protocol.DEFAULT_PORT,
                          help="port of the server (default %(default)s)")
    takeover.add_argument("--auto-stop", type=arguments.seconds(positive=False), default=60.0, metavar="SECONDS",
                          help="the new server stops after SECONDS without a holding client "
                               "(default %(default)s)")
    takeover.add_argument("--startup-timeout", type=arguments.seconds(positive=True), default=60.0, metavar="SECONDS")
    takeover.set_defaults(run=cmd_takeover)
    experiments = commands.add_parser(
        "experiments", help="the PyMoDAQ experiments (presets) shipped with this package")
    actions = experiments.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list them and whether they are installed")
    listing.set_defaults(run=cmd_experiments_list)
    install = actions.add_parser(
        "install", help="copy them into PyMoDAQ's experiments folder and their default states "
                        "into its states folder (a file that differs from the shipped one is kept "
                        "unless --force; PyMoDAQ's own empty default state is replaced)")
    install.add_argument("--force", action="store_true",
                         help="replace experiments that differ from the shipped ones")
    install.set_defaults(run=cmd_experiments_install)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["server"]:
        from .hardware.server import main as server_main

        return server_main(argv[1:])
    if argv[:1] == ["virtual-board"]:
        from .virtual_board.command import main as virtual_board_main

        return virtual_board_main(argv[1:])
    if argv[:1] == ["demo"]:
        from .demo import main as demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PyrplPluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
