"""``ReduceOnPlateau``: lower the learning rate when a metric stops improving."""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any

from . import tree
from ._leaf import Leaf
from .rules import AbstractRule, MixedPrecision, OptimiserChain, _Rule
from .wrappers import _Wrapper

__all__ = ["ReduceOnPlateau"]


def _lowered(rule: AbstractRule, lower: Any) -> AbstractRule:
    """``rule`` with every ``eta`` in it replaced by ``lower(eta)``."""
    if isinstance(rule, OptimiserChain):
        return OptimiserChain(*(_lowered(r, lower) for r in rule.rules))
    if isinstance(rule, MixedPrecision):
        return MixedPrecision(rule.dtype, _lowered(rule.rule, lower))
    if isinstance(rule, _Wrapper):
        return rule._replace(rule=_lowered(rule.rule, lower))
    if isinstance(rule, _Rule):
        return rule._replace(eta=lower(rule.eta)) if "eta" in rule._field_names() else rule
    if isinstance(getattr(rule, "eta", None), numbers.Real):
        new = copy.copy(rule)
        new.eta = lower(rule.eta)  # type: ignore[attr-defined]
        return new
    return rule


class ReduceOnPlateau:
    """torch's ``ReduceLROnPlateau`` for a state tree: after ``patience`` calls
    of ``step(metric)`` without improvement, every rule of ``state`` has its
    learning rate ``eta`` multiplied by ``factor`` (not below ``min_eta``, and
    not at all when that would change it by ``eps`` or less), then waits
    ``cooldown`` calls before counting again.

    An improvement is a metric below ``best·(1 − threshold)`` (``mode="min"``,
    ``threshold_mode="rel"``), below ``best − threshold`` (``"abs"``), or above
    ``best·(1 + threshold)`` / ``best + threshold`` with ``mode="max"``. A
    scheduled ``eta`` (``Scheduled``) keeps following its schedule.
    """

    def __init__(
        self,
        state: Any,
        *,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        mode: str = "min",
        cooldown: int = 0,
        min_eta: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not 0 <= factor < 1:
            raise ValueError(f"ReduceOnPlateau: factor must be in [0, 1), got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceOnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"ReduceOnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            )
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"ReduceOnPlateau: {name} must be a whole number >= 0")
        self.state = state
        self.factor, self.patience, self.cooldown = float(factor), int(patience), int(cooldown)
        self.threshold, self.threshold_mode, self.mode = float(threshold), threshold_mode, mode
        self.min_eta, self.eps = float(min_eta), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_steps = 0
        self.cooldown_counter = 0

    def _better(self, metric: float) -> bool:
        if self.mode == "min":
            bar = (
                self.best * (1 - self.threshold)
                if self.threshold_mode == "rel"
                else self.best - self.threshold
            )
            return metric < bar
        bar = (
            self.best * (1 + self.threshold)
            if self.threshold_mode == "rel"
            else self.best + self.threshold
        )
        return metric > bar

    def step(self, metric: Any) -> None:
        """Record ``metric``; lower the learning rates if it has not improved
        for more than ``patience`` calls."""
        metric = float(metric)
        if self._better(metric):
            self.best, self.num_bad_steps = metric, 0
        else:
            self.num_bad_steps += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_steps = 0
        if self.num_bad_steps > self.patience:
            self._lower()
            self.cooldown_counter, self.num_bad_steps = self.cooldown, 0

    def _lower(self) -> None:
        def lower(eta: float) -> float:
            new = max(eta * self.factor, self.min_eta)
            return new if eta - new > self.eps else eta

        leaves: dict[int, Leaf] = {}
        for leaf in _leaves(self.state):
            leaves.setdefault(id(leaf), leaf)
        for leaf in leaves.values():
            new = _lowered(leaf.rule, lower)
            if new != leaf.rule:
                leaf.rule = new


def _leaves(x: Any) -> Any:
    if isinstance(x, Leaf):
        yield x
        return
    for _, c in tree.children(x) or ():
        yield from _leaves(c)
