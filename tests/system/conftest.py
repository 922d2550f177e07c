"""Fixtures of the system tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.netns import NamespaceUnavailable, private_namespace


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A private network namespace with its loopback up (its name); deleted afterwards. Skips
    the test, saying why, where none can be made (not root, no ``ip``/``iptables``)."""
    try:
        with private_namespace() as name:
            yield name
    except NamespaceUnavailable as exc:
        pytest.skip(str(exc))
