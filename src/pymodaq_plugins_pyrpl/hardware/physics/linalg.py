"""Matrix exponentials of small matrices and the exact step of a linear stochastic system."""
from __future__ import annotations

import math

import numpy as np


def _squarings(m: np.ndarray) -> int:
    """Halvings that bring ``m``'s 1-norm to at most 0.5 (where the Taylor series is exact)."""
    norm = float(np.abs(m).sum(axis=0).max())
    return max(0, math.ceil(math.log2(norm / 0.5))) if norm > 0.5 else 0


def _taylor_expm(a: np.ndarray) -> np.ndarray:
    """``expm(a)`` by a 12th-order Taylor series, for a 1-norm up to about 1."""
    result = term = np.eye(len(a))
    for k in range(1, 13):
        term = term @ a / k
        result = result + term
    return result


def expm(m: np.ndarray) -> np.ndarray:
    """Matrix exponential by scaling and squaring of a 12th-order Taylor series (small matrices)."""
    squarings = _squarings(m)
    result = _taylor_expm(m / 2.0**squarings)
    for _ in range(squarings):
        result = result @ result
    return result


def noisy_step(a: np.ndarray, g: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of ``dx = (A x + c) dt + B dW`` given ``a = A h``, ``g = c h``, ``q = B B.T h``:
    ``[Phi, d]`` (``x -> Phi x + d``) and the covariance of the noise integrated over the step.

    Van Loan's block exponential on ``h / 2**s`` (small enough not to overflow), then ``s``
    doublings: ``Q <- Q + Phi Q Phi.T``, ``d <- Phi d + d``, ``Phi <- Phi Phi``.
    """
    n = len(a)
    squarings = max(_squarings(a), _squarings(g[:, None]), _squarings(q))
    scale = 2.0**-squarings
    block = np.zeros((2 * n + 1, 2 * n + 1))
    block[:n, :n], block[:n, n:2 * n] = -a * scale, q * scale
    block[n:2 * n, n:2 * n], block[2 * n, n:2 * n] = a.T * scale, g * scale
    e = _taylor_expm(block)
    phi, d = e[n:2 * n, n:2 * n].T, e[2 * n, n:2 * n]
    covariance = phi @ e[:n, n:2 * n]
    for _ in range(squarings):
        covariance = covariance + phi @ covariance @ phi.T
        d = phi @ d + d
        phi = phi @ phi
    return np.hstack([phi, d[:, None]]), covariance


def square_root(covariance: np.ndarray) -> np.ndarray:
    """``S`` with ``S @ S.T = covariance`` (symmetric, positive semi-definite, maybe singular);
    NaN if the covariance is not finite (an overflowing step, to be halved)."""
    if not np.all(np.isfinite(covariance)):
        return np.full_like(covariance, np.nan)
    values, vectors = np.linalg.eigh((covariance + covariance.T) / 2)
    return vectors * np.sqrt(np.clip(values, 0.0, None))
