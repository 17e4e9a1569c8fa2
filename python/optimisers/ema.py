"""``ema_`` and ``ema``: an exponential moving average of a model's weights."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .destructure import destructure
from .keypath import getkeypath, haskeypath
from .trainables import trainables

__all__ = ["ema", "ema_"]


def ema_(average: Any, model: Any, decay: float = 0.999) -> Any:
    """Every trainable array of ``average`` ← ``decay·average + (1 − decay)·model``,
    in place, the arrays matched by key path (ties once). Every pair is checked
    before any is written. Returns ``average``."""
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay <= 1:
        raise ValueError(f"ema_: decay must be a number in [0, 1], got {decay!r}")
    pairs = []
    for kp, avg in trainables(average, path=True):
        if not haskeypath(model, kp):
            raise ValueError(
                f"ema_: the model has nothing at {kp!r}, where the average has an array"
            )
        x = getkeypath(model, kp)
        if not isinstance(x, np.ndarray) or x.shape != avg.shape:
            got = f"shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(
                f"ema_: the model has {got} at {kp!r}, where the average has shape {avg.shape}"
            )
        if not avg.flags.writeable:
            raise ValueError(f"ema_: the average's array at {kp!r} is read-only")
        pairs.append((avg, x))
    for avg, x in pairs:
        # avg − (1 − decay)(avg − x): one temporary, in the average's dtype.
        step = np.subtract(avg, x, dtype=avg.dtype, casting="unsafe")
        step *= avg.dtype.type(1 - decay)
        avg -= step
    return average


def ema(average: Any, model: Any, decay: float = 0.999) -> Any:
    """Like :func:`ema_`, but returns a new average; ``average`` is unchanged."""
    flat, re = destructure(average)
    return ema_(re(flat), model, decay)  # a copy that keeps ties and views
