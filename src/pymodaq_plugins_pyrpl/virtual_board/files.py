"""The virtual board's file system: the few files PyRPL reads, writes or runs over ssh, held in
memory. Nothing here touches this machine's disk.

Paths are absolute after :func:`normalize` (PyRPL writes ``//opt//pyrpl//fpga.bin``); a file is its
bytes and its modification time. Folders exist as the parents of files plus what ``mkdir`` made.
Thread-safe: the ssh sessions of several clients share one board.
"""
from __future__ import annotations

import posixpath
import re
import threading
import time
from dataclasses import dataclass

VERSION_FILE = "/root/.version"
LOADED_FPGA_FILE = "/tmp/loaded_fpga.inf"
UPDATE_FPGA_FILE = "/tmp/update_fpga.txt"
SERVER_DIR = "/opt/pyrpl"
MONITOR_SERVER = f"{SERVER_DIR}/monitor_server"
LED_CONTROL = "/opt/redpitaya/bin/led_control"
OVERLAY = "/opt/redpitaya/sbin/overlay.sh"

OS_VERSION = "2.00-35"
"""What ``cat /root/.version`` says: a Red Pitaya OS 2 (PyRPL then skips the OS 3 ``readelf``
check of its monitor_server binary)."""
LOADED_FPGA = "pyrpl\n"
"""``/tmp/loaded_fpga.inf`` at power-on: PyRPL's bitfile is loaded, so ``reloadfpga='auto'``
skips flashing (a board on which PyRPL ran before)."""

INITIAL_FILES: dict[str, bytes] = {
    VERSION_FILE: f"{OS_VERSION}\n".encode(),
    LOADED_FPGA_FILE: LOADED_FPGA.encode(),
    MONITOR_SERVER: b"\x7fELF (the virtual board's monitor_server)\n",
    LED_CONTROL: b"\x7fELF (led_control)\n",
    OVERLAY: b"#!/bin/bash\n# loads an FPGA bitfile and its device-tree overlay\n",
}
"""The board's files at power-on."""


def normalize(path: str, cwd: str = "/") -> str:
    """``path`` made absolute against ``cwd``, repeated slashes and ``.``/``..`` resolved."""
    joined = posixpath.join(cwd, path)
    return posixpath.normpath(re.sub("/+", "/", joined)) or "/"


@dataclass(frozen=True)
class BoardFile:
    data: bytes
    mtime: float
    """Wall-clock time (``time.time()``) of the last write, as ``date +%s -r`` reports it."""


class BoardFiles:
    """The in-memory files of one board, initially :data:`INITIAL_FILES`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        now = time.time()
        self._files = {path: BoardFile(data, now) for path, data in INITIAL_FILES.items()}
        self._folders = {"/", "/dev", "/root", "/tmp"}

    def read(self, path: str) -> bytes | None:
        """The contents of the file ``path`` (absolute, normalized), None if there is none."""
        with self._lock:
            file = self._files.get(path)
        return None if file is None else file.data

    def mtime(self, path: str) -> float | None:
        with self._lock:
            file = self._files.get(path)
        return None if file is None else file.mtime

    def is_file(self, path: str) -> bool:
        with self._lock:
            return path in self._files

    def is_folder(self, path: str) -> bool:
        with self._lock:
            return self._is_folder(path)

    def _is_folder(self, path: str) -> bool:
        prefix = path.rstrip("/") + "/"
        return path in self._folders or any(f.startswith(prefix) for f in self._files)

    def write(self, path: str, data: bytes) -> None:
        """Create or replace the file ``path``. Raises FileNotFoundError if its folder does not
        exist, IsADirectoryError if ``path`` is a folder."""
        with self._lock:
            if self._is_folder(path):
                raise IsADirectoryError(path)
            if not self._is_folder(posixpath.dirname(path)):
                raise FileNotFoundError(path)
            self._files[path] = BoardFile(bytes(data), time.time())

    def remove(self, path: str) -> bool:
        """Remove the file ``path``; False if there was none."""
        with self._lock:
            return self._files.pop(path, None) is not None

    def make_folders(self, path: str) -> None:
        """``mkdir -p``: ``path`` and its parents. Raises FileExistsError if one is a file."""
        with self._lock:
            parts = [p for p in path.split("/") if p]
            for i in range(1, len(parts) + 1):
                folder = "/" + "/".join(parts[:i])
                if folder in self._files:
                    raise FileExistsError(folder)
                self._folders.add(folder)
