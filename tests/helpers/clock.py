"""A clock the tests move by hand, for the models that take a ``clock`` (the simulator backend,
the virtual board)."""
from __future__ import annotations


class FakeClock:
    """A clock that only moves when told to: set ``t`` or call :meth:`advance`."""

    def __init__(self, t: float = 1234.5) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
