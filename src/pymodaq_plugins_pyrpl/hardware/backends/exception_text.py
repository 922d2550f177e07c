"""An exception as one short line of a log or an error message (PyRPL's messages span lines and
carry terminal colour codes)."""
from __future__ import annotations

import re

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def one_line(exc: BaseException, limit: int = 400) -> str:
    """The exception's message on one line, without terminal colour codes, at most ``limit`` chars
    (cut with "..."); its class name when the message is empty."""
    text = " ".join(_ANSI_ESCAPE.sub("", str(exc)).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
