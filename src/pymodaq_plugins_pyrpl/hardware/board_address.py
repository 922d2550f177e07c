"""Where a Red Pitaya is reached: its hostname, its ssh port and its ``monitor_server`` port
(PyRPL's ``hostname``, ``sshport`` and ``port``), and the hostnames that name no network board.

A board is identified by all three: two boards behind one router's port forwarding share the
hostname. The simulated board (no hostname) and the virtual board (hostname ``virtual``, on ports
chosen when it starts) have no ports of their own to tell them apart.
"""
from __future__ import annotations

DEFAULT_SSH_PORT = 22
"""PyRPL's default ``sshport``."""
DEFAULT_BOARD_PORT = 2222
"""PyRPL's default ``port``, where it starts the board's ``monitor_server``."""
VIRTUAL = "virtual"
"""The hostname asking for the real PyRPL path on a virtual board started for the server
(``pymodaq-pyrpl virtual-board`` as its child process, on free ports)."""
FAKE = ("_FAKE_", "_FAKE_REDPITAYA_")
"""PyRPL's fake board: no network at all (its ``DummyClient``)."""


def has_ports(hostname: str) -> bool:
    """Whether a board of ``hostname`` is reached at ports the user chooses: a network board, not
    the simulator (``""``), the virtual board or PyRPL's fake one."""
    return bool(hostname) and hostname != VIRTUAL and hostname not in FAKE


def describe_ports(ssh_port: int, board_port: int) -> str:
    """`` (ssh port N, monitor port M)``, or ``""`` for PyRPL's default ports."""
    if (ssh_port, board_port) == (DEFAULT_SSH_PORT, DEFAULT_BOARD_PORT):
        return ""
    return f" (ssh port {ssh_port}, monitor port {board_port})"
