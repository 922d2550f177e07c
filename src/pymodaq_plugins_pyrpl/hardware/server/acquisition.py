"""When a trace is taken: the scope's acquisitions one at a time, each waiting for its trace on the
event loop (not holding the backend thread), averaged, restarted by a settings change, bounded by a
deadline; and the IQ modules' wait for their filter to settle. The only code that knows whether the
backend runs inline (on the event loop) or on its own thread."""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any, Callable

import numpy as np

from .. import catalogue
from ..backends.base import ScopeTrace
from ..errors import AcquisitionTimeout, DeviceNotReady
from .board import Board

IQ_SETTLE_TIMEOUT = 10.0
"""Default bound of an IQ acquisition's wait for its filter to settle (seconds)."""
SCOPE_POLL = 0.002
"""Interval between two attempts to finish a trace that is late (no trigger yet), in seconds."""
SCOPE_TIMEOUT_MARGIN = 10.0
"""A scope acquisition's default timeout is its ``trace_average × duration`` plus this (seconds)."""
FINISH_WINDOW = 0.003
"""The backend thread may wait this long for a trace to complete (seconds)."""
FINISH_POLL = 0.0001
"""Interval of the backend thread's ``scope_ready`` polls within FINISH_WINDOW (seconds)."""
LOOP_TIMER_SLACK = 0.001
"""How late the event loop's timers can wake up (s): epoll rounds a timeout up to the next ms."""


_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: time.sleep(0))
"""Give the CPU to another runnable thread or process, if any."""


class ScopeAcquisition:
    """The scope's acquisitions, one at a time, and the settings they were taken with."""

    def __init__(self, board: Board) -> None:
        self._board = board
        self._backend = board.backend
        self._lock = asyncio.Lock()
        self._generation = 0
        """Counts the changes of the scope settings."""
        self._settings_cache: tuple[int, dict[str, Any]] = (-1, {})
        self._sequence = 0

    def settings_changed(self) -> None:
        """The scope settings are being changed: an acquisition under way restarts."""
        self._generation += 1

    async def acquire(self, timeout: float | None) -> dict[str, Any]:
        """One (averaged) trace taken entirely with the current settings.

        A settings change during the acquisition restarts it, so a trace never mixes settings.
        ``timeout`` is a deadline counted from the request's arrival (now): it covers waiting for
        another client's acquisition to end, the restarts and the traces. Default: the current
        settings' ``trace_average × duration`` plus SCOPE_TIMEOUT_MARGIN, still from the arrival
        (a change to longer traces moves it). Raises AcquisitionTimeout when it passes without a
        complete (averaged) trace.
        """
        loop = asyncio.get_running_loop()
        arrival = loop.time()

        def deadline(settings: dict[str, Any]) -> float:
            if timeout is not None:
                return arrival + timeout
            return (arrival + settings["trace_average"] * settings["duration"]
                    + SCOPE_TIMEOUT_MARGIN)

        await self._turn(deadline)
        try:
            restarts = 0
            while True:
                generation = self._generation
                settings = await self._settings(generation)
                trace = await self._take_traces(settings["trace_average"], generation,
                                                deadline(settings), restarts)
                if trace is not None:
                    break
                restarts += 1
            self._sequence += 1
        finally:
            self._lock.release()
        return {"ch1": np.asarray(trace.ch1, dtype="<f4"), "ch2": np.asarray(trace.ch2, dtype="<f4"),
                "t0": trace.t0, "dt": trace.dt, "sequence": self._sequence,
                "timestamp": time.time(), "settings": settings}

    async def _turn(self, deadline: Callable[[dict[str, Any]], float]) -> None:
        """Take the scope (wait while another acquisition holds it) before ``deadline(settings)``
        of the current settings passes. Raises AcquisitionTimeout."""
        loop = asyncio.get_running_loop()
        while True:
            settings = await self._settings(self._generation)
            remaining = deadline(settings) - loop.time()
            if remaining <= 0:
                raise AcquisitionTimeout(
                    "no trace within the timeout: the scope was busy with another client's "
                    "acquisition all that time; give a longer 'timeout'")
            try:
                await asyncio.wait_for(self._lock.acquire(), remaining)
                return
            except asyncio.TimeoutError:
                continue  # the deadline of settings changed meanwhile may be later

    async def _settings(self, generation: int) -> dict[str, Any]:
        """The scope settings, read from the board once per settings generation."""
        if self._settings_cache[0] != generation:
            settings = await self._board.run(self._backend.get, "scope",
                                           list(catalogue.MODULES["scope"].attributes))
            self._settings_cache = (generation, settings)
        return dict(self._settings_cache[1])

    async def _take_traces(self, count: int, generation: int, deadline: float,
                           restarts: int) -> ScopeTrace | None:
        """The average of ``count`` traces, or None if the scope settings changed meanwhile.

        The traces are summed as they come: the memory does not depend on ``count``. The wait for
        a trace happens on the event loop, so other requests are served meanwhile; a backend with
        its own thread spends the last few milliseconds polling there instead. Raises
        AcquisitionTimeout once the event loop's clock passes ``deadline`` (``restarts``: how
        many settings changes restarted the acquisition before, for the message).
        """
        total: ScopeTrace | None = None
        for _ in range(count):
            trace = await self._one_trace(generation, deadline, restarts)
            if trace is None:
                return None
            if total is None:
                total = ScopeTrace(np.array(trace.ch1, dtype=np.float64),
                                   np.array(trace.ch2, dtype=np.float64), trace.t0, trace.dt)
            else:
                total.ch1 += trace.ch1
                total.ch2 += trace.ch2
        assert total is not None  # count >= 1 (catalogue)
        if count > 1:
            total.ch1 /= count
            total.ch2 /= count
        return total

    async def _one_trace(self, generation: int, deadline: float,
                         restarts: int) -> ScopeTrace | None:
        """One trace, or None if the scope settings changed meanwhile; a pending acquisition is
        stopped if this fails or is cancelled. Raises AcquisitionTimeout as :meth:`_take_traces`."""
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            raise _scope_timeout(restarts)
        try:
            wait, trace = await self._board.run(self._arm_and_finish)
            if trace is None:
                await self._wait_for_trace(min(wait, deadline - loop.time()))
            while trace is None:
                if self._generation != generation:
                    return None
                trace = await self._board.run(self._finish_trace)
                if trace is not None:
                    break
                if loop.time() >= deadline:
                    raise _scope_timeout(restarts)
                await asyncio.sleep(SCOPE_POLL)
        except BaseException:
            if self._board.state()[0] == "ready":
                with contextlib.suppress(DeviceNotReady):  # bounded: the board may be stuck
                    await self._board.run(self._backend.scope_stop)
            raise
        return trace if self._generation == generation else None

    async def _wait_for_trace(self, wait: float) -> None:
        """Let ``wait`` seconds pass on the event loop, serving other requests meanwhile.

        With a backend thread, until FINISH_WINDOW before the end (the thread polls the rest). An
        inline backend has no thread to poll, and the loop's timers wake up to LOOP_TIMER_SLACK
        late: that last stretch is a busy wait that yields to the loop (other requests) and to
        other processes (a local client) until the moment has come.
        """
        loop = asyncio.get_running_loop()
        if not self._board.inline:
            await asyncio.sleep(max(0.0, wait - FINISH_WINDOW))
            return
        end = loop.time() + wait
        if wait > LOOP_TIMER_SLACK:
            await asyncio.sleep(wait - LOOP_TIMER_SLACK)
        while loop.time() < end:
            _yield_cpu()  # a busy wait, but other processes (the client's) run first
            await asyncio.sleep(0)

    def _arm_and_finish(self) -> tuple[float, ScopeTrace | None]:
        """On the backend thread: arm; a trace due within FINISH_WINDOW is also waited for there.
        Inline: only arm."""
        wait = self._backend.scope_arm()
        if wait > FINISH_WINDOW or self._board.inline:
            return wait, None
        time.sleep(wait)
        return wait, self._finish_trace()

    def _finish_trace(self) -> ScopeTrace | None:
        """The trace if it is complete (on the backend thread: if it completes within
        FINISH_WINDOW), else None."""
        end = time.monotonic() + (0.0 if self._board.inline else FINISH_WINDOW)
        while not self._backend.scope_ready():
            if time.monotonic() >= end:
                return None
            time.sleep(FINISH_POLL)
        return self._backend.scope_fetch()


async def iq_settled(board: Board, module: str, timeout: float | None) -> None:
    """Wait, on the event loop, until the quadrature filter of ``module`` has settled after the
    module's last change (Backend.iq_settle_remaining); a change meanwhile extends the wait.
    Raises AcquisitionTimeout if that takes longer than ``timeout`` (default IQ_SETTLE_TIMEOUT).
    """
    loop = asyncio.get_running_loop()
    limit = IQ_SETTLE_TIMEOUT if timeout is None else timeout
    deadline = loop.time() + limit
    while (wait := await board.run(board.backend.iq_settle_remaining, module)) > 0:
        if loop.time() + wait > deadline:
            raise AcquisitionTimeout(
                f"{module} has not settled within {limit} s: its settings keep changing, or "
                "its bandwidth is too low for the timeout", {"module": module})
        await asyncio.sleep(wait)


def _scope_timeout(restarts: int) -> AcquisitionTimeout:
    """The timeout error of a scope acquisition that settings changes restarted ``restarts`` times."""
    changed = (f" (the scope settings changed {restarts} time{'s' * (restarts != 1)} meanwhile; "
               "each change restarts the acquisition)") if restarts else ""
    return AcquisitionTimeout(f"no trace within the timeout{changed}: check the trigger source and "
                              "threshold, or give a longer 'timeout'")

