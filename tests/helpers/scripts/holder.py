"""A program that holds a local server through TCPServerManager, driven line by line on stdin.

``python holder.py PORT [HOSTNAME] [--auto-stop S] [--session-grace S]``; prints ``HELD <server pid>``
once it holds the server, then obeys ``release`` (prints ``RELEASED``), ``get`` (prints ``GOT``),
``lease MODULE`` (prints ``LEASED``, or ``REFUSED <json of message and data>`` if another client
holds it) and ``events`` (prints ``EVENTS <json list of connection
events>``).
"""
from __future__ import annotations

import argparse
import json
import sys

from pymodaq_plugins_pyrpl.hardware import runtime
from pymodaq_plugins_pyrpl.hardware.errors import ModuleLeased
from pymodaq_plugins_pyrpl.hardware.server_manager import TCPServerManager


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("hostname", nargs="?", default=None)
    parser.add_argument("--auto-stop", type=float, default=10.0)
    parser.add_argument("--session-grace", type=float, default=5.0)
    args = parser.parse_args()
    manager = TCPServerManager(port=args.port, hostname=args.hostname, auto_stop=args.auto_stop,
                               session_grace=args.session_grace, client_name="holder")
    client = manager.ensure_server_running()
    events: list[str] = []
    client.add_connection_callback(lambda event, info: events.append(event))
    print("HELD", runtime.read_state(args.port).pid, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "release":
            manager.release_server()
            print("RELEASED", flush=True)
        elif command == "get":
            client.get("asg0", ["frequency"])
            print("GOT", flush=True)
        elif command.startswith("lease "):
            try:
                client.lease(command.split()[1])
            except ModuleLeased as exc:
                print("REFUSED", json.dumps({"message": str(exc), "data": exc.data}), flush=True)
            else:
                print("LEASED", flush=True)
        elif command == "events":
            print("EVENTS", json.dumps(events), flush=True)


if __name__ == "__main__":
    main()
