"""A register-level Red Pitaya that unmodified PyRPL drives over real sockets.

:class:`~.board.VirtualBoard` is the board (the FPGA's register map, its 125 MHz time base and the
physics shared with the simulator backend, :mod:`..hardware.physics`);
:class:`~.monitor_server.MonitorServer` serves it on TCP with PyRPL's ``monitor_server`` protocol.
Imports only the standard library, numpy and the package's ``hardware`` core (no Qt, no PyRPL),
and those only when one of these names is first used: a server launching a virtual board process
(:mod:`.process`) imports none of the board.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .board import BoardDown, LinkSettings, VirtualBoard
    from .monitor_server import MonitorServer

__all__ = ["BoardDown", "LinkSettings", "MonitorServer", "VirtualBoard"]

_HOMES = {"BoardDown": ".board", "LinkSettings": ".board", "VirtualBoard": ".board",
          "MonitorServer": ".monitor_server"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
