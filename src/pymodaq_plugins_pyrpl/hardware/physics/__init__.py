"""The one model of a Red Pitaya's signals: the physics behind the simulator backend (``--mock``)
and the register-level virtual board alike, so the two cannot disagree.

Nothing is stored as samples: every DSP signal is a function of time computed from the module
settings and evaluated, vectorized, on the time grid asked for (a scope trace, one sampler instant, a
trigger search). Sinusoidal parts (ASG sin/cos and the harmonics of its other waveforms, IQ
excitations, DC levels) are also carried as *tones*, complex amplitudes on phase accumulators, so the
IQ demodulators and the plant see them analytically. Imports only the standard library, numpy and
the catalogue; never a backend, Qt or PyMoDAQ.

One module per job: ``signals`` (grids, phases, tones, the 14-bit bus, noise), ``asg`` (the signal
generators), ``plants`` (cables, resonator), ``filters`` (PyRPL's cascaded first-order filters),
``transients`` (free oscillation, filter settling), ``linalg`` (matrix exponentials), ``pid`` (the
PID loops), ``iir`` (PyRPL's IIR filter: biquads, hold, bypass, overflow flags), ``board`` (the
modules wired together: routing, IQ demodulation, the IIR, the loop model) and ``triggers`` (the
scope's trigger search).

Physics
-------
- Outputs: out1/out2 are the sum of the ASG, PID and IQ outputs routed there by
  ``output_direct``, clipped to [-1, 1 - 2**-13] V and 14-bit quantized; in1/in2 come from
  them through the plant, plus ADC noise, clipped and quantized. Every bus signal seen by the
  scope or the sampler is 14-bit; the sampler divides by 2**13 - 1 like PyRPL's.
- ASG: PyRPL's waveform tables (sin, cos, ramp = triangle, halframp = sawtooth, square, dc,
  noise = Gaussian of rms ``amplitude``) times ``amplitude`` plus ``offset``.
  ``trigger_source='immediately'`` or 'high' (a trigger input always at 1) starts it at
  ``start_phase``; 'off' stops it (0 V); the external sources arm it for a trigger that never
  comes (0 V). Changing ``frequency`` keeps the phase continuous; ``start_phase`` applies at the
  next start; sending 'immediately' or 'high' to a running ASG does not restart it. ``cycles_per_burst`` is not simulated (continuous output).
- PID, sign convention: PyRPL's FPGA (``fpga/rtl/red_pitaya_pid_block.v``:
  ``error <= $signed(dat_i) - $signed(set_sp)``, confirmed by PyRPL's ``test_pid_paused`` and
  ``test_diff_pid``) uses ``error = input - setpoint``, ``output = p * error + ival`` and
  ``d ival/dt = 2 pi i * error``; ival saturates at ±4 V, the output at ±1 V and then at
  [min_voltage, max_voltage]. So, as on a board, a loop through the plain loopback (out1→in1, DC
  gain +1) is negative feedback for NEGATIVE p and i: p=-0.1, i=-1000 settle in1 on the setpoint
  within ~1 ms, positive gains run away to the limits. ``paused`` zeroes the proportional term
  and/or freezes the integrator as ``pause_gains`` selects (there is no d gain).
  ``differential_mode_enabled`` on pid0/pid1 replaces the setpoint by the other one's input
  (ignored on pid2). The ``inputfilter`` stages pass DC (low-pass) or block it (any high-pass)
  in the loop model and filter the AC response. AC inputs (tones) go through the PID's transfer
  function ``p + i / (j f)`` with its input filter and the pipeline delays of
  ``red_pitaya_pid_block.v`` (proportional path 4 cycles, integrator 5, filter stages 2 per
  low-pass and 1 per high-pass): on the bus, on the outputs and into the IQ demodulators, as
  PyRPL's ``Pid.transfer_function`` describes (its network-analyzer tests measure it).
- IQ: ``I + jQ`` is the input demodulated at ``frequency`` (twice that with
  ``demodulation_at_2f``) and rotated by ``+phase``, as PyRPL's accumulators on a board: with
  theta the input's phase relative to the excitation, ``i = A cos(theta + phase)`` and
  ``q = A sin(theta + phase)``, times the response of the
  ``bandwidth`` stages at the offset from ``frequency`` and of the ``acbandwidth`` high-pass. The
  excitation ``amplitude * cos(2 pi f t)`` (2f with ``modulation_at_2f``) goes to
  ``output_direct``, plus, when ``gain`` is not 0, PyRPL's band-pass
  ``gain * L(f_in - f) * exp(j phase)`` of the input. On the bus, ``iqN`` is
  ``I * quadrature_factor`` for ``output_signal`` 'quadrature' or 'quadrature_hf', the output
  for 'output_direct', else 0; ``iq2_2`` is ``Q * quadrature_factor``. The FPGA's pipeline
  delays (``red_pitaya_iq_block.v``, see :mod:`.iq`) are included: an excitation demodulated by
  its own module reads ``exp(-2 j pi f 3 T)``, T = 8 ns, one cycle more per high-pass stage of
  the input filter (PyRPL's ``NetworkAnalyzer.transfer_function``), and the band-pass output
  has the delays of PyRPL's ``Iq.transfer_function``.
- Transients: at every change (a ``set`` of any module but the scope), the quadrature filter
  of each IQ module in use (set at least once) keeps its state and relaxes from there to its
  new steady state through its stages (PyRPL's cascaded first-order low- and high-passes,
  solved exactly); ``iq_settle_remaining`` says how long that takes after the module's own last
  change (``catalogue.filter_settle_time``). With the resonator, in1/in2 keep their value and
  slope: the difference to the new steady state is the resonator's free oscillation, decaying
  with the ring-up time constant ``q / (pi f0)``; it shows on in1/in2 (scope, sampler) and,
  demodulated and filtered, in ``iq_read``. So a reading taken too soon after a frequency step
  lags the sweep.
- IIR (not a catalogue module: the register-level board sets it with ``Board.set_iir``): its
  input's tones through the FPGA's biquads, sum and hold (``iir.response``), on the bus as
  ``iir`` and on ``output_direct``; a PID sees its DC gain. Its model and approximations: see
  ``iir``.
- Scope: 16384 samples, PyRPL's 17 durations, any bus signal as input (trig and off read
  0). Triggers: 'immediately' (t0 = 0); ch1/ch2 edges with threshold and hysteresis (the signal
  must first be beyond threshold ∓ hysteresis, then cross threshold); asg0/asg1 at the start of
  a period (phase 0 of the table); off, ext_* and dsp never fire. The trigger is at t = 0 and the
  trace is centred on ``trigger_delay`` (PyRPL's ``scope.times``).

Approximations
--------------
- Quasi-static PID loops: the loops (integrators, clamps, feedback through the plant) act on
  the DC part of the PIDs' inputs (ASG waveforms and IQ excitations count with their mean); the
  AC part of an input reaches the PID's output as a linear response on top, open loop (a PID's
  own output counts with its DC level while its response is computed, so an AC loop through the
  plant is not closed), unclipped, from the tones of the input (ASG waveforms other than sin/cos
  by their harmonics near the frequency of interest, the first ones on a trace); the
  proportional loop through the analog path is solved algebraically (a loop gain
  ``|p H(0)| >= 1``, which would oscillate or latch on a board, only logs a warning); the loop
  algebra ignores the ±1 V clipping of outputs and inputs (the PID's own limits hold). The
  ADC noise of in1/in2 (the plant's ``noise``, white at 125 MS/s) drives the integrators of
  the PIDs that read them, directly or through other PIDs' proportional outputs, exactly
  (its integrated spread over each step): an unstable loop left at its setpoint drifts away,
  an open-loop integrator random-walks by ``2 pi i noise sqrt(t / 125 MHz)``. The
  proportional term does not copy that noise onto the outputs (they show the integrators'
  motion only). Loops that oscillate or switch limits faster than the simulator follows
  within one call (MAX_STEPS integration steps, more across a scope window) skip the rest
  of that call's time in their current state: the oscillation goes on at another phase.
- ``iq_read`` is computed analytically from the tones of the input (ASG sin/cos, the harmonics
  of the other ASG waveforms near the demodulation frequency, IQ excitations, DC levels)
  through the plant's H(f): clipping is ignored, the sum-frequency (2f) ripple is left out (it
  is present on the bus signals), ASG noise is not seen. ADC noise reaches the quadratures of
  in1/in2 with rms ``noise * sqrt(2 B / 62.5 MHz)``, B = pi/2 times the lowest low-pass cutoff
  (62.5 MHz without one). The network analyzer's averages (``Board.average_iq``) are the
  steady state averaged over the window, each tone at its difference frequency exactly, plus
  the ADC noise averaged over the window (rms ``noise * sqrt(2 / cycles)`` per quadrature);
  the filter's transient after each frequency step is left out (after the 0.5/rbw the analyzer
  waits, a few percent of the step between neighbouring points, which are close). A band-pass
  output is computed open loop (not fed back through the
  plant into IQ inputs); chains of IQ signals deeper than 8 read 0; 'pfd' reads 0.
- Transients: the resonator's free oscillation starts from the tones near f0 (not from ASG
  noise, far harmonics or the PID outputs' drift); the demodulators see only its difference-
  frequency part; the ``acbandwidth`` high-pass and the quadratures on the DSP bus (``iqN``,
  ``iq2_2``) have no transient. An IQ module untouched since the start is in its steady state.
- Scope: signals are picked at the sampling instants; with ``average`` on (the FPGA's boxcar over
  the decimation), the white noises (ADC noise, ASG noise) are those of the average of
  ``decimation`` clock samples, rms / sqrt(decimation), so their density stays that of 125 MS/s
  at every decimation (a spectrum's noise floor does not depend on the span, down to the 14-bit
  quantization's LSB**2/12); the boxcar's filtering of the signals (a sinc response, down to
  0.64 at a span's Nyquist frequency) is not modelled. Settings changed during a pending acquisition apply to the
  whole trace, except the inputs and the duration (taken at arm time) and the PID outputs
  (recorded in time, constant before the arm time). The trigger search sees noise-free signals
  and the PID outputs of the arm time. With the resonator, ASG noise is filtered on the trace
  grid (aliasing ignored), the other waveforms through a one-period FFT table of up to 65536
  points, the PID outputs quasi-statically (H(0)), and out-of-range outputs are not clipped.
"""
