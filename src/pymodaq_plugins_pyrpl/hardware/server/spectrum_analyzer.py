"""The server's spectrum analyzer (catalogue module ``sa``): its settings, kept by the server for
both backends, and its acquisition, spectra computed from scope traces taken through the server's
:class:`.ScopeAcquisition` (:mod:`..analysis.spectrum`, PyRPL's SpectrumAnalyzer in baseband)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import catalogue
from ..analysis import spectrum
from ..errors import AcquisitionTimeout, ModuleLeased
from .acquisition import SCOPE_TIMEOUT_MARGIN, ScopeAcquisition

if TYPE_CHECKING:
    from .sessions import Session, Sessions

OWNER = "spectrum analyzer"
"""The owner recorded on the scope lease an acquisition takes."""

Apply = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class SpectrumAnalyzer:
    """The ``sa`` settings (global to the server, from the catalogue defaults) and its
    acquisitions, one at a time. ``apply(module, values)`` applies validated hardware settings as
    a ``set`` does; ``read(module, names)`` reads them from the board."""

    def __init__(self, sessions: Sessions, scope: ScopeAcquisition, apply: Apply,
                 read: Callable[[str, list[str]], Awaitable[dict[str, Any]]]) -> None:
        self._sessions = sessions
        self._scope = scope
        self._apply = apply
        self._read = read
        self._values: dict[str, Any] = catalogue.INSTRUMENTS["sa"].defaults()
        self._lock = asyncio.Lock()
        self._sequence = 0

    def get(self, names: list[str]) -> dict[str, Any]:
        """The values of ``names`` (valid ``sa`` attributes), ``rbw`` computed from the others."""
        values = dict(self._values, rbw=spectrum.rbw(self._values["span"], self._values["window"]))
        return {n: values[n] for n in names}

    def set(self, values: dict[str, Any]) -> dict[str, Any]:
        """Apply validated ``values`` (catalogue.validate); return them."""
        self._values.update(values)
        return dict(values)

    async def acquire(self, session: Session, timeout: float | None) -> dict[str, Any]:
        """One spectrum (``trace_average`` of them averaged) of both inputs with the current
        settings; see docs/protocol.md for the result.

        The scope is leased to ``session`` (owner OWNER) while it runs, unless the session held it
        already (then kept), and released afterwards; the scope is set up for the span (inputs,
        duration, average on, trigger immediately, one trace per acquisition) through ``apply``
        and keeps those settings. ``timeout`` (s) covers it all, from now; default: the traces'
        duration plus SCOPE_TIMEOUT_MARGIN. Raises ModuleLeased (-32003) if another session
        leases the scope, AcquisitionTimeout (-32005).
        """
        try:
            self._sessions.check_lease(session, "scope")
        except ModuleLeased as exc:
            raise ModuleLeased(f"scope is busy: the spectrum analyzer needs it, and {exc.message}",
                               exc.data) from None
        async with self._lock:
            held = "scope" in session.leases
            if not held:
                self._sessions.lease(session, "scope", OWNER)
            try:
                return await self._acquire(dict(self._values), timeout)
            finally:
                if not held:
                    self._sessions.release(session, "scope")

    async def _acquire(self, settings: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        span, window = settings["span"], settings["window"]
        count = settings["trace_average"]
        limit = (timeout if timeout is not None
                 else count * spectrum.scope_duration(span) + SCOPE_TIMEOUT_MARGIN)
        deadline = loop.time() + limit
        needed = catalogue.validate("scope", {
            "input1": settings["input1"], "input2": settings["input2"],
            "duration": spectrum.scope_duration(span), "average": True,
            "trigger_source": "immediately", "trace_average": 1,
            "ch1_active": True, "ch2_active": True})
        total: spectrum.Spectra | None = None
        taken = 0
        while taken < count:
            await self._set_up_scope(needed)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AcquisitionTimeout(
                    f"no spectrum within the timeout ({limit:g} s; {taken} of {count} traces "
                    "taken): give a longer 'timeout'")
            trace = await self._scope.acquire(remaining)
            if any(trace["settings"][k] != v for k, v in needed.items()):
                continue  # the scope was changed meanwhile (by this session): set up again
            one = await loop.run_in_executor(None, spectrum.spectra, trace["ch1"], trace["ch2"],
                                             span, window)
            total = one if total is None else spectrum.Spectra(
                total.in1 + one.in1, total.in2 + one.in2, total.cross + one.cross)
            taken += 1
        assert total is not None  # count >= 1 (catalogue)
        rbw = spectrum.rbw(span, window)
        unit = settings["unit"]
        self._sequence += 1
        return {"frequencies": spectrum.frequencies(span),
                "in1": spectrum.to_unit(total.in1 / count, unit, rbw),
                "in2": spectrum.to_unit(total.in2 / count, unit, rbw),
                "cross": np.asarray(spectrum.density(total.cross / count, rbw), dtype="<c16"),
                "unit": unit, "rbw": rbw, "span": span, "sequence": self._sequence,
                "timestamp": time.time(), "settings": dict(settings, rbw=rbw)}

    async def _set_up_scope(self, needed: dict[str, Any]) -> None:
        """Apply the scope settings of ``needed`` that differ from the board's (so an unchanged
        scope does not restart other acquisitions)."""
        current = await self._read("scope", list(needed))
        changes = {k: v for k, v in needed.items() if current[k] != v}
        if changes:
            await self._apply("scope", changes)
