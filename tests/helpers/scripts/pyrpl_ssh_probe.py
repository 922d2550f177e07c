"""Drives the virtual board's ssh side with PyRPL's own ssh code and prints what it observed as
JSON (the last stdout line starting with ``PROBE_RESULT``).

Usage: ``python pyrpl_ssh_probe.py SCENARIO SSH_PORT PORT [FOLDER]``, the board on 127.0.0.1.
Run by ``tests/helpers/pyrpl_ssh.py`` in a subprocess: importing PyRPL creates a QApplication and
configures logging.

Scenarios:
- ``startserver``: ``RedPitaya(autostart=False)`` (ssh, OS version, loaded bitfile), then PyRPL's
  ``startserver()``, one more start typed by hand and ``endserver()``.
- ``scp``: PyRPL's ``SshShell`` uploads FOLDER/red_pitaya.bin to a path, into a folder and into
  a folder that does not exist.
- ``pyrpl``: unmodified ``Pyrpl(config=..., hostname, sshport, port, gui=False)``, timed; LEDs
  and an ASG frequency through it; ``_clear()``.
- ``pyrpl_virtual_delay``: the same with the ssh ``delay`` the PyRPL backend gives PyRPL for the
  virtual board; the OS version PyRPL read.
- ``reloadfpga``: ``RedPitaya(reloadfpga=True)``, timed; the LEDs read after the reload.
- ``hold``: unmodified ``Pyrpl(...)`` as in ``pyrpl`` (config FOLDER's name), sets the LEDs, then
  prints ``PROBE_READY {json}`` (its data and ssh connections' local addresses) and holds the
  board until a line arrives on stdin; then reports, without reading a register (PyRPL's client
  would spin on a closed connection), whether its data connection was ended by the board (an
  orderly close, FIN, or a reset), and exits at once: no ``_clear()``, so no ``killall``.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from typing import Any

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

from pyrpl import Pyrpl  # noqa: E402  (after logging is configured)
from pyrpl.redpitaya import RedPitaya  # noqa: E402
from pyrpl.sshshell import SshShell  # noqa: E402
from scp import SCPException  # noqa: E402

HOST = "127.0.0.1"


def startserver(ssh_port: int, port: int, folder: str) -> dict[str, Any]:
    rp = RedPitaya(config=None, hostname=HOST, sshport=ssh_port, port=port, autostart=False,
                   reloadfpga="auto", silence_env=True)
    try:
        started, running = rp.startserver(), rp._serverrunning
        answer = rp.ssh.ask(f"{rp.parameters['serverdirname']}/monitor_server {port + 1}")
        rp.endserver()
        return {"os_version": rp.os_version, "reload": rp._should_reload_fpga(),
                "started": started, "running": running, "port": rp.parameters["port"],
                "second_answer": answer}
    finally:
        rp.end_ssh()
        rp.ssh.ssh.close()


def scp(ssh_port: int, port: int, folder: str) -> dict[str, Any]:
    shell = SshShell(hostname=HOST, sshport=ssh_port, timeout=5)
    bitfile = f"{folder}/red_pitaya.bin"
    try:
        shell.ask("mkdir -p //opt//pyrpl//")
        shell.scp.put(bitfile, "//opt//pyrpl//fpga.bin")
        shell.scp.put(bitfile, "/tmp")
        listed = shell.ask("ls //opt//pyrpl//fpga.bin")
        try:
            shell.scp.put(bitfile, "/nowhere/fpga.bin")
            missing = "uploaded"
        except SCPException as exc:
            missing = str(exc)
        return {"listed": listed, "missing": missing}
    finally:
        shell.channel.close()
        shell.ssh.close()


def pyrpl(ssh_port: int, port: int, folder: str, **options: Any) -> dict[str, Any]:
    started = time.perf_counter()
    p = Pyrpl(config="probe", hostname=HOST, sshport=ssh_port, port=port, gui=False, **options)
    seconds = time.perf_counter() - started
    try:
        p.rp.hk.led = 0b1010
        p.rp.asg0.frequency = 12345.0
        return {"seconds": seconds, "led": p.rp.hk.led, "frequency": p.rp.asg0.frequency,
                "port": p.rp.parameters["port"], "os_version": p.rp.os_version}
    finally:
        p._clear()


def pyrpl_virtual_delay(ssh_port: int, port: int, folder: str) -> dict[str, Any]:
    from pymodaq_plugins_pyrpl.hardware.backends.pyrpl import VIRTUAL_SSH_DELAY

    return pyrpl(ssh_port, port, folder, delay=VIRTUAL_SSH_DELAY)


def reloadfpga(ssh_port: int, port: int, folder: str) -> dict[str, Any]:
    started = time.perf_counter()
    rp = RedPitaya(config=None, hostname=HOST, sshport=ssh_port, port=port, reloadfpga=True,
                   silence_env=True)
    seconds = time.perf_counter() - started
    try:
        return {"seconds": seconds, "led": rp.hk.led}
    finally:
        rp.end_all()
        rp.ssh.ssh.close()


def hold(ssh_port: int, port: int, folder: str) -> dict[str, Any]:
    p = Pyrpl(config=os.path.basename(folder) or "hold", hostname=HOST, sshport=ssh_port,
              port=port, gui=False)
    p.rp.hk.led = 0b0110
    data = p.rp.client.socket
    ready = {"data": data.getsockname(), "ssh": p.rp.ssh.ssh.get_transport().sock.getsockname(),
             "led": p.rp.hk.led}
    print("PROBE_READY " + json.dumps(ready), flush=True)
    sys.stdin.readline()
    data.setblocking(False)
    try:
        ended = "fin" if data.recv(1) == b"" else "data"
    except BlockingIOError:
        ended = "open"
    except ConnectionResetError:
        ended = "rst"
    print("PROBE_RESULT " + json.dumps({"data_connection": ended}), flush=True)
    os._exit(0)  # no _clear(), no destructors: the board is left as it is


def main() -> None:
    scenario, ssh_port, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    folder = sys.argv[4] if len(sys.argv) > 4 else ""
    try:
        result = globals()[scenario](ssh_port, port, folder)
    except Exception:
        result = {"error": traceback.format_exc()}
    print("PROBE_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
