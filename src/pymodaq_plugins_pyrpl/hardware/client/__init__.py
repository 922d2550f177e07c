"""The client of the PyRPL server (docs/protocol.md): :class:`PyRPLClient` and its parts, one job
per module — :mod:`.transport` (sockets, TLS, one connection), :mod:`.calls` (the requests waiting
for their replies), :mod:`.session` (id, leases, subscription), :mod:`.events` (the callbacks and
their thread), :mod:`.device` (the board's state last seen) and :mod:`.core` (the client,
orchestrating them)."""
from .core import ACQUIRE_MARGIN, PyRPLClient, State
from .events import ConnectionCallback, StatusCallback

__all__ = ["ACQUIRE_MARGIN", "ConnectionCallback", "PyRPLClient", "State", "StatusCallback"]
