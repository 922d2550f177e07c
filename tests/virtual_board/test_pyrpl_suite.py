"""PyRPL's own test suite against the virtual board, as the outside judge of its fidelity.

tests/helpers/scripts/pyrpl_suite.py runs in a private network namespace (``unshare -n``,
loopback only: PyRPL's suite never reaches the LAN), starts ``pymodaq-pyrpl virtual-board`` there
and runs ``pyrpl/test`` of the installed PyRPL against it through PyRPL's real ssh and
monitor_server path. The session starts it in the background once its tests are collected
(tests/helpers/pyrpl_suite_run.py), so it runs beside the other tests. This test waits for it and
reads the JUnit report: the number of passing tests must not fall below :data:`PASSED_FLOOR`, and
the files of :data:`MUST_PASS` pass in full.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.helpers.pyrpl_suite_run import SUITE_RUN, unavailable

SUITE_TIMEOUT = 900
"""Seconds PyRPL's suite may take in all, from its start (it took 2 min 50 s to 3 min 25 s on a
shared 2-core machine under the load of other test runs)."""

PASSED_FLOOR = 87
"""Passing tests of PyRPL's suite (97 run), at least: 90 on a quiet machine (7 failing in every
run: 3 of test_na, 3 of test_spectrum_analyzer, test_spin_box_pytest), less the three
load-sensitive tests that have each failed once under load (test_auto_relock, test_real_lock,
test_memory's test_two_trees, which waits 50 ms past a Qt timer). Runs: 90 quiet; 92 and 89 at a
load average up to 6 on 2 cores. Per file, in the loaded runs: test_registers 5/5,
test_hardware_modules: test_scope 7/7, test_scope_asg_ams 8/8, test_sampler 1/1, test_trig 1/1,
test_dsp_inputs 1/1, test_pid_na_iq 9/9, test_na_iir_pytest 16/16; test_lockbox 6/6 and 5/6
(test_auto_relock, under that load), test_na 10/11 and 8/11 (:data:`TIMING_BOUND`),
test_spectrum_analyzer 4/7, test_widgets 1/2 (test_spin_box_pytest: pid2.ival), the 10 other
files in full (test_attribute, test_example, test_load_save, test_memory, test_module_widgets,
test_ownership, test_proxyproperty, test_pyqtgraph_benchmark, test_redpitaya,
test_validate_and_normalize). docs/virtual_board.md says why the others fail."""

MUST_PASS = ("test_registers", "test_hardware_modules.test_scope_asg_ams",
             "test_hardware_modules.test_scope", "test_hardware_modules.test_sampler",
             "test_hardware_modules.test_trig", "test_hardware_modules.test_pid_na_iq",
             "test_lockbox", "test_na")
"""PyRPL test modules (under ``pyrpl.test``) of which every test passes, but for
:data:`TIMING_BOUND`."""

TIMING_BOUND = {"test_na::TestNA::test_benchmark_nogui", "test_na::TestNA::test_benchmark_gui",
                "test_na::TestNA::test_na_running_states",
                "test_lockbox::TestLockbox::test_real_lock",
                "test_lockbox::TestLockbox::test_auto_relock"}
"""Tests of :data:`MUST_PASS` exempt from it because they time PyRPL's own event loop on the test
machine more than the board (docs/virtual_board.md): the network analyzer's benchmarks want a
point within 3.1 (with the GUI 5.8, the sweep within 10 s) of the round trips PyRPL timed at
start-up, and PyRPL's own Python per point takes more than the 0.1 round trip of slack even
against a board without physics; test_na_running_states races a sweep restarted at 10 kHz
against the 1 kHz one within PyRPL's 50 ms Qt pumps; test_real_lock's calibration sweep and
test_auto_relock's own writes to pid1 1 s and 2 s after a forced unlock, which race the relock
sequence, have failed under load (each passed alone and in the unloaded runs)."""

pytestmark = [
    pytest.mark.pyrpl_suite,
    pytest.mark.timeout(SUITE_TIMEOUT + 60),
]


def _outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """``{test id: (module, outcome)}`` of each test case in a JUnit report written with PyRPL's
    site-packages folder as the root: ids and modules relative to ``pyrpl.test``
    (``test_na::TestNA::test_benchmark_gui``, ``test_hardware_modules.test_scope``); outcomes
    ``passed``, ``failed``, ``error`` or ``skipped``."""
    outcomes = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        parts = case.get("classname", "").removeprefix("pyrpl.test.").split(".")
        in_class = parts[-1].startswith("Test")
        module = ".".join(parts[:-1] if in_class else parts)
        name = case.get("name", "")
        names = [module, parts[-1], name] if in_class else [module, name]
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(
            kinds[0] if kinds else "", "passed")
        outcomes["::".join(names)] = (module, outcome)
    return outcomes


def test_pyrpl_suite_passes_against_the_virtual_board():
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    result = SUITE_RUN.wait(SUITE_TIMEOUT)
    junit, log = result.junit, result.log
    assert result.returncode in (0, 1) and junit.exists(), log
    outcomes = _outcomes(junit)
    counts = Counter(outcome for _, outcome in outcomes.values())
    per_module: dict[str, Counter] = {}
    for module, outcome in outcomes.values():
        per_module.setdefault(module, Counter())[outcome] += 1
    print("PyRPL's suite:", dict(counts))
    for module, module_counts in sorted(per_module.items()):
        print(f"  {module}: {dict(module_counts)}")
    not_passed = sorted(f"{test_id}: {outcome}" for test_id, (_, outcome) in outcomes.items()
                        if outcome != "passed")
    print("not passed:", *not_passed, sep="\n  ")
    assert counts["passed"] >= PASSED_FLOOR, f"not passed: {not_passed}\n{log}"
    for module in MUST_PASS:
        assert per_module.get(module, Counter())["passed"] > 0, f"{module} did not run\n{log}"
        failing = [test_id for test_id, (of, outcome) in outcomes.items()
                   if of == module and outcome != "passed" and test_id not in TIMING_BOUND]
        assert not failing, f"{module}: {failing}\n{log}"
