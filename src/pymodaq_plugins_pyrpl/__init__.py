"""PyMoDAQ plugins for Red Pitaya boards driven through PyRPL.

Importing this package has no side effects: the PyMoDAQ configuration object ``config`` is created
on first access, so the server process (``hardware.server``) never imports PyMoDAQ or Qt.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("pymodaq_plugins_pyrpl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    if name == "config":
        from pymodaq_utils.config import GlobalConfig

        from . import utils  # noqa: F401  (registers Config under the name 'pyrpl')

        value = GlobalConfig()
        globals()["config"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
