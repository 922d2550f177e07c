"""PyMoDAQ's plugin checks (package layout, every plugin module, the packaging) at warning level,
and PyMoDAQ's discovery of every plugin.

One finding is accepted, here and only here (ACCEPTED): PMQ111, because PyMoDAQ's checker looks for
README.rst while this project's README is README.md (the design asks for it)."""
from __future__ import annotations

import subprocess
import sys

from pymodaq.utils.plugin_testing import PluginPackageChecks
from pymodaq_utils.plugin_tools.checks import check_package_sources

PACKAGE = "pymodaq_plugins_pyrpl"
ACCEPTED = {"PMQ111": "README.rst is missing"}
"""Checker findings accepted: code → what the finding says. PyMoDAQ's checker (pymodaq_utils 5.3)
wants README.rst; the README is README.md."""
PLUGINS = {"actuators": ["PyRPL_ASG_TCP", "PyRPL_IQ_TCP", "PyRPL_PID_TCP"],
           "viewers": ["PyRPL_IQ_TCP", "PyRPL_NA_TCP", "PyRPL_SA_TCP", "PyRPL_Sampler_TCP",
                       "PyRPL_Scope_TCP"]}
VIEWERS_1D = {"PyRPL_NA_TCP", "PyRPL_SA_TCP", "PyRPL_Scope_TCP"}


class TestPlugin(PluginPackageChecks):
    package_name = PACKAGE
    fail_on = "warning"
    strict_imports = True

    def test_package_sources(self, package):
        failing = check_package_sources(package).failing(self.fail_on)
        accepted = [f for f in failing if _accepted(f)]
        assert len(accepted) == len(ACCEPTED), failing  # each accepted finding is still there
        assert not [f for f in failing if not _accepted(f)], "\n".join(failing)


def _accepted(finding: str) -> bool:
    return any(code in finding and text in finding for code, text in ACCEPTED.items())


def test_check_plugin_command_reports_only_the_accepted_finding():
    """``check_plugin pymodaq_plugins_pyrpl --fail-on warning``: every check passes but the
    accepted PMQ111 (which alone makes the exit status 1)."""
    run = subprocess.run([sys.executable, "-m", "pymodaq_utils.plugin_tools.checks", PACKAGE,
                          "--fail-on", "warning"], capture_output=True, text=True, timeout=120)
    report = run.stdout + run.stderr
    findings = [line for line in report.splitlines() if "PMQ" in line]
    assert len(findings) == len(ACCEPTED) and all(_accepted(f) for f in findings), report
    assert run.returncode == 1, report


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


def test_every_setting_of_ours_has_a_tooltip():
    """Each setting a plugin of this package adds (not PyMoDAQ's common ones) explains itself."""
    import importlib

    from pymodaq.control_modules.move_utility_classes import comon_parameters_fun
    from pymodaq.control_modules.viewer_utility_classes import comon_parameters

    common = {p["name"] for p in comon_parameters + comon_parameters_fun()}
    classes = [getattr(importlib.import_module(f"{PACKAGE}.daq_move_plugins.daq_move_{name}"),
                       f"DAQ_Move_{name}") for name in PLUGINS["actuators"]]
    for name in PLUGINS["viewers"]:
        dim = "1D" if name in VIEWERS_1D else "0D"
        module = importlib.import_module(
            f"{PACKAGE}.daq_viewer_plugins.plugins_{dim}.daq_{dim}viewer_{name}")
        classes.append(getattr(module, f"DAQ_{dim}Viewer_{name}"))

    def without_tip(params, path=()):
        for p in params:
            if path or p["name"] not in common:
                if not p.get("tip"):
                    yield "/".join((*path, p["name"]))
                yield from without_tip(p.get("children", []), (*path, p["name"]))
    missing = {cls.__name__: list(without_tip(cls.params)) for cls in classes}
    assert not any(missing.values()), missing
