"""Schedules: a hyper-parameter as a function of the step, ``step -> float``.

optax's schedules, with optax's argument names and semantics (``step`` counts
from 0, and every boundary falls where optax puts it), plus old Flux's
``inverse_decay``. Each is a value: it has a ``repr``, compares with ``==``,
hashes and pickles, and a checkpoint stores it as data. Any callable
``step -> float`` may be used where a schedule is wanted; only these can be
saved in a checkpoint. The classes keep optax's lower-case names, as they are
used like functions.

    eta = schedules.warmup_cosine_decay(0.0, 1e-3, warmup_steps=100, decay_steps=1000)
    rule = optimisers.Scheduled(optimisers.Adam(), eta=eta)
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

__all__ = [
    "constant",
    "cosine_decay",
    "cosine_onecycle",
    "exponential_decay",
    "inverse_decay",
    "join",
    "linear",
    "piecewise_constant",
    "polynomial",
    "warmup_cosine_decay",
]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _steps(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer number of steps, got {value!r}")
    return int(value)


class Schedule:
    """Base class of the built-in schedules: the arguments, kept as given
    (validated), make ``repr``, ``==``, hashing and pickling."""

    _args: ClassVar[tuple[str, ...]] = ()

    def __call__(self, step: Any) -> float:
        raise NotImplementedError

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, a) for a in self._args)

    def __repr__(self) -> str:
        args = ", ".join(f"{a}={getattr(self, a)!r}" for a in self._args)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **values: Any) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)


class constant(Schedule):
    """``value`` at every step."""

    _args = ("value",)

    def __init__(self, value: Any) -> None:
        self._set(value=_number("constant: value", value))

    def __call__(self, step: Any) -> float:
        return self.value


class polynomial(Schedule):
    """From ``init_value`` to ``end_value`` over ``transition_steps`` steps
    starting at ``transition_begin``: ``(init − end)·(1 − c/T)^power + end``
    with ``c = clip(step − begin, 0, T)``. With ``transition_steps <= 0`` it
    is ``init_value`` throughout (as optax)."""

    _args = ("init_value", "end_value", "power", "transition_steps", "transition_begin")

    def __init__(
        self,
        init_value: Any,
        end_value: Any,
        power: Any,
        transition_steps: Any,
        transition_begin: Any = 0,
    ) -> None:
        name = type(self).__name__
        self._set(
            init_value=_number(f"{name}: init_value", init_value),
            end_value=_number(f"{name}: end_value", end_value),
            power=_number(f"{name}: power", power),
            transition_steps=_steps(f"{name}: transition_steps", transition_steps),
            transition_begin=_steps(f"{name}: transition_begin", transition_begin),
        )

    def __call__(self, step: Any) -> float:
        if self.transition_steps <= 0:
            return self.init_value
        begin = max(self.transition_begin, 0)  # optax: a negative begin counts as 0
        count = min(max(step - begin, 0), self.transition_steps)
        frac = 1 - count / self.transition_steps
        return (self.init_value - self.end_value) * frac**self.power + self.end_value


class linear(polynomial):
    """``polynomial`` with ``power=1``."""

    _args = ("init_value", "end_value", "transition_steps", "transition_begin")

    def __init__(
        self, init_value: Any, end_value: Any, transition_steps: Any, transition_begin: Any = 0
    ) -> None:
        super().__init__(init_value, end_value, 1.0, transition_steps, transition_begin)


class cosine_decay(Schedule):
    """``init_value·((1 − α)·(½(1 + cos(π·c/D)))^exponent + α)`` with
    ``c = min(step, decay_steps)`` and α = ``alpha``."""

    _args = ("init_value", "decay_steps", "alpha", "exponent")

    def __init__(
        self, init_value: Any, decay_steps: Any, alpha: Any = 0.0, exponent: Any = 1.0
    ) -> None:
        decay_steps = _steps("cosine_decay: decay_steps", decay_steps)
        if decay_steps <= 0:
            raise ValueError(f"cosine_decay needs positive decay_steps, got {decay_steps}")
        self._set(
            init_value=_number("cosine_decay: init_value", init_value),
            decay_steps=decay_steps,
            alpha=_number("cosine_decay: alpha", alpha),
            exponent=_number("cosine_decay: exponent", exponent),
        )

    def __call__(self, step: Any) -> float:
        count = min(step, self.decay_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * count / self.decay_steps))
        return self.init_value * ((1 - self.alpha) * cosine**self.exponent + self.alpha)


class join(Schedule):
    """``schedules[i](step − boundaries[i−1])`` from ``boundaries[i−1]`` on
    (each schedule restarts its count at its boundary)."""

    _args = ("schedules", "boundaries")

    def __init__(self, schedules: Any, boundaries: Any) -> None:
        schedules = tuple(schedules)
        boundaries = tuple(_steps("join: boundaries", b) for b in boundaries)
        if not schedules:
            raise ValueError("join needs at least one schedule")
        if len(boundaries) != len(schedules) - 1:
            raise ValueError(
                f"join needs one boundary fewer than schedules, got {len(schedules)} "
                f"schedules and {len(boundaries)} boundaries"
            )
        for s in schedules:
            if not callable(s):
                raise TypeError(f"join: every schedule must be callable, got {s!r}")
        self._set(schedules=schedules, boundaries=boundaries)

    def __call__(self, step: Any) -> float:
        value = self.schedules[0](step)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            if step >= boundary:
                value = schedule(step - boundary)
        return value


class warmup_cosine_decay(Schedule):
    """A linear warm-up from ``init_value`` to ``peak_value`` over
    ``warmup_steps``, then a cosine decay to ``end_value`` reached at step
    ``decay_steps`` (which counts the warm-up, as optax's)."""

    _args = ("init_value", "peak_value", "warmup_steps", "decay_steps", "end_value", "exponent")

    def __init__(
        self,
        init_value: Any,
        peak_value: Any,
        warmup_steps: Any,
        decay_steps: Any,
        end_value: Any = 0.0,
        exponent: Any = 1.0,
    ) -> None:
        name = "warmup_cosine_decay"
        self._set(
            init_value=_number(f"{name}: init_value", init_value),
            peak_value=_number(f"{name}: peak_value", peak_value),
            warmup_steps=_steps(f"{name}: warmup_steps", warmup_steps),
            decay_steps=_steps(f"{name}: decay_steps", decay_steps),
            end_value=_number(f"{name}: end_value", end_value),
            exponent=_number(f"{name}: exponent", exponent),
        )
        if self.decay_steps <= self.warmup_steps:
            raise ValueError(
                f"{name} needs decay_steps > warmup_steps, got {self.decay_steps} "
                f"and {self.warmup_steps}"
            )
        alpha = 0.0 if self.peak_value == 0 else self.end_value / self.peak_value
        object.__setattr__(
            self,
            "_joined",
            join(
                [
                    linear(self.init_value, self.peak_value, self.warmup_steps),
                    cosine_decay(
                        self.peak_value, self.decay_steps - self.warmup_steps, alpha, self.exponent
                    ),
                ],
                [self.warmup_steps],
            ),
        )

    def __call__(self, step: Any) -> float:
        return self._joined(step)


class exponential_decay(Schedule):
    """``init_value·decay_rate^(c/T)`` with ``c = step − transition_begin``
    (``init_value`` while ``c <= 0``), the exponent floored when
    ``staircase``, and bounded by ``end_value`` (from below when decaying,
    from above when growing) if given. With ``transition_steps <= 0`` or
    ``decay_rate == 0`` it is ``init_value`` throughout (as optax)."""

    _args = (
        "init_value",
        "transition_steps",
        "decay_rate",
        "transition_begin",
        "staircase",
        "end_value",
    )

    def __init__(
        self,
        init_value: Any,
        transition_steps: Any,
        decay_rate: Any,
        transition_begin: Any = 0,
        staircase: Any = False,
        end_value: Any = None,
    ) -> None:
        name = "exponential_decay"
        if not isinstance(staircase, bool):
            raise TypeError(f"{name}: staircase must be True or False, got {staircase!r}")
        self._set(
            init_value=_number(f"{name}: init_value", init_value),
            transition_steps=_steps(f"{name}: transition_steps", transition_steps),
            decay_rate=_number(f"{name}: decay_rate", decay_rate),
            transition_begin=_steps(f"{name}: transition_begin", transition_begin),
            staircase=staircase,
            end_value=None if end_value is None else _number(f"{name}: end_value", end_value),
        )

    def __call__(self, step: Any) -> float:
        if self.transition_steps <= 0 or self.decay_rate == 0:
            return self.init_value
        count = step - max(self.transition_begin, 0)
        if count <= 0:
            value = self.init_value
        else:
            p = count / self.transition_steps
            if self.staircase:
                p = math.floor(p)
            value = self.init_value * self.decay_rate**p
        if self.end_value is not None:
            bound = max if self.decay_rate < 1 else min
            value = bound(value, self.end_value)
        return value


class piecewise_constant(Schedule):
    """``init_value``, multiplied by ``scale`` from each ``step >= boundary``
    on, for every ``boundary: scale`` of ``boundaries_and_scales`` (a dict)."""

    _args = ("init_value", "boundaries_and_scales")

    def __init__(self, init_value: Any, boundaries_and_scales: Any = None) -> None:
        name = "piecewise_constant"
        pairs = sorted(
            (_steps(f"{name}: a boundary", b), _number(f"{name}: a scale", s))
            for b, s in dict(boundaries_and_scales or {}).items()
        )
        if any(s < 0 for _, s in pairs):
            raise ValueError(f"{name} needs non-negative scales, got {dict(pairs)}")
        self._set(init_value=_number(f"{name}: init_value", init_value))
        object.__setattr__(self, "_pairs", tuple(pairs))
        self._set(boundaries_and_scales=dict(pairs))

    def _values(self) -> tuple[Any, ...]:
        return (self.init_value, self._pairs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (piecewise_constant, (self.init_value, self.boundaries_and_scales))

    def __call__(self, step: Any) -> float:
        value = self.init_value
        for boundary, scale in self._pairs:
            if step >= boundary:
                value *= scale
        return value


class cosine_onecycle(Schedule):
    """The one-cycle policy: from ``peak_value/div_factor`` up to ``peak_value``
    at step ``int(pct_start·transition_steps)``, then down to
    ``peak_value/(div_factor·final_div_factor)`` at ``transition_steps``, each
    leg a half cosine, and constant after."""

    _args = ("transition_steps", "peak_value", "pct_start", "div_factor", "final_div_factor")

    def __init__(
        self,
        transition_steps: Any,
        peak_value: Any,
        pct_start: Any = 0.3,
        div_factor: Any = 25.0,
        final_div_factor: Any = 1e4,
    ) -> None:
        name = "cosine_onecycle"
        transition_steps = _steps(f"{name}: transition_steps", transition_steps)
        if transition_steps <= 0:
            raise ValueError(f"{name} needs positive transition_steps, got {transition_steps}")
        self._set(
            transition_steps=transition_steps,
            peak_value=_number(f"{name}: peak_value", peak_value),
            pct_start=_number(f"{name}: pct_start", pct_start),
            div_factor=_number(f"{name}: div_factor", div_factor),
            final_div_factor=_number(f"{name}: final_div_factor", final_div_factor),
        )
        # optax's piecewise interpolation: the values are running products of the
        # scales; two boundaries at one step keep the later scale, as a dict does.
        start = self.peak_value / self.div_factor
        legs = sorted(
            {
                int(self.pct_start * transition_steps): self.div_factor,
                transition_steps: 1.0 / (self.div_factor * self.final_div_factor),
            }.items()
        )
        bounds = [0, *(b for b, _ in legs)]
        values = [start]
        for _, scale in legs:
            values.append(values[-1] * scale)
        object.__setattr__(self, "_bounds", tuple(bounds))
        object.__setattr__(self, "_points", tuple(values))

    def __call__(self, step: Any) -> float:
        bounds, values = self._bounds, self._points
        for i in range(len(bounds) - 1):
            lo, hi = bounds[i], bounds[i + 1]
            if lo <= step < hi:
                pct = (step - lo) / (hi - lo)
                a, b = values[i], values[i + 1]
                return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
        if step >= bounds[-1]:
            return values[-1]
        return 0.0  # a negative step, before every leg (optax's indicators are all 0)


class inverse_decay(Schedule):
    """Old Flux's ``InvDecay`` as a schedule: ``init_value/(1 + γ·step)``
    (γ is ``gamma``)."""

    _args = ("init_value", "gamma")

    def __init__(self, init_value: Any, gamma: Any) -> None:
        gamma = _number("inverse_decay: gamma", gamma)
        if gamma < 0:
            raise ValueError(f"inverse_decay: gamma cannot be negative, got {gamma}")
        self._set(init_value=_number("inverse_decay: init_value", init_value), gamma=gamma)

    def __call__(self, step: Any) -> float:
        return self.init_value / (1 + self.gamma * step)


#: The built-in schedules by name, for checkpoints (see ``checkpoint.py``).
BUILT_IN: dict[str, type[Schedule]] = {
    cls.__name__: cls
    for cls in (
        constant,
        linear,
        polynomial,
        cosine_decay,
        warmup_cosine_decay,
        exponential_decay,
        piecewise_constant,
        join,
        cosine_onecycle,
        inverse_decay,
    )
}
