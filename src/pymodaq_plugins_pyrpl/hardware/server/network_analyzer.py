"""The network analyzer in the server: the ``na`` module's settings (global, identical for both
backends) and its sweeps, run on the backend in chunks of at most CHUNK seconds so that other
requests are served between them and ``stop`` takes effect at once.

A sweep leases its IQ module to the requesting session (owner OWNER) while it runs, turns the
IQ's output off (amplitude 0) however it ends, and pushes its progress to the requesting
connection at most every PROGRESS_PERIOD seconds (a slow reader keeps only the newest push).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import catalogue, protocol
from ..analysis import network
from ..backends.base import NaSweep
from ..errors import AcquisitionTimeout, InvalidParams, ModuleLeased, RemoteError
from .board import CALL_BOUND, Board
from .connection import Connection
from .sessions import Session, Sessions

logger = logging.getLogger(__name__)

MODULE = "na"
OWNER = "network analyzer"
"""The owner of the IQ module's lease while a sweep runs on it."""
CHUNK = 0.05
"""Seconds of sweep (measurement and backend calls) per backend call, at most (about)."""
FIRST_CHUNK_POINTS = 4
"""Points of a sweep's first chunk beyond point 0 at most, before its real cost is measured."""
LEAD = 0.005
"""The next chunk is asked for this many seconds before the points of the previous one are all
measured (a backend whose points take simulated time then measures them back to back)."""
PROGRESS_PERIOD = 0.1
"""Progress pushes are at least this many seconds apart."""
CLOSE_WAIT = CALL_BOUND
"""When the server stops, it waits at most this long for a sweep under way to end."""


@dataclass
class _Sweep:
    """The sweep under way: who asked, on which IQ module, and its stop and end signals."""

    session: Session
    iq: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Chunk:
    """Points ``first`` .. of a sweep, measured by the backend, valid from ``ready`` (loop time)."""

    first: int
    values: np.ndarray
    ready: float


@dataclass
class _Traces:
    """The sweeps of one acquisition so far: their sum, and the points of the current one."""

    frequencies: np.ndarray
    total: np.ndarray
    current: np.ndarray
    average: int = 1
    """The 1-based sweep being measured."""
    done: int = 0
    """Points measured in the current sweep."""

    def running_average(self, points: int) -> np.ndarray:
        """The average of the first ``points`` points over the sweeps that measured them."""
        return (self.total[:points] + self.current[:points]) / self.average

    def result(self) -> np.ndarray:
        """Every point averaged over the sweeps that measured it (NaN where none did)."""
        counts = np.full(len(self.total), self.average - 1, dtype=float)
        counts[:self.done] += 1
        total = self.total.copy()
        total[:self.done] += self.current[:self.done]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, total / np.maximum(counts, 1), complex(math.nan, math.nan))


class NetworkAnalyzer:
    """The ``na`` module: its settings and one sweep at a time on ``board``'s backend."""

    def __init__(self, board: Board, sessions: Sessions) -> None:
        self._board = board
        self._backend = board.backend
        self._sessions = sessions
        self._settings: dict[str, Any] = catalogue.INSTRUMENTS[MODULE].defaults()
        self._sweep: _Sweep | None = None
        self._sequence = 0
        self._left_on: str | None = None
        """The IQ module whose output a sweep could not turn off (the board was not ready)."""

    # -- settings ----------------------------------------------------------------------------------

    def get(self, names: Sequence[str]) -> dict[str, Any]:
        """The values of ``names`` (valid attribute names), ``sweep_time`` computed."""
        values = dict(self._settings, sweep_time=network.settings_sweep_time(self._settings))
        return {name: values[name] for name in names}

    def set(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``values`` (validated by the catalogue) all or nothing; they apply to the next
        sweep, not to one under way. Raises InvalidParams if, with the other settings, the IQ's
        32-bit averager cannot count ``average_per_point / rbw`` (more than 34.4 s)."""
        merged = {**self._settings, **values}
        averaging = network.averaging(merged["rbw"], merged["average_per_point"])
        if max(averaging.averages, averaging.sleepcycles) > catalogue.NA_AVERAGES_MAX:
            spec = catalogue.INSTRUMENTS[MODULE].attributes["average_per_point"]
            most = int(catalogue.NA_AVERAGES_MAX / catalogue.FPGA_CLOCK * merged["rbw"])
            raise InvalidParams(
                f"attribute 'average_per_point' must be at most {most} at rbw "
                f"{merged['rbw']:g} Hz (the IQ averages at most {catalogue.NA_AVERAGES_MAX} "
                f"cycles per point, 34.4 s), not {merged['average_per_point']}",
                {"attribute": "average_per_point",
                 "allowed": {"min": spec.minimum, "max": most, "unit": ""}})
        self._settings = merged
        return {name: merged[name] for name in values}

    def check_set(self, module: str) -> None:
        """Raise ModuleLeased if a sweep runs on ``module``: its settings are the sweep's until it
        ends (whoever asks, the sweep's own session included)."""
        sweep = self._sweep
        if sweep is not None and module == sweep.iq:
            raise ModuleLeased(
                f"{module} is busy: the network analyzer sweeps on it for client "
                f"{sweep.session.client!r}; change it once the sweep ends (or stop it)",
                {"module": module, "holder": sweep.session.client, "owner": OWNER,
                 "holder_connected": True, "frees_in": None})

    def board_ready(self) -> None:
        """The board is ready (again): turn off an output a sweep had to leave on."""
        if self._left_on is not None and self._sweep is None:
            asyncio.ensure_future(self._turn_off_left())

    async def _turn_off_left(self) -> None:
        module = self._left_on
        try:
            await self._board.run(self._backend.na_stop)
        except RemoteError as exc:
            logger.warning("the network analyzer still cannot turn %s's output off: %s", module,
                           exc.message)
            return
        if self._left_on == module:
            self._left_on = None
            logger.info("the network analyzer turned %s's output off", module)

    # -- sweeps ------------------------------------------------------------------------------------

    async def stop(self, session: Session) -> bool:
        """End ``session``'s sweep at its next chunk boundary and wait until it has ended (its
        output off); False if ``session`` has none running."""
        sweep = self._sweep
        if sweep is None or sweep.session is not session:
            return False
        sweep.stop.set()
        await sweep.finished.wait()
        return True

    async def close(self) -> None:
        """End the sweep under way, if any (the server stops): it ends at its next chunk
        boundary, its output off; waits at most CLOSE_WAIT seconds for that."""
        sweep = self._sweep
        if sweep is None:
            return
        sweep.stop.set()
        try:
            await asyncio.wait_for(sweep.finished.wait(), CLOSE_WAIT)
        except asyncio.TimeoutError:
            logger.warning("the network analyzer's sweep on %s did not end within %g s",
                           sweep.iq, CLOSE_WAIT)

    async def acquire(self, connection: Connection, timeout: float | None,
                      progress: bool) -> dict[str, Any]:
        """One acquisition with the current settings: ``trace_average`` sweeps, averaged (the
        reply of docs/protocol.md, *acquire na*). ``timeout`` (default
        ``network.default_timeout``) counts from now. ``progress``: push the progress to
        ``connection``.

        Raises ModuleLeased (a sweep is under way, or another session leases ``na`` or the IQ
        module: nothing done), AcquisitionTimeout, DeviceNotReady (the board stopped answering);
        the IQ's output is off (amplitude 0) after every outcome, cancellation included (while
        the board answers)."""
        session = connection.session
        assert session is not None
        settings = self.get(list(catalogue.INSTRUMENTS[MODULE].attributes))
        iq = settings["iq"]
        self._check_free(session, iq)
        took = iq not in session.leases
        if took:
            self._sessions.lease(session, iq, OWNER)
        sweep = self._sweep = _Sweep(session, iq)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + (network.default_timeout(settings) if timeout is None else timeout)
        try:
            traces = await self._sweeps(sweep, settings, deadline,
                                        connection if progress else None)
        finally:
            await self._end(sweep, took)
        self._sequence += 1
        complete = traces.average == settings["trace_average"] and traces.done == len(
            traces.frequencies)
        return {"frequencies": traces.frequencies, "data": traces.result(), "complete": complete,
                "done": traces.done, "averages": traces.average, "iq": iq,
                "duration": loop.time() - started, "sequence": self._sequence,
                "timestamp": time.time(), "settings": settings}

    def _check_free(self, session: Session, iq: str) -> None:
        """Raise ModuleLeased if a sweep is under way, or another session leases ``na`` or ``iq``."""
        if self._sweep is not None:
            client = self._sweep.session.client
            raise ModuleLeased(f"the network analyzer is busy: a sweep of client {client!r} is "
                               "under way", {"module": MODULE, "holder": client, "owner": OWNER,
                                             "holder_connected": True, "frees_in": None})
        for module in (MODULE, iq):
            try:
                self._sessions.check_lease(session, module)
            except ModuleLeased as exc:
                raise ModuleLeased(f"{module} is busy: {exc.message}", exc.data) from None

    async def _sweeps(self, sweep: _Sweep, settings: Mapping[str, Any], deadline: float,
                      connection: Connection | None) -> _Traces:
        """The ``trace_average`` sweeps of ``settings`` until done or stopped. Raises
        AcquisitionTimeout once ``deadline`` (loop time) passes."""
        traces: _Traces | None = None
        progress = _Progress(connection)
        for average in range(1, settings["trace_average"] + 1):
            started = await self._board.run(self._backend.na_start, settings)
            points = len(started.frequencies)
            if traces is None:
                traces = _Traces(np.asarray(started.frequencies, dtype="<f8"),
                                 np.zeros(points, complex), np.zeros(points, complex))
            else:
                traces.total += traces.current
                traces.average, traces.done = average, 0
            if await self._sweep_once(sweep, traces, started, deadline, progress):
                break
        assert traces is not None  # trace_average >= 1 (catalogue)
        return traces

    async def _sweep_once(self, sweep: _Sweep, traces: _Traces, started: NaSweep,
                          deadline: float, progress: _Progress) -> bool:
        """Measure the points of the started sweep into ``traces`` in chunks; True if stopped.

        Each chunk's points are valid once its ``wait`` has passed (its ``ready`` time); the next
        chunk is asked for LEAD before that, so that a backend whose points take simulated time
        measures them without gaps. A stop drops the chunks not ready yet."""
        loop = asyncio.get_running_loop()
        points, per_point = len(started.frequencies), started.time_per_point
        chunks: deque[_Chunk] = deque()
        issued = 0
        cost = per_point
        while True:
            now = loop.time()
            while chunks and chunks[0].ready <= now:
                chunk = chunks.popleft()
                traces.current[chunk.first:chunk.first + len(chunk.values)] = chunk.values
                traces.done += len(chunk.values)
                progress.push(traces, points)
            if traces.done == points:
                return False
            if sweep.stop.is_set():
                return True
            if now >= deadline:
                raise _timeout()
            if issued < points and (not chunks or now >= chunks[-1].ready - LEAD):
                count = _chunk_points(issued, points, cost, per_point)
                values, wait = await self._board.run(self._backend.na_points, issued, count)
                chunks.append(_Chunk(issued, values, loop.time() + wait))
                weight = count + (network.FIRST_POINT_FACTOR - 1 if issued == 0 else 0)
                cost = max(per_point, (chunks[-1].ready - now) / weight)
                issued += count
                continue
            until = chunks[0].ready if issued == points else min(chunks[0].ready,
                                                                  chunks[-1].ready - LEAD)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sweep.stop.wait(), max(0.0, min(until, deadline) - now))

    async def _end(self, sweep: _Sweep, took: bool) -> None:
        """However the sweep ends: output off, the lease the sweep took released, ``stop``
        answered. Survives a cancellation (the output is turned off all the same)."""
        off = asyncio.ensure_future(self._board.run(self._backend.na_stop))
        try:
            await asyncio.shield(off)
            self._left_on = None
        except RemoteError as exc:
            self._left_on = sweep.iq
            logger.warning("the network analyzer could not turn %s's output off (%s): it will "
                           "once the board is ready", sweep.iq, exc.message)
        finally:
            if took:
                self._sessions.release(sweep.session, sweep.iq)
            self._sweep = None
            sweep.finished.set()


def _timeout() -> AcquisitionTimeout:
    return AcquisitionTimeout("the network analyzer's sweep did not end within the timeout: give "
                              "a longer 'timeout' (or none: 3 x sweep_time x trace_average + "
                              "10 s)", {"module": MODULE})


def _chunk_points(first: int, points: int, cost: float, time_per_point: float) -> int:
    """Points of the next chunk from point ``first`` of ``points``: CHUNK seconds of them at
    ``cost`` seconds each (point 0 counts FIRST_POINT_FACTOR times); at least 1."""
    weight = network.FIRST_POINT_FACTOR - 1 if first == 0 else 0
    count = int(CHUNK / cost) - weight
    if first == 0 and cost <= time_per_point:  # not measured yet
        count = min(count, 1 + FIRST_CHUNK_POINTS)
    return max(1, min(points - first, count))


class _Progress:
    """The progress pushes of one acquisition to ``connection`` (None: none asked for), at least
    PROGRESS_PERIOD apart; an unsent one is replaced by the next."""

    def __init__(self, connection: Connection | None) -> None:
        self._connection = connection
        self._pushed = -math.inf

    def push(self, traces: _Traces, points: int) -> None:
        """Push ``traces`` of a sweep of ``points`` if asked for and it is time."""
        now = time.monotonic()
        if self._connection is None or now - self._pushed < PROGRESS_PERIOD:
            return
        self._pushed = now
        done = traces.done
        params = {"module": MODULE, "done": done, "points": points, "average": traces.average,
                  "frequencies": traces.frequencies[:done], "data": traces.running_average(done)}
        self._connection.push_latest(protocol.NOTIFICATION_PROGRESS, protocol.dumps_line(
            protocol.notification(protocol.NOTIFICATION_PROGRESS, params)))
