"""The catalogue: validation errors, and quantization identical to PyRPL 0.9.9's read-back.

The unit tests exercise :func:`catalogue.validate` alone. The ``pyrpl`` test sets the same values
through PyRPL, in a subprocess (``pyrpl_quantization_probe.py``), on PyRPL's own fake board and on a
virtual board, and compares bit for bit.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.catalogue import ALL_MODULES, MODULES, Attribute
from pymodaq_plugins_pyrpl.hardware.errors import InvalidParams
from tests.helpers.scripts import PYRPL_QUANTIZATION_PROBE

WRITABLE = [(m.name, a) for m in ALL_MODULES.values() for a in m.attributes.values() if not a.readonly]
NUMERIC = [(m, a) for m, a in WRITABLE if a.kind in ("float", "int")]
RANGED = [(m, a) for m, a in NUMERIC if a.wraps is None]


def ids(cases: list[tuple[str, Attribute]]) -> list[str]:
    return [f"{m}.{a.name}" for m, a in cases]


def refused(module: str, values: Any) -> InvalidParams:
    """The InvalidParams raised by ``validate(module, values)``, checked for code and data."""
    with pytest.raises(InvalidParams) as info:
        catalogue.validate(module, values)
    assert info.value.code == -32602
    assert "allowed" in info.value.data
    return info.value


def refused_value(module: str, attribute: Attribute, value: Any) -> InvalidParams:
    """Refusal of one bad value: the message and data name the attribute and what it allows."""
    error = refused(module, {attribute.name: value})
    assert f"'{attribute.name}'" in error.message
    assert error.data == {"attribute": attribute.name, "allowed": attribute.allowed()}
    json.dumps(error.to_wire())
    return error


# ------------------------------------------------------------------------------------------------
# request shape: modules, attribute names, read-only attributes, all or nothing


@pytest.mark.parametrize("name", ["nope", "ASG0", ""])
def test_unknown_module(name: Any) -> None:
    error = refused(name, {"frequency": 1.0})
    assert error.data == {"module": name, "allowed": list(ALL_MODULES)}
    assert "unknown module" in error.message


@pytest.mark.parametrize("name", [None, 0, ["asg0"], {"a": 1}])
def test_module_that_is_not_a_name(name: Any) -> None:
    error = refused(name, {"frequency": 1.0})
    assert error.data == {"allowed": list(ALL_MODULES)}  # never echoed: it may be huge or nested
    assert "must be a module name" in error.message


def test_long_unknown_module_name_is_truncated_in_the_error() -> None:
    error = refused("x" * 1000, {"frequency": 1.0})
    assert len(error.data["module"]) == 64 and len(error.message) < 300


@pytest.mark.parametrize("module,name", [("asg0", "frequence"), ("scope", "decimation"),
                                         ("pid0", "d"), ("iq0", "Frequency"), ("sampler", "iq0_2")])
def test_unknown_attribute(module: str, name: str) -> None:
    error = refused(module, {name: 1.0})
    assert repr(name) in error.message
    assert error.data == {"attribute": name, "allowed": list(MODULES[module].attributes)}


@pytest.mark.parametrize("module,name", [("sampler", s) for s in catalogue.SAMPLER_SIGNALS]
                         + [("scope", "sampling_time")])
def test_read_only_attribute(module: str, name: str) -> None:
    error = refused_value(module, MODULES[module].attributes[name], 0.0)
    assert "read-only" in error.message


@pytest.mark.parametrize("values", [{}, None, [], [("frequency", 1.0)], "frequency=1", 1.0])
def test_values_must_be_a_non_empty_object(values: Any) -> None:
    error = refused("asg0", values)
    assert error.data == {"allowed": list(MODULES["asg0"].attributes)}


@pytest.mark.parametrize("names", ["frequency", [1], [None], {"frequency": 1}])
def test_attribute_names_must_be_a_list_of_strings(names: Any) -> None:
    with pytest.raises(InvalidParams) as info:
        catalogue.attribute_names("asg0", names)
    assert info.value.data == {"allowed": list(MODULES["asg0"].attributes)}


def test_attribute_names() -> None:
    assert catalogue.attribute_names("pid0") == list(MODULES["pid0"].attributes)
    assert catalogue.attribute_names("pid0", ["p", "i"]) == ["p", "i"]
    with pytest.raises(InvalidParams):
        catalogue.attribute_names("pid0", ["p", "q"])


def test_validate_is_all_or_nothing_and_returns_a_new_dict() -> None:
    request = {"frequency": 1000, "amplitude": 0.5, "waveform": "sin"}
    snapshot = dict(request)
    result = catalogue.validate("asg0", request)
    assert result is not request and request == snapshot
    assert result == {"frequency": 1000.00761449337, "amplitude": 0.5, "waveform": "sin"}

    bad = {"frequency": 1000, "amplitude": 5.0, "waveform": "SIN"}
    error = refused("asg0", bad)
    assert error.data["attribute"] == "amplitude"  # the first bad value, in request order
    assert bad == {"frequency": 1000, "amplitude": 5.0, "waveform": "SIN"}


def test_an_unknown_name_is_refused_before_any_value_is_checked() -> None:
    error = refused("asg0", {"amplitude": 5.0, "nope": 1})
    assert error.data["attribute"] == "nope"


# ------------------------------------------------------------------------------------------------
# wrong types and values, per kind of attribute

NOT_NUMBERS = ["1.0", "", None, True, False, [1.0], [], {"v": 1.0}, (1.0,)]
NOT_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("module,attribute", NUMERIC, ids=ids(NUMERIC))
@pytest.mark.parametrize("value", NOT_NUMBERS + NOT_FINITE + [2**64, -(2**64), 10**400])
def test_numbers_refuse_non_numbers_and_non_finite(module: str, attribute: Attribute,
                                                   value: Any) -> None:
    refused_value(module, attribute, value)


@pytest.mark.parametrize("module,attribute", RANGED, ids=ids(RANGED))
def test_numbers_refuse_values_outside_the_range(module: str, attribute: Attribute) -> None:
    lo, hi = attribute.minimum, attribute.maximum
    for value in (math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf), 1e308, -1e308,
                  2**63):
        error = refused_value(module, attribute, value)
        assert "must be within" in error.message
    catalogue.validate(module, {attribute.name: lo})
    catalogue.validate(module, {attribute.name: hi})


PHASES = [(m, a) for m, a in NUMERIC if a.wraps is not None]


@pytest.mark.parametrize("module,attribute", PHASES, ids=ids(PHASES))
def test_phases_wrap_but_refuse_values_pyrpl_cannot_convert(module: str,
                                                            attribute: Attribute) -> None:
    assert catalogue.validate(module, {attribute.name: 720.0}) == {attribute.name: 0.0}
    assert 0 <= catalogue.validate(module, {attribute.name: -1e300})[attribute.name] < 360
    for value in (1e308, -1e308):  # PyRPL: OverflowError
        assert "too large" in refused_value(module, attribute, value).message


BOOLS = [(m, a) for m, a in WRITABLE if a.kind == "bool"]


@pytest.mark.parametrize("module,attribute", BOOLS, ids=ids(BOOLS))
@pytest.mark.parametrize("value", [0, 1, 1.0, 0.0, "true", "False", None, [True]])
def test_bools_accept_only_true_and_false(module: str, attribute: Attribute, value: Any) -> None:
    refused_value(module, attribute, value)
    assert catalogue.validate(module, {attribute.name: True}) == {attribute.name: True}
    assert catalogue.validate(module, {attribute.name: False}) == {attribute.name: False}


SELECTS = [(m, a) for m, a in WRITABLE if a.kind == "select"]


@pytest.mark.parametrize("module,attribute", SELECTS, ids=ids(SELECTS))
def test_selects_accept_only_their_options(module: str, attribute: Attribute) -> None:
    for value in (attribute.options[0].upper() + "_", "", None, 0, True, [attribute.options[0]]):
        refused_value(module, attribute, value)
    for option in attribute.options:
        assert catalogue.validate(module, {attribute.name: option}) == {attribute.name: option}


FILTERS = [(m, a) for m, a in WRITABLE if a.kind == "filter"]


@pytest.mark.parametrize("module,attribute", FILTERS, ids=ids(FILTERS))
def test_filters_refuse_bad_cutoffs(module: str, attribute: Attribute) -> None:
    top = attribute.options[-1]
    bad = NOT_FINITE + ["1e3", None, True, (1e3,), {"a": 1}, 2**64,
                       math.nextafter(top, math.inf), -math.nextafter(top, math.inf), 1e308,
                       [0.0] * (attribute.length + 1), [1e3, "1e3"], [[1e3]], [1e3, math.nan],
                       [2 * top]]
    for value in bad:
        refused_value(module, attribute, value)


@pytest.mark.parametrize("module,attribute", FILTERS, ids=ids(FILTERS))
def test_filters_pad_missing_stages_with_off(module: str, attribute: Attribute) -> None:
    stages = attribute.length
    first = attribute.options[-1]
    assert catalogue.validate(module, {attribute.name: []})[attribute.name] == [0.0] * stages
    for value in (first, [first]):
        expected = [first] + [0.0] * (stages - 1)
        assert catalogue.validate(module, {attribute.name: value})[attribute.name] == expected


INTS = [(m, a) for m, a in NUMERIC if a.kind == "int"]


@pytest.mark.parametrize("module,attribute", INTS, ids=ids(INTS))
def test_ints_round_floats_half_to_even_like_pyrpl(module: str, attribute: Attribute) -> None:
    for value, expected in ((2.5, 2), (3.5, 4), (2.7, 3), (7.0, 7), (7, 7)):
        result = catalogue.validate(module, {attribute.name: value})[attribute.name]
        assert result == expected and type(result) is int


# ------------------------------------------------------------------------------------------------
# quantization: values from the facts note (measured on PyRPL 0.9.9.1, fake board)

KNOWN = [
    ("asg0", "frequency", 1000, 1000.00761449337),
    ("asg0", "frequency", 0.05, 0.0),
    ("asg0", "amplitude", 0.12345, 0.1234130859375),
    ("asg0", "offset", 0.1, 0.0999755859375),
    ("asg0", "offset", 0.99999, 1 - 2**-13),
    ("asg0", "offset", 1.0, 1 - 2**-13),
    ("asg0", "offset", -0.99999, -1.0),
    ("asg0", "start_phase", 370, 10.000000074505806),
    ("asg0", "cycles_per_burst", 2.7, 3),
    ("pid0", "p", 0.1234567, 0.12353515625),
    ("pid0", "p", 1e-9, 2**-12),
    ("pid0", "p", -1e-9, -(2**-12)),
    ("pid0", "i", 100, 100.00064696682759),
    ("pid0", "i", 38856.182646276284, 38856.182646276284),
    ("pid0", "i", -38856.18727829476, -38856.18727829476),
    ("pid0", "setpoint", 0.1, 0.0999755859375),
    ("pid0", "ival", 1.5, 1.5),
    ("pid0", "ival", 4 - 2**-13, 4 - 2**-13),
    ("pid0", "inputfilter", 1000, [1214.2929101024397, 0.0, 0.0, 0.0]),
    ("iq0", "bandwidth", 50000, [38894.1822543694, 0.0]),
    ("iq0", "bandwidth", [10e3, 20e3], [9716.419185321407, 19437.586193546253]),
    ("iq0", "frequency", 25e6, 24999999.994179234),
    ("iq0", "phase", -90, 270.0),
    ("iq0", "amplitude", 1e-9, 2**-17),
    ("iq0", "gain", 0.1, 0.10009765625),
    ("iq0", "gain", 1e-4, 2**-11),
    ("iq0", "quadrature_factor", 10.3, 10.0),
    ("iq0", "quadrature_factor", 0.2, 1.0),
    ("iq0", "quadrature_factor", -0.2, -1.0),
    ("iq0", "acbandwidth", 100, 75.89113552886508),
    ("iq0", "acbandwidth", 0, 0.0),
    ("scope", "duration", 0.001, 0.001048576),
    ("scope", "duration", 0.01, 0.016777216),
    ("scope", "duration", 0, catalogue.SCOPE_DURATIONS[0]),
    ("scope", "threshold", 0.01, 0.010009765625),
    ("scope", "trace_average", 2.6, 3),
    ("scope", "trigger_delay", -10, -10.0),
]


@pytest.mark.parametrize("module,name,value,expected", KNOWN)
def test_known_pyrpl_read_backs(module: str, name: str, value: Any, expected: Any) -> None:
    assert catalogue.validate(module, {name: value}) == {name: expected}


def test_pid_ival_refuses_4_volts_which_pyrpl_wraps_to_minus_4() -> None:
    refused_value("pid0", MODULES["pid0"].attributes["ival"], 4.0)


def test_filter_option_lists() -> None:
    pid = catalogue.filter_options(catalogue.PID_FILTER)
    assert len(pid) == 45 and pid[22] == 0.0 and pid[:22] == tuple(-f for f in pid[:22:-1])
    assert [round(f, 3) for f in pid[23:26]] == [1.186, 2.372, 4.743]
    assert [round(f, -2) for f in pid[-4:]] == [319600, 656900, 1386700, 3108100]
    assert catalogue.filter_options(catalogue.IQ_BANDWIDTH_FILTER) == pid
    assert catalogue.filter_options(catalogue.IQ2_BANDWIDTH_FILTER) == pid
    iq_input = catalogue.filter_options(catalogue.IQ_INPUT_FILTER)
    assert len(iq_input) == 41 and iq_input[21:] == pid[25:]
    assert MODULES["iq0"].attributes["acbandwidth"].options == iq_input[20:]
    assert MODULES["iq2"].attributes["bandwidth"].length == 4
    assert MODULES["iq1"].attributes["bandwidth"].length == 2


def test_pid_i_limits_follow_pyrpl_formula() -> None:
    i = MODULES["pid0"].attributes["i"]
    assert (i.minimum, i.maximum, i.step) == (-38856.18727829476, 38856.182646276284,
                                              0.004632018480097623)


@pytest.mark.parametrize("module,attribute", WRITABLE, ids=ids(WRITABLE))
def test_defaults_are_read_back_unchanged(module: str, attribute: Attribute) -> None:
    assert catalogue.validate(module, {attribute.name: attribute.default}) == {
        attribute.name: attribute.default}


def test_describe_is_json() -> None:
    description = json.loads(json.dumps(catalogue.describe()))
    assert set(description["modules"]) == set(ALL_MODULES)
    acbandwidth = description["modules"]["iq0"]["attributes"]["acbandwidth"]
    assert acbandwidth["options"][0] == 0.0 and len(acbandwidth["options"]) == 21
    assert description["modules"]["pid0"]["attributes"]["inputfilter"]["length"] == 4


# ------------------------------------------------------------------------------------------------
# comparison with PyRPL itself, on its fake board


def _grid_cases(attribute: Attribute, rng: random.Random) -> Iterator[Any]:
    """Edges, exact ties of the rounding grid, tiny values and random values within the range."""
    lo, hi, step = attribute.minimum, attribute.maximum, attribute.step
    yield from (lo, hi, math.nextafter(lo, hi), math.nextafter(hi, lo), (lo + hi) / 2)
    if lo <= 0 <= hi:
        yield from (0.0, -0.0, 0)
    if step:
        for k in (0, 1, 2, 3, rng.randrange(int(min((hi - lo) / step, 2**40)))):
            for tie in (lo + (k + 0.5) * step, hi - (k + 0.5) * step):
                yield from (tie, math.nextafter(tie, -math.inf), math.nextafter(tie, math.inf))
        yield from (v for v in (step / 3, -step / 3, step / 2, -step / 2, 1e-300, -1e-300)
                    if lo <= v <= hi)
    for _ in range(10):
        yield rng.uniform(lo, hi)
        magnitude = 10 ** rng.uniform(-6, math.log10(max(abs(lo), abs(hi))))
        yield from (v for v in (magnitude, -magnitude) if lo <= v <= hi)


def _option_cases(options: tuple[float, ...]) -> Iterator[float]:
    """Every option, the exact midpoints between neighbours (ties) and the floats around them."""
    for a, b in zip(options, options[1:]):
        mid = (a + b) / 2
        yield from (a, math.nextafter(a, b), mid, math.nextafter(mid, a), math.nextafter(mid, b))
    yield options[-1]


def _phase_cases(attribute: Attribute, rng: random.Random) -> Iterator[float]:
    step = attribute.step
    yield from (0.0, -0.0, 360.0, -360.0, 90, -90, 359.9999999999, math.nextafter(360.0, 0),
                step / 2, -step / 2, 1e6 + 0.1, -1e12 - 0.3, 1e13 + 0.3, -1e15, 123456789012345.6,
                1e300, -1e300)
    for k in (1, 3, rng.randrange(2**32)):
        yield from ((k + 0.5) * step, -(k + 0.5) * step)
    for _ in range(10):
        yield rng.uniform(-1000.0, 1000.0)
        yield rng.choice((1, -1)) * 10 ** rng.uniform(0, 16)  # float precision matters here


def _filter_cases(attribute: Attribute, rng: random.Random) -> Iterator[Any]:
    yield from _option_cases(attribute.options)
    yield []
    top = attribute.options[-1]
    for _ in range(25):
        length = rng.randrange(1, attribute.length + 1)
        yield [rng.choice((1, -1)) * min(10 ** rng.uniform(-1, 7), top) for _ in range(length)]
    yield [top, -top, 0.0, 1.0][: attribute.length]


def cases_for(attribute: Attribute, rng: random.Random) -> list[Any]:
    """In-range values worth comparing with PyRPL, for one attribute."""
    if attribute.kind == "filter":
        return list(_filter_cases(attribute, rng))
    if attribute.wraps is not None:
        return list(_phase_cases(attribute, rng))
    cases = list(_grid_cases(attribute, rng))
    if attribute.options:
        cases += [v for v in _option_cases(attribute.options) if v >= attribute.minimum]
    if attribute.kind == "int":  # PyRPL rounds floats: keep them, add their integers
        cases += [int(v) for v in cases if v == int(v)] + [2.5, 3.5, 4.5, 2.6]
    return cases


COMPARED_MODULES = ("scope", "asg0", "asg1", "pid0", "pid2", "iq0", "iq1", "iq2")


def run_probe(cases: list[list[Any]], tmp_path: Path, *board: str) -> dict[str, Any]:
    """Run the PyRPL probe on ``cases`` in a subprocess isolated in ``tmp_path``, on PyRPL's fake
    board, or on the virtual board at the monitor port ``board``."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYRPL_USER_DIR=str(tmp_path),
               HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path))
    completed = subprocess.run([sys.executable, str(PYRPL_QUANTIZATION_PROBE), *board],
                               input=json.dumps({"cases": cases}), capture_output=True, text=True,
                               env=env, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["fake", "virtual"])
def pyrpl_board(request: pytest.FixtureRequest) -> Iterator[tuple[str, ...]]:
    """The quantization probe's board argument: none for PyRPL's fake board, the monitor port of
    a virtual board served from this process."""
    if request.param == "fake":
        yield ()
        return
    from pymodaq_plugins_pyrpl.virtual_board import MonitorServer, VirtualBoard

    server = MonitorServer(VirtualBoard())
    port = server.start(0)
    try:
        yield (str(port),)
    finally:
        server.stop()


@pytest.mark.pyrpl
@pytest.mark.skipif(importlib.util.find_spec("pyrpl") is None, reason="PyRPL is not installed")
def test_quantization_matches_pyrpl(tmp_path: Path, pyrpl_board: tuple[str, ...]) -> None:
    rng = random.Random(20240611)
    cases: list[list[Any]] = []
    for m in COMPARED_MODULES:
        for a in MODULES[m].attributes.values():
            if a.readonly or a.kind not in ("float", "int", "filter"):
                continue
            if a.name == "ival":  # a running integrator (a board's) moves ival before it is read
                cases.append([m, "i", 0.0])
            cases += [[m, a.name, v] for v in cases_for(a, rng)]
    overflowing = [["asg0", "start_phase", 1e308], ["iq0", "phase", -1e308]]
    probe = run_probe(cases + overflowing, tmp_path, *pyrpl_board)
    results, refusals = probe["results"][: len(cases)], probe["results"][len(cases):]

    mismatches = []
    for (module, name, value), result in zip(cases, results):
        ours = catalogue.validate(module, {name: value})[name]
        if "error" in result or result["value"] != ours:
            mismatches.append((module, name, value, result, ours))
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ, e.g. {mismatches[:10]}"
    assert all("OverflowError" in r.get("error", "") for r in refusals), refusals

    options = probe["options"]
    assert options["pid0.inputfilter"] == list(MODULES["pid0"].attributes["inputfilter"].options)
    assert options["iq0.bandwidth"] == list(MODULES["iq0"].attributes["bandwidth"].options)
    assert options["iq2.bandwidth"] == list(MODULES["iq2"].attributes["bandwidth"].options)
    assert options["iq0.inputfilter"] == list(catalogue.filter_options(catalogue.IQ_INPUT_FILTER))
    assert options["iq0.acbandwidth"] == list(MODULES["iq0"].attributes["acbandwidth"].options)
