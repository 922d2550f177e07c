"""PyMoDAQ's plugin checks: package layout, every plugin module, the packaging, at warning level."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from pymodaq.utils.plugin_testing import PluginPackageChecks
from pymodaq_utils.plugin_tools.checks import check_package_sources

PACKAGE = "pymodaq_plugins_pyrpl"

PENDING = {
    "PMQ111": "README.rst is missing (the project has README.md; the README is the lead's)",
}
"""Package-level warnings fixed outside the viewer work. While only these remain, the two
package-level tests below xfail and name them; any other warning fails. Delete an entry once its
warning is gone."""


def _codes(messages: list[str]) -> set[str]:
    return {m.group(0) for text in messages for m in [re.search(r"PMQ\d+", text)] if m}


def _fail_unless_pending(messages: list[str]) -> None:
    codes = _codes(messages)
    assert codes <= set(PENDING), "\n".join(messages)
    if codes:
        pytest.xfail("pending elsewhere: " + "; ".join(PENDING[c] for c in sorted(codes)))


class TestPlugin(PluginPackageChecks):
    package_name = PACKAGE
    fail_on = "warning"
    strict_imports = True

    def test_package_sources(self, package):
        _fail_unless_pending(check_package_sources(package).failing(self.fail_on))


def test_check_plugin_command_has_no_warning():
    """``check_plugin pymodaq_plugins_pyrpl --fail-on warning`` exits with status 0."""
    run = subprocess.run([sys.executable, "-m", "pymodaq_utils.plugin_tools.checks", PACKAGE,
                          "--fail-on", "warning"], capture_output=True, text=True, timeout=120)
    report = run.stdout + run.stderr
    if run.returncode != 0:
        findings = [line for line in report.splitlines() if re.search(r"PMQ\d+ \[", line)]
        assert findings, report  # failed for another reason than a finding
        _fail_unless_pending(findings)
    assert run.returncode == 0, report
    assert "[FAIL]" not in report
