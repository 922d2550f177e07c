"""Base classes of this package's plugins: what all of them share (:class:`PyRPLPlugin`: the
module's settings and the one policy for a refused setting), what the actuators share, and what
the viewers share.

Each plugin class adds its settings, axes or channels; the connection, the lease, instant quantized
moves, re-applying after a server restart and the background acquisition live here. (Kept apart from
:mod:`.plugin_support`, which must not import PyMoDAQ's control modules, see its UPDATE_STATUS.)
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from pymodaq.control_modules.move_utility_classes import (DAQ_Move_base, DataActuator,
                                                          DataActuatorType)
from pymodaq.control_modules.thread_commands import ControlToHardwareViewer
from pymodaq.control_modules.viewer_utility_classes import DAQ_Viewer_base
from pymodaq_gui.parameter import Parameter
from pymodaq_utils.utils import ThreadCommand

from .background_acquisition import BackgroundAcquisition
from .hardware import catalogue
from .hardware.client import PyRPLClient
from .hardware.errors import DeviceNotReady, PyrplPluginError
from .plugin_support import CONNECTION_SETTINGS, GROUP, PyRPLLink, init_failed, write_back

logger = logging.getLogger(__name__)


def is_connection_setting(param: Parameter) -> bool:
    """A setting choosing the server or the board (changing it connects again)."""
    parent = param.parent()
    return param.name() in CONNECTION_SETTINGS and parent is not None and parent.name() == GROUP


class PyRPLPlugin:
    """What the actuators and the viewers share: their link to one module, the module's attributes
    that are plugin settings, and the one policy for a changed setting (:meth:`commit_settings`).

    ``SETTINGS``: module attributes that are plugin settings of the same name, sent at
    initialization, when changed, after a module switch and after a server restart, with
    ``FIXED`` (attribute values the plugin needs, not settings). Mixed into PyMoDAQ's
    ``DAQ_Move_base``/``DAQ_Viewer_base``, which provide ``settings`` and ``emit_status``.
    """

    SETTINGS: tuple[str, ...] = ()
    FIXED: ClassVar[dict[str, Any]] = {}
    settings: Parameter
    controller: PyRPLClient | None
    link: PyRPLLink | None
    is_master: bool

    def _open(self, link: PyRPLLink, controller: PyRPLClient | None) -> str | None:
        """Initialization: use ``link`` (with ``controller``, the master's client, unless this
        plugin is the master) and send the settings (a board that is not ready gets them once it
        is: :meth:`PyRPLLink.send_settings`). None once done; else the failure's message
        (:func:`init_failed`), the controller cleared."""
        self.link = link
        try:
            self.controller = link.open(None if self.is_master else controller)
            link.send_settings()
        except Exception as exc:
            self.controller = None
            return init_failed(self, link, exc)
        return None

    def _apply(self, values: dict[str, Any]) -> dict[str, Any]:
        """Set attributes of the module; the values the board applied."""
        assert self.controller is not None and self.link is not None
        return self.controller.set(self.link.module, values)

    def _settings_values(self, names: Sequence[str]) -> dict[str, Any]:
        """The module's attributes ``names`` as the settings hold them."""
        return {name: self.settings[name] for name in names}

    def _apply_settings(self, extra: dict[str, Any] | None = None) -> None:
        """Send FIXED, the SETTINGS and ``extra``; the settings show what the board applied."""
        values = {**self.FIXED, **self._settings_values(self.SETTINGS), **(extra or {})}
        if values:  # a module without settings (IQ actuator, sampler) is sent nothing
            write_back(self, self._apply(values))

    def _reapply(self) -> None:
        """Send the plugin's settings again (a connection setting changed, the server restarted)."""
        self._apply_settings()

    def _switch_module(self, module: str) -> None:
        """Use ``module`` instead (moving the lease) and send it the settings."""
        assert self.link is not None
        self.link.switch(module)
        self._apply_settings()

    def commit_settings(self, param: Parameter) -> None:
        """Apply a setting changed in PyMoDAQ (:meth:`_commit`). A setting the board or the server
        refuses changes nothing; the user sees why in the status bar and in the 'Problem' setting,
        and the setting shows again what is in use (:meth:`_show_in_use`). Once a setting is
        applied, the problem shown (if any) no longer holds.

        Nothing is raised to PyMoDAQ: its ``update_settings`` would only show ``str(exc)`` as a
        1 s status message, replacing the refusal's lasting one, and marks nothing as failed.
        """
        if self.link is None:
            return
        try:
            applied = self._commit(param)
        except PyrplPluginError as exc:
            self.link.problem(self._refusal(param, exc))
            self._show_in_use(param)
            return
        if applied:
            self.link.solved()

    def _commit(self, param: Parameter) -> bool:
        """Apply a changed setting; whether the server or the board took a change (False: not a
        setting of theirs). Raises PyrplPluginError when refused, nothing changed then.
        Subclasses handle their own settings and leave the others to this method."""
        assert self.link is not None
        name = param.name()
        if is_connection_setting(param):
            self._connect_again()
        elif name == "module":
            if param.value() == self.link.module:  # PyMoDAQ's tree settling on the module shown
                return False
            self._switch_module(param.value())
        elif name in self.SETTINGS:
            write_back(self, self._apply(self._settings_values((name,))))
        else:
            return False
        return True

    def _connect_again(self) -> None:
        """Connect with the changed connection settings and send the settings there; the old
        connection is kept until the new one works (raises as :meth:`PyRPLLink.reconnected`)."""
        assert self.link is not None
        self.link = self.link.reconnected()
        self.controller = self.link.client
        self._reapply()
        self.link.status(f"connected again: {self.link.info()}")

    def _refusal(self, param: Parameter, exc: PyrplPluginError) -> str:
        """The message saying that (and why) the change of ``param`` was refused."""
        assert self.link is not None
        if is_connection_setting(param):
            return f"{self.link.module}: not connected with the new {param.name()}: {exc}"
        return f"{self.link.module}: {param.name()} not changed: {exc}"

    def _show_in_use(self, param: Parameter) -> None:
        """After a refusal, show in ``param`` what is in use: the module used, or the attribute's
        value read from the board. A connection setting keeps what the user entered (the problem
        says that the connection in use is kept)."""
        assert self.link is not None and self.controller is not None
        name = param.name()
        if name == "module":
            param.setValue(self.link.module)
        elif name in self.SETTINGS:
            try:
                write_back(self, self.controller.get(self.link.module, [name]))
            except PyrplPluginError as exc:  # the problem shown already says what is wrong
                logger.warning("%s: %s not read back: %s", self.link.module, name, exc)


class PyRPLActuator(PyRPLPlugin, DAQ_Move_base):
    """An actuator whose axes are attributes of one leased module (setting ``module``).

    Subclasses set ``AXES`` (axis → (attribute, unit)) and ``SETTINGS`` (attributes that are plugin
    settings of the same name). Moves are instant and report the value the board applied; a refused
    move changes nothing and says why in the status bar. After a server restart the settings and the
    last moves are applied again. Subclasses declare ``supported_platforms`` themselves (PyMoDAQ's
    checker reads it from the plugin class).
    """

    AXES: dict[str, tuple[str, str]] = {}
    is_multiaxes = True
    data_actuator_type = DataActuatorType.DataActuator

    def ini_attributes(self) -> None:
        self.controller = None
        self.link = None
        self._targets: dict[str, float] = {}

    def ini_stage(self, controller: PyRPLClient | None = None) -> tuple[str, bool]:
        failure = self._open(PyRPLLink(self, self.settings["module"], reapply=self._reapply),
                             controller)
        if failure is not None:
            return failure, False
        return self.link.info(), True

    def _reapply(self) -> None:
        self._apply_settings(self._targets)

    def _switch_module(self, module: str) -> None:
        assert self.link is not None
        self.link.switch(module)
        self._targets.clear()  # the last moves were the other module's
        self._apply_settings()

    def get_actuator_value(self) -> DataActuator:
        """The axis' value read from the board. On a board that is not ready, the first failure
        of the outage raises (PyMoDAQ logs it; the module shows it as its problem); the next ones
        return the last value read, quietly, while the module's problem says why
        (:class:`~.plugin_support.BoardOutage`): PyMoDAQ's refresh polls several times a
        second."""
        attribute, unit = self.AXES[self.axis_name]
        try:
            value = self.controller.get(self.link.module, [attribute])[attribute]
        except DeviceNotReady as exc:
            if self.link.outage.failed(self, f"{self.link.module}: {exc}"):
                raise
            return self.current_value
        self.link.outage.succeeded(self)
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

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None


class PyRPLViewer(PyRPLPlugin, DAQ_Viewer_base):
    """A viewer reading one module through a :class:`BackgroundAcquisition`.

    Subclasses define ``_job(naverage)`` (a callable run in the background thread, see
    BackgroundAcquisition) and ``_emit(result)`` (send the data); they may set ``SETTINGS`` and
    ``FIXED`` (see PyRPLPlugin) and override ``_module()`` (default: the ``module`` setting) and
    ``_describe(exc)``. ``LEASE``: whether the module is leased; ``EXCLUSIVE``: alone in this
    program; ``_companions()``: other modules the viewer needs alone while initialized (see
    :class:`~.plugin_support.SharedLeases`). Naverage > 1 is done by the job
    (hardware_averaging). A connection setting changed while grabbing connects again and the grab
    goes on with the new connection. Subclasses declare ``supported_platforms`` themselves
    (PyMoDAQ's checker reads it from the plugin class).
    """

    LEASE = True
    EXCLUSIVE = False
    hardware_averaging = True

    def ini_attributes(self) -> None:
        self.controller = None
        self.link = None
        self.acquisition: BackgroundAcquisition | None = None

    def ini_detector(self, controller: PyRPLClient | None = None) -> tuple[str, bool]:
        failure = self._open(PyRPLLink(self, self._module(), lease=self.LEASE,
                                       reapply=self._reapply, exclusive=self.EXCLUSIVE,
                                       companions=self._companions()), controller)
        if failure is not None:
            return failure, False
        self.acquisition = BackgroundAcquisition(self, self._job, self._emit, self._describe,
                                                 self.link.outage)
        return self.link.info(), True

    def _module(self) -> str:
        """The module to use (default: the ``module`` setting)."""
        return self.settings["module"]

    def _companions(self) -> list[str]:
        """Other modules the viewer needs alone while initialized (default: none)."""
        return []

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

