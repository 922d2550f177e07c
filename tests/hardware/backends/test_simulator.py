"""The virtual Red Pitaya (SimulatorBackend), driven directly with a fake clock advanced by hand."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from pymodaq_plugins_pyrpl.hardware import catalogue
from pymodaq_plugins_pyrpl.hardware.backends.base import ScopeTrace
from pymodaq_plugins_pyrpl.hardware.backends.simulator import SimulatorBackend
from pymodaq_plugins_pyrpl.hardware.errors import InternalError, InvalidParams
from tests.helpers.clock import FakeClock

LSB = 2.0**-13
IQ_PIPELINE = 3 / catalogue.FPGA_CLOCK
"""An IQ module's excitation, demodulated by the same module, lags by 3 FPGA cycles
(red_pitaya_iq_modulator_block.v: 2 output registers; red_pitaya_iq_demodulator_block.v: the
input register before the multiplier; no input filter)."""


def pipeline_lag(f: float) -> complex:
    """The phase factor of IQ_PIPELINE at ``f``."""
    return np.exp(-2j * math.pi * f * IQ_PIPELINE)
DURATIONS = catalogue.SCOPE_DURATIONS


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> SimulatorBackend:
    return SimulatorBackend(seed=1, clock=clock)


@pytest.fixture
def resonator(clock: FakeClock) -> SimulatorBackend:
    return SimulatorBackend(seed=1, plant="resonator", clock=clock)


def configure(sim: SimulatorBackend, module: str, **values: Any) -> dict[str, Any]:
    """Set values the way the server does: validated and quantized by the catalogue first."""
    return sim.set(module, catalogue.validate(module, values))


def run_asg(sim: SimulatorBackend, n: int = 0, **values: Any) -> dict[str, Any]:
    settings = {"waveform": "sin", "output_direct": "out1", "trigger_source": "immediately"}
    return configure(sim, f"asg{n}", **{**settings, **values})


def settled_iq(sim: SimulatorBackend, clock: FakeClock, module: str = "iq0") -> dict[str, float]:
    """``iq_read`` once the module's quadrature filter has settled after its last change, as the
    server waits (the fake clock is advanced by ``iq_settle_remaining``)."""
    clock.advance(sim.iq_settle_remaining(module))
    return sim.iq_read(module)


def acquire(sim: SimulatorBackend, clock: FakeClock, **scope: Any) -> ScopeTrace:
    """One trace: arm, wait (on the fake clock) for as long as the backend says, fetch."""
    if scope:
        configure(sim, "scope", **scope)
    wait = sim.scope_arm()
    clock.advance(wait)
    assert sim.scope_ready()
    return sim.scope_fetch()


def dominant_frequency(trace: ScopeTrace, data: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft((data - data.mean()) * np.hanning(len(data))))
    return float(np.fft.rfftfreq(len(data), trace.dt)[np.argmax(spectrum)])


def settle(sim: SimulatorBackend, clock: FakeClock, seconds: float, steps: int = 20) -> None:
    """Let simulated time pass, with a call now and then as a polling server would make."""
    for _ in range(steps):
        clock.advance(seconds / steps)
        sim.get("pid0", ["ival"])


# ------------------------------------------------------------------------------------------------
# ASG and outputs


@pytest.mark.parametrize(("frequency", "duration"), [
    (1e3, DURATIONS[8]), (12345.6, DURATIONS[6]), (3.3e5, DURATIONS[3]), (1e6, DURATIONS[0]),
    (17e6, DURATIONS[0]),
])
def test_asg_frequency_is_the_dominant_frequency_of_the_trace(sim, clock, frequency, duration):
    applied = run_asg(sim, frequency=frequency, amplitude=0.5)["frequency"]
    trace = acquire(sim, clock, input1="in1", input2="out1", duration=duration)
    bin_width = 1.0 / duration
    assert abs(dominant_frequency(trace, trace.ch1) - applied) <= bin_width
    assert abs(dominant_frequency(trace, trace.ch2) - applied) <= bin_width


def test_square_ramp_halframp_and_dc_shapes(sim, clock):
    configure(sim, "scope", input1="out1", input2="asg0", duration=DURATIONS[5])
    run_asg(sim, waveform="square", frequency=2e3, amplitude=0.4, offset=0.1)
    out = acquire(sim, clock).ch1
    assert set(np.round(out / LSB).astype(int)) == {round(0.5 / LSB), round(-0.3 / LSB)}
    assert abs(np.mean(out > 0.1) - 0.5) < 0.5 / (DURATIONS[5] * 2e3)  # half of the full periods

    run_asg(sim, waveform="ramp")
    out = acquire(sim, clock).ch1
    assert out.max() == pytest.approx(0.5, abs=2 * LSB) and out.min() == pytest.approx(-0.3, abs=2 * LSB)
    # a triangle spends equal time at every level
    histogram = np.histogram(out, bins=8, range=(-0.3, 0.5))[0]
    assert histogram.min() > 0.8 * histogram.mean()

    run_asg(sim, waveform="halframp")
    out = acquire(sim, clock).ch1
    steps = np.diff(out)
    periods = DURATIONS[5] * 2e3
    assert math.floor(periods) <= np.sum(steps < -0.5) <= math.ceil(periods)  # one fall per period
    assert np.median(steps) > 0

    run_asg(sim, waveform="dc")
    out = acquire(sim, clock).ch1
    assert np.all(out == pytest.approx(0.1, abs=LSB))


def test_sin_and_cos_start_at_start_phase(sim, clock):
    configure(sim, "scope", input1="asg0", input2="asg1", duration=DURATIONS[2])
    run_asg(sim, 0, frequency=1e5, amplitude=0.5)
    run_asg(sim, 1, waveform="cos", frequency=1e5, amplitude=0.5, start_phase=90.0)
    trace = acquire(sim, clock)
    assert trace.ch1[0] == pytest.approx(0.0, abs=LSB)
    assert trace.ch2[0] == pytest.approx(0.0, abs=LSB)  # cos from 90°: starts at 0, falling
    assert trace.ch1[1] > 0 and trace.ch2[1] < 0


def test_stopped_asg_outputs_nothing(sim, clock):
    run_asg(sim, frequency=1e4, amplitude=0.5, trigger_source="ext_positive_edge")
    trace = acquire(sim, clock, input1="asg0", input2="out1")
    assert not trace.ch1.any() and not trace.ch2.any()


def test_asg_trigger_source_high_runs_the_generator(sim, clock):
    """'high' holds the trigger input at 1 (red_pitaya_asg_ch.v: trig_in <= 1'b1): the generator
    runs as with 'immediately' (PyRPL's spectrum-analyzer tests drive the ASG this way)."""
    run_asg(sim, frequency=1e5, amplitude=0.4, trigger_source="high")
    trace = acquire(sim, clock, input1="asg0", input2="out1", duration=DURATIONS[3])
    assert trace.ch1.max() == pytest.approx(0.4, abs=2 * LSB)
    assert trace.ch1.min() == pytest.approx(-0.4, abs=2 * LSB)
    configure(sim, "asg0", trigger_source="off")
    assert not acquire(sim, clock).ch1.any()


def test_outputs_sum_clip_and_are_14_bit(sim, clock):
    run_asg(sim, 0, frequency=1e4, amplitude=0.8, offset=0.1)
    run_asg(sim, 1, waveform="dc", offset=0.4, output_direct="both")
    trace = acquire(sim, clock, input1="out1", input2="out2", duration=DURATIONS[6])
    assert trace.ch1.max() == 1.0 - LSB
    assert np.mean(trace.ch1 == 1.0 - LSB) > 0.2
    assert trace.ch1.min() == pytest.approx(-0.3, abs=3 * LSB)  # the offsets truncate to the grid
    assert np.all(trace.ch2 == pytest.approx(0.4, abs=LSB))
    for data in (trace.ch1, trace.ch2):
        assert np.array_equal(data / LSB, np.round(data / LSB))


def test_loopback_delays_by_two_samples(sim, clock):
    run_asg(sim, waveform="square", frequency=1e6, amplitude=0.5)
    trace = acquire(sim, clock, input1="out1", input2="in1", duration=DURATIONS[0])
    out, inp = trace.ch1 - trace.ch1.mean(), trace.ch2 - trace.ch2.mean()
    lags = np.arange(-5, 6)
    correlation = [np.dot(out[10:-10], np.roll(inp, -lag)[10:-10]) for lag in lags]
    assert lags[int(np.argmax(correlation))] == 2


def test_loopback_noise_is_about_one_millivolt_rms(sim, clock):
    run_asg(sim, waveform="dc", offset=0.2)
    trace = acquire(sim, clock, input1="in1", input2="out1", duration=DURATIONS[4],
                    average=False)
    assert np.std(trace.ch1) == pytest.approx(1e-3, rel=0.1)
    assert np.mean(trace.ch1) == pytest.approx(0.2, abs=1e-4)
    assert np.std(trace.ch2) == 0.0


def test_averaging_decimation_divides_the_noise_by_the_root_of_the_decimation(sim, clock):
    """The FPGA's boxcar averages the 125 MS/s ADC samples within each decimation interval: the
    white noise's rms shrinks by sqrt(decimation) and its density stays (the spectrum analyzer's
    noise floor does not depend on the span)."""
    run_asg(sim, waveform="dc", offset=0.2)
    for n in (2, 4, 6):  # decimation 4, 16, 64
        trace = acquire(sim, clock, input1="in1", duration=DURATIONS[n], average=True)
        expected = math.sqrt(1e-6 / 2**n + 2.0**-26 / 12)  # and the 14-bit rounding
        assert np.std(trace.ch1) == pytest.approx(expected, rel=0.1), n


def test_frequency_change_is_phase_continuous(sim, clock):
    f1 = run_asg(sim, frequency=1e4, amplitude=0.5)["frequency"]
    elapsed = 1.234567e-3
    clock.advance(elapsed)
    f2 = configure(sim, "asg0", frequency=2.5e4)["frequency"]
    trace = acquire(sim, clock, input1="asg0", duration=DURATIONS[3])
    t = trace.dt * np.arange(catalogue.SCOPE_SAMPLES)
    expected = 0.5 * np.sin(2 * np.pi * (f1 * elapsed + f2 * t))
    assert np.max(np.abs(trace.ch1 - expected)) < 2 * LSB


# ------------------------------------------------------------------------------------------------
# scope timing and triggers


def test_immediate_acquisition_takes_the_trace_duration(sim, clock):
    configure(sim, "scope", duration=DURATIONS[7], trigger_source="immediately")
    assert sim.get("scope", ["sampling_time"]) == {"sampling_time": DURATIONS[7] / 16384}
    wait = sim.scope_arm()
    assert wait == pytest.approx(DURATIONS[7])
    clock.advance(wait * 0.99)
    assert not sim.scope_ready()
    with pytest.raises(InternalError, match="not complete"):
        sim.scope_fetch()
    clock.advance(wait * 0.01)
    assert sim.scope_ready()
    trace = sim.scope_fetch()
    assert trace.t0 == 0.0 and trace.dt == DURATIONS[7] / 16384
    assert trace.ch1.shape == trace.ch2.shape == (16384,) and trace.ch1.dtype == np.float64


def test_fetch_without_arm_and_after_stop_raise(sim, clock):
    with pytest.raises(InternalError, match="scope_arm"):
        sim.scope_fetch()
    sim.scope_arm()
    sim.scope_stop()
    clock.advance(1.0)
    assert not sim.scope_ready()
    with pytest.raises(InternalError):
        sim.scope_fetch()


@pytest.mark.parametrize(("source", "threshold", "delay"), [
    ("ch1_positive_edge", 0.2, 0.0), ("ch1_positive_edge", -0.3, 2e-4),
    ("ch1_negative_edge", 0.1, -1e-4), ("ch2_negative_edge", -0.25, 0.0),
])
def test_edge_trigger_puts_the_crossing_at_the_trigger_delay(sim, clock, source, threshold, delay):
    run_asg(sim, frequency=1e4, amplitude=0.5, output_direct="both")
    clock.advance(3.3e-5)
    trace = acquire(sim, clock, input1="in1", input2="in2", duration=DURATIONS[3],
                    trigger_source=source, threshold=threshold, hysteresis=0.01, trigger_delay=delay)
    assert trace.t0 == pytest.approx(delay - DURATIONS[3] / 2)
    data = trace.ch1 if source.startswith("ch1") else trace.ch2
    index = round(-trace.t0 / trace.dt)  # the sample at t = 0, the trigger
    assert data[index] == pytest.approx(threshold, abs=5e-3)
    slope = data[index + 30] - data[index - 30]
    assert slope > 0.01 if "positive" in source else slope < -0.01


def test_hysteresis_must_be_exceeded_before_the_edge(sim, clock):
    # 0.2 V offset with a 4 mV ripple: it crosses 0.2 V, but never goes below 0.2 - 0.01 V
    run_asg(sim, frequency=1e4, amplitude=0.004, offset=0.2)
    configure(sim, "scope", input1="out1", trigger_source="ch1_positive_edge", threshold=0.2,
              hysteresis=0.01, duration=DURATIONS[3])
    sim.scope_arm()
    clock.advance(20.0)
    assert not sim.scope_ready()

    configure(sim, "scope", hysteresis=0.002)
    trace = acquire(sim, clock)
    assert trace.ch1[round(-trace.t0 / trace.dt)] == pytest.approx(0.2, abs=2 * LSB)


def test_asg_trigger_fires_at_the_start_of_a_period(sim, clock):
    run_asg(sim, frequency=5e3, amplitude=0.5, start_phase=123.0)
    clock.advance(1.7e-4)
    trace = acquire(sim, clock, input1="asg0", trigger_source="asg0", duration=DURATIONS[3])
    centre = round(-trace.t0 / trace.dt)
    assert trace.t0 == pytest.approx(-DURATIONS[3] / 2)
    assert trace.ch1[centre] == pytest.approx(0.0, abs=LSB)  # sin table at phase 0
    assert trace.ch1[centre + 10] > trace.ch1[centre] > trace.ch1[centre - 10]


@pytest.mark.parametrize("source", ["off", "ext_positive_edge", "dsp", "asg1"])
def test_triggers_that_never_fire(sim, clock, source):
    run_asg(sim, frequency=1e4, amplitude=0.5)  # asg1 stays off
    configure(sim, "scope", trigger_source=source)
    sim.scope_arm()
    clock.advance(100.0)
    assert not sim.scope_ready()


# ------------------------------------------------------------------------------------------------
# PID


def close_loop(sim: SimulatorBackend, **values: Any) -> None:
    settings = {"input": "in1", "output_direct": "out1", "p": -0.1, "i": -1000.0}
    configure(sim, "pid0", **{**settings, **values})


def test_pid_loop_settles_on_the_setpoint(sim, clock):
    close_loop(sim, setpoint=0.3)
    trace = acquire(sim, clock, input1="in1", input2="pid0", duration=DURATIONS[3])
    assert trace.ch1[:50].mean() == pytest.approx(0.3 * 0.1 / 1.1, abs=3e-3)  # p step at t=0
    assert trace.ch1[-100:].mean() == pytest.approx(0.3, abs=5e-3)
    smooth = np.convolve(trace.ch2, np.ones(256) / 256, mode="valid")
    assert np.all(np.diff(smooth[::256]) > 0)  # approaches the setpoint monotonically
    settle(sim, clock, 10e-3)
    values = sim.sampler_read()
    assert values["in1"] == pytest.approx(0.3, abs=2e-3)
    assert values["pid0"] == pytest.approx(0.3, abs=2e-3)
    assert sim.get("pid0", ["ival"])["ival"] == pytest.approx(0.3, abs=2e-3)


def test_pid_with_positive_gains_on_the_loopback_runs_away(sim, clock):
    # PyRPL's error is input - setpoint: positive gains through a +1 cable are positive feedback
    close_loop(sim, setpoint=0.3, p=0.1, i=1000.0)
    settle(sim, clock, 10e-3)
    assert sim.sampler_read()["in1"] == pytest.approx(-1.0, abs=3e-3)
    assert sim.get("pid0", ["ival"])["ival"] == -4.0


@pytest.mark.parametrize(("setpoint", "limits", "held", "ival"), [
    (0.5, {"max_voltage": 0.2}, 0.2, 4.0 - LSB), (-0.5, {"min_voltage": -0.25}, -0.25, -4.0),
])
def test_pid_output_respects_its_limits(sim, clock, setpoint, limits, held, ival):
    close_loop(sim, setpoint=setpoint, **limits)
    settle(sim, clock, 20e-3)
    values = sim.sampler_read()
    assert values["pid0"] == pytest.approx(held, abs=1e-3)
    assert values["in1"] == pytest.approx(held, abs=3e-3)
    assert sim.get("pid0", ["ival"])["ival"] == ival  # the integrator winds up to its saturation
    # back within reach: it unwinds and settles
    configure(sim, "pid0", setpoint=held / 2)
    settle(sim, clock, 20e-3)
    assert sim.sampler_read()["in1"] == pytest.approx(held / 2, abs=3e-3)


def test_paused_freezes_the_selected_gains(sim, clock):
    # open loop: input off (0 V), setpoint 0.1 V -> error -0.1 V, integrator ramps at 2 pi i error
    configure(sim, "pid0", input="off", setpoint=0.1, i=100.0, p=1.0)
    clock.advance(1e-3)
    ival = sim.get("pid0", ["ival"])["ival"]
    assert ival == pytest.approx(2 * math.pi * 100.0 * -0.1 * 1e-3, abs=2 * LSB)
    assert sim.sampler_read()["pid0"] == pytest.approx(-0.1 + ival, abs=2 * LSB)

    configure(sim, "pid0", paused=True, pause_gains="pi")
    clock.advance(10e-3)
    assert sim.get("pid0", ["ival"])["ival"] == ival
    assert sim.sampler_read()["pid0"] == pytest.approx(ival, abs=2 * LSB)  # p term off

    configure(sim, "pid0", pause_gains="p")  # integrator runs again, p still off
    clock.advance(1e-3)
    assert sim.get("pid0", ["ival"])["ival"] == pytest.approx(2 * ival, abs=2 * LSB)


def test_ival_can_be_preset(sim, clock):
    assert configure(sim, "pid0", ival=0.5, output_direct="out2") == {"ival": 0.5,
                                                                      "output_direct": "out2"}
    clock.advance(1.0)
    values = sim.sampler_read()
    assert values["pid0"] == pytest.approx(0.5, abs=2 * LSB)
    assert values["in2"] == pytest.approx(0.5, abs=5e-3)


def test_differential_mode_uses_the_other_pid_input(sim, clock):
    run_asg(sim, 0, waveform="dc", offset=0.3, output_direct="off")
    run_asg(sim, 1, waveform="dc", offset=0.1, output_direct="off")
    configure(sim, "pid1", input="asg1")
    configure(sim, "pid0", input="asg0", p=1.0, setpoint=0.25)
    assert sim.sampler_read()["pid0"] == pytest.approx(0.3 - 0.25, abs=2 * LSB)
    configure(sim, "pid0", differential_mode_enabled=True)
    assert sim.sampler_read()["pid0"] == pytest.approx(0.3 - 0.1, abs=2 * LSB)


# ------------------------------------------------------------------------------------------------
# IQ


def test_iq_on_loopback_returns_the_excitation(sim, clock):
    configure(sim, "iq0", input="in1", output_direct="out1", amplitude=0.3, frequency=1e6,
              bandwidth=[1000.0, 1000.0])
    reading = settled_iq(sim, clock, "iq0")
    z = reading["i"] + 1j * reading["q"]
    assert abs(z) == pytest.approx(0.3, abs=1e-3)
    delay_and_lowpass = (-360 * 1e6 * (16e-9 + IQ_PIPELINE)
                         - math.degrees(math.atan(1e6 / 60e6)))
    assert math.degrees(np.angle(z)) == pytest.approx(delay_and_lowpass, abs=0.2)

    phase = configure(sim, "iq0", phase=30.0)["phase"]
    reading = settled_iq(sim, clock, "iq0")
    rotated = math.degrees(np.angle(reading["i"] + 1j * reading["q"]))
    assert rotated == pytest.approx(delay_and_lowpass + phase, abs=0.2)  # as PyRPL on a board

    configure(sim, "iq0", input="out1", phase=0.0)  # no cable: the pipeline's lag, no noise
    z = 0.3 * pipeline_lag(1e6)
    assert settled_iq(sim, clock, "iq0") == pytest.approx({"i": z.real, "q": z.imag}, abs=1e-4)


def test_iq_follows_the_resonator(resonator, clock):
    configure(resonator, "iq0", input="in1", output_direct="out1", amplitude=0.02,
              bandwidth=[1000.0, 1000.0])
    frequencies = np.linspace(70e3, 130e3, 241)
    response = []
    for f in frequencies:
        configure(resonator, "iq0", frequency=float(f))
        clock.advance(1e-3)
        reading = resonator.iq_read("iq0")
        response.append(reading["i"] + 1j * reading["q"])
    response = np.array(response)
    power = np.abs(response) ** 2
    f0, linewidth = 100e3, 100e3 / 30
    assert abs(frequencies[np.argmax(power)] - f0) < linewidth
    assert np.abs(response).max() == pytest.approx(0.02 * 30, rel=0.02)
    above = frequencies[power >= power.max() / 2]
    assert above[-1] - above[0] == pytest.approx(linewidth, rel=0.15)
    phase = np.degrees(np.unwrap(np.angle(response)))
    assert phase[0] - phase[-1] == pytest.approx(180, abs=10)
    assert phase[np.argmax(power)] == pytest.approx(-90, abs=10)


def iq(sim: SimulatorBackend, module: str = "iq0") -> complex:
    reading = sim.iq_read(module)
    return reading["i"] + 1j * reading["q"]


def test_iq_filter_settles_exponentially_after_a_change(sim, clock):
    cutoff = catalogue.MODULES["iq0"].attributes["bandwidth"].validate([500.0])[0]
    settings = configure(sim, "iq0", input="out1", output_direct="out1", amplitude=0.3,
                         frequency=1e5, bandwidth=[cutoff, 0.0])
    amplitude, lag = settings["amplitude"], pipeline_lag(settings["frequency"])
    assert sim.iq_settle_remaining("iq0") == pytest.approx(
        catalogue.filter_settle_time([cutoff, 0.0]))
    settled_iq(sim, clock)
    before = iq(sim)
    assert before == pytest.approx(0.3 * lag, abs=0.3 * catalogue.SETTLE_FRACTION)  # no noise
    phase = configure(sim, "iq0", phase=90.0)["phase"]
    changed = clock.t
    after = amplitude * np.exp(1j * math.radians(phase)) * lag
    assert iq(sim) == pytest.approx(before, abs=1e-9)  # the filter's output is continuous
    tau = 1.0 / (2 * math.pi * cutoff)
    for elapsed in (0.5 * tau, tau, 3 * tau):  # a first-order low-pass: exp(-t / tau)
        clock.t = changed + elapsed
        expected = after + (before - after) * math.exp(-elapsed / tau)
        assert iq(sim) == pytest.approx(expected, abs=1e-9)
    clock.advance(sim.iq_settle_remaining("iq0"))
    assert sim.iq_settle_remaining("iq0") == 0.0
    assert abs(iq(sim) - after) <= abs(after - before) * catalogue.SETTLE_FRACTION
    configure(sim, "asg0", frequency=1000.0)  # another module's change: no wait for iq0
    assert sim.iq_settle_remaining("iq0") == 0.0
    with pytest.raises(InvalidParams):
        sim.iq_settle_remaining("pid0")


def test_resonator_rings_up_with_time_constant_q_over_pi_f0(clock):
    resonator = SimulatorBackend(seed=1, plant="resonator:noise=0", clock=clock)
    amplitude = configure(resonator, "iq0", input="in1", output_direct="out1", amplitude=0.02,
                          frequency=97e3, bandwidth=[0.0, 0.0])["amplitude"]  # no filter
    clock.advance(0.01)
    start, in1 = iq(resonator), resonator.sampler_read()["in1"]
    f = configure(resonator, "iq0", frequency=100e3)["frequency"]
    changed = clock.t
    # the free oscillation is on in1 (scope, sampler): the input does not jump
    assert resonator.sampler_read()["in1"] == pytest.approx(in1, abs=2 * LSB)
    assert iq(resonator) == pytest.approx(start, abs=1e-5)  # the resonator's output: continuous
    tau = 30 / (math.pi * 100e3)
    readings = []
    for elapsed in (tau, 3 * tau, 100 * tau):
        clock.t = changed + elapsed
        readings.append(iq(resonator))
    steady = readings[-1]
    assert f == pytest.approx(100e3, abs=0.03)
    # at f0: gain q, -90°, and the IQ pipeline's lag
    assert steady == pytest.approx(-30j * amplitude * pipeline_lag(f), abs=1e-5)
    ratio = abs(readings[1] - steady) / abs(readings[0] - steady)
    assert ratio == pytest.approx(math.exp(-2), rel=1e-3)


def test_a_sweep_that_does_not_wait_shows_the_filter_lag(clock):
    """Reading 0.5 ms after each frequency step (a scan that does not wait) moves the resonance
    peak one step up and lowers it; waiting iq_settle_remaining gives the resonator's curve."""
    frequencies = np.linspace(90e3, 110e3, 81)  # steps of 250 Hz, linewidth 3.3 kHz
    peaks = {}
    for wait in (False, True):
        resonator = SimulatorBackend(seed=1, plant="resonator", clock=clock)
        configure(resonator, "iq0", input="in1", output_direct="out1", amplitude=0.02,
                  frequency=frequencies[0], bandwidth=[151.8, 0.0])
        amplitudes = []
        for f in frequencies:
            configure(resonator, "iq0", frequency=float(f))
            clock.advance(resonator.iq_settle_remaining("iq0") if wait else 0.5e-3)
            amplitudes.append(abs(iq(resonator)))
        peaks[wait] = (frequencies[np.argmax(amplitudes)], max(amplitudes))
    assert peaks[True] == pytest.approx((100e3, 0.6), rel=1e-3)
    assert peaks[False][0] > 100e3 and peaks[False][1] < 0.95 * 0.6


def test_iq_demodulates_an_asg_harmonic(sim, clock):
    f = run_asg(sim, waveform="square", frequency=1e4, amplitude=0.3)["frequency"]
    configure(sim, "iq1", input="out1", frequency=3 * f, bandwidth=[100.0, 100.0])
    reading = settled_iq(sim, clock, "iq1")
    assert math.hypot(reading["i"], reading["q"]) == pytest.approx(0.3 * 4 / (3 * math.pi),
                                                                   rel=1e-3)


def test_iq_quadratures_on_the_bus(sim, clock):
    configure(sim, "iq2", input="in1", output_direct="out1", amplitude=0.4, frequency=2e5,
              bandwidth=[1000.0] * 4, phase=40.0)
    reading = settled_iq(sim, clock, "iq2")
    trace = acquire(sim, clock, input1="iq2", input2="iq2_2", duration=DURATIONS[2])
    assert trace.ch1.mean() == pytest.approx(reading["i"], abs=1e-3)
    assert trace.ch2.mean() == pytest.approx(reading["q"], abs=1e-3)
    values = sim.sampler_read()
    assert (values["iq2"], values["iq2_2"]) == pytest.approx((reading["i"], reading["q"]), abs=1e-3)


def test_iq_modulation_and_demodulation_at_2f(sim, clock):
    f = configure(sim, "iq0", input="out1", output_direct="out1", amplitude=0.25, frequency=1e5,
                  modulation_at_2f="on", demodulation_at_2f="on",
                  bandwidth=[1000.0, 1000.0])["frequency"]
    assert math.hypot(*settled_iq(sim, clock, "iq0").values()) == pytest.approx(0.25, abs=1e-4)
    configure(sim, "iq0", demodulation_at_2f="off")
    assert math.hypot(*settled_iq(sim, clock, "iq0").values()) < 1e-3
    trace = acquire(sim, clock, input1="out1", duration=DURATIONS[3])
    assert dominant_frequency(trace, trace.ch1) == pytest.approx(2 * f, abs=1 / DURATIONS[3])


def test_quadrature_factor_and_output_signal_select_the_bus_signal(sim, clock):
    configure(sim, "iq1", input="out1", output_direct="out1", amplitude=0.01, frequency=1e5,
              bandwidth=[1000.0, 1000.0], quadrature_factor=20.0)
    assert sim.sampler_read()["iq1"] == pytest.approx(0.2, abs=1e-3)
    configure(sim, "iq1", output_signal="off")
    assert sim.sampler_read()["iq1"] == 0.0


def test_iq_gain_is_a_band_pass(sim, clock):
    f = run_asg(sim, frequency=2e5, amplitude=0.1, output_direct="off")["frequency"]
    bandwidth = configure(sim, "iq0", input="asg0", frequency=f, gain=2.0, bandwidth=[1000.0],
                          output_signal="output_direct")["bandwidth"][0]
    trace = acquire(sim, clock, input1="iq0", input2="asg0", duration=DURATIONS[3])
    assert np.std(trace.ch1) == pytest.approx(2.0 * np.std(trace.ch2), rel=0.01)
    offset = f - configure(sim, "iq0", frequency=f + 10e3)["frequency"]  # off the pass band
    trace = acquire(sim, clock)
    attenuation = 1 / math.hypot(1, offset / bandwidth)
    assert np.std(trace.ch1) == pytest.approx(2.0 * np.std(trace.ch2) * attenuation, rel=0.02)


def cycles_lag(f: float, cycles: float) -> complex:
    """Phase factor of a delay of ``cycles`` FPGA cycles at ``f``."""
    return np.exp(-2j * math.pi * f * cycles / catalogue.FPGA_CLOCK)


def network_analysis(sim: SimulatorBackend, clock: FakeClock, f: float, **iq0: Any) -> complex:
    """iq0 as PyRPL's network analyzer at ``f``: its excitation on the bus (not on an output),
    its own input ``iq0[input]``; the settled reading divided by the amplitude."""
    settings = {"output_signal": "output_direct", "output_direct": "off", "amplitude": 0.1,
                "bandwidth": [1000.0, 1000.0], "frequency": f}
    amplitude = configure(sim, "iq0", **{**settings, **iq0})["amplitude"]
    reading = settled_iq(sim, clock)
    return (reading["i"] + 1j * reading["q"]) / amplitude


def test_iq_reading_its_own_excitation_lags_three_cycles_plus_its_input_filter(sim, clock):
    """red_pitaya_iq_modulator_block.v puts the excitation out 2 cycles after the oscillator,
    red_pitaya_iq_demodulator_block.v registers its input once before the multiplier, and the
    acbandwidth high-pass (red_pitaya_lpf_block.v) adds one cycle: PyRPL's
    NetworkAnalyzer.transfer_function (3 cycles, +1 per high-pass) divides exactly that out."""
    f = configure(sim, "iq0", frequency=10e6)["frequency"]
    settled = 2 * catalogue.SETTLE_FRACTION  # what a settled filter may still miss of a step
    assert network_analysis(sim, clock, f, input="iq0") == pytest.approx(
        cycles_lag(f, 3), abs=settled)
    acbandwidth = configure(sim, "iq0", acbandwidth=1000.0)["acbandwidth"]
    highpass = 1 / (1 - 1j * acbandwidth / f)
    assert network_analysis(sim, clock, f, input="iq0") == pytest.approx(
        highpass * cycles_lag(f, 4), abs=settled)


@pytest.mark.parametrize("gains", [{"p": 10.0, "i": 0.0}, {"p": 0.025, "i": 250.0}])
def test_a_pid_passes_ac_signals_with_its_transfer_function(sim, clock, gains):
    """iq0's excitation through pid0 back into iq0 (PyRPL's test_pid_na): the PID's p and i with
    the delays of red_pitaya_pid_block.v (proportional path 4 registers, integrator 5), its input
    filter with the stages' delays (low-pass 2 cycles, high-pass 1), after the network
    analysis's own 3 cycles."""
    applied = configure(sim, "pid0", input="iq0", setpoint=0.0, inputfilter=[-5e3, 150e3],
                        **gains)
    p, i, cutoffs = applied["p"], applied["i"], applied["inputfilter"]
    for f in (3e3, 30e3, 300e3):
        f = configure(sim, "iq0", frequency=f)["frequency"]
        measured = network_analysis(sim, clock, f, input="pid0")
        pid = p * cycles_lag(f, 4) + i / (1j * f) * cycles_lag(f, 5)
        inputfilter = cycles_lag(f, 3) / (1 - 1j * -cutoffs[0] / f) / (1 + 1j * f / cutoffs[1])
        assert measured == pytest.approx(cycles_lag(f, 3) * pid * inputfilter, rel=1e-3)


def test_a_high_pass_input_filter_blocks_the_dc_of_a_pid_input(sim, clock):
    run_asg(sim, waveform="dc", offset=0.5, output_direct="off")
    configure(sim, "pid0", input="asg0", p=1.0, setpoint=0.1)
    assert sim.sampler_read()["pid0"] == pytest.approx(0.4, abs=2 * LSB)
    configure(sim, "pid0", inputfilter=[-1000.0])  # the error is -setpoint
    assert sim.sampler_read()["pid0"] == pytest.approx(-0.1, abs=2 * LSB)


def test_a_pid_copies_an_ac_input_onto_the_scope(sim, clock):
    """PyRPL's lockbox calibration sweeps an output through a PID: its output follows the sweep."""
    f = run_asg(sim, frequency=1e3, amplitude=0.3, offset=0.1, output_direct="off")["frequency"]
    configure(sim, "pid0", input="asg0", p=1.0)
    trace = acquire(sim, clock, input1="pid0", input2="asg0", duration=DURATIONS[10])
    assert trace.ch1.max() == pytest.approx(0.4, abs=2e-3)
    assert trace.ch1.min() == pytest.approx(-0.2, abs=2e-3)
    assert dominant_frequency(trace, trace.ch1) == pytest.approx(f, abs=1 / DURATIONS[10])


def test_iq_read_rejects_other_modules(sim):
    with pytest.raises(InvalidParams):
        sim.iq_read("pid0")


# ------------------------------------------------------------------------------------------------
# resonator in the time domain


def test_resonator_rings_up_at_f0(resonator, clock):
    run_asg(resonator, frequency=1e5, amplitude=0.02)
    trace = acquire(resonator, clock, input1="in1", input2="out1", duration=DURATIONS[4])
    assert trace.ch1.max() == pytest.approx(0.6, abs=0.01)
    # at resonance the response lags the drive by 90°
    reference = np.exp(-2j * np.pi * 1e5 * trace.dt * np.arange(len(trace.ch1)))
    lag = np.angle(np.dot(trace.ch1, reference) / np.dot(trace.ch2, reference), deg=True)
    assert lag == pytest.approx(-90, abs=2)


def test_resonator_filters_a_square_wave(resonator, clock):
    run_asg(resonator, waveform="square", frequency=1e5 / 3, amplitude=0.02)
    trace = acquire(resonator, clock, input1="in1", duration=DURATIONS[4])
    # the third harmonic (amplitude 0.02 * 4 / 3 pi) hits the resonance and dominates
    assert dominant_frequency(trace, trace.ch1) == pytest.approx(1e5, abs=1 / DURATIONS[4])
    assert np.abs(trace.ch1).max() == pytest.approx(0.02 * 4 / (3 * math.pi) * 30, rel=0.15)


# ------------------------------------------------------------------------------------------------
# settings, sampler, determinism, plant specs


def test_get_and_set_hold_every_catalogue_attribute(sim):
    for name, spec in catalogue.MODULES.items():
        values = sim.get(name, list(spec.attributes))
        assert set(values) == set(spec.attributes)
        assert {k: v for k, v in values.items() if not spec.attributes[k].readonly} == \
            spec.defaults()
    applied = configure(sim, "iq1", frequency=1234.5, bandwidth=[5000.0], output_signal="pfd")
    assert applied == sim.get("iq1", ["frequency", "bandwidth", "output_signal"])
    assert applied["bandwidth"][1] == 0.0
    with pytest.raises(InvalidParams):
        sim.set("scope", {"sampling_time": 1e-6})
    with pytest.raises(InvalidParams):
        sim.get("asg0", ["nonsense"])


def test_sampler_reads_every_signal(sim):
    run_asg(sim, waveform="dc", offset=0.25)
    values = sim.get("sampler", list(catalogue.SAMPLER_SIGNALS))
    assert list(values) == list(catalogue.SAMPLER_SIGNALS)
    assert values["out1"] == values["asg0"] == pytest.approx(0.25 * 8192 / 8191)
    assert values["in1"] == pytest.approx(0.25, abs=5e-3)
    assert values["out2"] == values["pid0"] == 0.0


def scripted_session(seed: int) -> tuple[np.ndarray, dict[str, float], dict[str, float]]:
    clock = FakeClock()
    sim = SimulatorBackend(seed=seed, clock=clock)
    run_asg(sim, waveform="noise", amplitude=0.1)
    configure(sim, "iq0", input="in1", amplitude=0.2, frequency=1e5, output_direct="out2")
    trace = acquire(sim, clock, input1="in1", input2="in2")
    clock.advance(0.01)
    return np.concatenate([trace.ch1, trace.ch2]), sim.sampler_read(), sim.iq_read("iq0")


def test_same_seed_same_results():
    first, second, other = scripted_session(7), scripted_session(7), scripted_session(8)
    assert np.array_equal(first[0], second[0]) and first[1:] == second[1:]
    assert not np.array_equal(first[0], other[0]) and first[1] != other[1]


@pytest.mark.parametrize("spec", [
    "cable", "resonator:f0", "resonator:width=3", "resonator:q=abc", "resonator:q=-1",
    "loopback:delay=nan", "loopback:f0=1e5",
])
def test_bad_plant_specs_raise_value_error(spec):
    with pytest.raises(ValueError, match="plant"):
        SimulatorBackend(plant=spec)


def test_plant_parameters_are_used(clock):
    sim = SimulatorBackend(seed=0, plant=" resonator: f0=250e3, q=100 ,gain=0.5", clock=clock)
    configure(sim, "iq0", input="in1", output_direct="out1", amplitude=0.01, frequency=250e3,
              bandwidth=[100.0, 100.0])
    reading = settled_iq(sim, clock, "iq0")
    assert math.hypot(*reading.values()) == pytest.approx(0.01 * 0.5 * 100, rel=1e-3)
    quiet = SimulatorBackend(seed=0, plant="loopback:noise=0,delay=0", clock=clock)
    assert quiet.sampler_read()["in1"] == 0.0


# ------------------------------------------------------------------------------------------------
# PID loops: noise and bounded work


def test_unstable_loop_at_its_setpoint_drifts_away(sim, clock):
    """Positive feedback through the loopback, exactly at the setpoint: the input noise tips it."""
    close_loop(sim, setpoint=0.0, p=0.0, i=1000.0)
    settle(sim, clock, 20e-3)
    assert abs(sim.get("pid0", ["ival"])["ival"]) == pytest.approx(4.0, abs=LSB)
    assert abs(sim.sampler_read()["in1"]) == pytest.approx(1.0, abs=3e-3)


def test_open_loop_integrator_random_walks_with_the_input_noise(sim, clock):
    """Open loop on in1 (1 mV rms at 125 MS/s): increments over 10 ms have an rms of
    2 pi i 1e-3 sqrt(10 ms / 125 MHz)."""
    i = 30_000.0
    configure(sim, "pid0", input="in1", output_direct="off", p=0.0, i=i)
    values = []
    for _ in range(401):
        clock.advance(10e-3)
        values.append(sim.get("pid0", ["ival"])["ival"])
    expected = 2 * math.pi * i * 1e-3 * math.sqrt(10e-3 / catalogue.FPGA_CLOCK)
    assert np.std(np.diff(values)) == pytest.approx(expected, rel=0.15)
    assert abs(np.mean(np.diff(values))) < 4 * expected / math.sqrt(400)  # no drift


OSCILLATING_LOOPS = {  # pid1 integrates fast between inverted limits: a relaxation oscillation
    "pid0": {"input": "pid0", "output_direct": "out1", "p": 0.00176, "i": 1.06,
             "min_voltage": 0.529, "max_voltage": -0.821, "setpoint": -0.594},
    "pid1": {"input": "pid0", "output_direct": "out1", "p": -598.4, "i": -22962.5,
             "min_voltage": 0.222, "max_voltage": -0.0526, "setpoint": 0.197},
    "pid2": {"input": "pid0", "output_direct": "out2", "p": -0.267, "i": -781.7,
             "min_voltage": -0.341, "max_voltage": -0.524, "setpoint": -0.948},
}


def test_pid_work_per_call_is_bounded(sim, clock, monkeypatch):
    """Oscillating loops an hour later: one call takes at most MAX_STEPS integration steps (it
    took 10 000, 9-14 s), and the loops go on oscillating within their limits."""
    from pymodaq_plugins_pyrpl.hardware.physics import pid

    steps = []
    propagate = pid.PidLoops._propagate

    def counted(self, region, h):
        steps.append(h)
        return propagate(self, region, h)

    monkeypatch.setattr(pid.PidLoops, "_propagate", counted)
    for module, values in OSCILLATING_LOOPS.items():
        configure(sim, module, **values)
    for elapsed in (1e-3, 10.0, 3600.0, 3600.0):
        clock.advance(elapsed)
        steps.clear()
        sim.get("pid1", ["ival"])
        assert len(steps) <= pid.MAX_STEPS <= 64
    seen = set()
    for _ in range(40):
        clock.advance(5e-3)
        seen.add(sim.get("pid1", ["ival"])["ival"])
    assert min(seen) == -4.0 and max(seen) == 4.0 - LSB  # still swinging between its saturations
