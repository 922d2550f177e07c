"""Ground truth for the catalogue: set values through PyRPL 0.9.9 and read them back, on PyRPL's
fake board or on a virtual board.

Run in its own process (importing PyRPL creates a QApplication), with
``QT_QPA_PLATFORM=offscreen`` and a private ``PYRPL_USER_DIR``, ``HOME`` and ``XDG_RUNTIME_DIR``::

    python pyrpl_quantization_probe.py [PORT] < request.json

Without PORT: PyRPL's fake board (``_FAKE_``). With PORT: the virtual board whose monitor server
listens on 127.0.0.1:PORT, through PyRPL's real ``MonitorClient`` (``pyrpl_client_probe.connect``,
no ssh).
stdin: ``{"cases": [[module, attribute, value], ...]}``.
stdout, one JSON line: ``{"results": [...], "options": {...}}`` where each result is
``{"value": <read back>}`` or ``{"error": "<exception>"}``, and ``options`` holds PyRPL's filter
option lists (``pid0.inputfilter``, ``iqN.inputfilter``, ``iqN.bandwidth``, ``iqN.acbandwidth``).

``DummyClient`` answers made-up filter constants, so on the fake board the upstream Verilog
constants are injected into the cache that ``FilterRegister.read_and_save`` fills
(``_<attribute>_<constant>`` on the module); the virtual board's registers hold them.
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Any

# Upstream FPGA (lneuhaus/pyrpl fpga/rtl): red_pitaya_pid_block.v FILTERSTAGES=4, FILTERSHIFTBITS=5,
# FILTERMINBW=10; red_pitaya_iq_block.v input filter 1 stage / 5 bits / 50 Hz, quadrature filter
# 2 stages (iq2: 4) / 5 bits / 10 Hz.
UPSTREAM_FILTER_CONSTANTS = {
    "pid": {"inputfilter": (4, 5, 10)},
    "iq": {"inputfilter": (1, 5, 50), "bandwidth": (2, 5, 10)},
    "iq2": {"inputfilter": (1, 5, 50), "bandwidth": (4, 5, 10)},
}


def inject_filter_constants(rp: Any) -> None:
    """Make every filter of ``rp`` see the upstream FPGA constants instead of DummyClient's."""
    for name in ("pid0", "pid1", "pid2", "iq0", "iq1", "iq2"):
        kind = name if name == "iq2" else name[:-1]
        for attribute, constants in UPSTREAM_FILTER_CONSTANTS[kind].items():
            for constant, value in zip(("filterstages", "shiftbits", "minbw"), constants):
                setattr(getattr(rp, name), f"_{attribute}_{constant}", value)


def read_back(rp: Any, module: str, attribute: str, value: Any) -> Any:
    """Set ``module.attribute = value`` and return what PyRPL reads back, as JSON-ready data."""
    instance = getattr(rp, module)
    setattr(instance, attribute, value)
    result = getattr(instance, attribute)
    if isinstance(result, (list, tuple)):
        return [float(x) for x in result]
    if isinstance(result, bool) or isinstance(result, int):
        return result
    return float(result)


def filter_options(rp: Any) -> dict[str, list[float]]:
    """PyRPL's valid cutoff lists, per ``module.attribute``."""
    options = {"pid0.inputfilter": type(rp.pid0).inputfilter.valid_frequencies(rp.pid0)}
    for name in ("iq0", "iq2"):
        iq = getattr(rp, name)
        options[f"{name}.inputfilter"] = type(iq).inputfilter.valid_frequencies(iq)
        options[f"{name}.bandwidth"] = type(iq).bandwidth.valid_frequencies(iq)
        options[f"{name}.acbandwidth"] = type(iq).acbandwidth.valid_frequencies(iq)
    return {key: [float(x) for x in values] for key, values in options.items()}


def fake_board() -> Any:
    """PyRPL's fake board, with the upstream filter constants."""
    import pyrpl
    import pyrpl.pyrpl as pyrpl_module

    pyrpl_module.default_pyrpl_config["modules"] = []
    p = pyrpl.Pyrpl(config="", hostname="_FAKE_", gui=False, loglevel="error")
    inject_filter_constants(p.rp)
    return p.rp


def main() -> None:
    """Read the cases from stdin, run them on the board of argv, print one JSON line."""
    logging.basicConfig(level=logging.CRITICAL)
    request = json.load(sys.stdin)
    if len(sys.argv) > 1:
        from pyrpl_client_probe import connect  # this script's folder is sys.path[0]

        rp = connect(int(sys.argv[1]))
    else:
        rp = fake_board()
    results = []
    for module, attribute, value in request["cases"]:
        try:
            results.append({"value": read_back(rp, module, attribute, value)})
        except Exception as exc:  # noqa: BLE001 - reported to the caller, who decides
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    print(json.dumps({"results": results, "options": filter_options(rp)}), flush=True)


if __name__ == "__main__":
    main()
