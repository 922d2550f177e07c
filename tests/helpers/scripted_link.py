"""A board whose link the test scripts, and a real server serving it in this process.

:class:`ScriptedLinkBackend` is the simulated board (real values, real physics) behind a link
whose device state (ready, lost, taken, error), link fields and take-back the test sets, with its
own backend thread as the PyRPL backend has; it counts its upkeep steps and refuses register
calls with DeviceNotReady while not ready, as the PyRPL backend does. :class:`InProcessServer` runs
the package's real server (transport, dispatch, board) on a free loopback port in a thread, so the
package's client and the plugins talk to it over TCP.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend
from pymodaq_plugins_pyrpl.hardware.errors import BackendUnavailable, DeviceNotReady
from pymodaq_plugins_pyrpl.hardware.server import Server
from pymodaq_plugins_pyrpl.hardware.server.transport import serve

TOKEN = "scripted-link-token"


class ScriptedLinkBackend(SimulatorBackend):
    """The simulated board behind a scripted link (see the module docstring).

    ``pause`` is what :meth:`maintain` returns (seconds to the next step). ``gate``: register calls
    wait until it is set (at most 30 s), to make a call slow. ``take_refusal``: the reason
    :meth:`take_board` raises BackendUnavailable with (None: it takes the board back).
    """

    name = "pyrpl"
    needs_own_thread = True

    def __init__(self, hostname: str = "127.0.0.1", ssh_port: int = 2022,
                 board_port: int = 2222, pause: float = 0.05) -> None:
        super().__init__(seed=0)
        self.hostname = hostname
        self.ssh_port = ssh_port
        self.board_port = board_port
        self.plant = ""
        self.pause = pause
        self.gate = threading.Event()
        self.gate.set()
        self.take_refusal: str | None = None
        self.steps = 0
        self.step_threads: set[str] = set()
        self.takes = 0
        self.calls = 0
        """Register calls that started (the gate's wait included)."""
        self.fail_steps = 0
        """The next this many upkeep steps raise RuntimeError (a backend bug)."""
        self._lock = threading.Lock()
        self._state: tuple[str, str | None] = ("ready", None)
        self._info: dict[str, Any] = {"attempts": 0, "board_restarted_at": None, "other": None}

    def script(self, state: str, reason: str | None = None, **info: Any) -> None:
        """Set the device state and reason, and the link fields given."""
        with self._lock:
            self._state = (state, reason)
            self._info.update(info)

    # -- the link ----------------------------------------------------------------------------------

    def device_state(self) -> tuple[str, str | None]:
        with self._lock:
            return self._state

    def link_info(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._info)

    def maintain(self) -> float:
        self.steps += 1
        self.step_threads.add(threading.current_thread().name)
        if self.fail_steps:
            self.fail_steps -= 1
            raise RuntimeError("scripted upkeep bug")
        return self.pause

    def take_board(self) -> None:
        self.takes += 1
        if self.take_refusal is not None:
            raise BackendUnavailable(self.take_refusal)
        self.script("ready", None, attempts=0, other=None)

    # -- register calls: refused unless ready, slow while the gate is closed -----------------------

    def _through_link(self) -> None:
        self.calls += 1
        if not self.gate.wait(30.0):
            raise RuntimeError("the test never opened the gate")
        state, reason = self.device_state()
        if state != "ready":
            raise DeviceNotReady(reason or f"the board is {state}")

    def get(self, module: str, names: Sequence[str]) -> dict[str, Any]:
        self._through_link()
        return super().get(module, names)

    def set(self, module: str, values: Mapping[str, Any]) -> dict[str, Any]:
        self._through_link()
        return super().set(module, values)

    def scope_arm(self) -> float:
        self._through_link()
        return super().scope_arm()


class InProcessServer:
    """The package's server (``Server`` + ``serve``) for ``backend`` on a free loopback port, in
    a thread with its own event loop; a context manager (stops the server and joins the thread,
    both bounded). ``port`` is set once it serves. Raises what ``serve`` raised at start."""

    def __init__(self, backend: Any, token: str = TOKEN) -> None:
        self.backend = backend
        self.token = token
        self.port = 0
        self.server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="in-process-server", daemon=True)

    def __enter__(self) -> InProcessServer:
        self._thread.start()
        if not self._ready.wait(30.0):
            raise TimeoutError("the in-process server did not serve within 30 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self.server is not None:
            self._loop.call_soon_threadsafe(self.server.stop, "test over")
        self._thread.join(15.0)
        assert not self._thread.is_alive(), "the in-process server did not stop within 15 s"

    def on_loop(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the server's event loop; its result (at most 10 s)."""
        assert self._loop is not None

        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10.0)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # reported by __enter__ if it happened before serving
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.server = Server(self.backend, self.token)

        def ready(port: int) -> None:
            self.port = port
            self._ready.set()
        await serve(self.server, "127.0.0.1", 0, ready=ready)
