"""The per-user runtime folder: state files of local servers, their token files, logs and port locks.

Layout (folder owner-only, every file owner-only):
``server-<port>.json`` the state of the server on that port (pid, port, token, backend, hostname,
config, plant, version, started_at, process_start, ssh_port, board_port), written by the server
itself once it listens, whoever started it; ``token-<port>`` the token file of a server started
without ``--token-file``, ``server-<port>.log`` its log, ``server-<port>.lock`` the lock that
serializes starting, stopping and taking over that server.

The folder is ``$PYMODAQ_PYRPL_RUNTIME_DIR`` if set, else ``$XDG_RUNTIME_DIR/pymodaq_plugins_pyrpl``, else
``<temp dir>/pymodaq_plugins_pyrpl-<uid>``. A folder or file that another user owns, or that others can
read, is refused; so is a damaged state file. Every failure to use the folder (full disk, no write
permission) is a ServerError naming the folder and the fix.

A state file is trusted only while it describes a live server of ours (:func:`server_process`): a pid
alone is not enough, since the kernel reuses the pid of an exited process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import itertools
import json
import logging
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import psutil

from . import board_address
from .errors import ServerError
from .protocol import DEFAULT_PORT

logger = logging.getLogger(__name__)

SERVER_MODULE = "pymodaq_plugins_pyrpl.hardware.server"
"""The module a local server runs (``python -m``); part of what identifies its process."""

CLI = ("pymodaq-pyrpl", "pymodaq_plugins_pyrpl.cli")
"""The console script and its module (``python -m``), whose ``server`` command runs a server too."""

START_TOLERANCE = 1.0
"""Seconds by which a process's start may differ from the one a state file records and still be
the same process (clock resolution and platform jitter; a reused pid also fails the command-line
check)."""


@dataclass(frozen=True)
class ServerState:
    """What a state file records about a local server.

    ``process_start`` (seconds from the machine's boot to the start of the server process, see
    :func:`process_start`) tells that process from a later one given the same pid. It, ``plant``
    or the ports None: a state file written by an older version, which is therefore never
    trusted.
    """

    pid: int
    port: int
    token: str
    backend: str
    hostname: str
    config: str
    plant: str | None
    """The simulated board's plant (canonical spec, see ``physics.plants.plant_spec``); ""
    for a real board; None in a state file written by an older version."""
    version: str
    started_at: str
    process_start: float | None
    ssh_port: int | None = None
    board_port: int | None = None
    """The board's ports (``Backend.ssh_port``, ``board_port``); None in a state file written
    by an older version."""

    def describes(self) -> str:
        """The board in words, for error messages."""
        return describe_board(self.backend, self.hostname, self.config, self.plant,
                              self.ssh_port or 0, self.board_port or 0)


def describe_board(backend: str, hostname: str, config: str = "", plant: str | None = "",
                   ssh_port: int = 0, board_port: int = 0) -> str:
    """The board in words: the simulated one and its plant, or a Red Pitaya, its ports when they
    are not PyRPL's defaults (and the virtual board's plant), and the PyRPL config."""
    if backend == "mock":
        board = f"the simulated board with plant {plant!r}"
    elif hostname == board_address.VIRTUAL:
        board = f"the virtual Red Pitaya with plant {plant!r}"
    else:
        board = f"Red Pitaya {hostname!r}"
        if board_address.has_ports(hostname):
            board += board_address.describe_ports(ssh_port, board_port)
    return board + (f" with PyRPL config {config!r}" if config else "")


def _folder() -> Path:
    """The runtime folder's path (nothing created, nothing checked)."""
    override = os.environ.get("PYMODAQ_PYRPL_RUNTIME_DIR")
    if override:
        return Path(override)
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "pymodaq_plugins_pyrpl"
    return Path(tempfile.gettempdir()) / f"pymodaq_plugins_pyrpl-{os.getuid()}"


def runtime_dir() -> Path:
    """The runtime folder, created owner-only if missing. Raises ServerError if it is not private
    or cannot be created."""
    folder = _folder()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise folder_error(folder, exc) from None
    check_private(folder)
    return folder


def folder_error(folder: Path, exc: OSError) -> ServerError:
    """The ServerError for ``exc``, raised while using the runtime folder ``folder``: it names the
    folder and what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free some space on its disk (df -h {folder})"
    elif exc.errno == errno.EROFS:
        fix = "it is on a read-only file system"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        fix = f"make it writable for you (chmod 700 {folder})"
    else:
        fix = "check it"
    return ServerError(f"cannot use the runtime folder {folder} ({exc.strerror or exc}): {fix}, "
                       "or set PYMODAQ_PYRPL_RUNTIME_DIR to another folder of your own")


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


def _state_name(port: int) -> str:
    return f"server-{port}.json"


def state_path(port: int) -> Path:
    return runtime_dir() / _state_name(port)


def token_path(port: int) -> Path:
    return runtime_dir() / f"token-{port}"


def log_path(port: int) -> Path:
    return runtime_dir() / f"server-{port}.log"


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, exited but not yet reaped, counts as dead). It says nothing
    about which program runs there: whether a state file is to be trusted is
    :func:`server_process`'s decision."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def process_start(pid: int) -> float:
    """Seconds from the machine's boot to the start of process ``pid``: with the pid, what tells
    that process from a later one given the same pid. Unlike a start time on the wall clock, it
    does not move when the system clock is set. Raises psutil.NoSuchProcess, psutil.AccessDenied."""
    return psutil.Process(pid).create_time() - psutil.boot_time()


def _running(process: psutil.Process) -> bool:
    """True while ``process`` (the very process, not its pid) runs and is not a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _runs_server_on(command: list[str], port: int) -> bool:
    """Whether ``command`` runs this package's server (``python -m SERVER_MODULE``, or the CLI's
    ``server`` command) on ``port``: its ``--port`` names that port, or 0 (a free port, picked at
    start), or is left out and ``port`` is the default port."""
    if SERVER_MODULE in command:
        args = command[command.index(SERVER_MODULE) + 1:]
    else:
        scripts = [i for i, arg in enumerate(command[:-1])
                   if os.path.basename(arg) in CLI and command[i + 1] == "server"]
        if not scripts:
            return False
        args = command[scripts[0] + 2:]
    given = [value for option, value in itertools.pairwise(args) if option == "--port"]
    given += [arg.split("=", 1)[1] for arg in args if arg.startswith("--port=")]
    if not given:
        return port == DEFAULT_PORT
    return given[-1].strip() in (str(port), "0")


def server_process(state: ServerState) -> psutil.Process | None:
    """The running server process ``state`` describes, or None: the one check that decides whether
    a state file is trusted (listed, connected to, signalled, left alone by a restart).

    The process must run (a zombie does not), have started when ``state`` records (within
    START_TOLERANCE; a reused pid started later) and run this package's server on the state's
    port (:func:`_runs_server_on`: started by a plugin or by hand). A state without a recorded
    start, plant or ports (an older version's) is never trusted.
    """
    if state.process_start is None or None in (state.plant, state.ssh_port, state.board_port):
        return None
    try:
        process = psutil.Process(state.pid)
        if abs(process.create_time() - psutil.boot_time() - state.process_start) > START_TOLERANCE:
            return None
        if not (_running(process) and _runs_server_on(process.cmdline(), state.port)):
            return None
    except (psutil.Error, ValueError):  # ValueError: a negative pid
        return None
    return process


def wait_gone(state: ServerState, timeout: float) -> bool:
    """Wait until the server process of ``state`` has exited (at once if none runs); False if it
    still runs after ``timeout`` seconds.

    A zombie counts as exited: a server started by another program stays one until that program
    reaps it, and ``psutil.wait_procs`` would wait for that (it counts a zombie that is not our
    child as running), so this polls :func:`_running` instead."""
    process = server_process(state)
    deadline = time.monotonic() + timeout
    while process is not None and _running(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


_JSON_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "str": (str,),
                                             "int | None": (int, type(None)),
                                             "str | None": (str, type(None)),
                                             "float | None": (int, float, type(None))}
"""The JSON values each annotation of ServerState accepts (never a boolean, which Python counts as
an int)."""


_OPTIONAL_FIELDS = ("process_start", "plant", "ssh_port", "board_port")
"""Fields an older version's state file lacks."""


def _parse_state(path: Path, port: int, text: str) -> ServerState:
    """The state in ``text`` (the contents of ``path``). Raises ServerError if it is damaged: not a
    JSON object, a field missing or of the wrong type (``process_start``, ``plant`` and the
    ports may be missing: an older version's file), or another port. Unknown fields are
    ignored."""
    def damaged(what: str) -> ServerError:
        return ServerError(f"the state file {path} is damaged ({what}). Delete it (rm {path}); if a "
                           f"PyRPL server still runs on port {port}, stop it by hand (its command "
                           f"line has '{SERVER_MODULE}' and '--port {port}')")

    try:
        data = json.loads(text)
    except ValueError:
        raise damaged("not JSON") from None
    if not isinstance(data, dict):
        raise damaged("not a JSON object")
    values = {}
    for field in dataclasses.fields(ServerState):
        if field.name not in data and field.name not in _OPTIONAL_FIELDS:
            raise damaged(f"no {field.name!r}")
        value = data.get(field.name)
        if isinstance(value, bool) or not isinstance(value, _JSON_TYPES[str(field.type)]):
            raise damaged(f"{field.name!r} is {json.dumps(value)[:40]}")
        values[field.name] = value
    if values["port"] != port:
        raise damaged(f"it names port {values['port']}")
    return ServerState(**values)


def read_state(port: int) -> ServerState | None:
    """The state file of ``port`` as written, or None if there is none. Use :func:`read_live_state`
    to act on a server. Raises ServerError if the file is not private, cannot be read or is damaged."""
    path = state_path(port)
    try:
        check_private(path)
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise folder_error(path.parent, exc) from None
    return _parse_state(path, port, text)


def read_live_state(port: int) -> ServerState | None:
    """The state of the server of ours running on ``port``, or None. A state file that describes no
    running server of ours (it exited, its pid now belongs to another process, or the file is an
    older version's) is removed. Raises ServerError as :func:`read_state`."""
    state = read_state(port)
    if state is None or server_process(state) is not None:
        return state
    logger.info("removing the stale state file of port %d: pid %d is not the server it describes",
                port, state.pid)
    remove_state(port, state)
    return None


def write_owner_only(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, owner-only (a symbolic link there is replaced, not
    followed). Raises OSError; nothing is left half-written."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def open_owner_only_append(path: Path) -> int:
    """A file descriptor of ``path`` opened for appending; the file is created owner-only (0600)
    if missing, and made owner-only if it was not. The caller closes it. Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` in the runtime folder, atomically, owner-only. Raises
    ServerError (naming the folder and the fix) if it cannot; nothing is left half-written."""
    try:
        write_owner_only(path, text)
    except OSError as exc:
        raise folder_error(path.parent, exc) from None


def write_state(state: ServerState) -> None:
    write_private(state_path(state.port), json.dumps(asdict(state), indent=1))


def remove_state(port: int, only: ServerState | None = None) -> None:
    """Remove the state file of ``port`` (only if it still holds ``only``, when given). Raises
    ServerError as :func:`read_state`, or if the file cannot be removed."""
    if only is not None and read_state(port) != only:
        return
    path = state_path(port)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise folder_error(path.parent, exc) from None


def remove_own_state(port: int) -> None:
    """Remove the state file of ``port`` if it names this process: a server calls this as it exits
    (a takeover may have replaced the file meanwhile). Creates nothing and never raises: a file it
    cannot read or remove is left (a warning is logged), for the readers to judge."""
    path = _folder() / _state_name(port)
    try:
        if _parse_state(path, port, path.read_text()).pid == os.getpid():
            path.unlink()
    except FileNotFoundError:
        pass
    except (OSError, ServerError) as exc:
        logger.warning("state file %s left in place: %s", path, exc)


def live_states() -> list[ServerState]:
    """States of every running local server, by port; stale state files are removed. Raises
    ServerError as :func:`read_state`."""
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

    Raises ServerError if another process holds it for longer than ``timeout`` seconds, or if the
    lock file cannot be created.
    """
    folder = runtime_dir()
    try:
        fd = os.open(folder / f"server-{port}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise folder_error(folder, exc) from None
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
