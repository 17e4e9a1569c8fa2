"""Rules about other rules and about the whole step: ``Scheduled``,
``SkipNonFinite``, ``Lookahead`` and ``ClipGlobalNorm``.

Each is a rule value like the built-in ones (fields, ``repr``, ``==``,
pickling), but the kernel does not run it whole: at each step the general
path of ``update_`` takes it apart (``whole_tree.py``), runs the rules it
wraps with every other leaf in one kernel call, and puts the state back
together. Their ``apply`` gives the same step for one leaf on its own (a
whole-tree rule then sees that leaf only), as used inside chains holding
Python rules and inside ``MixedPrecision``.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np

from ._global_norm import clip_global
from .rules import (
    _NO_DEFAULT,
    AbstractRule,
    Field,
    _flag,
    _real,
    _Rule,
    _rule,
    adjusted,
    check_used,
)

__all__ = ["ClipGlobalNorm", "Lookahead", "Scheduled", "SkipNonFinite"]


class _Wrapper(_Rule):
    """A rule wrapping ``rule``: ``adjust`` reaches through it to ``rule``."""

    _in_kernel: ClassVar[bool] = False
    rule: AbstractRule

    def __repr__(self) -> str:
        rest = "".join(f", {f}={getattr(self, f)!r}" for f in self._field_names()[1:])
        return f"{type(self).__name__}({self.rule!r}{rest})"

    def _adjusted(self, fields: dict[str, Any], used: set[str]) -> _Rule:
        own = {k: v for k, v in fields.items() if k in self._field_names() and k != "rule"}
        used.update(own)
        return self._replace(rule=adjusted(self.rule, fields, used), **own)


# ---------------------------------------------------------------------------
# Scheduled


def _schedules(rule: str, name: str, value: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(value)


class Scheduled(_Wrapper):
    """``rule`` with fields that follow schedules: ``Scheduled(Adam(), eta=s)``
    steps with ``eta = s(t)``, where ``t`` counts this leaf's steps from 0.

    Any named field of ``rule`` may be scheduled, routed into chains as
    ``adjust`` routes it; a schedule is any callable ``step -> float`` (those
    of ``optimisers.schedules`` can be saved in checkpoints). State
    ``(t, rule's state)``. The rule for a step is made once per step value and
    shared by every leaf at that step, so that they run as one kernel call.
    ``adjust`` changes the rule inside; a scheduled field keeps following its
    schedule.
    """

    _fields = (Field("rule", _NO_DEFAULT, _rule), Field("schedules", (), _schedules))

    def __init__(self, rule: AbstractRule, **schedules: Any) -> None:
        _rule("Scheduled", "rule", rule)
        if not schedules:
            raise TypeError("Scheduled needs at least one field=schedule")
        for name, s in schedules.items():
            if not callable(s):
                raise TypeError(f"Scheduled: the schedule for {name!r} is not callable: {s!r}")
        super().__init__(rule=rule, schedules=tuple(sorted(schedules.items())))
        object.__setattr__(self, "_at", {})
        self.at(0)  # every field exists and takes the first values (else a clear error now)

    def __repr__(self) -> str:
        scheduled = ", ".join(f"{k}={s!r}" for k, s in self.schedules)
        return f"Scheduled({self.rule!r}, {scheduled})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_scheduled, (self.rule, dict(self.schedules)))

    def _replace(self, **fields: Any) -> Scheduled:
        rule = fields.pop("rule", self.rule)
        schedules = dict(fields.pop("schedules", self.schedules))
        return Scheduled(rule, **schedules)

    def at(self, step: int) -> AbstractRule:
        """The rule with every scheduled field at its value for ``step``."""
        at = self.__dict__["_at"]
        rule = at.get(step)
        if rule is None:
            values = {name: _value(s(step)) for name, s in self.schedules}
            used: set[str] = set()
            rule = adjusted(self.rule, values, used)
            check_used(values, used, f"in {self.rule!r}")
            if len(at) >= 16:  # leaves at a handful of steps at once, at most
                at.clear()
            at[step] = rule
        return rule

    def init(self, x: np.ndarray) -> Any:
        return (0, self.rule.init(x))

    def apply(self, state: Any, x: np.ndarray, dx: np.ndarray) -> tuple[Any, Any]:
        step, inner = state
        inner, update = self.at(step).apply(inner, x, dx)
        return (step + 1, inner), update


def _value(v: Any) -> Any:
    """A schedule's value as a field takes it: a Python float for a number
    (NumPy scalars included), anything else (a pair for ``beta``) as it is."""
    return float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else v


def _scheduled(rule: AbstractRule, schedules: dict[str, Any]) -> Scheduled:
    return Scheduled(rule, **schedules)


# ---------------------------------------------------------------------------
# SkipNonFinite


def _count_or_none(rule: str, name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{rule}: {name} must be a whole number or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{rule}: {name} cannot be negative, got {value}")
    return int(value)


class SkipNonFinite(_Wrapper):
    """Skips a step whose gradients hold a NaN or an infinity.

    Its leaves are those of the step whose rule is an equal ``SkipNonFinite``:
    if any of their gradients is not finite, none of them moves and ``rule``'s
    state stays as it was, while each counts the skip. After
    ``max_consecutive`` skips in a row (0: at once; None: never), the next
    non-finite step raises ``FloatingPointError`` naming the key path, with
    nothing changed. State ``(in_a_row, total, rule's state)``.
    """

    _fields = (
        Field("rule", _NO_DEFAULT, _rule),
        Field("max_consecutive", None, _count_or_none),
    )

    def init(self, x: np.ndarray) -> Any:
        return (0, 0, self.rule.init(x))

    def refuse(self, in_a_row: int, where: str) -> None:
        """Raise if a non-finite gradient after ``in_a_row`` skips is one too many."""
        if self.max_consecutive is not None and in_a_row >= self.max_consecutive:
            raise FloatingPointError(
                f"gradient {where} is not finite, after {in_a_row} skipped step(s) in a row "
                f"(SkipNonFinite with max_consecutive={self.max_consecutive})"
            )

    def apply(self, state: Any, x: np.ndarray, dx: np.ndarray) -> tuple[Any, Any]:
        in_a_row, total, inner = state
        if not np.isfinite(dx).all():
            self.refuse(in_a_row, "in SkipNonFinite.apply")
            return (in_a_row + 1, total + 1, inner), None
        inner, update = self.rule.apply(inner, x, dx)
        return (0, total, inner), update


# ---------------------------------------------------------------------------
# Lookahead


def _steps(rule: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{rule}: {name} must be a whole number, got {value!r}")
    if value < 1:
        raise ValueError(f"{rule}: {name} must be at least 1, got {value}")
    return int(value)


def _fraction(rule: str, name: str, value: Any) -> float:
    value = _real(rule, name, value)
    if not 0 <= value <= 1:
        raise ValueError(f"{rule}: {name} must be between 0 and 1, got {value}")
    return value


class Lookahead(_Wrapper):
    """Lookahead (Zhang et al. 2019): ``rule`` steps the fast weights ``x``;
    every ``k``-th step, ``slow ← slow + α(x − slow)`` and ``x ← slow``
    (α is ``alpha``). State ``(slow, count, rule's state)``, ``slow`` starting
    at ``x`` and ``count`` counting this leaf's steps."""

    _fields = (
        Field("rule", _NO_DEFAULT, _rule),
        Field("k", 5, _steps),
        Field("alpha", 0.5, _fraction),
    )

    def init(self, x: np.ndarray) -> Any:
        return (np.array(x, order="C", copy=True), 0, self.rule.init(x))

    def sync(self, slow: np.ndarray, x: np.ndarray) -> None:
        """``slow ← slow + α(x − slow)``, in ``slow``'s dtype."""
        with np.errstate(all="ignore"):  # a NaN or inf propagates, as in the kernels
            step = x - slow
            step *= slow.dtype.type(self.alpha)
            slow += step

    def apply(self, state: Any, x: np.ndarray, dx: np.ndarray) -> tuple[Any, Any]:
        slow, count, inner = state
        inner, update = self.rule.apply(inner, x, dx)
        with np.errstate(all="ignore"):
            fast = x if update is None else (x - update).astype(x.dtype, copy=False)
        count += 1
        if count % self.k:
            return (slow, count, inner), update
        self.sync(slow, fast)
        with np.errstate(all="ignore"):
            return (slow, count, inner), x - slow


# ---------------------------------------------------------------------------
# ClipGlobalNorm


class ClipGlobalNorm(_Rule):
    """Scales the gradients of the whole step by ``min(ω/‖G‖ₚ, 1)``, ω being
    ``omega`` and ``‖G‖ₚ`` the ``p``-norm of every gradient of the step whose
    leaf's rule holds an equal ``ClipGlobalNorm`` (a tied parameter once),
    like torch's ``clip_grad_norm_`` and optax's ``clip_by_global_norm``.

    It must come before any rule with state (``setup`` refuses it after one).
    The norm is summed in float64, leaf by leaf in tree order, so it does not
    depend on the thread count. With ``throw=True`` an infinite or NaN norm
    raises ``ValueError`` and nothing is written.
    """

    _in_kernel: ClassVar[bool] = False
    _fields = (
        Field("omega", 10.0, _real),
        Field("p", 2.0, _real),
        Field("throw", True, _flag, keyword_only=True),
    )

    def init(self, x: np.ndarray) -> None:
        return None

    def apply(self, state: Any, x: np.ndarray, dx: np.ndarray) -> tuple[Any, Any]:
        (scaled,) = clip_global(self, [np.asarray(dx)], ["in ClipGlobalNorm.apply"])
        return None, scaled
