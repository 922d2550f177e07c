"""The server's command line (``python -m pymodaq_plugins_pyrpl.hardware.server``): its options,
logging, the token, registration in the runtime folder and the ready line."""
from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import secrets
import signal
import ssl
import sys
from pathlib import Path

from ... import __version__
from .. import arguments, board_address, protocol, runtime, tls
from ..backends.base import Backend
from ..errors import BackendUnavailable, ServerError
from ..sockets import is_loopback
from .auth import AUTH_MAX_FAILURES, AUTH_WINDOW, read_or_create_token
from .core import Server
from .transport import serve

logger = logging.getLogger(__name__)

OPEN_FILES_WANTED = 10240
"""The soft limit of open files the server asks for where the hard limit is unlimited (macOS
allows at most 10240)."""
LOG_MAX_BYTES = 1 << 20
LOG_BACKUPS = 2
"""``--log-file`` is rotated at LOG_MAX_BYTES, keeping LOG_BACKUPS older files (FILE.1, FILE.2)."""


def raise_open_files_limit() -> None:
    """Raise the soft limit of open file descriptors to the hard limit, where the system allows
    (logged); keep it otherwise."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else OPEN_FILES_WANTED
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.info("open files limit kept at %d (%s)", soft, exc)
            return
        logger.info("open files limit raised from %d to %d", soft, target)



def make_backend(args: argparse.Namespace) -> Backend:
    """The backend the options ask for. Raises ValueError (a usage error, the message says
    which) for ``--ssh-port``/``--board-port`` or ``--take-over`` without a network board, or a
    plant that is not one."""
    ports = {"ssh_port": args.ssh_port, "board_port": args.board_port}
    given = {name: port for name, port in ports.items() if port is not None}
    network_board = board_address.has_ports((args.hostname or "").strip())
    if given and not network_board:
        raise ValueError("--ssh-port and --board-port are for a network board (--hostname HOST): "
                         "the simulated board, PyRPL's fake board and the virtual board (its "
                         "ports are chosen when it starts) have none")
    if args.take_over and not network_board:
        raise ValueError("--take-over is for a network board (--hostname HOST): no other program "
                         "can use the simulated board, PyRPL's fake board or the virtual board "
                         "started for this server")
    if args.mock:
        from ..backends.simulator import SimulatorBackend

        return SimulatorBackend(seed=args.seed, plant=args.plant)
    from ..backends.pyrpl import PyrplBackend

    return PyrplBackend(hostname=args.hostname, config=args.config, plant=args.plant,
                        take_over=args.take_over, **given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pymodaq_plugins_pyrpl.hardware.server",
        description="PyRPL server: serves one Red Pitaya (or the simulated board) to many clients.")
    board = parser.add_mutually_exclusive_group(required=True)
    board.add_argument("--mock", action="store_true", help="serve the simulated Red Pitaya")
    board.add_argument("--hostname",
                       help="Red Pitaya hostname or IP ('_FAKE_': PyRPL's fake board; "
                            f"'{board_address.VIRTUAL}': a virtual board started for this server "
                            "and driven through PyRPL like a real one)")
    parser.add_argument("--ssh-port", type=arguments.port, metavar="N",
                        help="the board's ssh port (PyRPL's sshport; default "
                             f"{board_address.DEFAULT_SSH_PORT}), e.g. behind port forwarding")
    parser.add_argument("--board-port", type=arguments.port, metavar="M",
                        help="the port of the board's monitor_server (PyRPL's port; default "
                             f"{board_address.DEFAULT_BOARD_PORT})")
    parser.add_argument("--take-over", action="store_true",
                        help="start even if another program's client is on the board's "
                             "monitor_server (its connection ends); without it the server "
                             "refuses to start, naming that client")
    parser.add_argument("--port", type=arguments.port, default=protocol.DEFAULT_PORT,
                        help="TCP port (0: pick a free one); default %(default)s")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on; default %(default)s")
    parser.add_argument("--token-file", type=Path,
                        help="file holding the token clients must present (created owner-only with a "
                             "random token if missing); without it, a new random token is written "
                             "to the runtime folder (token-PORT), where local plugins find it")
    parser.add_argument("--config", default="", help="PyRPL config name (default: in-memory config)")
    parser.add_argument("--auto-stop", type=arguments.seconds(positive=False), metavar="SECONDS",
                        help="stop when no holding client is left: at once when the last one says "
                             "goodbye or its session expires, or after SECONDS without any")
    parser.add_argument("--session-grace", type=arguments.seconds(positive=False), default=10.0,
                        metavar="SECONDS",
                        help="how long a dropped client's session (and its leases) waits for it to "
                             "resume; default %(default)s")
    parser.add_argument("--hello-timeout", type=arguments.seconds(positive=True), default=10.0,
                        metavar="SECONDS",
                        help="close connections that have not said hello by then, counted from "
                             "their acceptance (the TLS handshake included); default %(default)s")
    parser.add_argument("--auth-cooldown", type=arguments.seconds(positive=False), default=60.0,
                        metavar="SECONDS",
                        help=f"after {AUTH_MAX_FAILURES} wrong tokens within {AUTH_WINDOW:g} s from "
                             "one IP address, refuse its wrong tokens with a retryable error for "
                             "SECONDS (the right token is always accepted); default %(default)s")
    parser.add_argument("--seed", type=arguments.seed,
                        help="simulator: random seed, >= 0 (deterministic noise)")
    parser.add_argument("--plant", default="loopback",
                        help="simulated and virtual board: what connects the outputs to the "
                             "inputs, 'loopback' (cable out1->in1, out2->in2) or "
                             "'resonator[:f0=HZ,q=Q,gain=G]'; default %(default)s")
    parser.add_argument("--tls-cert", type=Path, metavar="PATH",
                        help="serve TLS with this certificate (PEM; with --tls-key). The log shows "
                             "its SHA-256 fingerprint, for clients to pin")
    parser.add_argument("--tls-key", type=Path, metavar="PATH",
                        help="private key of --tls-cert (PEM, owner-only)")
    parser.add_argument("--log-file", type=Path,
                        help="log to this file instead of stderr, and send stderr there too; "
                             f"rotated at {LOG_MAX_BYTES >> 20} MiB, {LOG_BACKUPS} older files kept")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    return parser


class _LogFile(logging.handlers.RotatingFileHandler):
    """``--log-file``: owner-only, rotated at LOG_MAX_BYTES with LOG_BACKUPS older files kept, and
    the process's stderr (file descriptor 2) always writes to the current file, so what bypasses
    logging (a crash's traceback, a library's print) lands there and counts toward its size."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")

    def _open(self):  # type: ignore[no-untyped-def]
        fd = runtime.open_owner_only_append(Path(self.baseFilename))
        os.dup2(fd, 2)  # stderr
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def _configure_logging(args: argparse.Namespace) -> None:
    handler: logging.Handler = (_LogFile(args.log_file) if args.log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(max(logging.DEBUG, logging.INFO + 10 * (args.quiet - args.verbose)))


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--tls-cert``/``--tls-key`` (None without them); logs the certificate's
    fingerprint. Raises ValueError (only one of them given, no certificate in the file),
    ServerError (a key file others can read), OSError or ssl.SSLError (unreadable files)."""
    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("give both --tls-cert and --tls-key, or neither")
    runtime.check_private(args.tls_key)
    context = tls.server_context(args.tls_cert, args.tls_key)
    logger.info("TLS on; certificate SHA-256 fingerprint %s", tls.file_fingerprint(args.tls_cert))
    return context


async def _main(args: argparse.Namespace) -> int:
    if args.token_file is None and not is_loopback(args.bind):
        logger.error("refusing to listen on %s without --token-file: clients on other computers "
                     "need the token. Add --token-file PATH (created with a random token if "
                     "missing) and give that token to the clients.", args.bind)
        return 2
    try:
        token = read_or_create_token(args.token_file) if args.token_file else secrets.token_hex(32)
    except ServerError as exc:
        logger.error("token file refused: %s", exc)
        return 2
    try:
        tls_context = _tls_context(args)
    except (ValueError, OSError, ssl.SSLError, ServerError) as exc:
        logger.error("TLS refused: %s", exc)
        return 2
    try:
        backend = make_backend(args)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    server = Server(backend, token, auto_stop=args.auto_stop, session_grace=args.session_grace,
                    auth_cooldown=args.auth_cooldown)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop, f"signal {signal.Signals(sig).name}")

    registered: list[int] = []

    def ready(port: int) -> None:
        try:
            register(server, args, token, port)
        except ServerError as exc:
            logger.error("cannot register in the runtime folder: %s", exc)
            server.stop("not registered")
            return
        registered.append(port)
        print(protocol.ready_line(port, os.getpid()), flush=True)
        logger.info("serving %s board%s on %s:%d (pid %d, protocol %d, version %s)", backend.name,
                    f" {backend.hostname}" if backend.hostname else "", args.bind, port,
                    os.getpid(), protocol.PROTOCOL_VERSION, __version__)

    raise_open_files_limit()
    try:
        await serve(server, args.bind, args.port, args.hello_timeout, ready, tls_context)
    except BackendUnavailable as exc:
        logger.error("cannot serve the board: %s", exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", args.bind, args.port, exc)
        return 3
    finally:
        for port in registered:
            runtime.remove_own_state(port)
    if not registered:
        return 2
    logger.info("stopped")
    return 0


def register(server: Server, args: argparse.Namespace, token: str, port: int) -> None:
    """Write the state file of this server, listening on ``port``, in the runtime folder (and,
    without ``--token-file``, its token file there): so plugins, ``pymodaq-pyrpl status`` and
    ``stop`` find it, whoever started it. Raises ServerError (naming the folder and the fix) if
    the folder cannot be used."""
    if args.token_file is None:
        runtime.write_private(runtime.token_path(port), token + "\n")
    runtime.write_state(runtime.ServerState(
        pid=os.getpid(), port=port, token=token, backend=server.backend.name,
        hostname=server.backend.hostname, config=args.config, plant=server.backend.plant,
        version=__version__, started_at=server.started_iso(),
        process_start=runtime.process_start(os.getpid()), ssh_port=server.backend.ssh_port,
        board_port=server.backend.board_port))


def main(argv: list[str] | None = None) -> int:
    """Run the server. It registers in the runtime folder once it listens (:func:`register`);
    however it ends (stop, auto-stop, signal, error), its state file is removed if it still names
    this process."""
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    return asyncio.run(_main(args))

