"""PyMoDAQ's plugin checks (package layout, every plugin module, the packaging) at warning level,
and PyMoDAQ's discovery of every plugin."""
from __future__ import annotations

import subprocess
import sys

from pymodaq.utils.plugin_testing import PluginPackageChecks
from pymodaq_utils.plugin_tools.checks import check_package_sources

PACKAGE = "pymodaq_plugins_pyrpl"
PLUGINS = {"actuators": ["PyRPL_ASG_TCP", "PyRPL_PID_TCP"],
           "viewers": ["PyRPL_IQ_TCP", "PyRPL_Sampler_TCP", "PyRPL_Scope_TCP"]}


class TestPlugin(PluginPackageChecks):
    package_name = PACKAGE
    fail_on = "warning"
    strict_imports = True

    def test_package_sources(self, package):
        failing = check_package_sources(package).failing(self.fail_on)
        assert not failing, "\n".join(failing)


def test_check_plugin_command_has_no_warning():
    """``check_plugin pymodaq_plugins_pyrpl --fail-on warning`` exits with status 0."""
    run = subprocess.run([sys.executable, "-m", "pymodaq_utils.plugin_tools.checks", PACKAGE,
                          "--fail-on", "warning"], capture_output=True, text=True, timeout=120)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "[FAIL]" not in report


def test_discovery_finds_every_plugin_whatever_is_imported_first():
    """Importing the package's plugin support before PyMoDAQ must not hide plugins from discovery."""
    code = ("import pymodaq_plugins_pyrpl.plugin_support\n"
            "from pymodaq.control_modules.instruments import ACTUATOR_NAMES\n"
            "from pymodaq.utils.daq_utils import get_plugins\n"
            "print(sorted(n for n in ACTUATOR_NAMES if 'PyRPL' in n))\n"
            "print(sorted({p['name'] for dim in ('0D', '1D') for p in get_plugins(f'daq_{dim}viewer')"
            " if 'PyRPL' in p['name']}))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = run.stdout.strip().splitlines()
    assert lines[-2:] == [str(PLUGINS["actuators"]), str(PLUGINS["viewers"])], run.stderr
