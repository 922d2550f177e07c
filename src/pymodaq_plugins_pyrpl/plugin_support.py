"""What every PyRPL plugin shares: connection settings, starting/sharing/releasing the server, the
module lease, messages in PyMoDAQ's status bar, and settings re-applied after a server restart.

A plugin (:class:`PluginHost`: what these helpers use of it) builds its ``params`` with
:func:`connection_params` and keeps a :class:`PyRPLLink` for its module, which handles the client's
connection events in the plugin's own thread. Its ``controller`` is the shared
:class:`~.hardware.client.PyRPLClient`, so PyMoDAQ's master/slave sharing hands the master's client
to the slaves (who then start no server of their own). Plugins of one process sharing a client also
share its leases (:class:`SharedLeases`): an actuator and a viewer may use the same module, which
stays leased until the last of them lets it go.

Plugins also use :func:`write_back` (settings show the values the board applied), :func:`labelled`
(readable option lists) and :func:`init_failed` (the reason of a failed initialization in the status
bar); the viewers' acquisitions run in :mod:`.background_acquisition`.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from pymodaq_utils.utils import ThreadCommand
from qtpy.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal, Slot

from .hardware import board_address
from .hardware.client import PyRPLClient
from .hardware.client.device import local_time
from .hardware.errors import DeviceNotReady, ModuleLeased, PyrplPluginError
from .hardware.server_manager import TCPServerManager

if TYPE_CHECKING:  # PyMoDAQ's control modules are not imported here at run time: see UPDATE_STATUS
    from pymodaq.control_modules.utils import HardwareWorkerBase
    from pymodaq_gui.parameter import Parameter

logger = logging.getLogger(__name__)

UPDATE_STATUS = "update_status"
"""``ThreadStatus.UPDATE_STATUS`` (a StrEnum) as a plain string: importing ``pymodaq.control_modules``
here would run PyMoDAQ's plugin discovery while this module is half imported, and PyMoDAQ would then
silently miss every plugin of this package."""

UPDATE_UI = "update_ui"
"""``ThreadStatus.UPDATE_UI`` as a plain string (see UPDATE_STATUS): calls a method of the module's
user interface, here its status bar's ``update_status(message, wait_time)``."""

GROUP = "pyrpl"
"""Name of the settings group holding the connection settings."""
CONNECTION_SETTINGS = ("server_ip", "server_port", "timeout", "hostname", "ssh_port", "board_port",
                       "pyrpl_config", "token", "tls_ca", "tls_fingerprint")
"""The settings of the group that choose the server and the board: changing one while initialized
connects again (:meth:`PyRPLLink.reconnect`)."""
PROBLEM = "problem"
"""Name of the read-only setting showing the module's current problem (empty: none)."""


class PluginHost(Protocol):
    """What this module's helpers use of a plugin (a PyMoDAQ ``DAQ_Move_base`` or
    ``DAQ_Viewer_base``): its settings tree, its status messages, its worker and whether it is a
    master."""

    settings: Parameter
    parent: HardwareWorkerBase | None
    """PyMoDAQ's worker running the plugin (None: the plugin runs without one)."""

    @property
    def is_master(self) -> bool: ...

    def emit_status(self, status: ThreadCommand) -> None: ...


def _config(*keys: str, default: Any) -> Any:
    try:
        from . import config

        return config("pyrpl", *keys)
    except Exception:  # a missing key in an old config file: the documented default
        return default


def connection_params() -> list[dict[str, Any]]:
    """The 'Problem' field (see :func:`report_problem`) and the 'PyRPL server' settings group;
    defaults come from the plugin config (config_pyrpl.toml)."""
    return [{
        "title": "Problem:", "name": PROBLEM, "type": "str", "value": "", "readonly": True,
        "tip": "what keeps this module from working, shown until it no longer holds "
               "(also in the status bar and in PyMoDAQ's log); empty: none"}, {
        "title": "PyRPL server", "name": GROUP, "type": "group", "expanded": False,
        "tip": "which server and board this module uses; a change reconnects", "children": [
            {"title": "Server IP:", "name": "server_ip", "type": "str",
             "value": _config("server", "ip", default="localhost"),
             "tip": "localhost: a server is started on this computer when needed"},
            {"title": "Server Port:", "name": "server_port", "type": "int",
             "value": _config("server", "port", default=6341), "min": 1, "max": 65535,
             "tip": "TCP port of the server: one server (and port) per board"},
            {"title": "Connection Timeout (s):", "name": "timeout", "type": "float",
             "value": _config("server", "timeout", default=10.0), "min": 0.1,
             "tip": "how long connecting (or starting a local server) may take"},
            {"title": "Red Pitaya hostname:", "name": "hostname", "type": "str",
             "value": _config("board", "hostname", default=""),
             "tip": "hostname or IP address of the board; empty: the simulated board; "
                    f"'{board_address.VIRTUAL}': a virtual board driven through PyRPL like a "
                    "real one (started with the server)"},
            {"title": "Board ssh port:", "name": "ssh_port", "type": "int",
             "value": _config("board", "ssh_port", default=board_address.DEFAULT_SSH_PORT),
             "min": 1, "max": 65535,
             "tip": "the board's ssh port (PyRPL's sshport), e.g. behind port forwarding; "
                    "network boards only"},
            {"title": "Board monitor port:", "name": "board_port", "type": "int",
             "value": _config("board", "board_port", default=board_address.DEFAULT_BOARD_PORT),
             "min": 1, "max": 65535,
             "tip": "the port of the board's monitor_server (PyRPL's port); network boards "
                    "only"},
            {"title": "Simulated plant:", "name": "plant", "type": "str",
             "value": _config("board", "plant", default="loopback"),
             "tip": f"simulated board (empty hostname) and '{board_address.VIRTUAL}' only: what "
                    "connects its outputs to its "
                    "inputs, 'loopback' (cables out1→in1, out2→in2) or "
                    "'resonator[:f0=HZ,q=Q,gain=G]' (e.g. resonator:f0=100e3,q=30)"},
            {"title": "Take over the board:", "name": "take_over", "type": "bool",
             "value": _config("board", "take_over", default=False),
             "tip": "a server started for a network board starts even if another program (a "
                    "PyRPL notebook, another computer) uses the board, whose connection then "
                    "ends; off: the server refuses, naming that program's address"},
            {"title": "PyRPL config:", "name": "pyrpl_config", "type": "str",
             "value": _config("board", "config", default=""),
             "tip": "PyRPL config file name on the server side; empty: settings kept in memory"},
            {"title": "Token:", "name": "token", "type": "str",
             "value": _config("server", "token", default=""),
             "tip": "token of a server on another computer (local servers need none)"},
            {"title": "TLS CA file:", "name": "tls_ca", "type": "str",
             "value": _config("server", "tls_ca", default=""),
             "tip": "server on another computer with TLS: PEM file of its certificate or CA; "
                    "empty (and no fingerprint): plain TCP"},
            {"title": "TLS fingerprint:", "name": "tls_fingerprint", "type": "str",
             "value": _config("server", "tls_fingerprint", default=""),
             "tip": "server on another computer with TLS: SHA-256 fingerprint of its certificate "
                    "(its log shows it); empty (and no CA file): plain TCP"},
            {"title": "Board state:", "name": "state", "type": "str", "value": "not connected",
             "readonly": True, "tip": "the board's state as the server reports it (ready, lost, "
                                     "taken, error) or the connection's"},
        ]}]


VANISHED_HOLDER_WAIT = 60.0
"""At most this long (s) an initialization waits for a module leased by a client that vanished."""
VANISHED_HOLDER_MARGIN = 0.5
"""Seconds added to a vanished holder's remaining resume grace before leasing again."""


def lease_when_free(take: Callable[[], Any], status: Callable[[str], None]) -> None:
    """Lease a module by calling ``take``; if the module is leased by a client that vanished (its
    connection is gone, its session waits out its resume grace), say so with ``status`` and call
    ``take`` again once the server said the module frees (plus VANISHED_HOLDER_MARGIN).

    Raises ModuleLeased at once if the holder is connected, or if the module would free later
    than VANISHED_HOLDER_WAIT after the first attempt (the holder came back meanwhile, or its
    grace is longer); whatever else ``take`` raises.
    """
    deadline = time.monotonic() + VANISHED_HOLDER_WAIT
    while True:
        try:
            take()
            return
        except ModuleLeased as exc:
            data = exc.data if isinstance(exc.data, dict) else {}
            frees_in = data.get("frees_in")
            if data.get("holder_connected", True) or not isinstance(frees_in, (int, float)):
                raise
            wait = frees_in + VANISHED_HOLDER_MARGIN
            if time.monotonic() + wait > deadline:
                raise
            status(f"{exc}; waiting {wait:.1f} s for it")
            time.sleep(wait)


def plugin_title(plugin: PluginHost) -> str:
    """A plugin's name for the user: the title of its module in PyMoDAQ, which its worker holds
    (without a worker: its class name)."""
    worker = plugin.parent
    return str(worker.title if worker is not None else type(plugin).__name__)


def lease_owner(holders: list[str]) -> str:
    """The owner a shared lease is recorded under: its holders' names, in the order they took
    it, each once (``"IQ, IQ scan"``)."""
    return ", ".join(dict.fromkeys(holders))


@dataclass(frozen=True)
class _Hold:
    """One plugin holding a module: its name, and whether it needs the module alone."""

    holder: str
    exclusive: bool


class SharedLeases:
    """The leases of one process's plugins, with the plugins holding each, per client and module.

    All plugins of a process using one server share one client, hence one session, and a lease
    belongs to the session: without counting, the first plugin to let a module go would release it
    for the others too. :meth:`take` leases the module on the server for its first holder and
    :meth:`give_back` releases it for its last; in between, the lease's owner on the server names
    every plugin holding it (:func:`lease_owner`), so the server's status and refusals say which
    plugins hold a module, whichever took it first. A client of another session (another process)
    still gets ModuleLeased. The server calls are made with the lock held, so a take and a give back
    of the same module never cross; each is bounded by the client's call timeout.

    A hold is *exclusive* when its plugin needs the module alone (the spectrum analyzer's scope,
    the network analyzer's IQ module): the server cannot tell the plugins of one session apart,
    so an exclusive hold and any hold of another plugin refuse each other here, whichever came
    first (ModuleLeased, "busy: the scope is used by …"). Shared holds (an IQ actuator and an IQ
    viewer on the same module) go together as before. Holders are told apart by name: holds of
    the same name are the same plugin (a plugin connecting again holds twice for a moment).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: weakref.WeakKeyDictionary[PyRPLClient, dict[str, list[_Hold]]] = (
            weakref.WeakKeyDictionary())

    def take(self, client: PyRPLClient, module: str, holder: str,
             exclusive: bool = False) -> None:
        """Hold ``module`` as ``holder`` (a plugin's name), alone if ``exclusive``. Raises
        ModuleLeased if that conflicts with another plugin's hold (see the class), what
        ``client.lease`` raises otherwise; nothing held then."""
        with self._lock:
            holds = self._holders.setdefault(client, {}).setdefault(module, [])
            _refuse_if_busy(module, holds, holder, exclusive)
            names = [hold.holder for hold in holds]
            owner = lease_owner([*names, holder])
            if not holds or owner != lease_owner(names):
                client.lease(module, owner=owner)
            holds.append(_Hold(holder, exclusive))

    def give_back(self, client: PyRPLClient, module: str, holder: str,
                  timeout: float | None = None) -> None:
        """Stop holding ``module`` as ``holder``; the last holder releases it, otherwise the
        lease's owner is renamed to the remaining holders (raises what ``client.release`` or
        ``client.lease`` raises; the hold is dropped anyway)."""
        with self._lock:
            holds = self._holders.get(client, {}).get(module)
            hold = next((h for h in holds or () if h.holder == holder), None)
            if hold is None:
                return
            before = lease_owner([h.holder for h in holds])
            holds.remove(hold)
            if holds:
                after = lease_owner([h.holder for h in holds])
                if client.failure is None and after != before:
                    client.lease(module, timeout=timeout, owner=after)
                return
            del self._holders[client][module]
            if client.failure is None:
                client.release(module, timeout=timeout)


def _refuse_if_busy(module: str, holds: list[_Hold], holder: str, exclusive: bool) -> None:
    """Raise ModuleLeased if ``holder`` may not hold ``module`` (``exclusive``: alone) next to
    ``holds``, the other plugins' holds."""
    others = [hold for hold in holds if hold.holder != holder]
    alone = [hold.holder for hold in others if hold.exclusive]
    if alone:
        raise ModuleLeased(f"busy: the {module} is used by {lease_owner(alone)}, which needs it "
                           "alone in this program", {"owner": lease_owner(alone)})
    if exclusive and others:
        owner = lease_owner([hold.holder for hold in others])
        raise ModuleLeased(f"busy: the {module} is used by {owner}; {holder} needs it alone in "
                           "this program", {"owner": owner})


LEASES = SharedLeases()
"""The leases of this process's plugins."""


class CallInThread(QObject):
    """Calls ``function(*args)`` in the Qt thread this object was created in, whichever thread
    calls :meth:`post`: a queued signal, run when that thread's event loop gets to it, in the order
    posted (never if that thread has ended)."""

    _posted = Signal(object)

    def __init__(self, function: Callable[..., None]) -> None:
        super().__init__()
        self._function = function
        self._posted.connect(self._run, Qt.QueuedConnection)

    def post(self, *args: Any) -> None:
        self._posted.emit(args)

    @Slot(object)
    def _run(self, args: tuple[Any, ...]) -> None:
        self._function(*args)


def board_name(hello: dict[str, Any]) -> str:
    """The board a server serves, for the user: "the Red Pitaya at HOST" or "the simulated
    board"."""
    hostname = hello.get("hostname")
    return f"the Red Pitaya at {hostname}" if hostname else "the simulated board"


def device_problem(board: str, device: dict[str, Any]) -> str | None:
    """What keeps ``board`` (:func:`board_name`) from working, from the server's ``device``
    block: None while it is ready; else the state's reason, the sentence for the user
    (``Backend.device_state``), or without one a sentence of the state."""
    state, reason = device.get("state"), device.get("reason")
    if state == "ready":
        return None
    if reason:
        return str(reason)
    if state == "lost":
        attempts = device.get("attempts") or 0
        return f"lost {board}; reconnecting" + (f" (attempt {attempts})" if attempts else "")
    if state == "taken":
        return f"another program took {board}; Initialize again to take it back"
    return f"{board} is {state}"


class BoardOutage:
    """The failures of one plugin's polled calls (an actuator's value refresh, a viewer's grabs)
    on a board that is not ready (DeviceNotReady): the first of an outage is reported (PyMoDAQ
    logs it, the module shows it as its problem), the next ones are quiet, the module's problem
    staying shown; the first call that succeeds ends the outage, so the next one is reported
    again."""

    def __init__(self) -> None:
        self._reported: str | None = None
        """The problem the outage's first failure showed (None: no outage)."""

    @property
    def going_on(self) -> bool:
        """A failure of this outage was reported and no call has succeeded since."""
        return self._reported is not None

    def failed(self, plugin: PluginHost, message: str) -> bool:
        """A polled call failed with DeviceNotReady (``message``: its words for the user). The
        first failure of an outage is shown as the module's problem and True is returned: the
        caller reports it; later ones return False: the caller stays quiet."""
        if self._reported is not None:
            return False
        self._reported = message
        report_problem(plugin, message)
        return True

    def succeeded(self, plugin: PluginHost) -> None:
        """A polled call succeeded: the outage is over; the problem its first failure showed, if
        still shown, no longer holds."""
        if self._reported is not None and _problem_shown(plugin) == self._reported:
            clear_problem(plugin)
        self._reported = None


class PyRPLLink:
    """One plugin's use of one PyRPL module (``asg0``, ``scope``, ...) through the shared client.

    The client's connection events (lost, resumed, new session, failed) and the board's device
    events (lost, taken, ready again, restarted: the client is subscribed to status pushes) arrive
    on the client's events thread; they are handled in the thread that opened the link (the
    plugin's worker thread), one at a time between the plugin's own commands, which they
    therefore never run concurrently with. A board that is not ready is the module's problem
    until it is ready again; a restarted board is a lasting status message. ``reapply`` (the
    plugin sends its settings: :meth:`send_settings`) is called there after the server restarted
    and the client joined a new session, and when the board is ready again if a board that was
    not ready refused the settings or the board session changed since they were sent; not after
    a plain recovery of the same session (the board kept its registers: docs/protocol.md).
    :meth:`open` takes back a board another program took (Initialize again).
    Raises from :meth:`open` are PyrplPluginError with a message for the user.

    The module is leased (``lease``) through :data:`LEASES`, alone in this program if
    ``exclusive``; ``companions`` are other modules the plugin needs alone while the link is
    open (the spectrum analyzer's scope), leased the same way (:meth:`move_companion` changes
    one).
    """

    def __init__(self, plugin: PluginHost, module: str, lease: bool = True,
                 reapply: Callable[[], None] | None = None, exclusive: bool = False,
                 companions: Sequence[str] = ()) -> None:
        self.plugin = plugin
        self.module = module
        self.lease = lease
        self.reapply = reapply
        self.exclusive = exclusive
        self.companions = list(companions)
        self.client: PyRPLClient | None = None
        self._held = False  # this link holds its module's lease (LEASES)
        self._companions_held: list[str] = []  # the companions this link holds (LEASES)
        self._manager: TCPServerManager | None = None
        self._thread: QThread | None = None
        self._events: CallInThread | None = None
        self._device_problem: str | None = None
        """The problem shown for the board's state (None while it is ready)."""
        self._restart_shown: str | None = None
        """The ``board_restarted_at`` last shown (or found at :meth:`open`)."""
        self.outage = BoardOutage()
        """The plugin's polled calls (and the sending of its settings) failing on a board that
        is not ready."""
        self._session: str | None = None
        """The board session (``device.session``) last seen."""
        self._applied_session: str | None = None
        """The board session the plugin's settings were last sent in (None: not yet)."""
        self._settings_pending = False
        """The plugin's settings are to be sent once the board is ready (a board that was not
        ready refused them, or the server restarted)."""

    @property
    def holder(self) -> str:
        """The plugin's name as its leases are recorded."""
        return plugin_title(self.plugin)

    def setting(self, name: str) -> Any:
        return self.plugin.settings[GROUP, name]

    def open(self, controller: PyRPLClient | None) -> PyRPLClient:
        """Connect: start or reuse the server (master) or use the master's client (slave)."""
        if controller is None:
            self._manager = TCPServerManager(
                host=self.setting("server_ip"), port=self.setting("server_port"),
                hostname=self.setting("hostname").strip() or None,
                config=self.setting("pyrpl_config").strip(), plant=self.setting("plant").strip(),
                ssh_port=self.setting("ssh_port"), board_port=self.setting("board_port"),
                token=self.setting("token").strip(),
                tls_ca=self.setting("tls_ca").strip() or None,
                tls_fingerprint=self.setting("tls_fingerprint").strip() or None,
                connect_timeout=self.setting("timeout"),
                python=_config("server", "python", default="") or None,
                client_name=f"PyMoDAQ (pid {os.getpid()})", take_over=self.setting("take_over"))
            self.status(f"connecting to the PyRPL server on port {self.setting('server_port')}…")
            self.client = self._manager.ensure_server_running()
        else:
            self.client = controller
        self._events = CallInThread(self._on_connection_event)
        self.client.add_connection_callback(self._events.post)
        self._watch_thread()
        device = self._device_taken_back()
        if self.lease:
            self._take(self.module, self.exclusive)
            self._held = True
        for module in self.companions:
            self._take(module, exclusive=True)
            self._companions_held.append(module)
        self._restart_shown = device.get("board_restarted_at")
        self.solved()  # what an earlier initialization showed (the board taken) no longer holds
        self._show_device(device)
        return self.client

    def _take(self, module: str, exclusive: bool) -> None:
        """Hold ``module`` (:data:`LEASES`), alone if ``exclusive``; a module held by a client
        that vanished is waited for (:func:`lease_when_free`)."""
        client, holder = self.client, self.holder
        lease_when_free(lambda: LEASES.take(client, module, holder, exclusive), self.status)

    def _device_taken_back(self) -> dict[str, Any]:
        """The board's ``device`` block now, the client subscribed to the status pushes that
        carry its changes; a board another program took is taken back first (Initialize again
        takes it back). Raises DeviceNotReady if it cannot be taken back."""
        assert self.client is not None
        device = self.client.subscribe()["device"]
        if device.get("state") == "taken":
            board = board_name(self.client.hello_info or {})
            self.status(f"taking {board} back from the other program "
                        f"({device.get('other') or 'unknown address'})…")
            device = self.client.take_board()
            logger.info("%s: took %s back", self.module, board)
        return device

    def send_settings(self) -> None:
        """Send the plugin's settings (``reapply``). A board that is not ready refuses them
        (DeviceNotReady): they are sent once it is ready again, and the module's problem says
        so meanwhile (the first failure of the outage: :attr:`outage`). Raises the other
        PyrplPluginError of ``reapply`` (a refused value)."""
        if self.reapply is None:
            return
        try:
            self.reapply()
        except DeviceNotReady as exc:
            self._settings_pending = True
            self.outage.failed(self.plugin, f"{self.module}: settings not applied yet ({exc}); "
                                            "they will be once the board is ready")
            return
        self.outage.succeeded(self.plugin)
        self._settings_pending = False
        self._applied_session = self._session

    def _resend_if_needed(self, device: dict[str, Any]) -> None:
        """The board is ready (``device``): send the settings if they are pending, or if the
        board session changed since they were sent (the board may have lost them). A plain
        recovery of the same session sends nothing: the board kept its registers."""
        new_session = (self._applied_session is not None
                       and device.get("session") not in (None, self._applied_session))
        if not (self._settings_pending or new_session):
            return
        try:
            self.send_settings()
        except PyrplPluginError as exc:
            self._settings_pending = False  # a refused value: sending again changes nothing
            self.problem(f"could not re-apply the settings of {self.module}: {exc}")
            return
        if not self._settings_pending:
            self.status(f"{self.module}: settings applied again")

    def reconnected(self) -> PyRPLLink:
        """A new link to the same module, opened with the current connection settings (after one of
        them changed); this one is closed once the new one works. Raises as :meth:`open`, and then
        this link is unchanged (still connected where it was). A slave uses its master's
        connection: raises PyrplPluginError (change the master's settings)."""
        if self.client is not None and self._manager is None:
            raise PyrplPluginError("this module uses its master's connection: change the "
                                   "master's PyRPL server settings")
        new = PyRPLLink(self.plugin, self.module, lease=self.lease, reapply=self.reapply,
                        exclusive=self.exclusive, companions=self.companions)
        try:
            new.open(None)
        except Exception:
            new.close()
            raise
        self.close()  # on the same client, the new link's hold keeps the lease (SharedLeases)
        return new

    def _watch_thread(self) -> None:
        """Close when the plugin's worker thread ends, in case PyMoDAQ did not call close().

        PyMoDAQ 5.3's ``quit_fun`` queues the plugin's close to its worker thread, then quits that
        thread: if the worker is still busy (e.g. reading the actuator value right after
        initialization), the thread stops before the close runs, and the lease and the server
        reference would live as long as the process.
        """
        thread = QThread.currentThread()
        app = QCoreApplication.instance()
        if app is None or thread is app.thread() or self._thread is not None:
            return  # the main thread (no worker, e.g. plugin_testing) or already watched
        self._thread = thread
        thread.finished.connect(self._on_thread_finished, Qt.DirectConnection)

    def _on_thread_finished(self) -> None:
        if self.client is not None:
            logger.info("%s: closed with its worker thread", self.module)
            self.close()

    def switch(self, module: str) -> None:
        """Use another module of the same kind (e.g. asg1 instead of asg0): move the lease."""
        if module == self.module or self.client is None:
            self.module = module
            return
        if self._held:
            LEASES.take(self.client, module, self.holder, self.exclusive)  # raises: no change
        old, self.module = self.module, module
        if self._held:
            LEASES.give_back(self.client, old, self.holder)

    def move_companion(self, old: str, new: str) -> None:
        """Use the companion ``new`` instead of ``old`` (e.g. iq1 instead of iq2): hold it alone
        first (raises ModuleLeased or what the lease raises: nothing changed), then let ``old``
        go."""
        index = self.companions.index(old)
        if new == old:
            return
        if self.client is not None:
            LEASES.take(self.client, new, self.holder, exclusive=True)
            self._companions_held.append(new)
        self.companions[index] = new
        if old in self._companions_held:
            self._companions_held.remove(old)
            try:
                LEASES.give_back(self.client, old, self.holder)
            except PyrplPluginError as exc:  # the hold is dropped; the server's lease ends later
                logger.info("releasing %s: %s", old, exc)

    def info(self) -> str:
        hello = (self.client.hello_info if self.client else None) or {}
        board = hello.get("hostname") or "simulated board"
        return f"{self.module} on {board} (PyRPL server {hello.get('server_version', '?')})"

    def close(self) -> None:
        """Release the lease and this plugin's reference to the server (best effort, bounded)."""
        client, self.client = self.client, None
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                thread.finished.disconnect(self._on_thread_finished)
            except (TypeError, RuntimeError):  # already disconnected, or the thread is deleted
                pass
        if client is None:
            return
        if self._events is not None:
            client.remove_connection_callback(self._events.post)
        held = [self.module] if self._held else []
        held += self._companions_held
        self._held, self._companions_held = False, []
        for module in held:
            try:
                LEASES.give_back(client, module, self.holder, timeout=2.0)
            except PyrplPluginError as exc:
                logger.info("releasing %s: %s", module, exc)
        if self._manager is not None:
            self._manager.release_server()
            self._manager = None

    def status(self, message: str) -> None:
        self.plugin.emit_status(ThreadCommand(UPDATE_STATUS, message))

    def problem(self, message: str) -> None:
        report_problem(self.plugin, message)

    def solved(self) -> None:
        clear_problem(self.plugin)

    def lasting(self, message: str) -> None:
        show_lasting(self.plugin, message)

    def _show_device(self, device: dict[str, Any]) -> None:
        """Show the board's state (``device``: the server's ``device`` block) in the 'Board
        state' setting; one that is not ready as the module's problem, until it is ready again
        ("… is back"); a restart of the board since the last one shown as a lasting message."""
        state, reason = device.get("state", "unknown"), device.get("reason")
        self._session = device.get("session", self._session)
        self.plugin.settings.child(GROUP, "state").setValue(
            state + (f": {reason}" if reason else ""))
        board = board_name(self.client.hello_info or {}) if self.client else "the board"
        problem = device_problem(board, device)
        if problem is not None:
            self._device_problem = problem
            self.problem(problem)
            return
        if self._device_problem is not None:
            if _problem_shown(self.plugin) == self._device_problem:
                self.solved()
            self._device_problem = None
            self.lasting(f"{board} is back")
        restarted = device.get("board_restarted_at")
        if restarted and restarted != self._restart_shown:
            self.lasting(f"{board} restarted at {local_time(restarted)}; the server restored "
                         "its settings")
        self._restart_shown = restarted
        self._resend_if_needed(device)

    def _on_connection_event(self, event: str, info: dict[str, Any]) -> None:
        """Show a connection event of the client (in the thread that opened the link); an event
        still on its way when the link closed is dropped."""
        if self.client is None:
            return
        if event == "lost":
            self.plugin.settings.child(GROUP, "state").setValue("connection lost, reconnecting")
            self.problem(f"PyRPL server connection lost ({info.get('reason')}); reconnecting…")
        elif event == "resumed":
            self.solved()
            self.status("PyRPL server connection restored")
            self._show_device(info.get("device", {}))
        elif event == "new_session":
            self.solved()
            self.status("PyRPL server restarted")
            self._settings_pending = True
            self._show_device(info.get("device", {}))
        elif event == "failed":
            self.plugin.settings.child(GROUP, "state").setValue("stopped")
            self.problem(f"PyRPL server unusable: {info.get('error')}")
        elif event == "device":
            self._show_device(info)


# ------------------------------------------------------------------------------------------------
# viewers: settings written back, readable option lists, initialization failures, acquisitions
# running in the background


_PREFIXES = {-9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M"}


def si_label(value: float, unit: str, zero: str = "off") -> str:
    """``0.000131072, "s"`` → ``"131 µs"`` (3 significant digits); 0 → ``zero``."""
    if value == 0:
        return zero
    exponent = min(max(3 * math.floor(math.log10(abs(value)) / 3), -9), 6)
    return f"{value / 10.0 ** exponent:.3g} {_PREFIXES[exponent]}{unit}"


def labelled(values: Sequence[float], unit: str, zero: str = "off") -> dict[str, float]:
    """Limits of a 'list' setting: readable label → value (the setting's value is the number)."""
    limits = {si_label(v, unit, zero): float(v) for v in values}
    if len(limits) != len(values):
        raise ValueError(f"labels of {values} are not unique")
    return limits


def write_back(plugin: PluginHost, applied: dict[str, Any]) -> None:
    """Show the values the board applied (after quantization) in the plugin's settings of the
    same names; PyMoDAQ forwards them to its settings tree (no commit_settings loop: the plugin's
    own changes are only displayed). A filter (list of cutoffs) shows its first stage; a 'list'
    setting of numbers shows its nearest option."""
    for name, value in applied.items():
        try:
            param = plugin.settings.child(name)
        except KeyError:
            continue
        if isinstance(value, list):
            value = value[0] if value else 0.0
        limits = param.opts.get("limits")
        if param.type() == "list" and isinstance(value, (int, float)) and limits:
            options = list(limits.values()) if isinstance(limits, dict) else list(limits)
            value = min(options, key=lambda option: abs(option - value))
        if param.value() != value:
            param.setValue(value)


def report_problem(plugin: PluginHost, message: str) -> None:
    """Show a problem until it no longer holds (then :func:`clear_problem`), as PyMoDAQ shows a
    module's state: in the read-only 'Problem' setting, and as a status message (PyMoDAQ logs every
    status message, so it is in its log too) that stays in the module's status bar until the next
    message instead of PyMoDAQ's 1 s. The same problem again (a live grab still without trigger)
    is not repeated."""
    param = _problem_param(plugin)
    if param is not None:
        if param.value() == message:
            return
        param.setValue(message)
    show_lasting(plugin, message)


def show_lasting(plugin: PluginHost, message: str) -> None:
    """A status message (in PyMoDAQ's log too) that stays in the module's status bar until the
    next one, instead of PyMoDAQ's 1 s."""
    plugin.emit_status(ThreadCommand(UPDATE_STATUS, message))
    plugin.emit_status(ThreadCommand(UPDATE_UI, "update_status", args=[message, 0]))


def clear_problem(plugin: PluginHost) -> None:
    """The problem shown by :func:`report_problem` no longer holds."""
    param = _problem_param(plugin)
    if param is not None and param.value():
        param.setValue("")


def _problem_shown(plugin: PluginHost) -> str:
    """The problem :func:`report_problem` shows now ("" for none)."""
    param = _problem_param(plugin)
    return "" if param is None else str(param.value())


def _problem_param(plugin: PluginHost) -> Parameter | None:
    try:
        return plugin.settings.child(PROBLEM)
    except (KeyError, AttributeError):  # a plugin without the field (tests' stand-ins)
        return None


def init_failed(plugin: PluginHost, link: PyRPLLink | None, exc: BaseException) -> str:
    """The reason ``ini_detector``/``ini_stage`` returns (as ``reason, False``) when it cannot
    initialize.

    PyMoDAQ only shows "Viewer initialized: False" (not the reason) in its status bar, so the
    reason is also reported as a problem (:func:`report_problem`), queued in the worker's event loop
    after PyMoDAQ's initialization status: the reason is the last word. Then the failed worker is
    retired (:func:`retire_failed_worker`). The server reference and any lease are released:
    PyMoDAQ does not call close() after a failed initialization.
    """
    reason = f"{getattr(link, 'module', 'PyRPL')}: initialization failed: {exc}"
    if isinstance(exc, PyrplPluginError):
        logger.error(reason)
    else:
        logger.exception(reason)
    if link is not None:
        link.close()
    clear_problem(plugin)  # a setting restored from an earlier failure: this one is reported
    QTimer.singleShot(0, lambda: (report_problem(plugin, reason), retire_failed_worker(plugin)))
    return reason


def retire_failed_worker(plugin: PluginHost) -> None:
    """End the worker thread of ``plugin``, whose initialization failed (in that thread).

    PyMoDAQ 5.3 keeps a failed worker connected to its control module: initializing again starts a
    second worker in a new thread, and every later command (initialize, grab, move, settings)
    reaches both, so two plugin instances initialize and acquire (two frames per snap, one more
    worker per failed attempt). A worker whose thread has ended runs no command. Only a master's
    own thread is ended (a slave shares its master's; a worker in the GUI thread, PyMoDAQ's
    ``viewer_in_thread = false``, has none); the worker object is kept (PyMoDAQ disconnects it
    when the module quits), not deleted with its thread.
    """
    thread = QThread.currentThread()
    app = QCoreApplication.instance()
    if app is None or thread is app.thread() or not plugin.is_master:
        return
    worker = plugin.parent
    if worker is not None:
        try:
            thread.finished.disconnect(worker.deleteLater)
        except (TypeError, RuntimeError):  # PyMoDAQ did not connect it
            pass
    logger.info("%s: worker thread of the failed initialization ended", plugin_title(plugin))
    thread.quit()
