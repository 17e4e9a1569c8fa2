"""``ema_`` and ``ema``: an exponential moving average of a model's weights."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from . import tree
from .destructure import destructure
from .keypath import KeyPath
from .trainables import trainables

__all__ = ["ema", "ema_"]

# Arrays are averaged this many elements at a time, so that the temporary
# stays in cache and each array is read and written once from memory.
_CHUNK = 1 << 14


def _at(model: Any, kp: KeyPath) -> Any:
    """The part of ``model`` at ``kp``, or None; each step a dict or index
    look-up (``getkeypath`` scans a container's children)."""
    x = model
    for key in kp:
        if not tree.is_container(x):
            return None
        try:
            x = tree.child(x, key)
        except (KeyError, IndexError, AttributeError, TypeError):
            return None
    return x


def ema_(average: Any, model: Any, decay: float = 0.999) -> Any:
    """Every trainable array of ``average`` ← ``decay·average + (1 − decay)·model``,
    in place, the arrays matched by key path (ties once). Every pair is checked
    before any is written. Returns ``average``."""
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay <= 1:
        raise ValueError(f"ema_: decay must be a number in [0, 1], got {decay!r}")
    pairs = []
    for kp, avg in trainables(average, path=True):
        x = _at(model, kp)
        if not isinstance(x, np.ndarray) or x.shape != avg.shape:
            got = f"shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(
                f"ema_: the model has {got} at {kp!r}, where the average has shape {avg.shape}"
            )
        if not avg.flags.writeable:
            raise ValueError(f"ema_: the average's array at {kp!r} is read-only")
        pairs.append((avg, x))
    for avg, x in pairs:
        _average(avg, x, 1 - decay)
    return average


def _average(avg: np.ndarray, x: np.ndarray, rate: float) -> None:
    """``avg -= rate·(avg − x)`` in ``avg``'s dtype, a chunk at a time."""
    rate = avg.dtype.type(rate)
    if not (avg.flags.c_contiguous and x.flags.c_contiguous) or avg.size <= _CHUNK:
        step = np.subtract(avg, x, dtype=avg.dtype, casting="unsafe")
        step *= rate
        avg -= step
        return
    a, b = avg.reshape(-1), x.reshape(-1)
    step = np.empty(_CHUNK, avg.dtype)
    for i in range(0, a.size, _CHUNK):
        sa, sb = a[i : i + _CHUNK], b[i : i + _CHUNK]
        t = step[: sa.size]
        np.subtract(sa, sb, out=t, dtype=avg.dtype, casting="unsafe")
        t *= rate
        sa -= t


def ema(average: Any, model: Any, decay: float = 0.999) -> Any:
    """Like :func:`ema_`, but returns a new average; ``average`` is unchanged."""
    flat, re = destructure(average)
    return ema_(re(flat), model, decay)  # a copy that keeps ties and views
