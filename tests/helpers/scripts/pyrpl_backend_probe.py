"""Drives :class:`PyrplBackend` through real PyRPL in a subprocess and prints the results as JSON.

Run by ``tests/hardware/backends/test_pyrpl.py``; importing PyRPL inside the pytest process would
create a QApplication and configure logging there. Usage: ``python pyrpl_backend_probe.py SCENARIO
BOARD`` with SCENARIO one of ``full``, ``priming``, ``closing`` (BOARD ``fake``: PyRPL's fake board
``_FAKE_``; ``virtual``: a virtual board, the backend's own for ``full``, this probe's own, reached
at its ports, for ``priming`` and ``closing``), or ``open-error HOSTNAME``. Every backend call runs
in one dedicated thread, as in the server. The last stdout line starting with ``PROBE_RESULT``
holds the JSON result.
"""
from __future__ import annotations

import json
import logging
import math
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

from pymodaq_plugins_pyrpl.hardware import catalogue, errors  # noqa: E402
from pymodaq_plugins_pyrpl.hardware.backends.board_link.client import BoardClient  # noqa: E402
from pymodaq_plugins_pyrpl.hardware.backends.pyrpl import PyrplBackend  # noqa: E402

EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backend")


def run(function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function`` in the backend thread and wait for it."""
    return EXECUTOR.submit(function, *args).result(timeout=60)


def outcome(function: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Call in the backend thread; the result, or the exception's class and message."""
    try:
        return {"ok": True, "value": run(function, *args)}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}


def representative(attribute: catalogue.Attribute, current: Any) -> Any:
    """A valid value for ``attribute`` that differs from ``current``, quantized by the catalogue."""
    if attribute.kind == "bool":
        return not current
    if attribute.kind == "select":
        if attribute.name == "pause_gains" and current != "pi":
            return "pi"  # with ``paused`` next, freezes a running integrator: ival reads back
        return next(o for o in attribute.options if o != current and o != "noise")
    if attribute.kind == "filter":
        positive = [o for o in attribute.options if o > 0]
        return attribute.validate([positive[len(positive) // 2]])
    if attribute.wraps is not None:
        return attribute.validate(45.0)
    lo, hi = attribute.minimum, attribute.maximum
    target = {"frequency": 1234.5, "i": 100.0, "p": 0.75, "ival": 1.5, "trace_average": 4,
              "cycles_per_burst": 3, "duration": 0.01, "trigger_delay": 1e-4,
              "quadrature_factor": 10.0, "gain": 0.1, "amplitude": 0.3, "acbandwidth": 1000.0}
    value = target.get(attribute.name, lo + 0.3 * (hi - lo))
    value = min(max(value, lo), hi)
    if attribute.kind == "int":
        value = int(round(value))
    return attribute.validate(value)


HOSTNAMES = {"fake": "_FAKE_", "virtual": "virtual"}
"""The backend's hostname per BOARD argument."""


def full(board: str) -> dict[str, Any]:
    result: dict[str, Any] = {"board": board}
    backend = PyrplBackend(HOSTNAMES[board])
    result["state_before_open"] = list(backend.device_state())
    started = time.perf_counter()
    run(backend.open)
    result["open_seconds"] = time.perf_counter() - started
    result["pyrpl_thread_is_backend_thread"] = run(_qt_app_in_this_thread)
    result["state_after_open"] = list(run(backend.device_state))

    # get every attribute of every module
    result["get"] = {name: run(backend.get, name, list(spec.attributes))
                     for name, spec in catalogue.MODULES.items()}

    # set one representative value of each settable attribute, one set call per attribute
    sets: dict[str, dict[str, Any]] = {}
    for name, spec in catalogue.MODULES.items():
        for attr_name, attribute in spec.attributes.items():
            if attribute.readonly:
                continue
            value = representative(attribute, result["get"][name][attr_name])
            applied = outcome(backend.set, name, {attr_name: value})
            sets.setdefault(name, {})[attr_name] = {"requested": value, "applied": applied}
    result["set"] = sets
    result["get_after_set"] = {name: run(backend.get, name, list(spec.attributes))
                               for name, spec in catalogue.MODULES.items()}
    # several values at once, as a client starting an ASG sends them
    result["set_many"] = outcome(backend.set, "asg1", {
        "trigger_source": "immediately", "output_direct": "out2", "waveform": "square",
        "frequency": catalogue.MODULES["asg1"].attributes["frequency"].validate(1000.0),
        "amplitude": 0.5, "offset": catalogue.MODULES["asg1"].attributes["offset"].validate(0.1)})
    result["set_refused"] = outcome(backend.set, "scope", {"sampling_time": 1e-6})

    # scope: asg1's square of set_many (1 kHz, -0.4 V to 0.6 V, continuous) on ch1, immediately,
    # then on a rising edge through 0.1 V with a delay
    scope: dict[str, Any] = {"source": run(backend.set, "scope", {
        "input1": "asg1", "input2": "out2", "threshold": 0.1, "hysteresis": 0.01})}
    run(backend.set, "asg1", {"cycles_per_burst": 0})
    for label, settings in (("immediately", {"trigger_source": "immediately", "duration":
                                             catalogue.SCOPE_DURATIONS[3]}),
                            ("edge", {"trigger_source": "ch1_positive_edge", "trigger_delay": 2e-4,
                                      "duration": catalogue.SCOPE_DURATIONS[4]})):
        applied = run(backend.set, "scope", settings)
        arm_started = time.perf_counter()
        wait = run(backend.scope_arm)
        time.sleep(wait)
        deadline = time.monotonic() + 5
        ready = run(backend.scope_ready)
        while not ready and time.monotonic() < deadline:
            time.sleep(0.01)
            ready = run(backend.scope_ready)
        fetch_started = time.perf_counter()
        trace = run(backend.scope_fetch)
        fetched = time.perf_counter()
        at_t0 = round(-trace.t0 / trace.dt)  # the sample at t = 0, the trigger
        scope[label] = {
            "applied": applied, "wait": wait, "ready": ready,
            "ch1": [str(trace.ch1.dtype), list(trace.ch1.shape)],
            "ch2": [str(trace.ch2.dtype), list(trace.ch2.shape)],
            "finite": bool(all(map(math.isfinite, trace.ch1)) and all(map(math.isfinite, trace.ch2))),
            "max_abs": float(max(abs(trace.ch1).max(), abs(trace.ch2).max())),
            "t0": trace.t0, "dt": trace.dt,
            "ch1_min": float(trace.ch1.min()), "ch1_max": float(trace.ch1.max()),
            "ch1_around_t0": trace.ch1[max(0, at_t0 - 3):at_t0 + 3].tolist(),
            "fetch_seconds": fetched - fetch_started, "acquire_seconds": fetched - arm_started,
        }
    run(backend.scope_arm)
    run(backend.scope_stop)
    scope["ready_after_stop"] = run(backend.scope_ready)
    result["scope"] = scope

    iq: dict[str, Any] = {}
    for name in ("iq0", "iq1", "iq2"):
        before = run(backend.get, name, ["frequency", "phase"])
        na_before = run(_na_registers, backend, name)
        started = time.perf_counter()
        iq[name] = outcome(backend.iq_read, name)
        iq[name]["seconds"] = time.perf_counter() - started
        iq[name]["settings_unchanged"] = run(backend.get, name, ["frequency", "phase"]) == before
        iq[name]["na_registers_restored"] = run(_na_registers, backend, name) == na_before
    iq["asg0"] = outcome(backend.iq_read, "asg0")
    result["iq"] = iq
    settle: dict[str, Any] = {"applied": run(backend.set, "iq1", catalogue.validate(
        "iq1", {"frequency": 2000.0, "bandwidth": [50.0, 0.0]}))}
    settle["remaining"] = run(backend.iq_settle_remaining, "iq1")
    settle["other_module"] = outcome(backend.iq_settle_remaining, "asg0")
    result["iq_settle"] = settle
    result["sampler"] = run(backend.sampler_read)

    # the board stops answering: a server that accepts, then stays silent
    result["link_loss"] = link_loss(backend, "silent")

    run(backend.close)
    run(backend.close)  # idempotent
    result["state_after_close"] = list(backend.device_state())
    result["get_after_close"] = outcome(backend.get, "asg0", ["frequency"])
    return result


def _qt_app_in_this_thread() -> bool:
    import pyrpl
    from qtpy import QtCore

    return pyrpl.APP.thread() is QtCore.QThread.currentThread()


def _na_registers(backend: PyrplBackend, name: str) -> list[int]:
    iq = getattr(backend._rp, name)
    return [iq._read(0x130), iq._read(0x134)]


def link_loss(backend: PyrplBackend, mode: str) -> dict[str, Any]:
    """The board's data port fails under the backend: its link is pointed at a server of the
    probe (a board's backend: its register link reconnects there; PyRPL's fake board: every module
    gets a board client of its own to it).

    ``silent``: the server accepts and never answers (board hung, cable pulled); ``eof``: it closes
    the connection (monitor server killed). Three calls, with the state after each.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def accept_once() -> None:
        conn, _ = listener.accept()
        if mode == "eof":
            conn.close()
        else:
            held.append(conn)  # keep it open and never answer
        listener.close()

    acceptor = threading.Thread(target=accept_once)
    acceptor.start()

    def swap_connection() -> None:
        if backend._link_keeper.link is not None:
            backend._link_keeper.link.port = port
            backend._link_keeper.link.connect()
            return
        client = BoardClient.connect("127.0.0.1", port)
        for module in backend._rp.modules.values():
            module._client = client

    run(swap_connection)
    acceptor.join(5)
    result: dict[str, Any] = {}
    for call in ("first", "second", "third"):
        started = time.perf_counter()
        result[call] = outcome(backend.sampler_read)
        result[call]["seconds"] = time.perf_counter() - started
        result[call]["state"] = list(run(backend.device_state))
    for conn in held:
        conn.close()
    return result


PRELOAD = {  # register address -> raw value of a previous session
    0x40200000: 1,                          # asg0 trigger_source = immediately (bits 0..2)
    0x40300000 + 8 * 0x10000 + 0x4: 1,      # asg0 output_direct = out1
    0x40300000 + 0x0: 11,                   # pid0 input = in2
    0x40300000 + 0x4: 2,                    # pid0 output_direct = out2
    0x40300000 + 6 * 0x10000 + 0x10C: 2,    # iq1 output_signal = pfd
}


def record_writes(writes: list[int], client_class: type) -> None:
    """From now on, append the address of every register write of the clients of
    ``client_class`` (PyRPL's ``DummyClient``, the backend's ``BoardClient``) to ``writes``."""
    original = client_class.writes

    def recording(self: Any, addr: int, values: Any) -> Any:
        writes.append(addr)
        return original(self, addr, values)

    client_class.writes = recording  # type: ignore[method-assign]


class FakeBoardMemory:
    """The registers of PyRPL's fake board (``DummyClient.fpgamemory``, one for every client)."""

    def backend(self) -> PyrplBackend:
        return PyrplBackend(HOSTNAMES["fake"])

    @staticmethod
    def client_class() -> type:
        from pyrpl.redpitaya_client import DummyClient

        return DummyClient

    def write(self, values: dict[int, int]) -> None:
        from pyrpl.redpitaya_client import DummyClient

        for addr, value in values.items():
            DummyClient.fpgamemory[str(addr)] = value

    def read(self, addresses: list[int]) -> dict[str, int]:
        from pyrpl.redpitaya_client import DummyClient

        return {str(a): DummyClient.fpgamemory[str(a)] for a in addresses}

    def snapshot(self, addresses: list[int], after_close: bool = False) -> dict[str, int]:
        """Every register ever written, ``addresses`` among them (the memory is a class
        attribute: it survives PyRPL's teardown)."""
        from pyrpl.redpitaya_client import DummyClient

        return dict(DummyClient.fpgamemory)

    def stop(self) -> None:
        pass


class VirtualBoardMemory:
    """The registers of a virtual board of this probe's own (the backend reaches it at its ports
    as a network board), through connections of this probe's own to its monitor server: a new
    one per access, as PyRPL's start-up ends the earlier ones (``killall monitor_server``)."""

    def __init__(self) -> None:
        from pymodaq_plugins_pyrpl.virtual_board.process import start_virtual_board

        self.board = start_virtual_board("loopback")

    def backend(self) -> PyrplBackend:
        return PyrplBackend(self.board.host, ssh_port=self.board.ssh_port,
                            board_port=self.board.port)

    @staticmethod
    def client_class() -> type:
        return BoardClient

    def _client(self) -> Any:
        from pyrpl.redpitaya_client import MonitorClient

        return MonitorClient(self.board.host, self.board.port, restartserver=lambda: None)

    def write(self, values: dict[int, int]) -> None:
        client = self._client()
        try:
            for addr, value in values.items():
                if client.writes(addr, [value]) is None:
                    raise OSError(f"writing the virtual board at {addr:#010x} failed")
        finally:
            client.close()

    def read(self, addresses: list[int]) -> dict[str, int]:
        client = self._client()
        try:
            return {str(a): int(client.reads(a, 1)[0]) for a in addresses}
        finally:
            client.close()

    def snapshot(self, addresses: list[int], after_close: bool = False) -> dict[str, int]:
        """The registers at ``addresses``. After the backend's close, a monitor server is started
        over ssh (as PyRPL does) in case the closed connection ended the one it used."""
        if not after_close:
            return self.read(addresses)
        import paramiko

        with paramiko.SSHClient() as ssh:
            ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            ssh.connect(self.board.host, self.board.ssh_port, "root", "root",
                        allow_agent=False, look_for_keys=False, timeout=10)
            ssh.exec_command(f"//opt//pyrpl///monitor_server {self.board.port}", timeout=10)
            deadline = time.monotonic() + 10
            while True:
                try:
                    return self.read(addresses)
                except (OSError, ValueError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def stop(self) -> None:
        self.board.stop()


BOARD_MEMORIES = {"fake": FakeBoardMemory, "virtual": VirtualBoardMemory}


def priming(board: str) -> dict[str, Any]:
    """A previous session's register state (``PRELOAD``) on the board, then open() and read
    every attribute: which of those registers change, which writes happen."""
    memory = BOARD_MEMORIES[board]()
    try:
        return _priming(board, memory)
    finally:
        memory.stop()


def _priming(board: str, memory: FakeBoardMemory | VirtualBoardMemory) -> dict[str, Any]:
    backend = memory.backend()
    writes: list[int] = []

    def preload_and_open() -> dict[str, Any]:
        memory.write(PRELOAD)
        backend.open()
        return memory.read(list(PRELOAD))

    after_open = run(preload_and_open)

    run(record_writes, writes, memory.client_class())
    values = {name: run(backend.get, name, list(spec.attributes))
              for name, spec in catalogue.MODULES.items()}
    result = {
        "board": board,
        "preload": {str(a): v for a, v in PRELOAD.items()},
        "after_open": after_open,
        "after_get": run(memory.read, list(PRELOAD)),
        "writes_during_get": writes,
        "asg0": {k: values["asg0"][k] for k in ("trigger_source", "output_direct")},
        "pid0": {k: values["pid0"][k] for k in ("input", "output_direct")},
        "iq1": {"output_signal": values["iq1"]["output_signal"]},
        "link_loss": link_loss(backend, "eof"),
    }
    run(backend.close)
    return result


CLOSING_SETTINGS = {
    "asg0": {"frequency": 1000.0, "amplitude": 0.5, "output_direct": "out1",
             "trigger_source": "immediately"},
    "pid0": {"setpoint": 0.1, "i": 100.0, "output_direct": "out2"},
}


def closing(board: str) -> dict[str, Any]:
    """A running ASG and PID, then close(): which registers does closing write, and do the
    settings' registers keep their values?"""
    memory = BOARD_MEMORIES[board]()
    try:
        return _closing(memory)
    finally:
        memory.stop()


def _closing(memory: FakeBoardMemory | VirtualBoardMemory) -> dict[str, Any]:
    backend = memory.backend()
    run(backend.open)
    for module, settings in CLOSING_SETTINGS.items():
        run(backend.set, module, settings)
    addresses = run(_settings_registers, backend)
    writes: list[int] = []

    def record_and_snapshot() -> dict[str, int]:
        record_writes(writes, memory.client_class())
        return memory.snapshot(addresses)

    before = run(record_and_snapshot)

    def close_and_snapshot() -> dict[str, int]:
        backend.close()
        return memory.snapshot(addresses, after_close=True)

    after = run(close_and_snapshot)
    return {"writes_during_close": writes, "memory_unchanged": before == after,
            "registers": len(before)}


def _settings_registers(backend: PyrplBackend) -> list[int]:
    """The addresses of the registers behind every catalogue attribute of the modules of
    ``CLOSING_SETTINGS``, but the integrator's ``ival``, which runs."""
    from pyrpl.attributes import BaseRegister

    addresses = set()
    for module in CLOSING_SETTINGS:
        m = getattr(backend._rp, module)
        for name in catalogue.MODULES[module].attributes:
            descriptor = getattr(type(m), name, None)
            if isinstance(descriptor, BaseRegister) and name != "ival":
                addresses.add(m._addr_base + descriptor.address)
    return sorted(addresses)


def open_error(hostname: str) -> dict[str, Any]:
    """open() fails: its error, the state, and the child processes left running (a virtual
    board's must not be)."""
    import psutil

    backend = PyrplBackend(hostname)
    started = time.perf_counter()
    result = outcome(backend.open)
    result["seconds"] = time.perf_counter() - started
    result["state"] = list(backend.device_state())
    result["children"] = [child.pid for child in psutil.Process().children(recursive=True)
                          if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    return result


def main() -> None:
    scenario = sys.argv[1]
    try:
        if scenario == "full":
            result = full(sys.argv[2])
        elif scenario == "priming":
            result = priming(sys.argv[2])
        elif scenario == "closing":
            result = closing(sys.argv[2])
        elif scenario == "open-error":
            result = open_error(sys.argv[2])
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    except Exception:
        traceback.print_exc()
        raise SystemExit(1)
    finally:
        EXECUTOR.shutdown(wait=False)
    print("PROBE_RESULT " + json.dumps(result, default=_jsonable), flush=True)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, errors.PyrplPluginError):
        return str(value)
    raise TypeError(f"not JSON: {value!r}")


if __name__ == "__main__":
    main()
