"""Exclusive use of a module within one program: the plugins of a process share one client session,
so the server cannot tell them apart; :class:`SharedLeases` refuses an exclusive hold next to
another plugin's hold (the spectrum analyzer's scope, the network analyzer's IQ module), while
shared holds (an IQ actuator and an IQ viewer on one module) go on together."""
from __future__ import annotations

import pytest

from pymodaq_plugins_pyrpl.hardware.client import PyRPLClient
from pymodaq_plugins_pyrpl.hardware.errors import ModuleLeased
from pymodaq_plugins_pyrpl.plugin_support import SharedLeases

CLIENT = "PyMoDAQ (pid 1)"


@pytest.fixture
def client(mock_server):
    client = PyRPLClient("127.0.0.1", mock_server.port, mock_server.token, CLIENT,
                         reconnect=False)
    with client:
        client.connect()
        yield client


def owners(client: PyRPLClient) -> dict[str, str]:
    (entry,) = [c for c in client.status()["clients"] if c["client"] == CLIENT]
    return entry["owners"]


def test_an_exclusive_hold_refuses_and_is_refused_by_other_plugins(client):
    leases = SharedLeases()
    leases.take(client, "scope", "Scope")
    leases.take(client, "scope", "Scope 2")  # shared holds go together, as before
    with pytest.raises(ModuleLeased, match=r"^busy: the scope is used by Scope, Scope 2; "
                                           r"SA needs it alone in this program$"):
        leases.take(client, "scope", "SA", exclusive=True)
    assert owners(client) == {"scope": "Scope, Scope 2"}  # nothing changed
    leases.give_back(client, "scope", "Scope")
    leases.give_back(client, "scope", "Scope 2")
    assert owners(client) == {}

    leases.take(client, "scope", "SA", exclusive=True)
    assert owners(client) == {"scope": "SA"}
    for holder, exclusive in (("Scope", False), ("SA 2", True)):
        with pytest.raises(ModuleLeased, match=r"^busy: the scope is used by SA, which needs it "
                                               r"alone in this program$") as refused:
            leases.take(client, "scope", holder, exclusive)
        assert refused.value.data == {"owner": "SA"}
    assert owners(client) == {"scope": "SA"}
    leases.give_back(client, "scope", "SA")
    assert owners(client) == {} and client.status()["clients"][0]["leases"] == []
    leases.take(client, "scope", "Scope")  # free again
    leases.give_back(client, "scope", "Scope")


def test_one_plugin_may_hold_a_module_twice_while_it_connects_again(client):
    """A plugin connecting again (PyRPLLink.reconnected) takes its holds before it gives the old
    ones back: its own exclusive hold does not refuse it."""
    leases = SharedLeases()
    leases.take(client, "iq2", "NA", exclusive=True)
    leases.take(client, "iq2", "NA", exclusive=True)
    leases.give_back(client, "iq2", "NA")
    assert owners(client) == {"iq2": "NA"}
    with pytest.raises(ModuleLeased, match="busy: the iq2 is used by NA"):
        leases.take(client, "iq2", "IQ")
    leases.give_back(client, "iq2", "NA")
    assert owners(client) == {}


def test_exclusive_holds_of_different_modules_do_not_meet(client):
    leases = SharedLeases()
    leases.take(client, "iq2", "NA", exclusive=True)
    leases.take(client, "iq0", "IQ")
    leases.take(client, "iq0", "IQ frequency")
    assert owners(client) == {"iq2": "NA", "iq0": "IQ, IQ frequency"}
    for module, holder in (("iq2", "NA"), ("iq0", "IQ"), ("iq0", "IQ frequency")):
        leases.give_back(client, module, holder)
    assert owners(client) == {}
