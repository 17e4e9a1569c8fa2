"""The p-norm of a whole step's gradients, for ``ClipGlobalNorm`` (``rule``
below: anything with its ``omega``, ``p`` and ``throw``): summed in float64 in
a fixed order, so that it does not depend on the thread count."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .keypath import KeyPath

__all__ = ["clip_factor", "clip_global", "global_norm"]


# Norms are taken over chunks of this many elements, so that the float64
# temporaries stay in cache; the chunks' sums are added in order.
_CHUNK = 1 << 15


def _partial_norm(g: np.ndarray, p: float) -> float:
    """This array's share of a p-norm, to be combined by ``global_norm``: in
    float64, with NumPy's pairwise sums (not BLAS, whose threads may change
    the bits), chunk by chunk in order."""
    flat = g.reshape(-1)
    if flat.size > _CHUNK:
        parts = [_partial_norm(flat[i : i + _CHUNK], p) for i in range(0, flat.size, _CHUNK)]
        return _combine(parts, p)
    if g.size == 0:
        return math.inf if p == -math.inf else 0.0
    if p == 2:  # the common case: squares of float32 or float64 are exact in float64
        return float(np.square(g, dtype=np.float64).sum())
    a = np.abs(g, dtype=np.float64)
    if p == math.inf:
        return float(a.max())
    if p == -math.inf:
        return float(a.min())
    if p == 0:
        return float(np.count_nonzero(a))
    if p == 1:
        return float(a.sum())
    return float((a**p).sum())


def _combine(parts: list[float], p: float) -> float:
    # NumPy's max and min keep a NaN wherever it is (Python's do not).
    if p == math.inf:
        return float(np.max(parts)) if parts else 0.0
    if p == -math.inf:
        return float(np.min(parts)) if parts else math.inf
    total = 0.0
    for part in parts:
        total += part
    return total


def global_norm(grads: list[np.ndarray], p: float) -> float:
    """The p-norm of all of ``grads`` together, summed in their order."""
    total = _combine([_partial_norm(g, p) for g in grads], p)
    return total if p in (0, math.inf, -math.inf) else total ** (1 / p)


def clip_factor(rule: Any, grads: list[np.ndarray], where: list[Any]) -> float | None:
    """``ω/‖G‖ₚ`` when the norm of ``grads`` exceeds ω, else None; or a
    ``ValueError`` naming ``where[0]`` for a non-finite norm with ``throw``."""
    norm = global_norm(grads, rule.p)
    if rule.throw and not math.isfinite(norm):
        place = f"at {where[0]!r}" if isinstance(where[0], KeyPath) else where[0]
        others = f" and {len(grads) - 1} other leaves" if len(grads) > 1 else ""
        raise ValueError(
            f"the gradients {place}{others} have global {rule.p}-norm {norm} "
            f"(ClipGlobalNorm with throw=True)"
        )
    return rule.omega / norm if norm > rule.omega else None


def clip_global(rule: Any, grads: list[np.ndarray], where: list[Any]) -> list:
    """``grads`` scaled by ``min(ω/‖G‖ₚ, 1)`` (new arrays where scaled)."""
    factor = clip_factor(rule, grads, where)
    if factor is None:
        return grads
    return [g * g.dtype.type(factor) for g in grads]
