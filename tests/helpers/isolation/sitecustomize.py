"""Test isolation for every Python process of the test suite (pytest itself and its subprocesses).

PyMoDAQ hard-codes ``/etc`` as its system-wide configuration folder on Linux and writes
``/etc/.pymodaq`` when run as root (CI is). This module, put on ``PYTHONPATH`` by tests/conftest.py,
makes ``pymodaq_utils.config`` use ``$PYMODAQ_PYRPL_TEST_ETC`` instead, by compiling that one module
from its source with the path replaced (no bytecode is written, the installed package is untouched).
"""
import importlib.abc
import importlib.machinery
import os
import sys

_TARGET = "pymodaq_utils.config"


class _EtcRedirect(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET or not os.environ.get("PYMODAQ_PYRPL_TEST_ETC"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _RedirectingLoader(name, spec.origin)
        return spec


class _RedirectingLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):
        source = self.get_data(self.path).decode("utf-8")
        etc = os.environ["PYMODAQ_PYRPL_TEST_ETC"]
        patched = source.replace("Path('/etc')", f"Path({etc!r})")
        if patched == source:
            raise ImportError(f"tests/isolation: no Path('/etc') to redirect in {self.path}")
        return compile(patched, self.path, "exec", dont_inherit=True)


sys.meta_path.insert(0, _EtcRedirect())
