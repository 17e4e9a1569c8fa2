"""Plain in-place NumPy implementations of every rule, the baseline of
``bench_step.py``: what a careful user would write without this package.

Every operation is a NumPy ufunc writing into a preallocated array (``out=``),
so a step allocates nothing; each ufunc is one pass over memory, which is the
cost being measured. Scratch buffers are shared by all leaves (sized for the
largest), as a multi-tensor NumPy loop would do.

The formulas are those of ``rust/kernels/src/rules/*.rs`` (Optimisers.jl's
``apply!``), with the hyper-parameters taken from an ``optimisers`` rule
object, so both sides run the same rule with the same numbers.

    opt = NumpyOptimiser(optimisers.Adam(), params)   # params: list of arrays
    opt.step(params, grads)                           # updates params in place
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import optimisers as o

# ---------------------------------------------------------------------------
# One rule: `init(x)` gives its per-leaf state (a dict); `apply(x, u, d, t, s)`
# reads the incoming update `u` (the gradient, or the update of the rule
# before it in a chain, possibly the same array as `d`) and returns the array
# holding its own update: `d`, or one of its state arrays. `t` is a list of
# scratch arrays shaped like `x`.


class _Rule:
    scratch = 1  # scratch arrays needed

    def init(self, x: np.ndarray) -> dict[str, Any]:
        return {}

    def apply(self, x, u, d, t, s):
        raise NotImplementedError


class Descent(_Rule):
    def __init__(self, r):
        self.eta = r.eta

    def apply(self, x, u, d, t, s):
        np.multiply(u, self.eta, out=d)
        return d


class WeightDecay(_Rule):
    def __init__(self, r):
        self.lam = r.lambda_

    def apply(self, x, u, d, t, s):
        np.multiply(x, self.lam, out=t[0])
        np.add(u, t[0], out=d)
        return d


class SignDecay(_Rule):
    def __init__(self, r):
        self.lam = r.lambda_

    def apply(self, x, u, d, t, s):
        np.sign(x, out=t[0])
        t[0] *= self.lam
        np.add(u, t[0], out=d)
        return d


class ClipGrad(_Rule):
    def __init__(self, r):
        self.delta = r.delta

    def apply(self, x, u, d, t, s):
        np.clip(u, -self.delta, self.delta, out=d)
        return d


class ClipNorm(_Rule):
    def __init__(self, r):
        self.omega, self.p = r.omega, r.p

    def apply(self, x, u, d, t, s):
        flat = u.reshape(-1)
        if self.p == 2:
            norm = math.sqrt(float(np.dot(flat, flat)))
        else:
            norm = float(np.linalg.norm(flat, self.p))
        np.multiply(u, min(self.omega / norm, 1.0) if norm > 0 else 1.0, out=d)
        return d


class Momentum(_Rule):
    def __init__(self, r):
        self.eta, self.rho = r.eta, r.rho

    def init(self, x):
        return {"v": np.zeros_like(x)}

    def apply(self, x, u, d, t, s):
        v = s["v"]
        v *= self.rho
        np.multiply(u, self.eta, out=t[0])
        v += t[0]
        return v


class Nesterov(_Rule):
    scratch = 2

    def __init__(self, r):
        self.eta, self.rho = r.eta, r.rho

    def init(self, x):
        return {"v": np.zeros_like(x)}

    def apply(self, x, u, d, t, s):
        v, rho = s["v"], self.rho
        np.multiply(u, self.eta, out=t[0])  # η dx
        np.multiply(t[0], 1 + rho, out=t[1])
        np.multiply(v, -rho * rho, out=d)
        d += t[1]
        v *= rho
        v -= t[0]
        return d


class Rprop(_Rule):
    scratch = 2

    def __init__(self, r):
        self.eta, self.ell, self.gamma = r.eta, r.ell, r.gamma

    def init(self, x):
        return {
            "g": np.zeros_like(x),
            "step": np.full_like(x, self.eta),
            "pos": np.empty(x.shape, dtype=bool),
            "neg": np.empty(x.shape, dtype=bool),
        }

    def apply(self, x, u, d, t, s):
        g, step, pos, neg = s["g"], s["step"], s["pos"], s["neg"]
        np.multiply(g, u, out=t[0])
        np.greater(t[0], 0, out=pos)
        np.less(t[0], 0, out=neg)
        np.multiply(step, self.ell[1], out=t[1])
        np.minimum(t[1], self.gamma[1], out=t[1])
        np.copyto(step, t[1], where=pos)
        np.multiply(step, self.ell[0], out=t[1])
        np.maximum(t[1], self.gamma[0], out=t[1])
        np.copyto(step, t[1], where=neg)
        np.copyto(g, u)
        np.copyto(g, 0, where=neg)
        np.sign(g, out=d)
        d *= step
        return d


class RMSProp(_Rule):
    def __init__(self, r):
        self.eta, self.rho, self.eps, self.centred = r.eta, r.rho, r.epsilon, r.centred

    def init(self, x):
        s = {"quad": np.zeros_like(x)}
        if self.centred:
            s["lin"] = np.zeros_like(x)
        return s

    def apply(self, x, u, d, t, s):
        rho, q = self.rho, s["quad"]
        q *= rho
        np.multiply(u, u, out=t[0])
        t[0] *= 1 - rho
        q += t[0]
        if self.centred:
            lin = s["lin"]
            lin *= rho
            np.multiply(u, 1 - rho, out=t[0])
            lin += t[0]
            np.multiply(lin, lin, out=t[0])
            np.subtract(q, t[0], out=t[0])
            np.sqrt(t[0], out=t[0])
        else:
            np.sqrt(q, out=t[0])
        t[0] += self.eps
        np.divide(u, t[0], out=d)
        d *= self.eta
        return d


class _Moments(_Rule):
    """The Adam family: first and second moments, per-leaf powers βᵗ."""

    def __init__(self, r):
        self.eta, self.beta, self.eps = r.eta, r.beta, r.epsilon

    def init(self, x):
        b1, b2 = self.beta
        return {"m": np.zeros_like(x), "v": np.zeros_like(x), "bt": [b1, b2], "t": 1}

    def moments(self, u, t, s):
        b1, b2 = self.beta
        m, v = s["m"], s["v"]
        m *= b1
        np.multiply(u, 1 - b1, out=t[0])
        m += t[0]
        v *= b2
        np.multiply(u, u, out=t[0])
        t[0] *= 1 - b2
        v += t[0]

    def direction(self, d, t, s, eta):
        """d = η m / (1-β₁ᵗ) / (√(v / (1-β₂ᵗ)) + ϵ)."""
        b1t, b2t = s["bt"]
        np.divide(s["v"], 1 - b2t, out=t[0])
        np.sqrt(t[0], out=t[0])
        t[0] += self.eps
        np.divide(s["m"], t[0], out=d)
        d *= eta / (1 - b1t)

    def advance(self, s):
        s["bt"] = [s["bt"][0] * self.beta[0], s["bt"][1] * self.beta[1]]
        s["t"] += 1


class Adam(_Moments):
    def apply(self, x, u, d, t, s):
        self.moments(u, t, s)
        self.direction(d, t, s, self.eta)
        self.advance(s)
        return d


class RAdam(_Moments):
    def apply(self, x, u, d, t, s):
        self.moments(u, t, s)
        b2 = self.beta[1]
        b1t, b2t = s["bt"]
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * s["t"] * b2t / (1 - b2t)
        if rho > 4:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            self.direction(d, t, s, self.eta * r)
        else:
            np.multiply(s["m"], self.eta / (1 - b1t), out=d)
        self.advance(s)
        return d


class AdaMax(_Moments):
    def apply(self, x, u, d, t, s):
        b1, b2 = self.beta
        m, um = s["m"], s["v"]
        m *= b1
        np.multiply(u, 1 - b1, out=t[0])
        m += t[0]
        um *= b2
        np.abs(u, out=t[0])
        np.maximum(um, t[0], out=um)
        np.add(um, self.eps, out=t[0])
        np.divide(m, t[0], out=d)
        d *= self.eta / (1 - s["bt"][0])
        self.advance(s)
        return d


class OAdam(_Moments):
    def init(self, x):
        return {**super().init(x), "term": np.zeros_like(x)}

    def apply(self, x, u, d, t, s):
        self.moments(u, t, s)
        self.direction(t[0], t, s, self.eta)  # the new term, in t[0]
        np.multiply(t[0], 2, out=d)
        d -= s["term"]
        np.copyto(s["term"], t[0])
        self.advance(s)
        return d


class NAdam(_Moments):
    scratch = 2

    def apply(self, x, u, d, t, s):
        b1, b2 = self.beta
        b1t, b2t = s["bt"]
        self.moments(u, t, s)
        np.multiply(s["m"], b1 / (1 - b1 * b1t), out=t[0])
        np.multiply(u, (1 - b1) / (1 - b1t), out=t[1])
        t[0] += t[1]
        np.multiply(s["v"], b2 / (1 - b2t), out=t[1])
        np.sqrt(t[1], out=t[1])
        t[1] += self.eps
        np.divide(t[0], t[1], out=d)
        d *= self.eta
        self.advance(s)
        return d


class AdamW(_Moments):
    def __init__(self, r):
        super().__init__(r)
        self.lam, self.couple = r.lambda_, r.couple

    def apply(self, x, u, d, t, s):
        self.moments(u, t, s)
        if self.couple:  # η (a + λ x)
            self.direction(d, t, s, 1.0)
            np.multiply(x, self.lam, out=t[0])
            d += t[0]
            d *= self.eta
        else:  # η a + λ x
            self.direction(d, t, s, self.eta)
            np.multiply(x, self.lam, out=t[0])
            d += t[0]
        self.advance(s)
        return d


class AdaBelief(_Moments):
    def apply(self, x, u, d, t, s):
        b1, b2 = self.beta
        m, sv = s["m"], s["v"]
        m *= b1
        np.multiply(u, 1 - b1, out=t[0])
        m += t[0]
        np.subtract(u, m, out=t[0])
        np.multiply(t[0], t[0], out=t[0])
        t[0] *= 1 - b2
        sv *= b2
        sv += t[0]
        sv += self.eps
        self.direction(d, t, s, self.eta)
        self.advance(s)
        return d


class AMSGrad(_Rule):
    def __init__(self, r):
        self.eta, self.beta, self.eps = r.eta, r.beta, r.epsilon

    def init(self, x):
        return {k: np.full_like(x, self.eps) for k in ("m", "v", "vhat")}

    def apply(self, x, u, d, t, s):
        b1, b2 = self.beta
        m, v, vh = s["m"], s["v"], s["vhat"]
        m *= b1
        np.multiply(u, 1 - b1, out=t[0])
        m += t[0]
        v *= b2
        np.multiply(u, u, out=t[0])
        t[0] *= 1 - b2
        v += t[0]
        np.maximum(vh, v, out=vh)
        np.sqrt(vh, out=t[0])
        t[0] += self.eps
        np.divide(m, t[0], out=d)
        d *= self.eta
        return d


class AdaGrad(_Rule):
    def __init__(self, r):
        self.eta, self.eps = r.eta, r.epsilon

    def init(self, x):
        return {"acc": np.full_like(x, self.eps)}

    def apply(self, x, u, d, t, s):
        acc = s["acc"]
        np.multiply(u, u, out=t[0])
        acc += t[0]
        np.sqrt(acc, out=t[0])
        t[0] += self.eps
        np.divide(u, t[0], out=d)
        d *= self.eta
        return d


class AdaDelta(_Rule):
    scratch = 2

    def __init__(self, r):
        self.rho, self.eps = r.rho, r.epsilon

    def init(self, x):
        return {"acc": np.zeros_like(x), "dacc": np.zeros_like(x)}

    def apply(self, x, u, d, t, s):
        rho, eps, acc, dacc = self.rho, self.eps, s["acc"], s["dacc"]
        acc *= rho
        np.multiply(u, u, out=t[0])
        t[0] *= 1 - rho
        acc += t[0]
        np.add(dacc, eps, out=t[0])
        np.sqrt(t[0], out=t[0])
        np.add(acc, eps, out=t[1])
        np.sqrt(t[1], out=t[1])
        np.divide(t[0], t[1], out=t[0])
        np.multiply(u, t[0], out=d)
        dacc *= rho
        np.multiply(d, d, out=t[0])
        t[0] *= 1 - rho
        dacc += t[0]
        return d


class Lion(_Rule):
    scratch = 2

    def __init__(self, r):
        self.eta, self.beta = r.eta, r.beta

    def init(self, x):
        return {"m": np.zeros_like(x)}

    def apply(self, x, u, d, t, s):
        b1, b2 = self.beta
        m = s["m"]
        m *= 1 - b2
        np.multiply(u, b2, out=t[0])
        m += t[0]
        np.multiply(u, b2 - b1, out=t[0])
        np.multiply(m, b1, out=t[1])
        t[0] += t[1]
        np.sign(t[0], out=d)
        d *= self.eta
        return d


_RULES: dict[type, Any] = {
    o.Descent: Descent,
    o.WeightDecay: WeightDecay,
    o.SignDecay: SignDecay,
    o.ClipGrad: ClipGrad,
    o.ClipNorm: ClipNorm,
    o.Momentum: Momentum,
    o.Nesterov: Nesterov,
    o.Rprop: Rprop,
    o.RMSProp: RMSProp,
    o.Adam: Adam,
    o.RAdam: RAdam,
    o.AdaMax: AdaMax,
    o.OAdam: OAdam,
    o.NAdam: NAdam,
    o.AdamW: AdamW,
    o.AdaBelief: AdaBelief,
    o.AMSGrad: AMSGrad,
    o.AdaGrad: AdaGrad,
    o.AdaDelta: AdaDelta,
    o.Lion: Lion,
}


def numpy_rules(rule: Any) -> list[_Rule]:
    """The NumPy rules running `rule` (an ``optimisers`` rule or chain), in order."""
    if isinstance(rule, o.OptimiserChain):
        chain: Any = rule
        return [r for inner in chain.rules for r in numpy_rules(inner)]
    try:
        return [_RULES[type(rule)](rule)]
    except KeyError:
        raise NotImplementedError(f"no NumPy reference for {rule!r}") from None


class NumpyOptimiser:
    """A rule or chain over a list of arrays, stepped in place with NumPy ufuncs."""

    def __init__(self, rule: Any, params: list[np.ndarray]):
        self.rules = numpy_rules(rule)
        self.states = [[r.init(x) for r in self.rules] for x in params]
        largest = max(x.size for x in params)
        dtype = params[0].dtype
        scratch = 1 + max(r.scratch for r in self.rules)
        buffers = [np.empty(largest, dtype=dtype) for _ in range(scratch)]
        # Views of the shared scratch per leaf, made once: d, then t[0], t[1], ...
        self.views = [[b[: x.size].reshape(x.shape) for b in buffers] for x in params]

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        for x, g, states, (d, *t) in zip(params, grads, self.states, self.views):
            u = g
            for r, s in zip(self.rules, states):
                u = r.apply(x, u, d, t, s)
            x -= u
