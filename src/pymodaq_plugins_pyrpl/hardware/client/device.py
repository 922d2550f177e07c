"""The board's device state as a client last saw it, the ``device`` event when it changes, and
its times as the user's clock shows them."""
from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

SHOWN = ("state", "reason", "attempts", "board_restarted_at")
"""The fields of the ``device`` block whose change is a ``device`` event: what the plugins show."""


class DeviceWatch:
    """The last ``device`` block seen in a hello, a status (reply or push), a ``take_board``
    reply or a -32004's ``data`` (``state``, ``since``, ``reason``, merged into the last block).

    :meth:`observe` calls ``emit(block)`` when a block changes one of SHOWN, unless it is older
    than the last one (its ``since`` is earlier: a reply overtaken by a push) or it is the first
    one seen (the hello of the first connection, which the caller has). Thread-safe: ``emit`` is
    called with the lock held, so events leave in the order of their observation.
    """

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self._seen: dict[str, Any] | None = None

    @property
    def seen(self) -> dict[str, Any] | None:
        """A copy of the last block seen (None before the first)."""
        with self._lock:
            return None if self._seen is None else dict(self._seen)

    def observe(self, block: Any) -> None:
        """Take ``block`` into account (anything but a dict with a string ``state`` is ignored)."""
        if not isinstance(block, dict) or not isinstance(block.get("state"), str):
            return
        with self._lock:
            seen = self._seen
            if seen is None:
                self._seen = dict(block)
                return
            since, last = block.get("since"), seen.get("since")
            if isinstance(since, str) and isinstance(last, str) and since < last:
                return
            merged = {**seen, **block}
            self._seen = merged
            if any(merged.get(name) != seen.get(name) for name in SHOWN):
                self._emit(dict(merged))


def local_time(iso: str) -> str:
    """An ISO 8601 time (``since``, ``board_restarted_at``) as this computer's clock shows it,
    ``HH:MM:SS`` (the text itself if it is not ISO 8601)."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")
    except (TypeError, ValueError):
        return str(iso)
