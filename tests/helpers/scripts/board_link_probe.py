"""Drives :class:`PyrplBackend`'s board link through real PyRPL and prints what it observed as JSON
(the last stdout line starting with ``PROBE_RESULT``). Every backend call runs in one dedicated
thread, as in the server.

Usage: ``python board_link_probe.py SCENARIO ARGS...``:

- ``session SSH_PORT PORT CONFIG SETTINGS``: a backend on the board at 127.0.0.1 (its ssh and
  data ports; the board runs in the caller's process, which counts its register writes), PyRPL
  config CONFIG (``-`` for none), opens, applies SETTINGS (JSON ``{module: {name: value}}``) and
  closes. Reports the writes PyRPL's start-up wanted and the write gate kept from the board, and
  whether PyRPL's objects all hold the backend's register link.
- ``fault MODE FAULT``: a virtual board of MODE (``shared``, ``faithful``) in this process, a
  backend on it with an ASG and a PID running, its :meth:`~PyrplBackend.maintain` steps run as
  the server runs them (on the backend thread, sleeping what they return); then FAULT: ``stall``
  (the data port stops answering for :data:`OUTAGE` s; one call is made meanwhile), ``fin`` /
  ``rst`` (``killall monitor_server`` by someone else, ending our connection so), ``garbage``
  (one garbled reply, to a call), ``reboot`` (the board reboots, down :data:`OUTAGE` s),
  ``reload`` (someone loads the bitfile again: registers at reset values, the link stays up).
  Reports when the link was seen ``lost`` and ``ready`` again, the register writes and
  ``killall`` lines between the fault and the first call after it, that call's values, and the
  writes the settings took when first applied (what a restore after a reboot writes again).
- ``taken KILLALL_CLOSE THEN``: a faithful virtual board in this process, a backend on it with
  its upkeep running; another program (unmodified PyRPL, ``pyrpl_ssh_probe.py hold`` in a
  subprocess) starts on the board, its ``killall`` ending our connection by KILLALL_CLOSE
  (``fin``, ``rst``). Reports when the backend saw it ``taken``, what a call says then, the
  other program's connection and our ``killall`` lines while taken, then THEN: ``take-back``
  (:meth:`take_board`) or ``close`` (the backend closed while taken).
- ``in-use HOW``: the other program holds the board first; then a backend opens on it
  (HOW ``refuse``: a default one; ``take-over``: one with ``take_over``).

Run by ``tests/hardware/backends/test_pyrpl_link.py`` in a subprocess: importing PyRPL creates a
QApplication and configures logging.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # the board's ssh server, probed

from pymodaq_plugins_pyrpl.hardware.backends.pyrpl import PyrplBackend

EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backend")
HOST = "127.0.0.1"


def run(function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function`` in the backend thread and wait for it."""
    return EXECUTOR.submit(function, *args).result(timeout=60)


def session(ssh_port: str, port: str, config: str, settings: str) -> dict[str, Any]:
    backend = PyrplBackend(HOST, "" if config == "-" else config, ssh_port=int(ssh_port),
                           board_port=int(port))
    run(backend.open)
    result: dict[str, Any] = {"state": list(run(backend.device_state)),
                              "gated_writes": backend._link_keeper.link.gated_writes,
                              "modules_use_the_link": run(_modules_use_the_link, backend)}
    result["applied"] = {module: run(backend.set, module, values)
                         for module, values in json.loads(settings).items()}
    run(backend.close)
    return result


OUTAGE = 2.0
"""Seconds a stall or a reboot lasts."""
WAIT_STATE = 20.0
"""Seconds a state change may take to be seen (a loaded machine included)."""
RUNNING = {
    "asg0": {"waveform": "sin", "frequency": 10e3, "amplitude": 0.4, "offset": 0.0,
             "output_direct": "out1", "trigger_source": "immediately"},
    "pid0": {"setpoint": 0.1, "p": 0.5, "i": 100.0, "input": "in1", "output_direct": "out2"},
}


class Upkeep:
    """The server's link upkeep: ``maintain()`` on the backend thread, then sleep what it
    returned; every state seen, with its monotonic time, in :attr:`states`."""

    def __init__(self, backend: PyrplBackend) -> None:
        self.backend = backend
        self.states: list[tuple[float, str]] = []
        self.steps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self._watcher.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            delay = run(self.backend.maintain)
            self.steps.append(time.monotonic() - started)
            if delay is None:
                return
            self._stop.wait(delay)

    def _watch(self) -> None:
        while not self._stop.is_set():
            state = self.backend.device_state()[0]
            if not self.states or self.states[-1][1] != state:
                self.states.append((time.monotonic(), state))
            self._stop.wait(0.005)

    def wait_for(self, state: str, since: float) -> float:
        """The time ``state`` was first seen at or after ``since``; raises TimeoutError."""
        deadline = time.monotonic() + WAIT_STATE
        while time.monotonic() < deadline:
            for at, seen in list(self.states):
                if at >= since and seen == state:
                    return at
            time.sleep(0.01)
        raise TimeoutError(f"{state} not seen within {WAIT_STATE} s: {self.states}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._watcher.join(10)


def fault(mode: str, kind: str) -> dict[str, Any]:
    from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya

    board = VirtualRedPitaya(mode=mode, seed=11)  # type: ignore[arg-type]
    board.start(0, 0)
    backend = PyrplBackend(HOST, ssh_port=board.ssh_port, board_port=board.port)
    try:
        run(backend.open)
        writes = board.board.counts.writes
        for module, values in RUNNING.items():
            run(backend.set, module, values)
        setting_writes = board.board.counts.writes - writes
        before = {module: run(backend.get, module, list(values))
                  for module, values in RUNNING.items()}
        upkeep = Upkeep(backend)
        try:
            result = _fault(board, backend, upkeep, kind, before)
            result["setting_writes"] = setting_writes
            return result
        finally:
            upkeep.stop()
    finally:
        run(backend.close)
        board.close()


def _fault(board: Any, backend: PyrplBackend, upkeep: Upkeep, kind: str,
           before: dict[str, Any]) -> dict[str, Any]:
    vboard = board.board
    time.sleep(1.5)  # heartbeats run
    writes, clock_at = vboard.counts.writes, vboard.clock()
    result: dict[str, Any] = {}
    call: dict[str, Any] = {}
    started = time.monotonic()
    if kind == "stall":
        vboard.faults.stall()
        call = timed_outcome(backend.get, "asg0", ["frequency"])
        upkeep.wait_for("lost", started)
        time.sleep(max(0.0, started + OUTAGE - time.monotonic()))
        vboard.faults.resume()
        restored = time.monotonic()
    elif kind in ("fin", "rst"):
        vboard.link.killall_close = kind
        board.killall_monitors()
        restored = started
    elif kind == "garbage":
        vboard.faults.corrupt_echoes(1)
        call = timed_outcome(backend.get, "asg0", ["frequency"])
        restored = time.monotonic()
    elif kind == "reboot":
        board.reboot(OUTAGE)
        if not board.wait_rebooted(WAIT_STATE):
            raise TimeoutError("the board did not come back")
        restored = time.monotonic()
    elif kind == "reload":
        board.load_bitfile()
        restored = time.monotonic()
    else:
        raise SystemExit(f"unknown fault {kind!r}")
    if kind == "reload":  # the link stays up: the heartbeat sees the FPGA's counter restart
        lost = ready = _restored_at(backend, started)
    else:
        lost = upkeep.wait_for("lost", started)
        ready = upkeep.wait_for("ready", lost)
    # on the backend thread: after the upkeep step that made it ready, as a client's first call
    first_call_writes, link_info = run(lambda: (vboard.counts.writes - writes,
                                                backend.link_info()))
    result.update(
        detection=lost - started, recovery=ready - restored, outage_call=call,
        writes_before_first_call=first_call_writes,
        killalls=board.commands.killalls(since=clock_at),
        started_monitors=sum("monitor_server" in c.line and "killall" not in c.line
                             for c in board.commands.entries(since=clock_at)),
        states=[state for _, state in upkeep.states], link_info=link_info,
        longest_step=max(upkeep.steps))
    result["after"] = {module: run(backend.get, module, list(values))
                       for module, values in RUNNING.items()}
    result["before"] = before
    result["state"] = list(backend.device_state())
    return result


def _restored_at(backend: PyrplBackend, since: float) -> float:
    """When the backend reported a board restart (``board_restarted_at``), polled."""
    deadline = time.monotonic() + WAIT_STATE
    while backend.link_info()["board_restarted_at"] is None:
        if time.monotonic() > deadline:
            raise TimeoutError("no board restart reported")
        time.sleep(0.01)
    return time.monotonic()


def timed_outcome(function: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Call in the backend thread: the result or the exception's class, and the seconds."""
    started = time.monotonic()
    try:
        outcome: dict[str, Any] = {"ok": True, "value": run(function, *args)}
    except Exception as exc:  # noqa: BLE001 - reported
        outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    outcome["seconds"] = time.monotonic() - started
    return outcome


class OtherProgram:
    """Unmodified PyRPL holding the board (``pyrpl_ssh_probe.py hold``) in a subprocess."""

    def __init__(self, board: Any, folder: Path) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDPITAYA_")}
        env.update(HOME=str(folder), PYRPL_USER_DIR=str(folder), QT_QPA_PLATFORM="offscreen")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("pyrpl_ssh_probe.py")), "hold",
             str(board.ssh_port), str(board.port), str(folder)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)

    def report(self, tag: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # the test's timeout bounds this
            if line.startswith(tag + " "):
                return json.loads(line.split(" ", 1)[1])
        raise RuntimeError(f"the other program exited without {tag}")

    def release(self) -> dict[str, Any]:
        """Let it go: how its data connection was (``open``: never ended)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        result = self.report("PROBE_RESULT")
        self.proc.wait(timeout=10)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def taken(killall_close: str, then: str) -> dict[str, Any]:
    from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya

    board = VirtualRedPitaya(mode="faithful", seed=13)
    board.board.link.killall_close = killall_close  # type: ignore[assignment]
    board.start(0, 0)
    backend = PyrplBackend(HOST, ssh_port=board.ssh_port, board_port=board.port)
    other: OtherProgram | None = None
    try:
        run(backend.open)
        run(backend.set, "asg0", RUNNING["asg0"])
        upkeep = Upkeep(backend)
        try:
            started = time.monotonic()
            other = OtherProgram(board, Path(tempfile.mkdtemp(prefix="other-pyrpl-")))
            held = other.report("PROBE_READY")
            ready_at, clock_at = time.monotonic(), board.board.clock()
            connections = board.board.counts.connections
            taken_at = upkeep.wait_for("taken", started)
            result: dict[str, Any] = {
                "taken_after_ready": taken_at - ready_at, "held": held,
                "link_info": backend.link_info(), "reason": backend.device_state()[1],
                "call": timed_outcome(backend.get, "asg0", ["frequency"])}
            time.sleep(2.0)  # the other program works undisturbed
            result.update(
                states=[state for _, state in upkeep.states],
                killalls_while_taken=board.commands.killalls(since=clock_at),
                connections_while_taken=board.board.counts.connections - connections,
                clients_while_taken=board.board.monitor_clients())
            if then == "close":
                upkeep.stop()
                run(backend.close)
                result["killalls_of_close"] = board.commands.killalls(since=clock_at)
            else:
                result["take_board"] = timed_outcome(backend.take_board)
                result["after"] = list(backend.device_state())
                result["get_after"] = timed_outcome(backend.get, "asg0", ["frequency"])
                result["killalls_of_take_board"] = board.commands.killalls(since=clock_at)
            result["other"] = other.release()
            return result
        finally:
            upkeep.stop()
    finally:
        if other is not None:
            other.kill()
        run(backend.close)
        board.close()


def in_use(how: str) -> dict[str, Any]:
    from pymodaq_plugins_pyrpl.virtual_board.redpitaya import VirtualRedPitaya

    board = VirtualRedPitaya(mode="faithful", seed=17)
    board.start(0, 0)
    other = OtherProgram(board, Path(tempfile.mkdtemp(prefix="other-pyrpl-")))
    try:
        held = other.report("PROBE_READY")
        clock_at = board.board.clock()
        backend = PyrplBackend(HOST, ssh_port=board.ssh_port, board_port=board.port,
                               take_over=how == "take-over")
        result: dict[str, Any] = {"held": held, "open": timed_outcome(backend.open)}
        result["state"] = list(run(backend.device_state))
        result["killalls"] = board.commands.killalls(since=clock_at)
        result["clients"] = board.board.monitor_clients()
        result["other"] = other.release()
        run(backend.close)
        return result
    finally:
        other.kill()
        board.close()


def _modules_use_the_link(backend: PyrplBackend) -> bool:
    """Whether PyRPL's ``RedPitaya`` and every hardware module hold the backend's link."""
    rp = backend._rp
    return rp.client is backend._link_keeper.link and all(
        m._client is backend._link_keeper.link for m in rp.modules.values())


SCENARIOS = {"session": session, "fault": fault, "taken": taken, "in-use": in_use}


def main() -> None:
    try:
        result = SCENARIOS[sys.argv[1]](*sys.argv[2:])
    except Exception:  # noqa: BLE001 - reported on stderr, exit status 1
        traceback.print_exc()
        raise SystemExit(1)
    finally:
        EXECUTOR.shutdown(wait=False)
    print("PROBE_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
