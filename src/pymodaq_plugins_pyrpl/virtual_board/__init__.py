"""A register-level Red Pitaya that unmodified PyRPL drives over real sockets.

:class:`~.board.VirtualBoard` is the board (the FPGA's register map, its 125 MHz time base and the
physics shared with the simulator backend, :mod:`..hardware.physics`);
:class:`~.monitor_server.MonitorServer` serves it on TCP with PyRPL's ``monitor_server`` protocol.
Imports only the standard library, numpy and the package's ``hardware`` core (no Qt, no PyRPL).
"""
from __future__ import annotations

from .board import BoardDown, LinkSettings, VirtualBoard
from .monitor_server import MonitorServer

__all__ = ["BoardDown", "LinkSettings", "MonitorServer", "VirtualBoard"]
