"""PyMoDAQ plugins for Red Pitaya boards driven through PyRPL.

Importing this package has no side effects: the PyMoDAQ configuration object ``config`` is created
on first access, so the server process (``hardware.server``) never imports PyMoDAQ or Qt.
"""
__version__ = "0.1.0"
"""The package's version (the wheel's too: pyproject.toml reads it here)."""


def __getattr__(name: str):
    if name == "config":
        from pymodaq_utils.config import GlobalConfig

        from . import utils  # noqa: F401  (registers Config under the name 'pyrpl')

        value = GlobalConfig()
        globals()["config"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
