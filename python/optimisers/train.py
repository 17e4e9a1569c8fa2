"""``train_``: the seeds' ``train!`` for Python (Optimisers.jl and old Flux).

    losses = train_(value_and_grad, model, data, state)

For each ``batch`` of ``data``: ``loss, grad = value_and_grad(model, *batch)``
(a tuple batch is unpacked; anything else is passed as one argument), then
``update_(state, model, grad)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from .interface import update_

try:  # optional: without it, no progress bar
    from tqdm import tqdm
except ImportError:
    tqdm = None

__all__ = ["train_"]


def _progress_bar(data: Iterable[Any]) -> Any:
    """A tqdm bar over ``data`` on standard output, or ``None`` when tqdm is not
    installed or the output is not a terminal."""
    if tqdm is None or not sys.stdout.isatty():
        return None
    return tqdm(data, file=sys.stdout)


def train_(
    value_and_grad: Callable[..., tuple[Any, Any]],
    model: Any,
    data: Iterable[Any],
    state: Any,
    *,
    callback: Callable[[int, Any], Any] | None = None,
) -> list[Any]:
    """Train ``model`` in place over ``data``, one ``update_`` per batch.

    ``callback(step, loss)`` runs after each step (``step`` counts from 0) and
    may return ``False`` to stop (old Flux's ``:stop``). With tqdm installed
    and a terminal on standard output, a progress bar shows the running mean
    of the loss. Returns the list of losses, one per step taken.
    """
    bar = _progress_bar(data)
    losses: list[Any] = []
    total = 0.0
    try:
        for step, batch in enumerate(data if bar is None else bar):
            args = batch if isinstance(batch, tuple) else (batch,)
            loss, grad = value_and_grad(model, *args)
            state, model = update_(state, model, grad)
            losses.append(loss)
            if bar is not None:
                total += float(loss)
                bar.set_postfix(loss=f"{total / len(losses):.4g}")
            if callback is not None and callback(step, loss) is False:
                break
    finally:
        if bar is not None:
            bar.close()
    return losses
