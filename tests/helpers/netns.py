"""Private network namespaces for the tests and the bench that put faults on real kernel TCP links
(iptables rules inside the namespace touch nothing outside it). Needs root and the ``ip`` and
``iptables`` commands (.ci/run installs them)."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
"""Where ``ip`` and ``iptables`` are looked for (a root PATH may lack the sbin folders)."""
IP = shutil.which("ip", path=SBIN)
IPTABLES = shutil.which("iptables", path=SBIN)


class NamespaceUnavailable(RuntimeError):
    """No private network namespace with working iptables can be made here (the message says
    why)."""


def skip_reason() -> str | None:
    """Why no namespace can be made here (not root, a command missing), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    missing = [tool for tool, path in (("ip", IP), ("iptables", IPTABLES)) if path is None]
    if missing:
        return f"needs {' and '.join(missing)} (Debian packages iproute2, iptables)"
    return None


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def private_namespace(prefix: str = "pyrpl-test") -> Iterator[str]:
    """A new network namespace (its name) with its loopback up and iptables working in it;
    deleted afterwards. Raises NamespaceUnavailable (why) if it cannot be made here."""
    reason = skip_reason()
    if reason:
        raise NamespaceUnavailable(reason)
    assert IP is not None and IPTABLES is not None  # skip_reason
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    made = _run(IP, "netns", "add", name)
    if made.returncode != 0:
        raise NamespaceUnavailable(f"cannot create a network namespace here: "
                                   f"{made.stderr.strip()}")
    try:
        up = _run(IP, "netns", "exec", name, IP, "link", "set", "lo", "up")
        if up.returncode != 0:
            raise RuntimeError(f"the namespace's loopback does not come up: {up.stderr}")
        probe = _run(IP, "netns", "exec", name, IPTABLES, "-w", "-L", "INPUT", "-n")
        if probe.returncode != 0:
            raise NamespaceUnavailable(f"iptables does not work in a namespace here: "
                                       f"{probe.stderr.strip()}")
        yield name
    finally:
        deleted = _run(IP, "netns", "del", name)
        if deleted.returncode != 0:
            raise RuntimeError(f"the namespace {name} was not deleted: {deleted.stderr}")


def exec_in(name: str, *cmd: str) -> list[str]:
    """The command line that runs ``cmd`` inside the namespace ``name``."""
    assert IP is not None
    return [IP, "netns", "exec", name, *cmd]
