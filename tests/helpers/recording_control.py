"""A board control that records what the ssh side asks of it (for tests of the ssh side alone)."""
from __future__ import annotations


class RecordedMonitor:
    def __init__(self, control: RecordingControl, port: int) -> None:
        self.control = control
        self.port = port

    def stop(self) -> None:
        self.control.calls.append(("stop", self.port))


class RecordingControl:
    """``shell.BoardControl`` that records its calls: ``("start", port)``, ``("stop", port)``,
    ``("killall",)``, ``("load",)``. ``refuse`` makes ``start_monitor`` raise that OSError."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.running = 0
        self.refuse: OSError | None = None

    def start_monitor(self, port: int) -> RecordedMonitor:
        if self.refuse is not None:
            raise self.refuse
        self.calls.append(("start", port))
        self.running += 1
        return RecordedMonitor(self, port)

    def killall_monitors(self) -> int:
        self.calls.append(("killall",))
        running, self.running = self.running, 0
        return running

    def load_bitfile(self) -> None:
        self.calls.append(("load",))
