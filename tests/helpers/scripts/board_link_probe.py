"""Drives :class:`PyrplBackend`'s board link through real PyRPL and prints what it observed as JSON
(the last stdout line starting with ``PROBE_RESULT``). Every backend call runs in one dedicated
thread, as in the server.

Usage: ``python board_link_probe.py SCENARIO ARGS...``:

- ``session SSH_PORT PORT CONFIG SETTINGS``: a backend on the board at 127.0.0.1 (its ssh and
  data ports; the board runs in the caller's process, which counts its register writes), PyRPL
  config CONFIG (``-`` for none), opens, applies SETTINGS (JSON ``{module: {name: value}}``) and
  closes. Reports the writes PyRPL's start-up wanted and the write gate kept from the board.

Run by ``tests/hardware/backends/test_pyrpl_link.py`` in a subprocess: importing PyRPL creates a
QApplication and configures logging.
"""
from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

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
                              "gated_writes": backend._link.gated_writes}
    result["applied"] = {module: run(backend.set, module, values)
                         for module, values in json.loads(settings).items()}
    run(backend.close)
    return result


SCENARIOS = {"session": session}


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
