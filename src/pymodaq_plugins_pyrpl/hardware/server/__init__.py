"""The PyRPL server process: one per Red Pitaya, many clients, line-delimited JSON-RPC over TCP.

Run ``python -m pymodaq_plugins_pyrpl.hardware.server (--mock | --hostname HOST) [--port 6341]
[--bind 127.0.0.1] [--token-file PATH] [--config NAME] [--auto-stop SECONDS]
[--tls-cert PATH --tls-key PATH]`` (``--help`` lists every option). Once it listens it registers in
the runtime folder (:func:`.command.register`), then prints exactly one line to stdout,
``PYRPL_SERVER_READY {"port": N, "pid": P}``, and logs to stderr (or
``--log-file``). SIGTERM/SIGINT stop it cleanly with exit status 0; the board's outputs are left as they
are. If the backend cannot reach its board (PyRPL missing, board unreachable) it exits with status 2
before the ready line.

The modules, one job each:

* :mod:`.core` -- :class:`Server`: one request line to one reply line (:meth:`Server.process_line`,
  testable without sockets: parse, gate, dispatch, map the error), the methods and the status.
* :mod:`.auth` -- the token, the rate limit of failed hellos and the caps on connections that have
  not said hello yet.
* :mod:`.sessions` -- sessions, leases, the resume grace and the auto-stop watchdog.
* :mod:`.board` -- the backend as the server drives it: its calls on one dedicated thread (so a
  slow board never stalls the event loop) and the device state.
* :mod:`.acquisition` -- when a scope trace (or an IQ reading) is taken: waiting for the trace
  without holding the backend thread, averaging, deadlines.
* :mod:`.connection` -- one connection's output queue; :mod:`.transport` -- TCP and TLS: accept,
  admission, the reader loop, :func:`serve`.
* :mod:`.command` -- the command line: options, logging, registration, the ready line.
"""
from .command import main
from .connection import Connection
from .core import Server
from .transport import serve

__all__ = ["Connection", "Server", "main", "serve"]
