"""What every PyRPL plugin shares: connection settings, starting/sharing/releasing the server, the
module lease, messages in PyMoDAQ's status bar, and settings re-applied after a server restart.

A plugin builds its ``params`` with :func:`connection_params` and keeps a :class:`PyRPLLink` for its
module. Its ``controller`` is the shared :class:`~.hardware.client.PyRPLClient`, so PyMoDAQ's
master/slave sharing hands the master's client to the slaves (who then start no server of their own).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from pymodaq_utils.utils import ThreadCommand
from pymodaq.control_modules.thread_commands import ThreadStatus

from .hardware.client import PyRPLClient
from .hardware.errors import PyrplPluginError
from .hardware.server_manager import TCPServerManager

logger = logging.getLogger(__name__)

GROUP = "pyrpl"
"""Name of the settings group holding the connection settings."""


def _config(*keys: str, default: Any) -> Any:
    try:
        from . import config

        return config("pyrpl", *keys)
    except Exception:  # a missing key in an old config file: the documented default
        return default


def connection_params() -> list[dict[str, Any]]:
    """The 'PyRPL server' settings group; defaults come from the plugin config (config_pyrpl.toml)."""
    return [{
        "title": "PyRPL server", "name": GROUP, "type": "group", "expanded": False, "children": [
            {"title": "Server IP:", "name": "server_ip", "type": "str",
             "value": _config("server", "ip", default="localhost"),
             "tip": "localhost: a server is started on this computer when needed"},
            {"title": "Server Port:", "name": "server_port", "type": "int",
             "value": _config("server", "port", default=6341), "min": 1, "max": 65535},
            {"title": "Connection Timeout (s):", "name": "timeout", "type": "float",
             "value": _config("server", "timeout", default=10.0), "min": 0.1},
            {"title": "Red Pitaya hostname:", "name": "hostname", "type": "str",
             "value": _config("board", "hostname", default=""),
             "tip": "hostname or IP address of the board; empty: the simulated board"},
            {"title": "PyRPL config:", "name": "pyrpl_config", "type": "str",
             "value": _config("board", "config", default=""),
             "tip": "PyRPL config file name on the server side; empty: settings kept in memory"},
            {"title": "Token:", "name": "token", "type": "str",
             "value": _config("server", "token", default=""),
             "tip": "token of a server on another computer (local servers need none)"},
            {"title": "Board state:", "name": "state", "type": "str", "value": "not connected",
             "readonly": True},
        ]}]


class PyRPLLink:
    """One plugin's use of one PyRPL module (``asg0``, ``scope``, ...) through the shared client.

    ``reapply`` is called (from the client's event thread) after the server restarted and the client
    joined a new session: the plugin sends its settings again. Raises from :meth:`open` are
    PyrplPluginError with a message for the user.
    """

    def __init__(self, plugin: Any, module: str, lease: bool = True,
                 reapply: Callable[[], None] | None = None) -> None:
        self.plugin = plugin
        self.module = module
        self.lease = lease
        self.reapply = reapply
        self.client: PyRPLClient | None = None
        self._manager: TCPServerManager | None = None

    def setting(self, name: str) -> Any:
        return self.plugin.settings[GROUP, name]

    def open(self, controller: PyRPLClient | None) -> PyRPLClient:
        """Connect: start or reuse the server (master) or use the master's client (slave)."""
        if controller is None:
            self._manager = TCPServerManager(
                host=self.setting("server_ip"), port=self.setting("server_port"),
                hostname=self.setting("hostname").strip() or None,
                config=self.setting("pyrpl_config").strip(), token=self.setting("token").strip(),
                connect_timeout=self.setting("timeout"),
                client_name=f"PyMoDAQ {getattr(self.plugin, '_title', 'plugin')} (pid {os.getpid()})")
            self.status(f"connecting to the PyRPL server on port {self.setting('server_port')}…")
            self.client = self._manager.ensure_server_running()
        else:
            self.client = controller
        self.client.add_connection_callback(self._on_connection_event)
        if self.lease:
            self.client.lease(self.module)
        self._show_state(self.client.hello_info or {})
        return self.client

    def switch(self, module: str) -> None:
        """Use another module of the same kind (e.g. asg1 instead of asg0): move the lease."""
        if module == self.module or self.client is None:
            self.module = module
            return
        if self.lease:
            self.client.lease(module)
            self.client.release(self.module)
        self.module = module

    def info(self) -> str:
        hello = (self.client.hello_info if self.client else None) or {}
        board = hello.get("hostname") or "simulated board"
        return f"{self.module} on {board} (PyRPL server {hello.get('server_version', '?')})"

    def close(self) -> None:
        """Release the lease and this plugin's reference to the server (best effort, bounded)."""
        client, self.client = self.client, None
        if client is None:
            return
        client.remove_connection_callback(self._on_connection_event)
        if self.lease and client.failure is None:
            try:
                client.release(self.module, timeout=2.0)
            except PyrplPluginError as exc:
                logger.info("releasing %s: %s", self.module, exc)
        if self._manager is not None:
            self._manager.release_server()
            self._manager = None

    def status(self, message: str) -> None:
        self.plugin.emit_status(ThreadCommand(ThreadStatus.UPDATE_STATUS, message))

    def _show_state(self, hello: dict[str, Any]) -> None:
        device = hello.get("device", {})
        state = device.get("state", "unknown")
        if device.get("reason"):
            state += f": {device['reason']}"
        self.plugin.settings.child(GROUP, "state").setValue(state)

    def _on_connection_event(self, event: str, info: dict[str, Any]) -> None:
        if event == "lost":
            self.plugin.settings.child(GROUP, "state").setValue("connection lost, reconnecting")
            self.status(f"PyRPL server connection lost ({info.get('reason')}); reconnecting…")
        elif event == "resumed":
            self._show_state(info)
            self.status("PyRPL server connection restored")
        elif event == "new_session":
            self._show_state(info)
            self.status("PyRPL server restarted: settings applied again")
            if self.reapply is not None:
                try:
                    self.reapply()
                except PyrplPluginError as exc:
                    self.status(f"could not re-apply the settings of {self.module}: {exc}")
        elif event == "failed":
            self.plugin.settings.child(GROUP, "state").setValue("stopped")
            self.status(f"PyRPL server unusable: {info.get('error')}")
