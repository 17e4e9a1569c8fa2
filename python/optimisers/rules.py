"""The optimisation rules of Optimisers.jl.

A rule is an immutable value: its hyper-parameters, declared once as a field
spec (names, defaults, validation), from which the constructor, ``repr``,
``==``, hashing and pickling all follow. Each built-in rule also says how the
Rust kernel runs it: the kernel steps with hyper-parameters rounded to the
array's dtype (``_kernel``), its state (``init``), which state arrays and
per-leaf scalars the kernel reads (``_arrays``, ``_per_leaf``), and how to put
moved scalars back into the state (``_with_per_leaf``). The formulas, the
scalars' moves after a step included, live in ``rust/kernels/src/rules/``, one
file per rule.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Callable, ClassVar, NamedTuple

import numpy as np

from . import _alloc, _core, _kernel
from ._alloc import full as _full
from ._alloc import zeros as _zeros
from ._errors import ArgumentError

__all__ = [
    "AMSGrad",
    "AbstractRule",
    "AccumGrad",
    "AdaBelief",
    "AdaDelta",
    "AdaGrad",
    "AdaMax",
    "Adam",
    "AdamW",
    "ClipGrad",
    "ClipNorm",
    "Descent",
    "InvDecay",
    "Lamb",
    "Lars",
    "Lion",
    "MixedPrecision",
    "Momentum",
    "NAdam",
    "Nesterov",
    "NoisySGD",
    "OAdam",
    "OptimiserChain",
    "RAdam",
    "RMSProp",
    "Rprop",
    "SignDecay",
    "TrustRatio",
    "WeightDecay",
    "Yogi",
]


class AbstractRule:
    """Base class of every rule.

    A custom rule defines ``init(x)``, returning its initial state for the array
    ``x``, and ``apply(state, x, dx)``, returning ``(new_state, update)``; the
    parameter then becomes ``x - update`` (or stays as it is if ``update`` is
    ``None``). ``apply`` may mutate its own state arrays.
    """

    def init(self, x: np.ndarray) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define init(x)")

    def apply(self, state: Any, x: np.ndarray, dx: np.ndarray) -> tuple[Any, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define apply(state, x, dx)")


# ---------------------------------------------------------------------------
# Field specs: one declaration gives constructor, validation, repr, ==, pickling.


def _real(rule: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{rule}: {name} must be a real number, got {value!r}")
    return float(value)


def _nonneg(rule: str, name: str, value: Any) -> float:
    value = _real(rule, name, value)
    what = "the learning rate" if name == "eta" else name
    if value < 0:
        raise ValueError(f"{rule}: {what} cannot be negative, got {value}")
    if name == "eta" and not math.isfinite(value):
        raise ValueError(f"{rule}: {what} must be finite, got {value}")
    return value


def _pair(rule: str, name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"{rule}: {name} must be a pair of real numbers, got {value!r}")
    return (_real(rule, name, value[0]), _real(rule, name, value[1]))


def _flag(rule: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{rule}: {name} must be True or False, got {value!r}")
    return bool(value)


class Field(NamedTuple):
    name: str
    default: Any
    check: Callable[[str, str, Any], Any]
    keyword_only: bool = False


_NO_DEFAULT = object()


class _Rule(AbstractRule):
    """A built-in rule: fields from ``_fields``, frozen after construction."""

    _fields: ClassVar[tuple[Field, ...]] = ()
    _aliases: ClassVar[dict[str, str]] = {}
    # Whether the kernel runs this rule whole; the rules of wrappers.py say no
    # (the general path takes them apart at each step, see whole_tree.py).
    _in_kernel: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        name = type(self).__name__
        for alias, field in self._aliases.items():
            if alias in kwargs:  # either spelling; both given means either is set
                value = kwargs.pop(alias)
                kwargs[field] = kwargs[field] | value if field in kwargs else value
        positional = [f for f in self._fields if not f.keyword_only]
        if len(args) > len(positional):
            raise TypeError(f"{name} takes at most {len(positional)} positional arguments")
        values = dict(zip((f.name for f in positional), args))
        for key, value in kwargs.items():
            if key in values:
                raise TypeError(f"{name} got {key!r} twice")
            if key not in self._field_names():
                raise TypeError(
                    f"{name} has no field {key!r}; its fields are {self._field_names()}"
                )
            values[key] = value
        for field in self._fields:
            value = values.get(field.name, field.default)
            if value is _NO_DEFAULT:
                raise TypeError(f"{name} needs {field.name!r}")
            object.__setattr__(self, field.name, field.check(name, field.name, value))
        object.__setattr__(self, "_programs", {})

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls._fields)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._field_names())

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(
            f"{type(self).__name__} is immutable; use optimisers.adjust to change {key!r}"
        )

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot delete {key!r}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._field_names())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), dict(zip(self._field_names(), self._values()))))

    def _adjusted(self, fields: dict[str, Any], used: set[str]) -> _Rule:
        """This rule with each of ``fields`` it has replaced (see ``adjusted``)."""
        mine = {k: v for k, v in fields.items() if k in self._field_names()}
        used.update(mine)
        return self._replace(**mine) if mine else self

    def _replace(self, **fields: Any) -> _Rule:
        values = dict(zip(self._field_names(), self._values()))
        values.update(fields)
        return type(self)(**values)

    # --- how the kernel runs this rule -------------------------------------

    def _kernel(self, dtype: np.dtype) -> list[tuple[str, dict[str, float]]]:
        """The kernel steps that run this rule on ``dtype``: each a registered
        name (``_core.rules()``) and its hyper-parameters by name."""
        raise NotImplementedError

    def _arrays(self, state: Any) -> list[np.ndarray]:
        return []

    def _per_leaf(self, state: Any) -> list[float]:
        return []

    def _with_per_leaf(self, state: Any, values: list[float]) -> Any:
        """``state`` with its per-leaf scalars replaced by ``values``, each in
        the type the state keeps it in."""
        return state

    def _advance(self, state: Any, dtype: np.dtype) -> tuple[Any, bool]:
        """The state after a kernel step on a parameter of ``dtype`` (per-leaf
        scalars moved on, by the kernel crate), and whether the update went
        through (``False`` when an ``AccumGrad`` held it)."""
        values = self._per_leaf(state)
        if not values:
            return state, True
        moved, through = self._program(dtype).advance(values)
        return self._with_per_leaf(state, moved), through

    def _program(self, dtype: np.dtype) -> _core.Program:
        programs = self.__dict__["_programs"]
        program = programs.get(dtype)
        if program is None:
            native = np.dtype(dtype).newbyteorder("=")  # a '>f4' parameter runs as float32
            program = programs[dtype] = _core.Program(self._kernel(native), native.name)
        return program

    def apply(self, state: Any, x: np.ndarray, dx: np.ndarray) -> tuple[Any, Any]:
        """One step of this rule on one array, through the kernel.

        Returns ``(new_state, update)``; the state arrays are advanced in place.
        """
        return _kernel.apply_builtin(self, state, x, dx)


def _rebuild(cls: type, fields: dict[str, Any]) -> Any:
    return cls(**fields)


# ---------------------------------------------------------------------------
# Scalars in the array's dtype, as Julia's `T(x)` and `_eps(T, x)`.


def _cast(dtype: np.dtype, value: float) -> float:
    return float(np.dtype(dtype).type(value))


def _eps(dtype: np.dtype, value: float) -> float:
    """Julia's ``_eps``: epsilon in the array's type, at least ``float16(1e-7)``
    for float16 unless it is zero."""
    if np.dtype(dtype) == np.float16 and value != 0:
        return float(max(np.float16(1e-7), np.float16(value)))
    return _cast(dtype, value)


def _scalar(dtype: np.dtype, value: float) -> np.generic:
    return np.dtype(dtype).type(value)


_eta = Field("eta", 0.001, _nonneg)
_beta = Field("beta", (0.9, 0.999), _pair)
_epsilon = Field("epsilon", 1e-8, _real)


# ---------------------------------------------------------------------------
# Rules without state.


class Descent(_Rule):
    """Gradient descent with learning rate η (``eta``): ``x -= η * dx``."""

    _fields = (Field("eta", 0.1, _nonneg),)

    def init(self, x: np.ndarray) -> None:
        return None

    def _kernel(self, dtype):
        return [("Descent", {"eta": _cast(dtype, self.eta)})]


class WeightDecay(_Rule):
    """L2 regularisation with strength λ (``lambda_``): adds ``λ * x`` to the gradient."""

    _fields = (Field("lambda_", 5e-4, _real),)

    def init(self, x: np.ndarray) -> None:
        return None

    def _kernel(self, dtype):
        return [("WeightDecay", {"lambda": _cast(dtype, self.lambda_)})]


class SignDecay(_Rule):
    """L1 regularisation with strength λ (``lambda_``): adds ``λ * sign(x)`` to the gradient."""

    _fields = (Field("lambda_", 1e-3, _real),)

    def init(self, x: np.ndarray) -> None:
        return None

    def _kernel(self, dtype):
        return [("SignDecay", {"lambda": _cast(dtype, self.lambda_)})]


class ClipGrad(_Rule):
    """Clamps every gradient component to ``[-δ, δ]`` (δ is ``delta``)."""

    _fields = (Field("delta", 10.0, _real),)

    def init(self, x: np.ndarray) -> None:
        return None

    def _kernel(self, dtype):
        return [("ClipGrad", {"delta": _cast(dtype, self.delta)})]


class ClipNorm(_Rule):
    """Scales a gradient array whose ``p``-norm exceeds ω (``omega``) down to ω.

    ``p`` may be any real, including 0 (count of non-zeros) and ±inf. With
    ``throw=True`` an infinite or NaN norm raises ``ValueError``.
    """

    _fields = (
        Field("omega", 10.0, _real),
        Field("p", 2.0, _real),
        Field("throw", True, _flag, keyword_only=True),
    )

    def init(self, x: np.ndarray) -> None:
        return None

    def _kernel(self, dtype):
        # ω and p stay in float64, as Julia keeps them; the factor is rounded to T.
        return [("ClipNorm", {"omega": self.omega, "p": self.p, "throw": float(self.throw)})]


# ---------------------------------------------------------------------------
# Momentum-style rules.


class Momentum(_Rule):
    """Gradient descent with learning rate η (``eta``) and momentum ρ (``rho``)."""

    _fields = (Field("eta", 0.01, _nonneg), Field("rho", 0.9, _real))

    def init(self, x):
        return _zeros(x)

    def _kernel(self, dtype):
        return [("Momentum", {"eta": _cast(dtype, self.eta), "rho": _cast(dtype, self.rho)})]

    def _arrays(self, state):
        return [state]


class Nesterov(_Rule):
    """Gradient descent with learning rate η (``eta``) and Nesterov momentum ρ (``rho``)."""

    _fields = (Field("eta", 0.001, _nonneg), Field("rho", 0.9, _real))

    def init(self, x):
        return _zeros(x)

    def _kernel(self, dtype):
        return [("Nesterov", {"eta": _cast(dtype, self.eta), "rho": _cast(dtype, self.rho)})]

    def _arrays(self, state):
        return [state]


class Rprop(_Rule):
    """Rprop: per-element step sizes from η (``eta``), scaled by ℓ (``ell``) and
    bounded by Γ (``gamma``), stepping by the sign of the gradient."""

    _fields = (
        Field("eta", 1e-3, _nonneg),
        Field("ell", (0.5, 1.2), _pair),
        Field("gamma", (1e-6, 50.0), _pair),
    )

    def init(self, x):
        return (_zeros(x), _full(x, _cast(x.dtype, self.eta)))

    def _kernel(self, dtype):
        names = ("eta", "ell1", "ell2", "gamma1", "gamma2")
        values = (self.eta, *self.ell, *self.gamma)
        return [("Rprop", {n: _cast(dtype, v) for n, v in zip(names, values)})]

    def _arrays(self, state):
        return list(state)


class RMSProp(_Rule):
    """RMSProp with learning rate η (``eta``), decay ρ (``rho``) and ϵ (``epsilon``);
    ``centred=True`` (or ``centered``) normalises by the variance instead."""

    _fields = (
        Field("eta", 0.001, _nonneg),
        Field("rho", 0.9, _real),
        _epsilon,
        Field("centred", False, _flag, keyword_only=True),
    )
    _aliases: ClassVar[dict[str, str]] = {"centered": "centred"}

    def init(self, x):
        return (_zeros(x), _zeros(x) if self.centred else False)

    def _adjusted(self, fields, used):
        if "centred" in fields or "centered" in fields:
            raise ArgumentError(
                "adjust cannot change RMSProp's centred: the two variants keep different state"
            )
        return super()._adjusted(fields, used)

    def _kernel(self, dtype):
        kind = "RMSPropCentred" if self.centred else "RMSProp"
        hyper = {"eta": _cast(dtype, self.eta), "rho": _cast(dtype, self.rho)}
        return [(kind, {**hyper, "epsilon": _eps(dtype, self.epsilon)})]

    def _arrays(self, state):
        return list(state) if self.centred else [state[0]]


# ---------------------------------------------------------------------------
# The Adam family: moments (m, v) and per-leaf powers βᵗ.


class _Moments(_Rule):
    """A rule whose state is ``(m, v, (β₁ᵗ, β₂ᵗ))``."""

    _kernel_name: ClassVar[str]
    _fields = (_eta, _beta, _epsilon)

    def init(self, x):
        b1, b2 = self.beta
        return (_zeros(x), _zeros(x), (_scalar(x.dtype, b1), _scalar(x.dtype, b2)))

    def _hyper(self, dtype):
        b1, b2 = (_cast(dtype, b) for b in self.beta)
        eta, eps = _cast(dtype, self.eta), _eps(dtype, self.epsilon)
        return {"eta": eta, "beta1": b1, "beta2": b2, "epsilon": eps}

    def _kernel(self, dtype):
        return [(self._kernel_name, self._hyper(dtype))]

    def _arrays(self, state):
        return [state[0], state[1]]

    def _per_leaf(self, state):
        return [float(state[2][0]), float(state[2][1])]

    def _with_per_leaf(self, state, values):
        scalar = type(state[2][0])  # the leaf's dtype, as init made it
        return (state[0], state[1], (scalar(values[0]), scalar(values[1])), *state[3:])


class Adam(_Moments):
    """Adam with learning rate η (``eta``), moment decays β (``beta``) and ϵ (``epsilon``)."""

    _kernel_name = "Adam"


class AdaMax(_Moments):
    """AdaMax, Adam with the ∞-norm: η (``eta``), β (``beta``), ϵ (``epsilon``)."""

    _kernel_name = "AdaMax"


class NAdam(_Moments):
    """NAdam, Adam with Nesterov momentum: η (``eta``), β (``beta``), ϵ (``epsilon``)."""

    _kernel_name = "NAdam"


class AdaBelief(_Moments):
    """AdaBelief: η (``eta``), β (``beta``), ϵ (``epsilon``, default 1e-16)."""

    _kernel_name = "AdaBelief"
    _fields = (_eta, _beta, Field("epsilon", 1e-16, _real))


class RAdam(_Moments):
    """Rectified Adam: η (``eta``), β (``beta``), ϵ (``epsilon``).
    State ``(m, v, (β₁ᵗ, β₂ᵗ), t)``."""

    _kernel_name = "RAdam"

    def init(self, x):
        return (*super().init(x), 1)

    def _per_leaf(self, state):
        return [*super()._per_leaf(state), float(state[3])]

    def _with_per_leaf(self, state, values):
        moved = super()._with_per_leaf(state, values)
        return (*moved[:3], int(values[2]))


class OAdam(_Moments):
    """Optimistic Adam: η (``eta``), β (``beta``, default (0.5, 0.9)), ϵ (``epsilon``).
    State ``(m, v, (β₁ᵗ, β₂ᵗ), term)``."""

    _kernel_name = "OAdam"
    _fields = (_eta, Field("beta", (0.5, 0.9), _pair), _epsilon)

    def init(self, x):
        return (*super().init(x), _zeros(x))

    def _arrays(self, state):
        return [state[0], state[1], state[3]]


class AdamW(_Moments):
    """Adam with weight decay λ (``lambda_``): coupled to η (``couple=True``, as
    PyTorch's AdamW: ``η (a + λ x)``) or not (``η a + λ x``)."""

    _kernel_name = "AdamW"
    _fields = (
        _eta,
        _beta,
        Field("lambda_", 0.0, _real),
        _epsilon,
        Field("couple", True, _flag, keyword_only=True),
    )

    def _hyper(self, dtype):
        # AdamW rounds ϵ plainly, without the float16 floor.
        eta, b1, b2 = (_cast(dtype, v) for v in (self.eta, *self.beta))
        moments = {"eta": eta, "beta1": b1, "beta2": b2, "epsilon": _cast(dtype, self.epsilon)}
        return {**moments, "lambda": _cast(dtype, self.lambda_), "couple": float(self.couple)}


class AMSGrad(_Rule):
    """AMSGrad: η (``eta``), β (``beta``), ϵ (``epsilon``). State ``(m, v, v̂)``,
    each starting at ϵ."""

    _fields = (_eta, _beta, _epsilon)

    def init(self, x):
        eps = _cast(x.dtype, self.epsilon)
        return (_full(x, eps), _full(x, eps), _full(x, eps))

    def _kernel(self, dtype):
        b1, b2 = (_cast(dtype, b) for b in self.beta)
        eta, eps = _cast(dtype, self.eta), _eps(dtype, self.epsilon)
        return [("AMSGrad", {"eta": eta, "beta1": b1, "beta2": b2, "epsilon": eps})]

    def _arrays(self, state):
        return list(state)


class AdaGrad(_Rule):
    """AdaGrad: η (``eta``), ϵ (``epsilon``). State: the sum of squares, starting at ϵ."""

    _fields = (Field("eta", 0.1, _nonneg), _epsilon)

    def init(self, x):
        return _full(x, _cast(x.dtype, self.epsilon))

    def _kernel(self, dtype):
        return [("AdaGrad", {"eta": _cast(dtype, self.eta), "epsilon": _eps(dtype, self.epsilon)})]

    def _arrays(self, state):
        return [state]


class AdaDelta(_Rule):
    """AdaDelta: decay ρ (``rho``), ϵ (``epsilon``). State ``(acc, Δacc)``."""

    _fields = (Field("rho", 0.9, _real), _epsilon)

    def init(self, x):
        return (_zeros(x), _zeros(x))

    def _kernel(self, dtype):
        return [("AdaDelta", {"rho": _cast(dtype, self.rho), "epsilon": _eps(dtype, self.epsilon)})]

    def _arrays(self, state):
        return list(state)


class Lion(_Rule):
    """Lion: step size η (``eta``), β (``beta``). State: the momentum."""

    _fields = (_eta, _beta)

    def init(self, x):
        return _zeros(x)

    def _kernel(self, dtype):
        b1, b2 = (_cast(dtype, b) for b in self.beta)
        return [("Lion", {"eta": _cast(dtype, self.eta), "beta1": b1, "beta2": b2})]

    def _arrays(self, state):
        return [state]


# ---------------------------------------------------------------------------
# Rules made of rules.


def _positive_int(rule: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{rule}: {name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{rule} must accumulate at least one gradient, got {name}={value}")
    return int(value)


class AccumGrad(_Rule):
    """Accumulates the mean of ``n`` gradients, applying the rest of an
    ``OptimiserChain`` only every ``n``-th step. State ``(acc, counter)``."""

    _fields = (Field("n", _NO_DEFAULT, _positive_int),)

    def init(self, x):
        return (_zeros(x), 1)

    def _kernel(self, dtype):
        return [("AccumGrad", {"n": float(self.n)})]

    def _arrays(self, state):
        return [state[0]]

    def _per_leaf(self, state):
        return [float(state[1])]

    def _with_per_leaf(self, state, values):
        return (state[0], int(values[0]))


def _rule(rule: str, name: str, value: Any) -> AbstractRule:
    if not isinstance(value, AbstractRule):
        raise TypeError(f"{rule}: expected an optimisation rule, got {value!r}")
    return value


class OptimiserChain(_Rule):
    """Applies ``rules`` in order, each transforming the update of the one before.
    The empty chain is the identity, ``Descent(1)``."""

    _fields = (Field("rules", (), lambda rule, name, value: value),)

    def __init__(self, *rules: AbstractRule) -> None:
        for r in rules:
            _rule("OptimiserChain", "rules", r)
            if isinstance(r, MixedPrecision):
                raise ValueError(
                    "MixedPrecision should wrap the entire OptimiserChain, not be inside it"
                )
        super().__init__(rules=tuple(rules))

    def __repr__(self) -> str:
        return f"OptimiserChain({', '.join(map(repr, self.rules))})"

    def __reduce__(self):
        return (OptimiserChain, self.rules)

    def _replace(self, **fields):
        return OptimiserChain(*fields.get("rules", self.rules))

    def _adjusted(self, fields, used):
        return OptimiserChain(*(adjusted(r, fields, used) for r in self.rules))

    def init(self, x):
        return tuple(r.init(x) for r in self.rules)

    def _builtin(self) -> bool:
        return all(_is_builtin(r) for r in self.rules)

    def _kernel(self, dtype):
        return [step for r in self.rules for step in r._kernel(dtype)]

    def _arrays(self, state):
        return [a for r, s in zip(self.rules, state) for a in r._arrays(s)]

    def _per_leaf(self, state):
        return [v for r, s in zip(self.rules, state) for v in r._per_leaf(s)]

    def _with_per_leaf(self, state, values):
        moved, at = [], 0
        for r, s in zip(self.rules, state):
            n = len(r._per_leaf(s))
            moved.append(r._with_per_leaf(s, values[at : at + n]))
            at += n
        return tuple(moved)

    def apply(self, state, x, dx):
        if self._builtin():
            return super().apply(state, x, dx)
        # A chain holding Python rules: fold the update through each rule in turn.
        states = list(state)
        for i, r in enumerate(self.rules):
            states[i], dx = r.apply(states[i], x, dx)
            if dx is None:
                break
        return tuple(states), dx


def _float_dtype(rule: str, name: str, value: Any) -> type:
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise TypeError(f"{rule}: {name} must be a floating dtype, got {value!r}") from None
    if dtype.kind != "f":
        raise TypeError(f"{rule}: {name} must be a floating dtype, got {dtype}")
    return dtype.type


class MixedPrecision(_Rule):
    """Keeps a copy of each parameter in ``dtype`` (default float32) and runs
    ``rule`` on it, writing the result back into the parameter.
    ``MixedPrecision(rule)`` or ``MixedPrecision(dtype, rule)``. State ``(xT, rule_state)``."""

    _fields = (
        Field("dtype", np.float32, _float_dtype),
        Field("rule", _NO_DEFAULT, _rule),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 1 and isinstance(args[0], AbstractRule):
            kwargs["rule"] = args[0]
            args = ()
        super().__init__(*args, **kwargs)
        if isinstance(self.rule, MixedPrecision):
            raise ValueError("MixedPrecision cannot wrap another MixedPrecision")

    def __repr__(self) -> str:
        return f"MixedPrecision({np.dtype(self.dtype).name}, {self.rule!r})"

    def _adjusted(self, fields, used):
        return MixedPrecision(self.dtype, adjusted(self.rule, fields, used))

    def init(self, x):
        xT = np.array(x, dtype=self.dtype, order="C", copy=True)
        return (xT, self.rule.init(xT))

    def _per_leaf(self, state):
        return self.rule._per_leaf(state[1])

    def _with_per_leaf(self, state, values):
        return (state[0], self.rule._with_per_leaf(state[1], values))

    def _advance(self, state, dtype):
        xT, inner = state
        inner, through = self.rule._advance(inner, np.dtype(self.dtype))
        return (xT, inner), through

    def apply(self, state, x, dx):
        return _kernel.apply_mixed(self, state, x, dx)


def _is_builtin(rule: AbstractRule) -> bool:
    """Whether the kernel runs this rule whole (a built-in rule or a chain of them)."""
    if isinstance(rule, OptimiserChain):
        return rule._builtin()
    return isinstance(rule, _Rule) and rule._in_kernel and not isinstance(rule, MixedPrecision)


def runs_in_kernel(rule: AbstractRule, dtype: np.dtype) -> bool:
    """Whether a leaf with this rule and dtype is a kernel job (else Python runs it)."""
    if isinstance(rule, MixedPrecision):
        return _is_builtin(rule.rule) and runs_in_kernel(rule.rule, np.dtype(rule.dtype))
    return _is_builtin(rule) and _kernel.work_dtype(dtype) is not None


def check_dtype(dtype: np.dtype, rule: AbstractRule) -> str | None:
    """Why a parameter of this dtype cannot be optimised by this rule, if it cannot."""
    if isinstance(rule, MixedPrecision) or not _is_builtin(rule):
        return None
    if _kernel.work_dtype(dtype) is not None:
        return None
    return (
        f"no kernel for parameters of dtype {dtype}; "
        f"wrap the rule as MixedPrecision(numpy.float64, rule) to train them"
    )


def adjusted(rule: AbstractRule, fields: dict[str, Any], used: set[str]) -> AbstractRule:
    """``rule`` with each of ``fields`` that it has replaced, routed into chains
    and through wrappers to the rules inside; the names used are added to
    ``used``. A Python rule gets a copy with those attributes set."""
    if isinstance(rule, _Rule):
        return rule._adjusted(fields, used)
    mine = {k: v for k, v in fields.items() if hasattr(rule, k)}
    used.update(mine)
    if not mine:
        return rule
    new = copy.copy(rule)
    for k, v in mine.items():
        setattr(new, k, v)
    return new


def check_used(fields: dict[str, Any], used: set[str], where: str = "") -> None:
    """Refuse the fields that no rule took (``adjusted`` recorded the others)."""
    unused = [k for k in fields if k not in used]
    if unused:
        raise ArgumentError(
            f"adjust: no rule {where or 'given'} has the field(s) {', '.join(map(repr, unused))}"
        )


# ---------------------------------------------------------------------------
# Round two: rules from the seeds' other systems (Axon, old Flux).


def _count(rule: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{rule}: {name} must be an integer, got {value!r}")
    return int(value)


class InvDecay(_Rule):
    """Old Flux's inverse decay with rate γ (``gamma``): the update is
    ``dx / (1 + γ n)``, then ``n += 1``. ``n`` starts at 0, so the first step is
    not decayed (Flux 0.4-0.6; Flux 0.7's ``InvDecay`` started at 1). State ``n``."""

    _fields = (Field("gamma", 0.001, _nonneg),)

    def init(self, x):
        return 0

    def _kernel(self, dtype):
        return [("InvDecay", {"gamma": _cast(dtype, self.gamma)})]

    def _per_leaf(self, state):
        return [float(state)]

    def _with_per_leaf(self, state, values):
        return int(values[0])


class Yogi(_Moments):
    """Yogi (Zaheer et al. 2018): η (``eta``), β (``beta``), ϵ (``epsilon``), and
    ``initial_accumulator``, the starting value of both moments.

    ``m = β₁ m + (1-β₁) dx``; ``v = v - (1-β₂) sign(v - dx²) dx²`` (``sign(0) = 0``);
    the update is ``η m̂ / (√v̂ + ϵ)`` with Adam's bias corrections (as Axon and
    optax apply them, although the moments do not start at 0). State as ``Adam``:
    ``(m, v, (β₁ᵗ, β₂ᵗ))``.
    """

    _kernel_name = "Yogi"
    _fields = (
        Field("eta", 0.01, _nonneg),
        _beta,
        _epsilon,
        Field("initial_accumulator", 0.0, _real, keyword_only=True),
    )

    def init(self, x):
        m, v, powers = super().init(x)
        if self.initial_accumulator != 0:
            m.fill(self.initial_accumulator)
            v.fill(self.initial_accumulator)
        return (m, v, powers)

    def _hyper(self, dtype):
        # The kernel's ϵᵣ, inside the root: 0 here (``optimisers.axon.yogi`` sets it).
        return {**super()._hyper(dtype), "eps_root": 0.0}


def _seed(rule: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{rule}: {name} must be an integer, got {value!r}")
    if not 0 <= value < 2**64:
        raise ValueError(f"{rule}: {name} must be in [0, 2**64), got {value}")
    return int(value)


class NoisySGD(_Rule):
    """Gradient descent with annealed Gaussian noise (Neelakantan et al. 2015,
    optax's ``noisy_sgd``): learning rate η (``eta``), ``variance`` and its decay
    γ (``gamma``), and the generator's ``seed``.

    The update is ``η (dx + ξ)``, ``ξ ~ N(0, variance / tᵞ)`` for each element,
    ``t`` this leaf's step from 1. The noise is a pure function of the seed, the
    leaf, ``t`` and the element's index (in C order): ChaCha8 keyed by the seed
    and the leaf's number, on stream ``t`` (``rust/kernels/src/rules/noisy_sgd.rs``).
    The leaf's number is its place in ``setup``'s walk of the model (0, 1, …;
    0 for ``init`` called outside ``setup``), drawn once and kept in the state,
    so a step gives the same bits for any thread count, for ``update`` and
    ``update_``, and after a checkpoint is resumed. Leaves of one ``setup`` get
    independent streams; give separate ``setup`` calls different seeds.
    State ``(t, leaf)``.
    """

    _fields = (
        Field("eta", 0.01, _nonneg),
        Field("variance", 0.1, _nonneg),
        Field("gamma", 0.55, _real),
        Field("seed", 0, _seed, keyword_only=True),
    )

    def init(self, x):
        return (1, _alloc.leaf_number())

    def _kernel(self, dtype):
        hyper = {f: _cast(dtype, getattr(self, f)) for f in ("eta", "variance", "gamma")}
        seed = {"seed_low": float(self.seed & 0xFFFFFFFF), "seed_high": float(self.seed >> 32)}
        return [("NoisySGD", {**hyper, **seed})]

    def _per_leaf(self, state):
        return [float(state[0]), float(state[1])]

    def _with_per_leaf(self, state, values):
        return (int(values[0]), int(values[1]))


# ---------------------------------------------------------------------------
# Trust ratios (LAMB, LARS): a factor per array from the norms of ``x`` and of
# the update, taken by the kernel's `TrustRatio` reduction in the same call.


def _trust(min_norm: float, coef: float, eps: float) -> tuple[str, dict[str, float]]:
    # Kept in float64, as ClipNorm's ω: the kernel takes the norms and the
    # ratio in float64 and rounds the ratio to the array's dtype.
    return ("TrustRatio", {"min_norm": min_norm, "coef": coef, "eps": eps})


class TrustRatio(_Rule):
    """optax's ``scale_by_trust_ratio``: the update times
    ``coef · φ(‖x‖) / (φ(‖dx‖) + ϵ)`` (``coef``, ϵ ``epsilon``), with
    ``φ(n) = n if n > min_norm else min_norm`` and a ratio of 1 when either
    ``φ`` is 0. Norms are 2-norms over the whole array; the ratio is taken in
    float64 and rounded to the array's dtype."""

    _fields = (
        Field("min_norm", 0.0, _nonneg),
        Field("coef", 1.0, _real),
        Field("epsilon", 0.0, _nonneg),
    )

    def init(self, x: np.ndarray) -> None:
        return None

    def _kernel(self, dtype):
        return [_trust(self.min_norm, self.coef, self.epsilon)]


class Lamb(_Moments):
    """LAMB (You et al. 2019, optax's ``lamb``): Adam's moments with decays β
    (``beta``) and ϵ (``epsilon``) give ``a = m̂ / (√v̂ + ϵ) + λ x`` (λ
    ``lambda_``); the update is ``η · r · a`` (η ``eta``) with the trust ratio
    ``r = φ(‖x‖) / φ(‖a‖)``, ``φ(n) = n if n > min_norm else min_norm``, 1 when
    either ``φ`` is 0. State as ``Adam``: ``(m, v, (β₁ᵗ, β₂ᵗ))``.

    One kernel program: ``Adam(1, β, ϵ)``, ``WeightDecay(λ)``, the trust ratio,
    ``Descent(η)``.
    """

    _fields = (
        Field("eta", 0.01, _nonneg),
        _beta,
        _epsilon,
        Field("lambda_", 0.0, _real),
        Field("min_norm", 0.0, _nonneg, keyword_only=True),
    )

    def _kernel(self, dtype):
        direction = {**self._hyper(dtype), "eta": 1.0}
        return [
            ("Adam", direction),
            ("WeightDecay", {"lambda": _cast(dtype, self.lambda_)}),
            _trust(self.min_norm, 1.0, 0.0),
            ("Descent", {"eta": _cast(dtype, self.eta)}),
        ]


class Lars(_Rule):
    """LARS (You et al. 2017) as optax's ``lars``: ``a = dx + λ x`` (λ
    ``lambda_``), scaled by the trust ratio ``coef · ‖x‖ / ‖a‖`` (1 when either
    norm is 0) and by η (``eta``), then momentum ρ (``rho``) as optax's
    ``trace``: ``b = ρ b + u``, update ``b``, or ``ρ b + u`` with ``nesterov``.
    State ``b``.

    One kernel program: ``WeightDecay(λ)``, the trust ratio, ``Descent(η)``,
    the trace.
    """

    _fields = (
        Field("eta", 0.1, _nonneg),
        Field("lambda_", 0.0, _real),
        Field("coef", 0.001, _real),
        Field("rho", 0.9, _real),
        Field("nesterov", False, _flag, keyword_only=True),
    )

    def init(self, x):
        return _zeros(x)

    def _kernel(self, dtype):
        trace = {"mu": _cast(dtype, self.rho), "nesterov": float(self.nesterov)}
        return [
            ("WeightDecay", {"lambda": _cast(dtype, self.lambda_)}),
            _trust(0.0, self.coef, 0.0),
            ("Descent", {"eta": _cast(dtype, self.eta)}),
            ("AxonTrace", trace),
        ]

    def _arrays(self, state):
        return [state]
