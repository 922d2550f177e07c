"""Run PyRPL 0.9.9's own ``NetworkAnalyzer`` arithmetic on given settings, without a board.

``python pyrpl_network_probe.py`` reads ``{"cases": [{"settings": {...}, "totals": [[re, im],
...]}]}`` from stdin (``settings``: the NA's start_freq, stop_freq, points, logscale, rbw,
average_per_point, amplitude, acbandwidth, input, output_direct) and prints one JSON line
``{"results": [...]}``: per case what ``NetworkAnalyzer._start_trace_acquisition`` wrote to its IQ
module (the ``setup`` keywords, then the register writes in order), the frequencies, the averager
registers, the time per point, the rescale factor, the transfer function and ``_get_point`` of
each of ``totals`` (the averaged sums, one per point from the first). The NA's methods run on a
stand-in of the NA whose IQ module records what it is told (PyRPL's own code, unchanged: only
the board is missing). Run with QT_QPA_PLATFORM=offscreen (PyRPL imports Qt).
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Any


class RecordingIq:
    """An IQ module that records its writes and reads back what it was told (its class carries
    PyRPL's ``Iq.frequency`` register, whose validation the NA calls through the class)."""

    _LPFBITS = 24
    _frequency_correction = 1.0

    def __init__(self) -> None:
        self.__dict__.update(writes=[], setup_kwargs=None)

    def __setattr__(self, name: str, value: Any) -> None:
        self.writes.append([name, value])
        self.__dict__[name] = value

    def setup(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs, setup_kwargs=kwargs)
        # the IQ's acbandwidth is its input filter's high-pass
        self.__dict__["inputfilter"] = -kwargs["acbandwidth"]


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    from pyrpl.hardware_modules.iq import Iq
    from pyrpl.software_modules.network_analyzer import NetworkAnalyzer

    class StandIn:
        """The attributes and methods of a NetworkAnalyzer that its arithmetic uses."""

        _delay = NetworkAnalyzer._delay
        sleeptimes = 0.5
        auto_bandwidth = False
        auto_amplitude = False
        _logger = logging.getLogger("na")
        transfer_function = NetworkAnalyzer.transfer_function
        _time_per_point = NetworkAnalyzer._time_per_point
        _start_trace_acquisition = NetworkAnalyzer._start_trace_acquisition
        _get_point = NetworkAnalyzer._get_point
        is_zero_span = NetworkAnalyzer.is_zero_span

        @property
        def frequencies(self) -> Any:
            return NetworkAnalyzer._get_frequencies(self)

    na = StandIn()
    for name, value in case["settings"].items():
        setattr(na, name, value)
    iq = type("Iq", (RecordingIq,), {"frequency": Iq.frequency})()
    na.iq = iq
    na._start_trace_acquisition()
    points = []
    for total in case["totals"]:
        iq.__dict__["_nadata_total"] = complex(*total)
        y, _ = na._get_point(len(points))
        points.append([y.real, y.imag])
    frequencies = [float(f) for f in na.frequencies]
    tf = na._tf_values
    return {"setup": iq.setup_kwargs, "writes": iq.writes, "frequencies": frequencies,
            "averages": int(iq._na_averages), "sleepcycles": int(iq._na_sleepcycles),
            "time_per_point": float(na.time_per_point), "rescale": float(na._rescale),
            "tf": [[float(z.real), float(z.imag)] for z in tf], "points": points}


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    request = json.load(sys.stdin)
    print(json.dumps({"results": [run_case(case) for case in request["cases"]]}, default=float),
          flush=True)


if __name__ == "__main__":
    main()
