"""Base classes of this package's plugins: what the actuators share, and what the viewers share.

Each plugin class adds its settings, axes or channels; the connection, the lease, instant quantized
moves, re-applying after a server restart and the background acquisition live here. (Kept apart from
:mod:`.plugin_support`, which must not import PyMoDAQ's control modules, see its UPDATE_STATUS.)
"""
from __future__ import annotations

from typing import Any, Callable

from pymodaq.control_modules.move_utility_classes import (DAQ_Move_base, DataActuator,
                                                          DataActuatorType)
from pymodaq.control_modules.thread_commands import ControlToHardwareViewer
from pymodaq.control_modules.viewer_utility_classes import DAQ_Viewer_base
from pymodaq_gui.parameter import Parameter
from pymodaq_utils.utils import ThreadCommand

from .background_acquisition import BackgroundAcquisition
from .hardware import catalogue
from .hardware.client import PyRPLClient
from .hardware.errors import PyrplPluginError
from .plugin_support import CONNECTION_SETTINGS, GROUP, PyRPLLink, init_failed, write_back


def is_connection_setting(param: Parameter) -> bool:
    """A setting choosing the server or the board (changing it connects again)."""
    parent = param.parent()
    return param.name() in CONNECTION_SETTINGS and parent is not None and parent.name() == GROUP


class PyRPLActuator(DAQ_Move_base):
    """An actuator whose axes are attributes of one leased module (setting ``module``).

    Subclasses set ``AXES`` (axis → (attribute, unit)) and ``SETTINGS`` (attributes that are plugin
    settings of the same name). Moves are instant and report the value the board applied; a refused
    move changes nothing and says why in the status bar. After a server restart the settings and the
    last moves are applied again. Subclasses declare ``supported_platforms`` themselves (PyMoDAQ's
    checker reads it from the plugin class).
    """

    AXES: dict[str, tuple[str, str]] = {}
    SETTINGS: tuple[str, ...] = ()
    is_multiaxes = True
    data_actuator_type = DataActuatorType.DataActuator

    def ini_attributes(self) -> None:
        self.controller: PyRPLClient | None = None
        self.link: PyRPLLink | None = None
        self._targets: dict[str, float] = {}

    def ini_stage(self, controller: PyRPLClient | None = None) -> tuple[str, bool]:
        self.link = PyRPLLink(self, self.settings["module"], reapply=self._reapply)
        try:
            self.controller = self.link.open(None if self.is_master else controller)
            self._apply_settings()
        except Exception as exc:
            self.controller = None
            return init_failed(self, self.link, exc), False
        return self.link.info(), True

    def _apply(self, values: dict[str, Any]) -> dict[str, Any]:
        assert self.controller is not None and self.link is not None
        return self.controller.set(self.link.module, values)

    def _settings_values(self) -> dict[str, Any]:
        """The module's attributes as the settings hold them."""
        return {name: self.settings[name] for name in self.SETTINGS}

    def _apply_settings(self, extra: dict[str, Any] | None = None) -> None:
        values = {**self._settings_values(), **(extra or {})}
        if values:  # an actuator without settings (IQ) sends nothing at initialization
            write_back(self, self._apply(values))

    def _reapply(self) -> None:
        self._apply_settings(self._targets)

    def get_actuator_value(self) -> DataActuator:
        attribute, unit = self.AXES[self.axis_name]
        value = self.controller.get(self.link.module, [attribute])[attribute]
        return self.get_position_with_scaling(DataActuator(data=value, units=unit))

    def move_abs(self, value: DataActuator) -> None:
        value = self.check_bound(value)
        self.target_value = value
        self._move(self.set_position_with_scaling(value))

    def move_rel(self, value: DataActuator) -> None:
        value = self.check_bound(self.current_value + value) - self.current_value
        self.target_value = value + self.current_value
        self._move(self.set_position_with_scaling(self.target_value))

    def _move(self, value: DataActuator) -> None:
        attribute, unit = self.AXES[self.axis_name]
        self.ispolling = False  # instant: poll_moving reads the applied value once
        try:
            applied = self._apply({attribute: value.value(unit)})
        except PyrplPluginError as exc:  # nothing changed: poll_moving reports the board's value
            self.link.problem(f"{self.link.module}: move refused: {exc}")
            return
        self.link.solved()
        self._targets[attribute] = applied[attribute]

    def move_home(self) -> None:
        attribute, _ = self.AXES[self.axis_name]
        default = catalogue.MODULES[self.link.module].attributes[attribute].default
        self._targets[attribute] = self._apply({attribute: default})[attribute]
        self.move_done()

    def stop_motion(self) -> None:
        self.move_done()

    def commit_settings(self, param: Parameter) -> None:
        if self.link is None:
            return
        name = param.name()
        if is_connection_setting(param):
            _connect_again(self, self._reapply)
        elif name == "module":
            self.link.switch(param.value())
            self._targets.clear()
            self._apply_settings()
        elif name in self.SETTINGS:
            try:
                write_back(self, self._apply({name: self._settings_values()[name]}))
            except PyrplPluginError as exc:  # refused: show the board's value again
                self.link.problem(f"{self.link.module}: {name} not changed: {exc}")
                write_back(self, self.controller.get(self.link.module, [name]))
                return
            self.link.solved()

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None


class PyRPLViewer(DAQ_Viewer_base):
    """A viewer reading one module through a :class:`BackgroundAcquisition`.

    Subclasses define ``_job(naverage)`` (a callable run in the background thread, see
    BackgroundAcquisition) and ``_emit(result)`` (send the data); they may override ``_module()``
    (default: the ``module`` setting), ``_apply_all()`` (send the settings at initialization) and
    ``_describe(exc)``. ``LEASE``: whether the module is leased. Naverage > 1 is done by the job
    (hardware_averaging). Subclasses declare ``supported_platforms`` themselves (PyMoDAQ's checker
    reads it from the plugin class).
    """

    LEASE = True
    hardware_averaging = True

    def ini_attributes(self) -> None:
        self.controller: PyRPLClient | None = None
        self.link: PyRPLLink | None = None
        self.acquisition: BackgroundAcquisition | None = None

    def ini_detector(self, controller: PyRPLClient | None = None) -> tuple[str, bool]:
        self.link = PyRPLLink(self, self._module(), lease=self.LEASE, reapply=self._reapply)
        try:
            self.controller = self.link.open(None if self.is_master else controller)
            self._apply_all()
        except Exception as exc:
            self.controller = None
            return init_failed(self, self.link, exc), False
        self.acquisition = BackgroundAcquisition(self, self._job, self._emit, self._describe)
        return self.link.info(), True

    def _module(self) -> str:
        """The module to use (default: the ``module`` setting)."""
        return self.settings["module"]

    def _apply_all(self) -> None:
        """Send the plugin's settings (at initialization)."""

    def _reapply(self) -> None:
        self._apply_all()

    def commit_settings(self, param: Parameter) -> None:
        """A connection setting changed: connect again (a grab goes on with the new connection);
        other settings: :meth:`_commit_setting`."""
        if self.link is None or not is_connection_setting(param):
            self._commit_setting(param)
            return
        _connect_again(self, self._apply_all)

    def _commit_setting(self, param: Parameter) -> None:
        """A plugin setting changed (not a connection setting)."""

    def _describe(self, exc: BaseException) -> str:
        return f"{self.link.module}: {exc}"

    def grab_data(self, Naverage: int = 1, **kwargs: Any) -> None:
        if self.acquisition is not None:
            self.acquisition.grab(Naverage, live=kwargs.get("live", False))

    def stop(self) -> str:
        if self.acquisition is not None:
            self.acquisition.stop()
        return ""

    def close(self) -> None:
        """Stop acquiring, release the module and the server; end PyMoDAQ's grab loop.

        PyMoDAQ 5.3's worker runs a continuous grab as a loop that handles CLOSE inside it and goes
        on waiting for the frame asked for before: closed, the plugin sends none, so the loop (and
        the worker's thread) would never end, and quitting would wait 5 s and then terminate the
        thread (which can freeze the whole program). Closing therefore stops the grab as PyMoDAQ's
        own Stop does.
        """
        if self.acquisition is not None:
            self.acquisition.close()
            self.acquisition = None
        if self.link is not None:
            self.link.close()
            self.link = None
        worker = self.parent
        if worker is not None and getattr(worker, "grab_state", False):
            worker.queue_command(ThreadCommand(ControlToHardwareViewer.STOP_GRAB))


def _connect_again(plugin: Any, reapply: Callable[[], None]) -> None:
    """A connection setting of an initialized ``plugin`` changed: connect with the new settings
    and ``reapply`` the plugin's settings there. The old connection is kept until the new one
    works; a refusal is shown as the module's problem and changes nothing."""
    try:
        plugin.link = plugin.link.reconnected()
        plugin.controller = plugin.link.client
        reapply()
    except PyrplPluginError as exc:
        plugin.link.problem(f"{plugin.link.module}: not connected: {exc}")
        return
    plugin.link.solved()
    plugin.link.status(f"connected again: {plugin.link.info()}")
