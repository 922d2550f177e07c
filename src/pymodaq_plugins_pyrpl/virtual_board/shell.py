"""The virtual board's shell: answers the commands PyRPL types over ssh, as a Red Pitaya OS 2 would.
Every command is simulated on the board's in-memory files (:mod:`.files`) and its
:class:`BoardControl` (monitor server, FPGA); nothing runs on this machine.

What PyRPL 0.9.9 sends (``redpitaya.py``) and what it is told:

- ``cat /root/.version``: ``2.00-35`` (OS 2: no ``readelf`` check of the server binary).
- ``cat /tmp/loaded_fpga.inf``: ``pyrpl`` (``reloadfpga='auto'`` skips flashing).
- ``ls //opt//pyrpl//fpga.bin``: ``No such file or directory``, unless a bitfile was uploaded and
  not removed; then ``echo $(($(date +%s) - $(date +%s -r "FILE")))`` gives its age in seconds.
- ``killall monitor_server``: ends every monitor server (:meth:`BoardControl.killall_monitors`);
  ``no process found`` (status 1) if none ran.
- ``//opt//pyrpl///monitor_server PORT``: starts one on PORT (C ``atoi``: 0 is a free port); prints
  nothing, like the C server running in the foreground.
- Ctrl-C (``\x03``): ends the monitor server this session started, if it still runs.
- ``/opt/redpitaya/sbin/overlay.sh pyrpl BIN [DTBO]``: loads the uploaded bitfile, the registers go
  back to their reset values (:meth:`BoardControl.load_bitfile`); writes ``/tmp/loaded_fpga.inf``
  and ``/tmp/update_fpga.txt`` (``failed`` if a file is missing).
- ``cat /proc/sys/kernel/random/boot_id``: the board's boot id (a new one at each reboot);
  ``cat /proc/net/tcp``: the TCP sockets of its monitor servers and of its ssh server as a Linux
  kernel prints them (:mod:`.proc_net_tcp`), e.g. to see another client on the data port.
- ``rw``, ``ro``, ``mkdir``, ``rm``, ``cd``, ``chmod``, ``echo``: what a shell does, on the
  in-memory files; ``led_control``, ``killall nginx``, ``systemctl …``, ``nginx …``: accepted,
  silent.
- ``nohup COMMAND ARGS``: runs COMMAND, as coreutils' nohup without a terminal (an ssh exec):
  nothing of its own printed; ``nohup: failed to run command 'NAME': …`` (status 127 or 126) if
  it cannot.
- ``COMMAND > FILE`` and ``>> FILE``: the output of a command that succeeds goes to FILE (created,
  or appended to), not to the terminal, e.g. PyRPL's ``cat BITFILE > //dev//xdevcfg`` of an OS it
  does not recognise; a failing command's output (its error messages) stays on the terminal
  (``>`` has emptied FILE), unless ``2>&1`` follows the ``>``: then it goes to FILE too.
  ``< FILE`` needs FILE to exist (the commands here read no input). ``/dev/null`` reads empty and
  swallows what is written to it. ``cat`` passes a file's bytes unchanged: :attr:`Result.output`
  carries bytes that are not UTF-8 as surrogates (``errors="surrogateescape"``), which
  :func:`encode` turns back into the same bytes.
- Anything else: ``-bash: NAME: command not found`` (status 127).

Commands separated by ``;`` run one after the other (e.g. ``cat
/proc/sys/kernel/random/boot_id; cat /proc/net/tcp``); a command ended by ``&`` runs in the
background: its status is 0 whatever it does, its output not redirected still reaches the
terminal (an interactive bash's job number ``[1] PID`` is not printed), and a monitor server it
starts does not hold the terminal: Ctrl-C does not end it, nor does the end of the session, as
on a board where ``nohup //opt//pyrpl///monitor_server PORT > LOG 2>&1 < /dev/null &`` outlives
the ssh exec that started it. No pipes, ``&&`` or substitutions. Every line run is reported to
:meth:`BoardControl.log_command` with the shell's ssh session.

No answer contains "sh" unless a real shell's would (PyRPL takes "sh" in the answer to the
monitor server's start as a wrong binary and installs its own). A monitor server started here does
not hold the session as the C server does in the foreground: later lines are executed at once.
"""
from __future__ import annotations

import posixpath
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import files as board_files
from .files import BoardFiles, normalize

HOME = "/root"
HOSTNAME = "rp-virtual"
"""The board's host name, in the prompt (``root@rp-virtual:~# ``)."""

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
NET_TCP_FILE = "/proc/net/tcp"
DEV_NULL = "/dev/null"

_DATE_AGE = re.compile(
    r'^echo \$\(\(\$\(date \+%s\) - \$\(date \+%s -r "?(?P<path>[^"()]+?)"?\)\)\)$')
"""``echo $(($(date +%s) - $(date +%s -r "FILE")))``: PyRPL's question for a bitfile's age."""


class RunningMonitor(Protocol):
    """A monitor server started from a shell."""

    def stop(self) -> None:
        """End it (Ctrl-C in its shell); nothing if it has ended already."""


class BoardControl(Protocol):
    """What the shell asks of the rest of the board."""

    def start_monitor(self, port: int) -> RunningMonitor:
        """Start a monitor server on ``port`` (0: a free one). Raises OSError if it cannot
        listen there."""

    def killall_monitors(self) -> int:
        """End every monitor server (``killall monitor_server``); how many ran."""

    def load_bitfile(self) -> None:
        """Load PyRPL's FPGA bitfile: every register goes back to its reset value."""

    def boot_id(self) -> str:
        """The board's boot id (a UUID, new at each reboot)."""

    def net_tcp(self) -> str:
        """The contents of ``/proc/net/tcp`` now."""

    def new_session(self, peer: tuple[str, int]) -> int:
        """A new ssh connection from ``peer`` (client host, port): its session number."""

    def log_command(self, session: int, line: str) -> None:
        """``line`` is run by the shell of ssh ``session``."""


@dataclass(frozen=True)
class Result:
    output: str
    """What the command prints (``\\n`` line ends; the terminal adds ``\\r``); bytes that are
    not UTF-8 as surrogates (:func:`encode`)."""
    status: int = 0


def encode(text: str) -> bytes:
    """The bytes of a command's output (:attr:`Result.output`), a file's bytes unchanged."""
    return text.encode(errors="surrogateescape")


def _decode(data: bytes) -> str:
    return data.decode(errors="surrogateescape")


_REDIRECT = re.compile(r"^(>>?|<)(.*)$")
"""A redirection word: ``>``, ``>>`` or ``<``, or either glued to its file name."""
_ERRORS_TO_OUTPUT = "2>&1"


@dataclass(frozen=True)
class _Redirections:
    """A command's redirections: its output to ``output`` (appended if ``append``), its error
    messages too if ``errors_too`` (``2>&1`` after the ``>``), its input from ``input``."""

    output: str | None = None
    append: bool = False
    errors_too: bool = False
    input: str | None = None


def _redirection(words: list[str]) -> tuple[list[str], _Redirections, str | None]:
    """``words`` without their redirections; the redirections (the last of each kind counts);
    an error (a redirection without a file name) or None."""
    kept: list[str] = []
    output, append, errors_too, source = None, False, False, None
    it = iter(words)
    for word in it:
        if word == _ERRORS_TO_OUTPUT:
            errors_too = output is not None  # before any ">": to the terminal, as stdout is
            continue
        match = _REDIRECT.match(word)
        if match is None:
            kept.append(word)
            continue
        name = match.group(2) or next(it, "")
        if not name:
            return kept, _Redirections(), "-bash: syntax error near unexpected token `newline'\n"
        if match.group(1) == "<":
            source = name
        else:
            output, append, errors_too = name, match.group(1) == ">>", False
    return kept, _Redirections(output, append, errors_too, source), None


def _sequence(line: str) -> list[tuple[str, bool]]:
    """The commands of ``line`` separated by ``;`` or ``&`` outside quotes, stripped, empty ones
    left out; each with whether it runs in the background (ended by ``&``; the ``&`` of ``2>&1``,
    ``&>`` or ``&&`` ends nothing)."""
    commands: list[tuple[str, bool]] = []
    current: list[str] = []
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ";" or (char == "&" and _ends_job(line, i)):
            commands.append(("".join(current), char == "&"))
            current = []
            continue
        current.append(char)
    commands.append(("".join(current), False))
    return [(c.strip(), background) for c, background in commands if c.strip()]


def _ends_job(line: str, i: int) -> bool:
    """Whether the ``&`` at ``line[i]`` sends the command before it to the background."""
    before = line[i - 1] if i else ""
    after = line[i + 1] if i + 1 < len(line) else ""
    return before not in ("<", ">", "&") and after not in ("&", ">")


def _atoi(text: str) -> int:
    """C's ``atoi``: the leading decimal integer of ``text``, 0 if there is none."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


class BoardShell:
    """One ssh session's shell: its working folder and the monitor server it started.

    :meth:`run` executes one command line; :meth:`interrupt` is Ctrl-C. ``session`` is the ssh
    session the lines are logged under (:meth:`BoardControl.log_command`). Not thread-safe: one
    session, one thread; the files and the control are shared and thread-safe.
    """

    def __init__(self, files: BoardFiles, control: BoardControl, user: str = "root",
                 session: int = 0) -> None:
        self.files = files
        self.control = control
        self.user = user
        self.session = session
        self.cwd = HOME
        self._foreground: RunningMonitor | None = None
        """The monitor server this session started and has not interrupted."""
        self._proc: dict[str, Callable[[], str]] = {
            BOOT_ID_FILE: lambda: control.boot_id() + "\n", NET_TCP_FILE: control.net_tcp,
            DEV_NULL: str}
        """The kernel's files this board has (and ``/dev/null``), read when read."""
        self._commands: dict[str, Callable[[list[str]], Result]] = {
            "cat": self._cat, "ls": self._ls, "rm": self._rm, "mkdir": self._mkdir,
            "cd": self._cd, "echo": self._echo, "killall": self._killall, "nohup": self._nohup,
            "chmod": self._quiet, "rw": self._quiet, "ro": self._quiet,
            "systemctl": self._quiet, "nginx": self._quiet, "sync": self._quiet,
        }
        self._programs: dict[str, Callable[[list[str]], Result]] = {
            "monitor_server": self._monitor_server, "led_control": self._quiet,
            "overlay.sh": self._overlay,
        }
        """Programs on the board's disk, by file name: run by their path."""

    def prompt(self) -> str:
        place = "~" if self.cwd == HOME else self.cwd
        return f"{self.user}@{HOSTNAME}:{place}# "

    def in_foreground(self) -> bool:
        """Whether a monitor server started here holds the terminal (no prompt until Ctrl-C)."""
        return self._foreground is not None

    def interrupt(self) -> None:
        """Ctrl-C: end the monitor server this session started, if any."""
        monitor, self._foreground = self._foreground, None
        if monitor is not None:
            monitor.stop()

    def run(self, line: str) -> Result:
        """Execute one command line, commands separated by ``;`` one after the other (their
        outputs in turn, the last one's status); never raises (a failure is the command's output
        and status, as in a shell)."""
        line = line.strip()
        if not line:
            return Result("")
        self.control.log_command(self.session, line)
        results = [self._run_command(command, background)
                   for command, background in _sequence(line)]
        if not results:
            return Result("")
        return Result("".join(r.output for r in results), results[-1].status)

    def _run_command(self, line: str, background: bool = False) -> Result:
        match = _DATE_AGE.match(line)
        if match:
            return self._file_age(match.group("path"))
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return Result(f"-bash: syntax error: {exc}\n", 2)
        words, redirections, error = _redirection(words)
        if error is not None:
            return Result(error, 2)
        source, target = redirections.input, redirections.output
        if source is not None and not self._can_read(source):
            return Result(f"-bash: {source}: No such file or directory\n", 1)
        if target is not None and not self._can_write(target):
            return Result(f"-bash: {target}: No such file or directory\n", 1)
        foreground = self._foreground
        result = self._run_words(words) if words else Result("")
        if background:  # the job does not hold the terminal, and the shell does not wait for it
            self._foreground = foreground
        if target is not None:
            result = self._redirect(result, redirections)
        return Result(result.output, 0) if background else result

    def _redirect(self, result: Result, redirections: _Redirections) -> Result:
        """What ``result`` leaves on the terminal once its output went to the redirection's
        file: nothing, or its error messages (a failure without ``2>&1``)."""
        assert redirections.output is not None
        path = self._path(redirections.output)
        errors_stay = result.status != 0 and not redirections.errors_too
        kept = (self.files.read(path) or b"") if redirections.append else b""  # ">" truncates
        if path != DEV_NULL:
            self.files.write(path, kept if errors_stay else kept + encode(result.output))
        return result if errors_stay else Result("", result.status)

    def _can_read(self, name: str) -> bool:
        path = self._path(name)
        return path in self._proc or self.files.is_file(path)

    def _can_write(self, name: str) -> bool:
        path = self._path(name)
        return path == DEV_NULL or (not self.files.is_folder(path)
                                    and self.files.is_folder(posixpath.dirname(path)))

    def _run_words(self, words: list[str]) -> Result:
        name, args = words[0], words[1:]
        if "/" in name:
            return self._run_program(name, args)
        command = self._commands.get(name)
        if command is None:
            return Result(f"-bash: {name}: command not found\n", 127)
        return command(args)

    # -- programs --------------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        return normalize(path, self.cwd)

    def _run_program(self, name: str, args: list[str]) -> Result:
        path = self._path(name)
        if not self.files.is_file(path):
            return Result(f"-bash: {name}: No such file or directory\n", 127)
        program = self._programs.get(posixpath.basename(path))
        if program is None:
            return Result(f"-bash: {name}: Permission denied\n", 126)
        return program(args)

    def _nohup(self, args: list[str]) -> Result:
        if not args:
            return Result("nohup: missing operand\nTry 'nohup --help' for more information.\n",
                          125)
        name = args[0]
        if "/" not in name:
            command = self._commands.get(name)
            if command is None or name == "cd":
                return Result(f"nohup: failed to run command '{name}': No such file or "
                              "directory\n", 127)
            return command(args[1:])
        path = self._path(name)
        if not self.files.is_file(path):
            return Result(f"nohup: failed to run command '{name}': No such file or directory\n",
                          127)
        program = self._programs.get(posixpath.basename(path))
        if program is None:
            return Result(f"nohup: failed to run command '{name}': Permission denied\n", 126)
        return program(args[1:])

    def _monitor_server(self, args: list[str]) -> Result:
        if not args:
            return Result("ERROR, no port provided\n", 1)
        try:
            self._foreground = self.control.start_monitor(_atoi(args[0]) % 65536)
        except OSError as exc:
            return Result(f"ERROR on binding: {exc.strerror or exc}\n", 1)
        return Result("")

    def _overlay(self, args: list[str]) -> Result:
        if len(args) < 2:
            return Result("Usage: overlay.sh NAME BITFILE [DTBO]\n", 1)
        missing = [p for p in args[1:3] if not self.files.read(self._path(p))]
        if missing:
            report = "".join(f"cp: cannot stat '{p}': No such file or directory\n"
                             for p in missing) + "fpga load failed\n"
            self.files.write(board_files.UPDATE_FPGA_FILE, report.encode())
            return Result(report, 1)
        self.control.load_bitfile()
        self.files.write(board_files.LOADED_FPGA_FILE, args[0].encode())
        self.files.write(board_files.UPDATE_FPGA_FILE, f"loaded {args[1]}\n".encode())
        return Result("")

    # -- shell commands --------------------------------------------------------------------------

    def _quiet(self, args: list[str]) -> Result:
        return Result("")

    def _cat(self, args: list[str]) -> Result:
        out, status = [], 0
        for name in args:
            path = self._path(name)
            proc = self._proc.get(path)
            data = self.files.read(path) if proc is None else proc().encode()
            if data is None:
                out.append(f"cat: {name}: No such file or directory\n")
                status = 1
            else:
                out.append(_decode(data))
        return Result("".join(out), status)

    def _ls(self, args: list[str]) -> Result:
        out, status = [], 0
        for name in [a for a in args if not a.startswith("-")] or ["."]:
            path = self._path(name)
            if self.files.is_file(path):
                out.append(name + "\n")
            elif not self.files.is_folder(path):
                out.append(f"ls: cannot access '{name}': No such file or directory\n")
                status = 2
        return Result("".join(out), status)

    def _rm(self, args: list[str]) -> Result:
        force = any(a.startswith("-") and "f" in a for a in args)
        out, status = [], 0
        for name in [a for a in args if not a.startswith("-")]:
            if not self.files.remove(self._path(name)) and not force:
                out.append(f"rm: cannot remove '{name}': No such file or directory\n")
                status = 1
        return Result("".join(out), status)

    def _mkdir(self, args: list[str]) -> Result:
        for name in [a for a in args if not a.startswith("-")]:
            try:
                self.files.make_folders(self._path(name))
            except FileExistsError:
                return Result(f"mkdir: cannot create directory '{name}': File exists\n", 1)
        return Result("")

    def _cd(self, args: list[str]) -> Result:
        path = self._path(args[0]) if args else HOME
        if not self.files.is_folder(path):
            return Result(f"-bash: cd: {args[0]}: No such file or directory\n", 1)
        self.cwd = path
        return Result("")

    def _echo(self, args: list[str]) -> Result:
        return Result(" ".join(args) + "\n")

    def _killall(self, args: list[str]) -> Result:
        names = [a for a in args if not a.startswith("-")]
        for name in names:
            if name == "monitor_server":
                if self.control.killall_monitors() == 0:
                    return Result("monitor_server: no process found\n", 1)
                self._foreground = None
        return Result("")

    def _file_age(self, name: str) -> Result:
        mtime = self.files.mtime(self._path(name))
        if mtime is None:
            return Result(f"date: {name}: No such file or directory\n"
                          "-bash: - : syntax error: operand expected\n", 1)
        return Result(f"{int(time.time() - mtime)}\n")
