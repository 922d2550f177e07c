"""A resonance's centre frequency and quality factor from a measured transfer function."""
from __future__ import annotations

import numpy as np


def fit_resonator(f: np.ndarray, z: np.ndarray, delay: float = 0.0) -> tuple[float, float]:
    """(f0, Q) of ``z = k exp(-2 j pi f delay) / (1 - (f/f0)**2 + j f/(f0 Q))`` (complex k): the
    damped resonator of the simulated plant (hardware/physics/plants.py), seen through a pure
    ``delay`` (s).

    Linear least squares on ``1/z = (1 - f**2/f0**2 + j f/(f0 Q)) / k`` once the delay is divided
    out: ``1/z = a + b f**2 + c j f``, weighted by |z|**2 (the noise of 1/z is that of z divided by
    |z|**2). ``f`` (Hz) and ``z`` have the same length, at least 3 points around the resonance.
    """
    f = np.asarray(f, dtype=float)
    z = np.asarray(z, dtype=complex) * np.exp(2j * np.pi * f * delay)
    design = np.stack([np.ones_like(f), f**2, 1j * f], axis=1) * (np.abs(z) ** 2)[:, None]
    a, b, c = np.linalg.lstsq(design, np.abs(z) ** 2 / z, rcond=None)[0]
    f0 = np.sqrt((-a / b).real)
    return float(f0), float((a / (c * f0)).real)
