"""``pymodaq-pyrpl demo``: the simulated Red Pitaya driven through the real plugins, headless.

Through PyMoDAQ's own control modules (DAQ_Move, DAQ_Viewer), as the dashboard would: the ASG plays a
sine on out1 (looped back to in1 by the simulated cable), the scope records it, the IQ module
demodulates it, the sampler reads the voltages, then a PID closes a loop through the cable and settles
on its setpoint; last, the network analyzer sweeps a simulated resonator (a second simulated board,
on a port of its own) and its f0 and Q are fitted from the sweep. Prints a table, writes a PNG of the
traces, and stops the servers at the end (the plugins started them; each stops with the last of its
plugins).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .experiment_states import RESONANCE_PLANT, RESONANCE_SWEEP
from .hardware.analysis.resonance import fit_resonator
from .hardware.sockets import free_port

ASG_FREQUENCY = 1e3
SCOPE_DURATION = 8.388608e-3
"""8.4 periods of the ASG: a 119 Hz FFT bin."""
ASG_AMPLITUDE = 0.5
PID_SETPOINT = 0.3
PID_P, PID_I = -0.1, -10.0
"""The FPGA's PID error is input - setpoint: through a direct cable, negative gains are stable."""
SETTLE_S = 0.2
"""How long after the setpoint move the PID's settling is sampled (its last sample: the figure
"PID: in1 after 200 ms")."""
TIMEOUT_MS = 30000
RESONATOR_F0, RESONATOR_Q = 100e3, 30.0
"""The simulated resonator's defaults (hardware/physics/plants.py), for the table."""


class Demo:
    """The control modules of the demo, each waited for with a bounded local event loop."""

    def __init__(self, port: int) -> None:
        from qtpy import QtCore

        self.QtCore = QtCore
        self.port = port
        self.modules: list[Any] = []

    def wait(self, signal: Any, action: Callable[[], None], timeout_ms: int = TIMEOUT_MS) -> tuple:
        """Run ``action`` and wait for ``signal``; its arguments. Raises TimeoutError."""
        loop = self.QtCore.QEventLoop()
        received: list[tuple] = []

        def on_signal(*args: Any) -> None:
            received.append(args)
            loop.quit()

        signal.connect(on_signal)
        timer = self.QtCore.QTimer(singleShot=True)
        timer.timeout.connect(loop.quit)
        timer.start(timeout_ms)
        try:
            action()
            if not received:
                loop.exec()
        finally:
            signal.disconnect(on_signal)
            timer.stop()
        if not received:
            raise TimeoutError(f"no answer within {timeout_ms / 1000:g} s")
        return received[0]

    def actuator(self, plugin: str, title: str, **settings: Any) -> Any:
        from pymodaq.control_modules.daq_move import DAQ_Move

        module = DAQ_Move(parent=None, title=title)
        module.actuator = plugin
        self._configure(module.settings.child("actuator_settings"), settings)
        return self._init(module)

    def viewer(self, plugin: str, title: str, dim: str, port: int | None = None,
               plant: str | None = None, **settings: Any) -> Any:
        """A viewer on the demo's server, or on the server of ``port`` with the simulated
        ``plant``."""
        from pymodaq.control_modules.daq_viewer import DAQ_Viewer

        module = DAQ_Viewer(parent=None, title=title)
        module.daq_type = dim
        module.detector = plugin
        self._configure(module.settings.child("detector_settings"), settings, port, plant)
        return self._init(module)

    def _configure(self, group: Any, settings: dict[str, Any], port: int | None = None,
                   plant: str | None = None) -> None:
        group.child("pyrpl", "server_port").setValue(port or self.port)
        if plant is not None:
            group.child("pyrpl", "plant").setValue(plant)
        for key, value in settings.items():
            group.child(key).setValue(value)

    def _init(self, module: Any) -> Any:
        self.modules.append(module)
        (ok,) = self.wait(module.init_signal, lambda: module.init_hardware(True))
        if not ok:
            raise RuntimeError(f"{module.title} could not be initialized (see the log above)")
        return module

    def move(self, module: Any, axis: str, value: float, unit: str) -> float:
        """Move ``axis`` to ``value`` (in ``unit``, the axis unit); the applied value."""
        if module.axis_name != axis or module.units != unit:
            module.axis_name = axis
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            while module.units != unit:  # the worker thread switches the axis
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{module.title}: axis {axis} not selected")
                self.QtCore.QCoreApplication.processEvents(self.QtCore.QEventLoop.AllEvents, 20)
        (done,) = self.wait(module.move_done_signal, lambda: module.move_abs(value))
        return float(done.value())

    def snap(self, module: Any) -> Any:
        (dte,) = self.wait(module.grab_done_signal, module.snap)
        return dte

    def close(self) -> None:
        for module in reversed(self.modules):
            module.quit_fun()
        self.modules.clear()


def _without_xdg_runtime_warning() -> None:
    """Qt prints "QStandardPaths: XDG_RUNTIME_DIR not set, defaulting to ..." where no desktop
    session sets it (a root shell, ssh, CI) and then uses a folder of its own, which is fine here.
    Setting the variable instead would move this package's runtime folder (see hardware.runtime)
    away from where ``pymodaq-pyrpl status`` looks, so only that one message is dropped."""
    from qtpy import QtCore

    def handler(mode: Any, context: Any, message: str) -> None:
        if not message.startswith("QStandardPaths: XDG_RUNTIME_DIR not set"):
            sys.stderr.write(message + "\n")

    QtCore.qInstallMessageHandler(handler)


def run(port: int, png: Path, resonator_port: int) -> dict[str, Any]:
    """Run the demo on ``port`` (and the resonator's board on ``resonator_port``); return its
    figures."""
    from pymodaq_gui.qt_utils import mkQApp

    from .hardware import runtime

    _without_xdg_runtime_warning()
    app = mkQApp("pymodaq-pyrpl demo")
    demo = Demo(port)
    figures: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        asg = demo.actuator("PyRPL_ASG_TCP", "ASG", output_direct="out1", waveform="sin")
        figures["server_pid"] = runtime.read_state(port).pid
        figures["asg_frequency"] = demo.move(asg, "Frequency", ASG_FREQUENCY, "Hz")
        figures["asg_amplitude"] = demo.move(asg, "Amplitude", ASG_AMPLITUDE, "V")
        scope = demo.viewer("PyRPL_Scope_TCP", "Scope", "DAQ1D", duration=SCOPE_DURATION)
        figures["first_frame_s"] = time.perf_counter() - started
        trace = demo.snap(scope).get_data_from_dim("Data1D")[0]
        time_axis = trace.axes[0].get_data()
        ch1 = trace.data[0]
        figures["scope_frequency"] = dominant_frequency(ch1, time_axis[1] - time_axis[0])
        figures["scope_peak_to_peak"] = float(ch1.max() - ch1.min())
        iq = demo.viewer("PyRPL_IQ_TCP", "IQ", "DAQ0D", frequency=ASG_FREQUENCY, input="in1")
        figures["iq"] = _channels(demo.snap(iq))
        sampler = demo.viewer("PyRPL_Sampler_TCP", "Sampler", "DAQ0D")
        figures["sampler"] = _channels(demo.snap(sampler))
        demo.move(asg, "Amplitude", 0.0, "V")  # the PID alone drives out1 now
        pid = demo.actuator("PyRPL_PID_TCP", "PID", input="in1", output_direct="out1")
        demo.move(pid, "P", PID_P, "")
        demo.move(pid, "I", PID_I, "Hz")
        t0 = time.perf_counter()
        demo.move(pid, "Setpoint", PID_SETPOINT, "V")
        settle = samples_until(lambda: _channels(demo.snap(sampler))["in1"], t0, SETTLE_S)
        figures["pid_settle"] = settle
        figures["pid_final_in1"] = settle[-1][1]
        na = demo.viewer("PyRPL_NA_TCP", "Network analyzer", "DAQ1D", port=resonator_port,
                         plant=RESONANCE_PLANT, **RESONANCE_SWEEP)
        figures["resonator_server_pid"] = runtime.read_state(resonator_port).pid
        figures["na_sweep_estimate"] = na.settings["detector_settings", "sweep_time"]
        t0 = time.perf_counter()
        frequencies, response = _transfer_function(demo.snap(na))
        figures["na_sweep_s"] = time.perf_counter() - t0
        figures["na_f0"], figures["na_q"] = fit_resonator(frequencies, response)
        _plot(png, time_axis, trace.data, settle, (frequencies, response))
        figures["png"] = str(png)
    finally:
        demo.close()
        app.processEvents()
    servers = [figures.get(key, 0) for key in ("server_pid", "resonator_server_pid")]
    deadline = time.monotonic() + 15
    while any(runtime.pid_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    figures["server_stopped"] = not any(runtime.pid_alive(pid) for pid in servers)
    return figures


def _transfer_function(dte: Any) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, complex transfer function) of a network analyzer frame."""
    sweep = {d.name: d for d in dte.get_data_from_dim("Data1D")}
    magnitude, phase = sweep["Magnitude"], sweep["Phase"]
    response = magnitude.data[0] * np.exp(1j * np.radians(phase.data[0]))
    return magnitude.axes[0].get_data(), response


def samples_until(read: Callable[[], float], t0: float, seconds: float
                  ) -> list[tuple[float, float]]:
    """``(time since t0, read())`` pairs, one ``read`` started after the other as long as less
    than ``seconds`` have passed since ``t0`` (``time.perf_counter()``), and at least one even if
    that time had already passed when called (a slow machine); the time is when the read started."""
    samples: list[tuple[float, float]] = []
    while True:
        started = time.perf_counter() - t0
        if samples and started >= seconds:
            return samples
        samples.append((started, read()))


def dominant_frequency(signal: np.ndarray, dt: float) -> float:
    """The strongest frequency of ``signal``, interpolated between FFT bins (Hann window)."""
    spectrum = np.log(np.abs(np.fft.rfft((signal - signal.mean()) * np.hanning(signal.size)))
                      + 1e-30)
    k = int(np.clip(spectrum.argmax(), 1, spectrum.size - 2))
    left, peak, right = spectrum[k - 1:k + 2]
    offset = 0.5 * (left - right) / (left - 2 * peak + right)
    return float((k + offset) / (signal.size * dt))


def _channels(dte: Any) -> dict[str, float]:
    """Every 0D channel of a snap, by label."""
    return {d.labels[i]: float(d.data[i][0]) for d in dte.get_data_from_dim("Data0D").data
            for i in range(len(d.labels))}


def _plot(png: Path, time_axis: np.ndarray, channels: list[np.ndarray],
          settle: list[tuple[float, float]], sweep: tuple[np.ndarray, np.ndarray]) -> None:
    """Scope trace, PID settling and the NA sweep of the resonator, rendered offscreen with
    pyqtgraph."""
    import pyqtgraph as pg
    import pyqtgraph.exporters

    window = pg.GraphicsLayoutWidget()
    window.resize(1500, 420)
    window.setBackground("w")
    scope = window.addPlot(title="Scope: ASG sine through the simulated cable")
    scope.addLegend(offset=(-10, 5), colCount=2)  # top right, one row, above the sine:
    scope.setYRange(-1.2 * ASG_AMPLITUDE, 1.6 * ASG_AMPLITUDE, padding=0)  # room left for it
    for channel, color, name in zip(channels, ("b", "r"), ("in1", "in2")):
        scope.plot(time_axis * 1e3, channel, pen=pg.mkPen(color, width=1.5), name=name)
    scope.setLabel("bottom", "time", "ms")
    scope.setLabel("left", "voltage", "V")
    pid = window.addPlot(title=f"PID closed through the cable, setpoint {PID_SETPOINT} V")
    times, values = np.array(settle).T
    pid.plot(times * 1e3, values, pen=pg.mkPen("k", width=1.5), symbol="o", symbolSize=4)
    pid.setLabel("bottom", "time after the setpoint move", "ms")
    pid.setLabel("left", "in1", "V")
    pid.showGrid(x=True, y=True, alpha=0.3)
    scope.showGrid(x=True, y=True, alpha=0.3)
    frequencies, response = sweep
    na = window.addPlot(title="Network analyzer: the simulated resonator")
    na.plot(frequencies / 1e3, 20 * np.log10(np.abs(response)), pen=pg.mkPen("b", width=1.5))
    na.setLabel("bottom", "frequency", "kHz")
    na.setLabel("left", "magnitude", "dB")
    na.showGrid(x=True, y=True, alpha=0.3)
    window.show()  # offscreen: lays the plots out before the export
    pg.QtWidgets.QApplication.processEvents()
    pyqtgraph.exporters.ImageExporter(window.scene()).export(str(png))
    window.close()


def print_report(figures: dict[str, Any]) -> None:
    rows = [
        ("ASG frequency (applied)", f"{figures['asg_frequency']:.4f} Hz"),
        ("ASG amplitude (applied)", f"{figures['asg_amplitude']:.4f} V"),
        ("ASG and scope initialized, first frame", f"{figures['first_frame_s']:.2f} s"),
        ("scope: dominant frequency", f"{figures['scope_frequency']:.0f} Hz"),
        ("scope: peak to peak", f"{figures['scope_peak_to_peak']:.3f} V"),
        *((f"IQ at {ASG_FREQUENCY:g} Hz: {k}", f"{v:+.4f}") for k, v in figures["iq"].items()),
        *((f"sampler: {k}", f"{v:+.4f} V") for k, v in figures["sampler"].items()),
        ("PID: in1 after 200 ms", f"{figures['pid_final_in1']:+.4f} V (setpoint {PID_SETPOINT})"),
        ("NA sweep of the resonator: f0 (fit)",
         f"{figures['na_f0']:.1f} Hz (plant: {RESONATOR_F0:g} Hz)"),
        ("NA sweep of the resonator: Q (fit)", f"{figures['na_q']:.2f} (plant: {RESONATOR_Q:g})"),
        ("NA sweep time", f"{figures['na_sweep_s']:.2f} s "
                          f"(estimate {figures['na_sweep_estimate']:.2f} s)"),
        ("plot", figures["png"]),
        ("server stopped at the end", "yes" if figures["server_stopped"] else "NO"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:{width}s}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pymodaq-pyrpl demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--png", type=Path, default=Path("pyrpl_demo.png"),
                        help="where to write the plot (default %(default)s)")
    parser.add_argument("--gui", action="store_true",
                        help="open the PyMoDAQ dashboard with the pyrpl_demo experiment instead")
    args = parser.parse_args(argv)
    if args.gui:
        return _gui()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    figures = run(args.port or free_port(), args.png, free_port())
    print_report(figures)
    return 0 if figures["server_stopped"] else 1


def _gui() -> int:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        print("error: --gui needs a display (DISPLAY or WAYLAND_DISPLAY is not set)",
              file=sys.stderr)
        return 1
    from pymodaq.dashboard import load_dashboard_with_experiment
    from pymodaq_gui.qt_utils import mkQApp

    from .cli import main as cli_main

    cli_main(["experiments", "install"])  # keeps a copy the user modified
    _without_xdg_runtime_warning()
    app = mkQApp("PyMoDAQ Dashboard")
    load_dashboard_with_experiment("pyrpl_demo")
    return app.exec()
