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
    ``("killall",)``, ``("load",)``; the command lines in ``lines`` as (session, line), the ssh
    sessions' peers in ``sessions``. ``refuse`` makes ``start_monitor`` raise that OSError;
    ``boot_id()`` and ``net_tcp()`` answer ``boot`` and ``tcp``."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.lines: list[tuple[int, str]] = []
        self.sessions: list[tuple[str, int]] = []
        self.boot = "00000000-0000-4000-8000-000000000001"
        self.tcp = ""
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

    def boot_id(self) -> str:
        return self.boot

    def net_tcp(self) -> str:
        return self.tcp

    def new_session(self, peer: tuple[str, int]) -> int:
        self.sessions.append(peer)
        return len(self.sessions)

    def log_command(self, session: int, line: str) -> None:
        self.lines.append((session, line))
