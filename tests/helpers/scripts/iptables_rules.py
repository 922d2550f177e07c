"""iptables rules on some TCP ports of the current network namespace, for the scripts that run
inside a test's private namespace (they are root there; the namespace is private, so the rules
touch nothing else). Imported by those scripts as a sibling module (``from iptables_rules import
Rules``): it imports nothing of the package nor of the test helpers."""
from __future__ import annotations

import subprocess
from collections.abc import Sequence


class Rules:
    """The rules this object added on ``ports`` (each one a server port: packets to it leave in
    OUTPUT, packets from it arrive in INPUT); :meth:`clear` deletes them. ``iptables`` is the
    path of the command. Raises CalledProcessError if iptables refuses a rule."""

    def __init__(self, ports: Sequence[int], iptables: str = "iptables") -> None:
        self.ports = list(ports)
        self.iptables = iptables
        self.rules: list[list[str]] = []

    def _run(self, *args: str) -> None:
        subprocess.run([self.iptables, "-w", *args], check=True)

    def _add(self, chain: str, match: list[str], target: list[str]) -> None:
        rule = [chain, "-p", "tcp", *match, *target]
        self._run("-A", *rule)
        self.rules.append(rule)

    def loss(self, probability: float) -> None:
        """Drop each packet with ``probability`` (iptables ``statistic --mode random``): packets
        to a port in OUTPUT, packets from it in INPUT, so each packet meets exactly one rule."""
        stat = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:g}"]
        for port in self.ports:
            self._add("OUTPUT", ["--dport", str(port), *stat], ["-j", "DROP"])
            self._add("INPUT", ["--sport", str(port), *stat], ["-j", "DROP"])

    def cut(self) -> None:
        """Drop every packet (a pulled cable: packets vanish)."""
        for port in self.ports:
            self._add("OUTPUT", ["--dport", str(port)], ["-j", "DROP"])
            self._add("INPUT", ["--sport", str(port)], ["-j", "DROP"])

    def reset(self) -> None:
        """Answer every packet with a TCP reset (a router that resets): both sides see their
        connections die, new connections are refused."""
        # REJECT is valid in INPUT/OUTPUT; the reset goes back to the sender of each packet
        # (resets are let through: on loopback the reset itself would meet the rule and vanish)
        reject = ["-j", "REJECT", "--reject-with", "tcp-reset"]
        no_rst = ["!", "--tcp-flags", "RST", "RST"]
        for port in self.ports:
            self._add("INPUT", ["--dport", str(port), *no_rst], reject)
            self._add("INPUT", ["--sport", str(port), *no_rst], reject)

    def clear(self) -> None:
        """Delete the rules this object added."""
        while self.rules:
            self._run("-D", *self.rules.pop())
