"""``pymodaq-pyrpl virtual-board``: run a virtual Red Pitaya in the foreground until Ctrl-C or
SIGTERM (exit status 0).

Once it serves, it prints exactly one line to stdout,
``PYRPL_VIRTUAL_BOARD_READY {"host": H, "ssh_port": N, "port": M, "pid": P}``
(:func:`ready_line`), then how to connect to stderr. Exit status 2: wrong usage (an unknown plant
or mode); 3: a port cannot be opened.

The ports default to 0, free ports chosen at start (the ready line says which): ssh's own port 22
needs root and is this machine's sshd, and a fixed port would collide between two boards.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from ..hardware import arguments
from ..hardware.sockets import is_loopback

logger = logging.getLogger(__name__)

READY_PREFIX = "PYRPL_VIRTUAL_BOARD_READY"


@dataclass(frozen=True)
class Ready:
    """What the ready line says: where the board serves, and its process."""

    host: str
    ssh_port: int
    port: int
    pid: int


def ready_line(ready: Ready) -> str:
    """The line (without newline) the command prints to stdout once the board serves."""
    return f"{READY_PREFIX} {json.dumps(ready.__dict__)}"


def parse_ready_line(line: str) -> Ready | None:
    """The :class:`Ready` of a ready line (trailing whitespace ignored), None if ``line`` is not
    one."""
    prefix, _, payload = line.rstrip().partition(" ")
    if prefix != READY_PREFIX:
        return None
    try:
        info: Any = json.loads(payload)
        ready = Ready(str(info["host"]), info["ssh_port"], info["port"], info["pid"])
    except (ValueError, TypeError, KeyError):
        return None
    numbers = (ready.ssh_port, ready.port, ready.pid)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        return None
    return ready


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pymodaq-pyrpl virtual-board",
        description="Run a virtual Red Pitaya: PyRPL (its GUI, its scripts, this package's "
                    "server) drives it over ssh and its monitor_server like a real board.")
    parser.add_argument("--plant", default="loopback",
                        help="what connects the outputs to the inputs: 'loopback' (cables "
                             "out1->in1, out2->in2) or 'resonator[:f0=HZ,q=Q,gain=G]'; default "
                             "%(default)s")
    parser.add_argument("--ssh-port", type=arguments.port, default=0, metavar="N",
                        help="ssh port (PyRPL's sshport); default 0: a free port")
    parser.add_argument("--port", type=arguments.port, default=0, metavar="M",
                        help="monitor_server port (PyRPL's port); default 0: a free port")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; default %(default)s")
    parser.add_argument("--mode", choices=("shared", "faithful"), default="shared",
                        help="shared: many connections to one monitor_server; faithful: one "
                             "client per monitor_server, which ends with it, as on a board; "
                             "default %(default)s")
    parser.add_argument("--user", default="root", help="ssh user; default %(default)s")
    parser.add_argument("--password", default="root", help="ssh password; default %(default)s")
    parser.add_argument("--seed", type=arguments.seed, help="random seed of the noise (reproducible)")
    parser.add_argument("--until-stdin-closes", action="store_true",
                        help="also stop when standard input closes: a parent process that "
                             "holds it open stops the board by exiting, however it exits")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    return parser


def how_to_connect(ready: Ready, user: str, password: str) -> str:
    """What to tell a user about reaching the board at ``ready``."""
    login = "" if (user, password) == ("root", "root") else f", user={user!r}, password=..."
    return (
        f"virtual Red Pitaya on {ready.host}: ssh port {ready.ssh_port}, monitor_server port "
        f"{ready.port} (pid {ready.pid}). Ctrl-C stops it.\n"
        "  PyRPL:   Pyrpl(config='virtual', hostname="
        f"{ready.host!r}, sshport={ready.ssh_port}, port={ready.port}{login})\n"
        f"           or REDPITAYA_HOSTNAME={ready.host} REDPITAYA_SSHPORT={ready.ssh_port} "
        f"REDPITAYA_PORT={ready.port} for PyRPL's scripts and GUI\n"
        f"  server:  pymodaq-pyrpl server --hostname {ready.host} --ssh-port {ready.ssh_port} "
        f"--board-port {ready.port}\n"
        f"  plugins: hostname {ready.host}, ssh port {ready.ssh_port}, monitor port {ready.port} "
        "(or hostname 'virtual' for a board started with the server)")


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def main(argv: list[str] | None = None) -> int:
    """Run the board until SIGINT or SIGTERM (or, with ``--until-stdin-closes``, the end of
    standard input); the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING - 10 * args.verbose,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not is_loopback(args.host):
        logger.warning("listening on %s: anyone who can reach it logs in with the password and "
                       "drives the virtual board", args.host)
    from .redpitaya import VirtualRedPitaya  # here: the ready line's parser stays light (process)

    try:
        board = VirtualRedPitaya(args.plant, args.mode, args.host, args.user, args.password,
                                 args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = _stop_pipe()
    try:
        ssh_port, port = board.start(args.ssh_port, args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}: {exc.strerror or exc}", file=sys.stderr)
        return 3
    try:
        if args.until_stdin_closes:
            threading.Thread(target=_stop_at_end_of_input, args=(stop[1],), daemon=True,
                             name="stdin-watch").start()
        ready = Ready(args.host, ssh_port, port, os.getpid())
        print(ready_line(ready), flush=True)
        print(how_to_connect(ready, args.user, args.password), file=sys.stderr, flush=True)
        os.read(stop[0], 1)  # blocks until a stop signal or the end of the input
    finally:
        board.close()
    return 0


def _stop_pipe() -> tuple[int, int]:
    """A pipe (read end, write end) to which SIGINT and SIGTERM write a byte, whichever thread
    the kernel delivers them to: a Python handler alone runs in the main thread only when it
    wakes, and a signal delivered to another thread (an ssh or monitor thread, numpy's) does not
    wake it."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda number, frame: None)
    return read_end, write_end


def _stop_at_end_of_input(stop: int) -> None:
    """Write to the ``stop`` pipe when standard input reaches its end (the parent holding it
    exited)."""
    while sys.stdin.buffer.read1(4096):
        pass
    os.write(stop, b"\0")
