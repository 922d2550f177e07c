"""Sessions and leases (hardware/server/sessions.py) on a real event loop, without sockets."""
from __future__ import annotations

import asyncio

import pytest

from pymodaq_plugins_pyrpl.hardware.errors import ModuleLeased
from pymodaq_plugins_pyrpl.hardware.server.connection import Connection
from pymodaq_plugins_pyrpl.hardware.server.sessions import Sessions


async def _nothing_sent(_: bytes) -> None:
    return None


def _sessions(grace: float) -> Sessions:
    return Sessions(grace=grace, auto_stop=None, changed=lambda: None, stop=lambda _: None)


def test_a_vanished_holder_s_lease_refusal_says_when_the_module_frees() -> None:
    async def scenario() -> dict:
        sessions = _sessions(grace=30.0)
        holder, _ = sessions.open(Connection(_nothing_sent), "holder", hold=False, resume=None)
        sessions.lease(holder, "asg0")
        sessions.detach(holder.connection)
        other, _ = sessions.open(Connection(_nothing_sent), "other", hold=False, resume=None)
        with pytest.raises(ModuleLeased) as refused:
            sessions.lease(other, "asg0")
        return refused.value.data

    data = asyncio.run(scenario())
    assert data["holder_connected"] is False
    assert 29.0 < data["frees_in"] <= 30.0


def test_a_lease_whose_holder_s_grace_is_over_is_free_before_its_expiry_runs() -> None:
    """The loop is busy past the vanished holder's expiry time: a lease asked for before the
    expiry callback runs is granted (never refused with 'frees in 0.0 s')."""
    async def scenario() -> tuple[set[str], int]:
        sessions = _sessions(grace=0.01)
        holder, _ = sessions.open(Connection(_nothing_sent), "holder", hold=False, resume=None)
        sessions.lease(holder, "asg0")
        sessions.detach(holder.connection)
        loop = asyncio.get_running_loop()
        due = holder.expiry.when()
        while loop.time() < due:  # keep the loop from running the expiry callback
            pass
        other, _ = sessions.open(Connection(_nothing_sent), "other", hold=False, resume=None)
        sessions.lease(other, "asg0")
        return other.leases, len(sessions)

    leases, open_sessions = asyncio.run(scenario())
    assert leases == {"asg0"}
    assert open_sessions == 1
