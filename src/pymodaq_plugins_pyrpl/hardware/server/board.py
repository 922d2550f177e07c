"""The backend as the server drives it: every call on one dedicated thread, in submission order,
each request's call bounded in time; the link upkeep; and the device state the server reports."""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from ..backends.base import Backend
from ..errors import BackendUnavailable, DeviceNotReady, InvalidParams

logger = logging.getLogger(__name__)

CALL_BOUND = 8.0
"""A request's backend call, its wait behind the calls before it included, is answered within
this many seconds (then -32004): below the clients' default timeout of 10 s, above the longest
call a board answering within its deadlines makes (an upkeep step of at most 2.5 s, then a
trace of two 1.83 s reads)."""
TAKE_BOUND = 20.0
"""``take_board`` is answered within this many seconds (PyRPL's start of ``monitor_server`` over
its ssh shell, then the connection)."""
UPKEEP_RETRY = 2.0
"""Seconds before the next upkeep step after one that raised (a backend bug: logged)."""
NO_LINK = {"attempts": 0, "board_restarted_at": None, "other": None}
"""The link fields of the ``device`` block while the backend is not open."""


def _now_iso() -> str:
    """Now, ISO 8601 in UTC to the microsecond."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Board:
    """Calls the backend on one dedicated thread, in submission order, keeps its link up, and
    knows its state.

    A backend that does not need its own thread (``needs_own_thread`` False: the simulator, whose
    calls are short computations) is called directly on the event loop instead (:attr:`inline`),
    which saves two thread hand-overs per call.

    The device state is ``disconnected`` (before :meth:`open` and after :meth:`close`),
    ``connecting``, ``error`` (:meth:`open` failed), and once open the backend's own
    (``Backend.device_state``: ``ready``, ``lost``, ``taken`` or ``error``); ``since`` is when
    the server noticed its last change. Once open, an upkeep task calls ``Backend.maintain`` on
    the backend thread and sleeps what it returns (never again after None). ``changed`` is called
    whenever the state, its reason or the link fields (``Backend.link_info``) change; a change of
    state is logged (a new reason in the same state, e.g. one more recovery attempt, at debug
    level).
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
        self._reported = (*self.state(), self.link_info())
        self.since = _now_iso()
        """When the state (not its reason) last changed, ISO 8601 UTC, as the server noticed."""
        self._upkeep: asyncio.Task[None] | None = None

    def state(self) -> tuple[str, str | None]:
        """The device state and its reason (None when there is none)."""
        if self._phase == "open":
            return self.backend.device_state()
        return self._phase, self._open_error

    def link_info(self) -> dict[str, Any]:
        """``attempts``, ``board_restarted_at`` and ``other`` (``Backend.link_info``)."""
        return dict(self.backend.link_info() if self._phase == "open" else NO_LINK)

    def status(self) -> dict[str, Any]:
        """The device as the status and the hello report it."""
        state, reason, link = self._note()
        return {"state": state, "reason": reason, "since": self.since, **link,
                "session": self.session, "backend": self.backend.name,
                "hostname": self.backend.hostname, "ssh_port": self.backend.ssh_port,
                "board_port": self.backend.board_port, "plant": self.backend.plant}

    async def open(self) -> None:
        """Connect the backend to its board and start the link upkeep. Raises
        BackendUnavailable."""
        self._enter("connecting")
        try:
            await self.call(self.backend.open)
        except BackendUnavailable as exc:
            self._enter("error", str(exc))
            raise
        self.session = uuid.uuid4().hex
        self._enter("open")
        self._upkeep = asyncio.ensure_future(self._keep_up())

    async def close(self) -> None:
        """Stop the upkeep, disconnect from the board without touching its outputs; no call runs
        after this."""
        if self._upkeep is not None:
            self._upkeep.cancel()
            await asyncio.gather(self._upkeep, return_exceptions=True)
            self._upkeep = None
        try:
            await self.call(self.backend.close)
        finally:
            self._executor.shutdown(wait=True)
            self._enter("disconnected")

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the backend thread (inline: now), whatever the device state; not
        bounded (the server's own calls: open, close, upkeep)."""
        if self.inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as :meth:`call`, for a request, within CALL_BOUND seconds. Raises
        DeviceNotReady (with ``data: {"state", "since", "reason"}``) unless the device is ready,
        if it stops being ready meanwhile, or if the call does not end in time (a call not
        started yet is then dropped; one under way ends later, its outcome unknown);
        InvalidParams for a ValueError."""
        state, reason, _ = self._note()
        if state != "ready":
            raise self._not_ready(state, reason)
        try:
            return await self._bounded(fn, args, CALL_BOUND)
        except DeviceNotReady as exc:
            self._note()
            raise DeviceNotReady(exc.message, self._state_data()) from None
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None

    async def take(self) -> dict[str, Any]:
        """Take the board back from another program (``take_board``) unless it is ready; the
        ``device`` block afterwards. Raises DeviceNotReady (the backend is not open, or could not
        take the board: the reason; or no answer within TAKE_BOUND)."""
        state, reason, _ = self._note()
        if self._phase != "open":
            raise self._not_ready(state, reason)
        if state != "ready":
            logger.info("taking the board back (it was %s)", state)
            try:
                await self._bounded(self.backend.take_board, (), TAKE_BOUND)
            except BackendUnavailable as exc:
                self._note()
                raise DeviceNotReady(f"could not take the board back: {exc}",
                                     self._state_data()) from None
        return self.status()

    async def _bounded(self, fn: Callable[..., Any], args: tuple[Any, ...],
                       bound: float) -> Any:
        """``fn(*args)`` on the backend thread (inline: now, unbounded: short by contract), its
        result within ``bound`` seconds. Raises what ``fn`` raises, DeviceNotReady after
        ``bound``."""
        if self.inline:
            return fn(*args)
        job = self._executor.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job), bound)
        except asyncio.TimeoutError:
            dropped = job.cancel()  # True: it had not started (never will)
            name = getattr(fn, "__name__", "call")
            logger.warning("backend call %s %s after %g s", name,
                           "dropped unstarted" if dropped else "still running", bound)
            raise DeviceNotReady(
                f"the board did not answer within {bound:g} s ("
                + ("the request waited behind slower ones and was dropped: nothing was done)"
                   if dropped else "the request is still under way: its outcome is unknown; "
                                   "read the values back with 'get')"),
                self._state_data()) from None

    async def _keep_up(self) -> None:
        """The link upkeep: ``Backend.maintain`` on the backend thread, then a sleep of what it
        returned, until it returns None (or the board closes)."""
        while True:
            try:
                pause = await self.call(self.backend.maintain)
            except Exception:  # a backend bug: logged; the upkeep goes on
                logger.exception("link upkeep step failed; next one in %g s", UPKEEP_RETRY)
                pause = UPKEEP_RETRY
            self._note()
            if pause is None:
                return
            await asyncio.sleep(max(0.0, pause))

    def _not_ready(self, state: str, reason: str | None) -> DeviceNotReady:
        """The error of a request the board in ``state`` cannot serve."""
        return DeviceNotReady(f"the board is {state}" + (f": {reason}" if reason else ""),
                              self._state_data())

    def _state_data(self) -> dict[str, Any]:
        """The ``data`` of a -32004 error: the device state, its reason and since when."""
        state, reason = self.state()
        return {"state": state, "since": self.since, "reason": reason}

    def _enter(self, phase: str, reason: str | None = None) -> None:
        self._phase, self._open_error = phase, reason
        self._note()

    def _note(self) -> tuple[str, str | None, dict[str, Any]]:
        """The device state, its reason and the link fields now; a change is recorded (``since``),
        logged and reported."""
        state, reason = self.state()
        link = self.link_info()
        current = (state, reason, link)
        if current != self._reported:
            if state != self._reported[0]:
                self.since = _now_iso()
                log = logger.error if state == "error" else (
                    logger.warning if state in ("lost", "taken") else logger.info)
                log("device %s%s", state, f": {reason}" if reason else "")
            elif reason != self._reported[1]:
                logger.debug("device %s: %s", state, reason)
            self._reported = current
            self._changed()
        return current
