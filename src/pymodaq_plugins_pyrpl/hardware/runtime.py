"""The per-user runtime folder: state files of local servers, their token files, logs and port locks.

Layout (folder owner-only, every file owner-only):
``server-<port>.json`` the state of the server on that port (pid, port, token, backend, hostname,
config, version, started_at), ``token-<port>`` the token file the server reads, ``server-<port>.log`` its
log, ``server-<port>.lock`` the lock that serializes starting, stopping and taking over that server.

The folder is ``$PYMODAQ_PYRPL_RUNTIME_DIR`` if set, else ``$XDG_RUNTIME_DIR/pymodaq_plugins_pyrpl``, else
``<temp dir>/pymodaq_plugins_pyrpl-<uid>``. A folder or file that another user owns, or that others can
read, is refused.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import psutil

from .errors import ServerError


@dataclass(frozen=True)
class ServerState:
    """What a state file records about a local server."""

    pid: int
    port: int
    token: str
    backend: str
    hostname: str
    config: str
    version: str
    started_at: str

    def describes(self) -> str:
        """The board in words, for error messages."""
        return describe_board(self.backend, self.hostname, self.config)


def describe_board(backend: str, hostname: str, config: str = "") -> str:
    board = "the simulated board" if backend == "mock" else f"Red Pitaya {hostname!r}"
    return board + (f" with PyRPL config {config!r}" if config else "")


def runtime_dir() -> Path:
    """The runtime folder, created owner-only if missing. Raises ServerError if it is not private."""
    override = os.environ.get("PYMODAQ_PYRPL_RUNTIME_DIR")
    if override:
        folder = Path(override)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "pymodaq_plugins_pyrpl"
    else:
        folder = Path(tempfile.gettempdir()) / f"pymodaq_plugins_pyrpl-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(folder)
    return folder


def check_private(path: Path) -> None:
    """Raise ServerError (saying how to fix it) unless ``path`` is this user's own, not a symbolic
    link, and neither readable nor writable by anyone else. FileNotFoundError if it is missing."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise ServerError(f"{path} is a symbolic link; refusing to use it for server state")
    if info.st_uid != os.getuid():
        raise ServerError(f"{path} belongs to another user (uid {info.st_uid}); refusing to use it. "
                          "Set PYMODAQ_PYRPL_RUNTIME_DIR to a folder of your own.")
    if info.st_mode & 0o077:
        raise ServerError(f"{path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                          f"make it private with: chmod go-rwx {path}")


def state_path(port: int) -> Path:
    return runtime_dir() / f"server-{port}.json"


def token_path(port: int) -> Path:
    return runtime_dir() / f"token-{port}"


def log_path(port: int) -> Path:
    return runtime_dir() / f"server-{port}.log"


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, exited but not yet reaped, counts as dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def read_state(port: int) -> ServerState | None:
    """The state file of ``port``, or None if there is none (a malformed one counts as none)."""
    path = state_path(port)
    try:
        check_private(path)
        return ServerState(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None


def read_live_state(port: int) -> ServerState | None:
    """The state of a server that is running; a stale state file (dead pid) is removed."""
    state = read_state(port)
    if state is not None and not pid_alive(state.pid):
        remove_state(port, state.pid)
        return None
    return state


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, owner-only."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_state(state: ServerState) -> None:
    write_private(state_path(state.port), json.dumps(asdict(state), indent=1))


def remove_state(port: int, pid: int | None = None) -> None:
    """Remove the state file of ``port`` (only if it still names ``pid``, when given)."""
    state = read_state(port)
    if state is None or pid is None or state.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            state_path(port).unlink()


def live_states() -> list[ServerState]:
    """States of every running local server, by port; stale state files are removed."""
    states = []
    for path in sorted(runtime_dir().glob("server-*.json")):
        try:
            port = int(path.stem.split("-", 1)[1])
        except ValueError:
            continue
        state = read_live_state(port)
        if state is not None:
            states.append(state)
    return sorted(states, key=lambda s: s.port)


@contextlib.contextmanager
def port_lock(port: int, timeout: float = 60.0) -> Iterator[None]:
    """Exclusive, cross-process lock for starting, stopping or taking over the server on ``port``.

    Raises ServerError if another process holds it for longer than ``timeout`` seconds.
    """
    path = runtime_dir() / f"server-{port}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ServerError(f"another program has been starting or stopping the server on "
                                      f"port {port} for {timeout:g} s; try again") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
