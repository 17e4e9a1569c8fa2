"""Old Flux's stateful optimisers (Flux 0.4-0.6, the seed's "Optimisers"
page): ``opt = SGD([W, b], 0.1)`` returns an optimiser over a list of
parameters, and each ``opt()`` steps every one of them in place from its
gradient, then zeroes the gradients.

    W, b = Param(np.random.rand(2, 5)), Param(np.random.rand(2))
    ...                       # fill W.grad and b.grad (a backward pass)
    opt = SGD([W, b], 0.1)
    opt()                     # W.data and b.data updated, W.grad and b.grad zeroed

Each constructor is the Optimisers.jl rule chain old Flux ran, through the
same kernel as ``update_`` (one call for all the parameters): ``decay`` is
Flux's inverse decay ``1/(1 + decay·(t-1))`` at step ``t`` (``InvDecay``, the
first step undecayed), on the gradient before the momentum for ``SGD``,
``Momentum`` and ``Nesterov``, and on the final update for ``ADAM``.
``ADAM`` puts ϵ outside the root, as ``Adam`` (Flux 0.6 put it inside).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .interface import setup, update_
from .rules import AbstractRule, Adam, Descent, InvDecay, OptimiserChain
from .rules import Momentum as _Momentum
from .rules import Nesterov as _Nesterov

__all__ = ["ADAM", "SGD", "Momentum", "Nesterov", "Param"]


class Param:
    """A parameter of old Flux: ``.data`` is the array itself (trained in
    place), ``.grad`` an array of zeros like it, for the backward pass to fill."""

    def __init__(self, x: np.ndarray) -> None:
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            raise TypeError(f"Param needs a NumPy array of floats, got {x!r}")
        if not x.flags.writeable:
            raise ValueError("Param needs a writeable array: it is trained in place")
        self.data = x
        self.grad = np.zeros_like(x)

    def __repr__(self) -> str:
        return f"Param({self.data!r})"


def _number(option: str, value: Any, low: float, high: float | None = None) -> float:
    """``value`` as a float in ``[low, high)`` (``[low, ∞)`` without ``high``),
    or an error naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{option} must be a real number, got {value!r}")
    value = float(value)
    if value < low or (high is not None and not value < high):
        bounds = f"in [{low:g}, {high:g})" if high is not None else f"at least {low:g}"
        raise ValueError(f"{option} must be {bounds}, got {value}")
    return value


class _Optimiser:
    """``opt()`` steps every parameter in place with ``rule``, then zeroes the
    gradients. ``.params``, ``.rule`` and ``.state`` (an Optimisers.jl state
    tree over the list of arrays) are there to look at."""

    def __init__(self, params: Any, rule: AbstractRule) -> None:
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Param):
                raise TypeError(f"params[{i}] is not a Param: {p!r}")
        self.params = params
        self.rule = rule
        self.state = setup(rule, [p.data for p in params])

    def __call__(self) -> None:
        model = [p.data for p in self.params]
        _, model = update_(self.state, model, [p.grad for p in self.params])
        for p, new in zip(self.params, model, strict=True):
            if new is not p.data:  # an array the kernel could not write into
                p.data[...] = new
            p.grad.fill(0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.params)} params, {self.rule!r})"


def _decayed(decay: float) -> list[AbstractRule]:
    return [InvDecay(decay)] if decay else []


class SGD(_Optimiser):
    """Gradient descent: ``p -= η·δp`` for each parameter ``p`` and gradient
    ``δp``, with learning rate η (``eta``) and inverse ``decay``."""

    def __init__(self, params: Any, eta: float = 0.1, *, decay: float = 0.0) -> None:
        eta, decay = _number("eta", eta, 0.0), _number("decay", decay, 0.0)
        super().__init__(params, OptimiserChain(*_decayed(decay), Descent(eta)))


class Momentum(_Optimiser):
    """Gradient descent with learning rate η (``eta``), momentum ρ (``rho``)
    and inverse ``decay`` (on the gradient entering the velocity)."""

    def __init__(
        self, params: Any, eta: float = 0.01, *, rho: float = 0.9, decay: float = 0.0
    ) -> None:
        eta, decay = _number("eta", eta, 0.0), _number("decay", decay, 0.0)
        rho = _number("rho", rho, 0.0, 1.0)
        super().__init__(params, OptimiserChain(*_decayed(decay), _Momentum(eta, rho)))


class Nesterov(_Optimiser):
    """Gradient descent with learning rate η (``eta``), Nesterov momentum ρ
    (``rho``) and inverse ``decay`` (on the gradient entering the velocity)."""

    def __init__(
        self, params: Any, eta: float = 0.01, *, rho: float = 0.9, decay: float = 0.0
    ) -> None:
        eta, decay = _number("eta", eta, 0.0), _number("decay", decay, 0.0)
        rho = _number("rho", rho, 0.0, 1.0)
        super().__init__(params, OptimiserChain(*_decayed(decay), _Nesterov(eta, rho)))


class ADAM(_Optimiser):
    """Adam with learning rate η (``eta``), moment decays ``beta1``, ``beta2``,
    ϵ (``epsilon``, outside the root) and inverse ``decay`` (on the final update)."""

    def __init__(
        self,
        params: Any,
        eta: float = 0.001,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        decay: float = 0.0,
    ) -> None:
        eta, decay = _number("eta", eta, 0.0), _number("decay", decay, 0.0)
        beta = (_number("beta1", beta1, 0.0, 1.0), _number("beta2", beta2, 0.0, 1.0))
        epsilon = _number("epsilon", epsilon, 0.0)
        super().__init__(params, OptimiserChain(Adam(eta, beta, epsilon), *_decayed(decay)))
