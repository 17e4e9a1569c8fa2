"""Axon v0.4.1's optimisers (``Axon.Optimizers``, the seed) in Python spelling.

Each function returns a rule that runs in the kernel: a built-in rule where
Axon's formula is the Optimisers.jl rule's, else a rule of this module (its
own kernel in ``rust/kernels/src/rules/axon.rs``), or a chain of them.
Learning rates are numbers (Axon's ``scale(-lr)``); a schedule goes through
``adjust_``. Axon adds its updates; here, as everywhere in ``optimisers``,
the update ``u`` is subtracted (``x ← x − u``), so the signs below are flipped.

Where Axon's code departs from its defaults as documented, the documented
defaults are used (they are the seed: ``yogi``'s ``eps=1e-8`` and
``initial_accumulator_value=0.0``, ``noisy_sgd``'s ``eta=0.1``,
``adamw``'s and ``lamb``'s ``eps_root=0.0``); where its code departs from
its own references (AdaBelief's second moment, RAdam's ``ρ∞``), the paper is
followed, as optax does.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

from .rules import (
    AbstractRule,
    Descent,
    Field,
    Lamb,
    NoisySGD,
    OptimiserChain,
    RAdam,
    TrustRatio,
    WeightDecay,
    Yogi,
    _beta,
    _cast,
    _eps,
    _epsilon,
    _eta,
    _flag,
    _full,
    _Moments,
    _nonneg,
    _real,
    _Rule,
    _zeros,
)

__all__ = [
    "AxonAdaBelief",
    "AxonAdaGrad",
    "AxonAdam",
    "AxonRAdam",
    "AxonRMSProp",
    "AxonTrace",
    "AxonYogi",
    "adabelief",
    "adagrad",
    "adam",
    "adamw",
    "lamb",
    "noisy_sgd",
    "radam",
    "rmsprop",
    "sgd",
    "yogi",
]


# ---------------------------------------------------------------------------
# The rules Axon's formulas need (kernels in rust/kernels/src/rules/axon.rs).

_eps_root = Field("eps_root", 0.0, _nonneg, keyword_only=True)


class _Rooted(_Moments):
    """Adam's moments with ϵᵣ (``eps_root``) inside the root."""

    _fields = (_eta, _beta, _epsilon, _eps_root)

    def _hyper(self, dtype):
        return {**super()._hyper(dtype), "eps_root": _cast(dtype, self.eps_root)}


class AxonAdam(_Rooted):
    """Axon's Adam: ``η m̂ / (√(v̂ + ϵᵣ) + ϵ)``, η (``eta``), β (``beta``),
    ϵ (``epsilon``), ϵᵣ (``eps_root``). State as ``Adam``."""

    _kernel_name = "AxonAdam"


class AxonAdaBelief(_Rooted):
    """AdaBelief as the paper and optax: ``s = β₂ s + (1-β₂)(dx - m)²``,
    ``η m̂ / (√(ŝ + ϵᵣ) + ϵ)``; ϵᵣ (``eps_root``) is not added into ``s``
    (Optimisers.jl adds its ϵ to ``s`` each step). State ``(m, s, (β₁ᵗ, β₂ᵗ))``."""

    _kernel_name = "AxonAdaBelief"


class AxonRAdam(RAdam):
    """RAdam with ϵᵣ (``eps_root``) inside the root, rectified while
    ``ρₜ ≥ threshold`` (Optimisers.jl: ``ρₜ > 4``), ``ρ∞ = 2/(1-β₂) - 1``.
    State as ``RAdam``."""

    _kernel_name = "AxonRAdam"
    _fields = (_eta, _beta, _epsilon, _eps_root, Field("threshold", 5.0, _real, keyword_only=True))

    def _hyper(self, dtype):
        eps_root, threshold = _cast(dtype, self.eps_root), _cast(dtype, self.threshold)
        return {**super()._hyper(dtype), "eps_root": eps_root, "threshold": threshold}


class AxonYogi(Yogi):
    """``Yogi`` with ϵᵣ (``eps_root``) inside the root: ``η m̂ / (√(v̂ + ϵᵣ) + ϵ)``."""

    _fields = (*Yogi._fields, _eps_root)

    def _hyper(self, dtype):
        return {**_Moments._hyper(self, dtype), "eps_root": _cast(dtype, self.eps_root)}


class AxonAdaGrad(_Rule):
    """Axon's AdaGrad (``scale_by_rss``): ``s += dx²``, ``u = η dx / √(s + ϵ)``
    (0 where ``s`` is 0), ϵ inside the root, ``s`` from
    ``initial_accumulator_value`` (Axon: 0.1). State ``s``."""

    _fields = (
        _eta,
        Field("epsilon", 1e-7, _nonneg),
        Field("initial_accumulator_value", 0.1, _nonneg, keyword_only=True),
    )

    def init(self, x):
        return _full(x, _cast(x.dtype, self.initial_accumulator_value))

    def _kernel(self, dtype):
        return [
            ("AxonAdaGrad", {"eta": _cast(dtype, self.eta), "epsilon": _eps(dtype, self.epsilon)})
        ]

    def _arrays(self, state):
        return [state]


class AxonRMSProp(_Rule):
    """Axon's RMSProp (``scale_by_rms``, ``scale_by_stddev`` when centred):
    ``v = ρ v + (1-ρ) dx²`` from ``initial_scale``, and when centred
    ``m = ρ m + (1-ρ) dx``; ``u = η dx / √(v + ϵ)`` or ``η dx / √(v - m² + ϵ)``:
    ϵ inside the root (Optimisers.jl: outside), no bias correction. State
    ``(v, m or False)``."""

    _fields = (
        _eta,
        Field("rho", 0.9, _real),
        _epsilon,
        Field("centred", False, _flag, keyword_only=True),
        Field("initial_scale", 0.0, _nonneg, keyword_only=True),
    )
    _aliases: ClassVar[dict[str, str]] = {"centered": "centred"}

    def init(self, x):
        v = _full(x, _cast(x.dtype, self.initial_scale))
        return (v, _zeros(x) if self.centred else False)

    def _kernel(self, dtype):
        kind = "AxonRMSPropCentred" if self.centred else "AxonRMSProp"
        hyper = {
            "eta": _cast(dtype, self.eta),
            "rho": _cast(dtype, self.rho),
            "epsilon": _eps(dtype, self.epsilon),
        }
        return [(kind, hyper)]

    def _arrays(self, state):
        return list(state) if self.centred else [state[0]]


class AxonTrace(_Rule):
    """optax's and Axon's ``trace``: ``b = μ b + dx``, update ``b``, or
    ``μ b + dx`` with ``nesterov``; μ is ``mu``. State ``b``."""

    _fields = (Field("mu", 0.9, _real), Field("nesterov", False, _flag, keyword_only=True))

    def init(self, x):
        return _zeros(x)

    def _kernel(self, dtype):
        return [("AxonTrace", {"mu": _cast(dtype, self.mu), "nesterov": float(self.nesterov)})]

    def _arrays(self, state):
        return [state]


# ---------------------------------------------------------------------------
# Checks of the options, each error naming its option.


def _number(option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{option} must be a real number, got {value!r}")
    return float(value)


def _at_least_zero(option: str, value: Any) -> float:
    value = _number(option, value)
    if not value >= 0:
        raise ValueError(f"{option} cannot be negative, got {value}")
    return value


def _fraction(option: str, value: Any) -> float:
    """A decay or momentum: in [0, 1)."""
    value = _number(option, value)
    if not 0 <= value < 1:
        raise ValueError(f"{option} must be in [0, 1), got {value}")
    return value


def _betas(b1: Any, b2: Any) -> tuple[float, float]:
    return (_fraction("b1", b1), _fraction("b2", b2))


def _momentum(momentum: Any, nesterov: Any) -> float | None:
    if not isinstance(nesterov, bool):
        raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
    if momentum is None:
        if nesterov:
            raise ValueError("nesterov=True needs a momentum")
        return None
    return _fraction("momentum", momentum)


# ---------------------------------------------------------------------------
# The functions of Axon.Optimizers.


def adam(
    learning_rate: float = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 1e-15,
) -> AbstractRule:
    """Adam: ``m = EMA_b1(m, g)``, ``v = EMA_b2(v, g²)``,
    ``u = lr · m̂ / (√(v̂ + eps_root) + eps)``.

    Optimisers.jl's ``Adam`` has no ``eps_root`` (0); with Axon's 1e-15 the
    steps differ where ``v̂ ≲ 1e-15``.
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    eps, eps_root = _at_least_zero("eps", eps), _at_least_zero("eps_root", eps_root)
    return AxonAdam(lr, _betas(b1, b2), eps, eps_root=eps_root)


def adamw(
    learning_rate: float = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    decay: float = 0.0,
) -> AbstractRule:
    """AdamW: ``u = lr · (m̂ / (√(v̂ + eps_root) + eps) + decay · x)``, the decay
    coupled to the learning rate (Optimisers.jl's ``AdamW(couple=True)``).

    ``eps_root`` defaults to 0.0 as Axon documents it; Axon's code passes its
    Adam's 1e-15 instead. The chain ``AxonAdam(1), WeightDecay(decay),
    Descent(lr)`` is Axon's composition, one pass in the kernel.
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    eps, eps_root = _at_least_zero("eps", eps), _at_least_zero("eps_root", eps_root)
    decay = _at_least_zero("decay", decay)
    direction = AxonAdam(1.0, _betas(b1, b2), eps, eps_root=eps_root)
    return OptimiserChain(direction, WeightDecay(decay), Descent(lr))


def adabelief(
    learning_rate: float = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 0.0,
    eps_root: float = 1e-16,
) -> AbstractRule:
    """AdaBelief: ``m = EMA_b1(m, g)``, ``s = EMA_b2(s, (g − m)²)``,
    ``u = lr · m̂ / (√(ŝ + eps_root) + eps)``.

    Axon's code takes the second moment of ``g``, not ``g − m`` (its AdaBelief
    is Adam); this follows the paper, as optax does, but unlike optax does
    not add ``eps_root`` into ``s``. Optimisers.jl's ``AdaBelief`` adds its ϵ
    to ``s`` every step and puts the same ϵ outside the root.
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    eps, eps_root = _at_least_zero("eps", eps), _at_least_zero("eps_root", eps_root)
    return AxonAdaBelief(lr, _betas(b1, b2), eps, eps_root=eps_root)


def adagrad(learning_rate: float = 1e-3, *, eps: float = 1e-7) -> AbstractRule:
    """AdaGrad: ``s₀ = 0.1``, ``s = s + g²``, ``u = lr · g / √(s + eps)``.

    Optimisers.jl's ``AdaGrad`` starts ``s`` at ϵ and puts ϵ outside the root;
    Axon's 0.1 start is in its code, not its documentation.
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    return AxonAdaGrad(lr, _at_least_zero("eps", eps))


def radam(
    learning_rate: float = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
) -> AbstractRule:
    """Rectified Adam: with ``ρ∞ = 2/(1 − b2) − 1`` and
    ``ρₜ = ρ∞ − 2t·b2ᵗ/(1 − b2ᵗ)``, ``u = lr · r · m̂ / (√(v̂ + eps_root) + eps)``
    with ``r = √((ρₜ−4)(ρₜ−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρₜ))`` while ``ρₜ ≥ threshold``,
    else ``u = lr · m̂``.

    Axon's code takes ``ρ∞`` from ``b1`` (rectifying only from step 6890);
    this follows the paper, as optax does. Optimisers.jl's ``RAdam``
    rectifies while ``ρₜ > 4`` and has no ``eps_root``.
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    eps, eps_root = _at_least_zero("eps", eps), _at_least_zero("eps_root", eps_root)
    threshold = _number("threshold", threshold)
    return AxonRAdam(lr, _betas(b1, b2), eps, eps_root=eps_root, threshold=threshold)


def rmsprop(
    learning_rate: float = 1e-2,
    *,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    initial_scale: float = 0.0,
    decay: float = 0.9,
    eps: float = 1e-8,
) -> AbstractRule:
    """RMSProp: ``v₀ = initial_scale``, ``v = EMA_decay(v, g²)`` (and, if
    ``centered``, ``m = EMA_decay(m, g)``), ``d = lr · g / √(v + eps)`` (or
    ``√(v − m² + eps)``); then, with ``momentum`` μ, ``b = μb + d`` and
    ``u = b`` (``u = μb + d`` with ``nesterov``), else ``u = d``.

    Optimisers.jl's ``RMSProp`` puts ϵ outside the root and has neither
    momentum nor ``initial_scale``; torch runs its momentum before the
    learning rate, Axon after (the two differ when the rate changes).
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    if not isinstance(centered, bool):
        raise TypeError(f"centered must be True or False, got {centered!r}")
    mu = _momentum(momentum, nesterov)
    scale = _at_least_zero("initial_scale", initial_scale)
    rule = AxonRMSProp(
        lr, _fraction("decay", decay), _at_least_zero("eps", eps),
        centred=centered, initial_scale=scale,
    )  # fmt: skip
    if mu is None:
        return rule
    return OptimiserChain(rule, AxonTrace(mu, nesterov=nesterov))


def sgd(
    learning_rate: float = 1e-2, *, momentum: float | None = None, nesterov: bool = False
) -> AbstractRule:
    """Stochastic gradient descent: ``u = lr · g``; with ``momentum`` μ,
    ``b = μb + g`` and ``u = lr · b`` (``u = lr · (g + μb)`` with
    ``nesterov``), as torch and optax.

    Optimisers.jl's ``Momentum`` keeps the learning rate inside its velocity
    and ``Nesterov`` writes the same step another way: equal at a constant
    rate, different when it changes.
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    mu = _momentum(momentum, nesterov)
    if mu is None:
        return Descent(lr)
    return OptimiserChain(AxonTrace(mu, nesterov=nesterov), Descent(lr))


def yogi(
    learning_rate: float = 1e-2,
    *,
    initial_accumulator_value: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> AbstractRule:
    """Yogi: ``m₀ = v₀ = initial_accumulator_value``, ``m = EMA_b1(m, g)``,
    ``v = v − (1 − b2)·sign(v − g²)·g²``, ``u = lr · m̂ / (√(v̂ + eps_root) + eps)``.

    ``Yogi`` itself when ``eps_root`` is 0. The defaults are Axon's documented
    ones; its code (and optax, and the paper) use ``eps=1e-3`` and
    ``initial_accumulator_value=1e-6``.
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    eps, eps_root = _at_least_zero("eps", eps), _at_least_zero("eps_root", eps_root)
    start = _number("initial_accumulator_value", initial_accumulator_value)
    if eps_root == 0:
        return Yogi(lr, _betas(b1, b2), eps, initial_accumulator=start)
    return AxonYogi(lr, _betas(b1, b2), eps, initial_accumulator=start, eps_root=eps_root)


def lamb(
    learning_rate: float = 1e-2,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    decay: float = 0.0,
    min_norm: float = 0.0,
) -> AbstractRule:
    """LAMB: ``a = m̂ / (√(v̂ + eps_root) + eps) + decay · x``,
    ``u = lr · φ(‖x‖) / φ(‖a‖) · a`` with ``φ(n) = n if n > min_norm else
    min_norm`` (a ratio of 1 when either ``φ`` is 0), per array.

    ``Lamb`` itself when ``eps_root`` is 0 (Axon's documented default; its code
    passes its Adam's 1e-15); else Axon's composition ``AxonAdam(1),
    WeightDecay(decay), TrustRatio(min_norm), Descent(lr)``, one call in the
    kernel either way.
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    eps, eps_root = _at_least_zero("eps", eps), _at_least_zero("eps_root", eps_root)
    decay, min_norm = _at_least_zero("decay", decay), _at_least_zero("min_norm", min_norm)
    if eps_root == 0:
        return Lamb(lr, _betas(b1, b2), eps, decay, min_norm=min_norm)
    direction = AxonAdam(1.0, _betas(b1, b2), eps, eps_root=eps_root)
    return OptimiserChain(direction, WeightDecay(decay), TrustRatio(min_norm), Descent(lr))


def noisy_sgd(
    learning_rate: float = 1e-2, *, eta: float = 0.1, gamma: float = 0.55, seed: int = 0
) -> AbstractRule:
    """Gradient descent with annealed noise: ``u = lr · (g + ξ)``,
    ``ξ ~ N(0, eta / tᵞ)``: ``NoisySGD(learning_rate, variance=eta, gamma, seed)``.

    This is the paper's and optax's noise (``eta/tᵞ`` a variance, added before
    the learning rate) with the seed's documented ``eta=0.1``. Axon's code
    uses ``eta/tᵞ`` as a standard deviation, adds the noise after the
    learning rate, and defaults ``eta`` to 0.01.
    """
    lr = _at_least_zero("learning_rate", learning_rate)
    variance = _at_least_zero("eta", eta)
    return NoisySGD(lr, variance, _number("gamma", gamma), seed=seed)
