"""How a request on the board's data port failed: one class per cause, all :class:`LinkError`
(an :class:`OSError`, so code that already handles socket errors handles these too).

Every error names the operation (``"connect"``, ``"read"``, ``"write"``), the address and the
length of the request, and what happened. Whether the connection is still usable afterwards is
part of each class's contract.
"""
from __future__ import annotations


class LinkError(OSError):
    """A request to the board's ``monitor_server`` failed.

    ``operation``: ``"connect"``, ``"read"`` or ``"write"``; ``address`` and ``length`` (words) of
    the request (``None`` for ``connect``); ``what``: what happened, in words.
    """

    def __init__(self, operation: str, address: int | None, length: int | None,
                 what: str) -> None:
        self.operation = operation
        self.address = address
        self.length = length
        self.what = what
        if address is None:
            target = ""
        else:
            target = f" of {length} word(s) at {address:#010x}"
        super().__init__(f"board link: {operation}{target}: {what}")

    def __reduce__(self):  # pickle with the constructor's arguments, not OSError's
        return type(self), (self.operation, self.address, self.length, self.what)


class LinkTimeout(LinkError):
    """The request's deadline passed before the reply was complete. The connection stays open:
    the bytes still owed are drained before the next request is sent. A write that timed out has
    an unknown outcome (it may have been executed). Exception: a request that could not even be
    sent whole before its deadline closes the client (the stream is out of step)."""


class LinkClosed(LinkError):
    """The board closed the connection in order (FIN: ``monitor_server`` ended or was killed
    while idle). The client is closed."""


class LinkReset(LinkError):
    """The board reset the connection (RST: the process was killed with data unread, the board
    rebooted). The client is closed."""


class LinkGarbage(LinkError):
    """The reply did not start with the request's header echoed: the stream is out of step. The
    client closes the connection (its position in the stream is unknown)."""


class LinkRefused(LinkError):
    """Connecting failed: refused (no ``monitor_server`` listening), unreachable, or not
    accepted before the deadline."""


class LinkNotConnected(LinkError):
    """A request on a client that is closed (by :meth:`~.client.BoardClient.close` or by an
    earlier failure that closed it): nothing is sent."""
