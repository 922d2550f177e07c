"""Backends of the server: the simulated Red Pitaya and PyRPL (see :mod:`.base` for the interface)."""
