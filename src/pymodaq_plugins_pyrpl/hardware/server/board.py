"""The backend as the server drives it: every call on one dedicated thread, in submission order,
and the device state the server reports."""
from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..backends.base import Backend
from ..errors import BackendUnavailable, DeviceNotReady, InvalidParams

logger = logging.getLogger(__name__)


class Board:
    """Calls the backend on one dedicated thread, in submission order, and knows its state.

    A backend that does not need its own thread (``needs_own_thread`` False: the simulator, whose
    calls are short computations) is called directly on the event loop instead (:attr:`inline`),
    which saves two thread hand-overs per call.

    The device state is ``disconnected`` (before :meth:`open` and after :meth:`close`),
    ``connecting``, ``error`` (:meth:`open` failed), and once open the backend's own
    (``Backend.device_state``: ``ready`` or ``error``). ``changed`` is called, and the change
    logged, whenever it changes.
    """

    def __init__(self, backend: Backend, changed: Callable[[], None]) -> None:
        self.backend = backend
        self.inline = not backend.needs_own_thread
        """Calls run directly on the event loop (no thread)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backend")
        self._changed = changed
        self._phase = "disconnected"
        """``disconnected``, ``connecting``, ``error`` (open failed) or ``open``."""
        self._open_error: str | None = None
        self.session = ""
        """A new id each time the board is opened: a client that sees it change knows the board's
        settings may have been reset."""
        self._reported = self.state()

    def state(self) -> tuple[str, str | None]:
        """The device state and its reason (None when there is none)."""
        if self._phase == "open":
            return self.backend.device_state()
        return self._phase, self._open_error

    def status(self) -> dict[str, Any]:
        """The device as the status and the hello report it."""
        state, reason = self.state()
        return {"state": state, "reason": reason, "session": self.session,
                "backend": self.backend.name, "hostname": self.backend.hostname,
                "ssh_port": self.backend.ssh_port, "board_port": self.backend.board_port,
                "plant": self.backend.plant}

    async def open(self) -> None:
        """Connect the backend to its board. Raises BackendUnavailable."""
        self._enter("connecting")
        try:
            await self.call(self.backend.open)
        except BackendUnavailable as exc:
            self._enter("error", str(exc))
            raise
        self.session = uuid.uuid4().hex
        self._enter("open")

    async def close(self) -> None:
        """Disconnect from the board without touching its outputs; no call runs after this."""
        try:
            await self.call(self.backend.close)
        finally:
            self._executor.shutdown(wait=True)
            self._enter("disconnected")

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the backend thread (inline: now), whatever the device state."""
        if self.inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as :meth:`call`, for a request: raises DeviceNotReady unless the device
        is ready (or if it stops being ready meanwhile), InvalidParams for a ValueError."""
        state, reason = self.state()
        if state != "ready":
            raise DeviceNotReady(f"the board is {state}" + (f": {reason}" if reason else ""))
        try:
            return await self.call(fn, *args)
        except DeviceNotReady:
            self._note()
            raise
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None

    def _enter(self, phase: str, reason: str | None = None) -> None:
        self._phase, self._open_error = phase, reason
        self._note()

    def _note(self) -> None:
        """Log and report a change of the device state."""
        state = self.state()
        if state != self._reported:
            self._reported = state
            log = logger.error if state[0] == "error" else logger.info
            log("device %s%s", state[0], f": {state[1]}" if state[1] else "")
            self._changed()
