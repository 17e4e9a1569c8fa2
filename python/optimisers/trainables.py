"""``trainables``: the trainable parameters of a model, as a list."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._errors import walks_models
from .keypath import KeyPath
from .views import find_ties, walk_parameters

__all__ = ["trainables"]


@walks_models
def trainables(
    model: Any, path: bool = False
) -> list[np.ndarray] | list[tuple[KeyPath, np.ndarray]]:
    """Every trainable parameter of ``model``, in tree order, once each.

    The parameters are the floating arrays that ``trainable`` lets through, as
    ``destructure`` and ``setup`` see them: an array met twice (a tie) is
    listed at its first place, and a NumPy view of another parameter (``w.T``)
    is not listed at all, being that parameter.

    With ``path=True`` each entry is ``(KeyPath, array)``, the path where the
    array was first met, so that ``getkeypath(model, kp) is array``::

        for kp, p_avg in trainables(model_avg, path=True):
            p = getkeypath(model, kp)
            p_avg[...] = 0.99 * p_avg + 0.01 * p
    """
    positions = walk_parameters(model)
    ties = find_ties(positions)
    seen: set[int] = set()
    out: list[Any] = []
    for kp, a in positions:
        if id(a) in seen or id(a) in ties.owner:
            continue
        seen.add(id(a))
        out.append((kp, a) if path else a)
    return out
