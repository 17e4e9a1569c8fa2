"""Reference implementation of the Optimisers.jl rules, written with plain NumPy.

The test suite compares the real (Rust-backed) package against this module, step by
step. Each rule below transcribes ``init`` / ``apply!`` of Optimisers.jl's
``src/rules.jl``: the same state layout, the same order of floating-point operations,
and every hyper-parameter converted to the array's element type ``T`` before use
(``T(x)`` in Julia, ``T(x)`` here with ``T = x.dtype.type``). Float16 arrays are
handled with NumPy's float16 arithmetic, which, like Julia, rounds after every
elementwise operation.

Rules are only inspected through their public attributes and dispatched on
``type(rule).__name__``, so this module never imports the package under test.

Public API::

    init(rule, x) -> state
    apply(rule, state, x, dx) -> (new_state, update_or_None)
    step(rule, state, x, dx) -> (new_state, new_x)
    trajectory(rule, x0, grads) -> (states, xs)

``apply`` never mutates its arguments: state arrays are copied before use.
"""

from __future__ import annotations

import copy
import math

import numpy as np

__all__ = [
    "apply",
    "clipnorm_norm",
    "eps_value",
    "global_clip",
    "init",
    "step",
    "trajectory",
]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _T(x: np.ndarray):
    """The NumPy scalar type of the array's elements (Julia's ``T``)."""
    return np.asarray(x).dtype.type


def _arr(v, T) -> np.ndarray:
    """Make sure a result is an ndarray of type ``T`` (0-d ops return NumPy scalars)."""
    out = np.asarray(v)
    if out.dtype != np.dtype(T):
        raise AssertionError(f"oracle bug: got dtype {out.dtype}, expected {np.dtype(T)}")
    return out


def _copy(v):
    """Copy a state value (arrays are copied, tuples copied recursively)."""
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, tuple):
        return tuple(_copy(e) for e in v)
    return v


def _pair(T, values):
    """Julia's ``T.(tuple)`` for a 2-tuple of hyper-parameters."""
    a, b = values
    return (T(a), T(b))


def eps_value(T, e):
    """Optimisers.jl's ``_eps(T, e)``: ``T(e)``, but with a floor for Float16."""
    if np.dtype(T) == np.dtype(np.float16):
        if e == 0:
            return np.float16(0)
        return max(np.float16(1e-7), np.float16(e))
    return T(e)


def _onevalue(value, x: np.ndarray) -> np.ndarray:
    """Optimisers.jl's ``onevalue(λ, x)``: an array like ``x`` filled with ``T(λ)``."""
    T = _T(x)
    return np.full(np.shape(x), T(value), dtype=T)


def _zero(x: np.ndarray) -> np.ndarray:
    return np.zeros(np.shape(x), dtype=_T(x))


def _sign(v: np.ndarray) -> np.ndarray:
    """Julia's ``sign`` for floats: keeps ``±0`` and ``NaN`` as they are."""
    v = np.asarray(v)
    T = v.dtype.type
    return _arr(np.where(v < 0, T(-1), np.where(v > 0, T(1), v)), T)


def _clamp(v: np.ndarray, lo, hi) -> np.ndarray:
    """Julia's ``clamp(v, lo, hi)`` (NaN passes through)."""
    v = np.asarray(v)
    T = v.dtype.type
    return _arr(np.where(v > hi, hi, np.where(v < lo, lo, v)), T)


def _bias(βt, T):
    """``1 - βt`` computed in ``T``."""
    return T(1) - βt


# ---------------------------------------------------------------------------
# ClipNorm's norm (LinearAlgebra.norm semantics, accumulated in float64)
# ---------------------------------------------------------------------------


def clipnorm_norm(dx: np.ndarray, p) -> float:
    """``norm(dx, p)`` as LinearAlgebra computes it, in float64."""
    a = np.abs(np.asarray(dx, dtype=np.float64)).ravel()
    p = float(p)
    if a.size == 0:
        return 0.0
    with np.errstate(all="ignore"):
        if p == 2:
            maxabs = float(np.max(a))
            if maxabs == 0 or math.isinf(maxabs):
                return maxabs
            if math.isfinite(a.size * maxabs * maxabs) and maxabs * maxabs != 0:
                return float(np.sqrt(np.sum(a * a)))
            s = a / maxabs
            return float(maxabs * np.sqrt(np.sum(s * s)))
        if p == 1:
            return float(np.sum(a))
        if p == math.inf:
            return float(np.max(a))
        if p == -math.inf:
            return float(np.min(a))
        if p == 0:
            return float(np.count_nonzero(a))
        # generic p, with LinearAlgebra.generic_normp's rescaling for |p| > 1
        if p > 1 or p < -1:
            maxabs = np.max(a) if p > 1 else np.min(a)
            if maxabs == 0 or np.isinf(maxabs):
                return float(maxabs)
            mp = maxabs ** np.float64(p)
            if math.isfinite(a.size * mp) and mp != 0:
                return float(np.sum(a**p) ** (1.0 / p))
            return float(maxabs * np.sum((a / maxabs) ** p) ** (1.0 / p))
        return float(np.sum(a**p) ** (1.0 / p))


# ---------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------


def _init_none(rule, x):
    return None


def _init_zero(rule, x):
    return _zero(x)


def _init_rprop(rule, x):
    return (_zero(x), _onevalue(rule.eta, x))


def _init_rmsprop(rule, x):
    return (_zero(x), _zero(x) if rule.centred else False)


def _init_adam_like(rule, x):
    return (_zero(x), _zero(x), _pair(_T(x), rule.beta))


def _init_radam(rule, x):
    return (_zero(x), _zero(x), _pair(_T(x), rule.beta), 1)


def _init_oadam(rule, x):
    return (_zero(x), _zero(x), _pair(_T(x), rule.beta), _zero(x))


def _init_adagrad(rule, x):
    return _onevalue(rule.epsilon, x)


def _init_adadelta(rule, x):
    return (_zero(x), _zero(x))


def _init_amsgrad(rule, x):
    return (
        _onevalue(rule.epsilon, x),
        _onevalue(rule.epsilon, x),
        _onevalue(rule.epsilon, x),
    )


def _init_invdecay(rule, x):
    return 0


def _init_yogi(rule, x):
    T = _T(x)
    return (
        _onevalue(rule.initial_accumulator, x),
        _onevalue(rule.initial_accumulator, x),
        _pair(T, rule.beta),
    )


def _init_noisysgd(rule, x):
    return (1, _leaf_number)


def _init_axon_yogi(rule, x):
    return _init_yogi(rule, x)


def _init_axon_adagrad(rule, x):
    return _onevalue(rule.initial_accumulator_value, x)


def _init_axon_rmsprop(rule, x):
    return (_onevalue(rule.initial_scale, x), _zero(x) if rule.centred else False)


def _init_chain(rule, x):
    return tuple(_init_inner(r, x) for r in rule.rules)


def _init_accumgrad(rule, x):
    return (_zero(x), 1)


def _init_mixed(rule, x):
    xT = np.asarray(x).astype(rule.dtype)
    return (xT, _init_inner(rule.rule, xT))


def _init_scheduled(rule, x):
    return (0, _init_inner(rule.rule, x))


def _init_skip(rule, x):
    return (0, 0, _init_inner(rule.rule, x))


def _init_lookahead(rule, x):
    return (np.array(x, copy=True), 0, _init_inner(rule.rule, x))


_INIT = {
    "Descent": _init_none,
    "WeightDecay": _init_none,
    "SignDecay": _init_none,
    "ClipGrad": _init_none,
    "ClipNorm": _init_none,
    "Momentum": _init_zero,
    "Nesterov": _init_zero,
    "Lion": _init_zero,
    "Rprop": _init_rprop,
    "RMSProp": _init_rmsprop,
    "Adam": _init_adam_like,
    "AdaMax": _init_adam_like,
    "NAdam": _init_adam_like,
    "AdamW": _init_adam_like,
    "AdaBelief": _init_adam_like,
    "RAdam": _init_radam,
    "OAdam": _init_oadam,
    "AdaGrad": _init_adagrad,
    "AdaDelta": _init_adadelta,
    "AMSGrad": _init_amsgrad,
    "InvDecay": _init_invdecay,
    "Yogi": _init_yogi,
    "NoisySGD": _init_noisysgd,
    "AxonAdam": _init_adam_like,
    "AxonAdaBelief": _init_adam_like,
    "AxonRAdam": _init_radam,
    "AxonYogi": _init_axon_yogi,
    "AxonAdaGrad": _init_axon_adagrad,
    "AxonRMSProp": _init_axon_rmsprop,
    "AxonTrace": _init_zero,
    "OptimiserChain": _init_chain,
    "AccumGrad": _init_accumgrad,
    "MixedPrecision": _init_mixed,
    "Scheduled": _init_scheduled,
    "SkipNonFinite": _init_skip,
    "Lookahead": _init_lookahead,
    "ClipGlobalNorm": _init_none,
    "TrustRatio": _init_none,
    "Lamb": _init_adam_like,
    "Lars": _init_zero,
}


_leaf_number = 0  # the number ``setup`` gives the leaf being initialised


def init(rule, x: np.ndarray, leaf: int = 0):
    """The initial optimiser state of ``rule`` for the parameter array ``x``,
    the ``leaf``-th of its model in ``setup``'s order (NoisySGD keeps it)."""
    global _leaf_number
    _leaf_number = leaf
    with np.errstate(all="ignore"):
        return _init_inner(rule, np.asarray(x))


def _init_inner(rule, x):
    name = type(rule).__name__
    try:
        f = _INIT[name]
    except KeyError:
        raise TypeError(f"oracle: unknown rule {name}") from None
    return f(rule, x)


# ---------------------------------------------------------------------------
# apply: each function gets (rule, state, x, dx, T) with dx already of type T and
# state already copied; returns (new_state, update_or_None).
# ---------------------------------------------------------------------------


def _apply_descent(rule, state, x, dx, T):
    η = T(rule.eta)
    return state, dx * η


def _apply_momentum(rule, mvel, x, dx, T):
    η, ρ = T(rule.eta), T(rule.rho)
    mvel = _arr(ρ * mvel + η * dx, T)
    return mvel, mvel


def _apply_nesterov(rule, vel, x, dx, T):
    η, ρ = T(rule.eta), T(rule.rho)
    newdx = (-(ρ * ρ)) * vel + ((T(1) + ρ) * η) * dx
    vel = _arr(ρ * vel - η * dx, T)
    return vel, newdx


def _apply_rmsprop(rule, state, x, dx, T):
    η, ρ, ϵ = T(rule.eta), T(rule.rho), eps_value(T, rule.epsilon)
    quad, lin = state
    quad = _arr(ρ * quad + (T(1) - ρ) * (dx * dx), T)
    if rule.centred:
        lin = _arr(ρ * lin + (T(1) - ρ) * dx, T)
        denom = np.sqrt(quad - lin * lin) + ϵ
    else:
        # lin is `false`; `quad - abs2(false)` is just quad
        denom = np.sqrt(quad) + ϵ
    return (quad, lin), (dx * η) / denom


def _apply_rprop(rule, state, x, dx, T):
    ell, Γ = _pair(T, rule.ell), _pair(T, rule.gamma)
    g, η = state
    gdx = g * dx
    η = np.where(
        gdx > 0,
        np.minimum(η * ell[1], Γ[1]),
        np.where(gdx < 0, np.maximum(η * ell[0], Γ[0]), η),
    )
    η = _arr(η, T)
    g = _arr(np.where(gdx < 0, T(0), dx), T)
    return (g, η), η * _sign(g)


def _apply_adam(rule, state, x, dx, T):
    η, β, ϵ = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon)
    mt, vt, βt = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(β[1] * vt + (T(1) - β[1]) * (dx * dx), T)
    upd = mt / _bias(βt[0], T) / (np.sqrt(vt / _bias(βt[1], T)) + ϵ) * η
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1])), upd


def _apply_lion(rule, state, x, dx, T):
    η, β = T(rule.eta), _pair(T, rule.beta)
    state = _arr(β[1] * dx + (T(1) - β[1]) * state, T)
    upd = η * _sign((β[1] - β[0]) * dx + β[0] * state)
    return state, upd


def _apply_radam(rule, state, x, dx, T):
    η, β, ϵ = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon)
    ρinf = T(2) / (T(1) - β[1]) - T(1)
    mt, vt, βt, t = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(β[1] * vt + (T(1) - β[1]) * (dx * dx), T)
    ρ = ρinf - T(2 * t) * βt[1] / (T(1) - βt[1])
    if ρ > 4:
        num = (ρ - T(4)) * (ρ - T(2)) * ρinf
        den = (ρinf - T(4)) * (ρinf - T(2)) * ρ
        r = np.sqrt(num / den)
        upd = mt / _bias(βt[0], T) / (np.sqrt(vt / _bias(βt[1], T)) + ϵ) * η * r
    else:
        upd = mt / _bias(βt[0], T) * η
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1]), t + 1), upd


def _apply_adamax(rule, state, x, dx, T):
    η, β, ϵ = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon)
    mt, ut, βt = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    ut = _arr(np.maximum(β[1] * ut, np.abs(dx)), T)
    upd = (η / _bias(βt[0], T)) * mt / (ut + ϵ)
    return (mt, ut, (βt[0] * β[0], βt[1] * β[1])), upd


def _apply_oadam(rule, state, x, dx, T):
    η, β, ϵ = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon)
    mt, vt, βt, term = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(β[1] * vt + (T(1) - β[1]) * (dx * dx), T)
    prev = term
    term = _arr(η * mt / _bias(βt[0], T) / (np.sqrt(vt / _bias(βt[1], T)) + ϵ), T)
    upd = T(2) * term - prev
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1]), term), upd


def _apply_adagrad(rule, acc, x, dx, T):
    η, ϵ = T(rule.eta), eps_value(T, rule.epsilon)
    acc = _arr(acc + dx * dx, T)
    return acc, (dx * η) / (np.sqrt(acc) + ϵ)


def _apply_adadelta(rule, state, x, dx, T):
    ρ, ϵ = T(rule.rho), eps_value(T, rule.epsilon)
    acc, dacc = state
    acc = _arr(ρ * acc + (T(1) - ρ) * (dx * dx), T)
    upd = dx * np.sqrt(dacc + ϵ) / np.sqrt(acc + ϵ)
    dacc = _arr(ρ * dacc + (T(1) - ρ) * (upd * upd), T)
    return (acc, dacc), upd


def _apply_amsgrad(rule, state, x, dx, T):
    η, β, ϵ = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon)
    mt, vt, vhat = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(β[1] * vt + (T(1) - β[1]) * (dx * dx), T)
    vhat = _arr(np.maximum(vhat, vt), T)
    return (mt, vt, vhat), η * mt / (np.sqrt(vhat) + ϵ)


def _apply_nadam(rule, state, x, dx, T):
    η, β, ϵ = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon)
    mt, vt, βt = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(β[1] * vt + (T(1) - β[1]) * (dx * dx), T)
    a = β[0] * mt / (T(1) - β[0] * βt[0])
    b = (T(1) - β[0]) * dx / (T(1) - βt[0])
    upd = (a + b) / (np.sqrt(vt * β[1] / (T(1) - βt[1])) + ϵ) * η
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1])), upd


def _apply_adamw(rule, state, x, dx, T):
    # AdamW uses T(epsilon), not _eps
    η, β, ϵ, λ = T(rule.eta), _pair(T, rule.beta), T(rule.epsilon), T(rule.lambda_)
    mt, vt, βt = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(β[1] * vt + (T(1) - β[1]) * (dx * dx), T)
    d1 = mt / _bias(βt[0], T) / (np.sqrt(vt / _bias(βt[1], T)) + ϵ)
    upd = η * (d1 + λ * x) if rule.couple else η * d1 + λ * x
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1])), upd


def _apply_adabelief(rule, state, x, dx, T):
    η, β, ϵ = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon)
    mt, st, βt = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    diff = dx - mt
    st = _arr(β[1] * st + (T(1) - β[1]) * (diff * diff) + ϵ, T)
    upd = η * mt / _bias(βt[0], T) / (np.sqrt(st / _bias(βt[1], T)) + ϵ)
    return (mt, st, (βt[0] * β[0], βt[1] * β[1])), upd


def _apply_invdecay(rule, n, x, dx, T):
    # old Flux: the factor 1/(1 + γn) with n from 0, so the first step is undecayed
    factor = T(1) / (T(1) + T(rule.gamma) * T(n))
    return n + 1, dx * factor


def _apply_yogi(rule, state, x, dx, T):
    η, β, ϵ = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon)
    mt, vt, βt = state
    dx2 = dx * dx
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(vt - (T(1) - β[1]) * _sign(vt - dx2) * dx2, T)
    upd = mt / _bias(βt[0], T) / (np.sqrt(vt / _bias(βt[1], T)) + ϵ) * η
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1])), upd


_CHACHA_CONSTANTS = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)


def _rotl(v, n):
    return (v << np.uint32(n)) | (v >> np.uint32(32 - n))


def _quarter(w, a, b, c, d):
    w[a] += w[b]
    w[d] = _rotl(w[d] ^ w[a], 16)
    w[c] += w[d]
    w[b] = _rotl(w[b] ^ w[c], 12)
    w[a] += w[b]
    w[d] = _rotl(w[d] ^ w[a], 8)
    w[c] += w[d]
    w[b] = _rotl(w[b] ^ w[c], 7)


def chacha8_blocks(key: bytes, stream: int, blocks: np.ndarray) -> np.ndarray:
    """ChaCha with 8 rounds (Bernstein's layout: 64-bit block counter in words
    12-13, 64-bit stream in 14-15): the 16 output words of each block number in
    ``blocks``, shape ``(len(blocks), 16)``."""
    blocks = np.asarray(blocks, dtype=np.uint64)
    key_words = np.frombuffer(key, dtype="<u4")
    init = np.empty((16, blocks.size), dtype=np.uint32)
    init[0:4] = np.array(_CHACHA_CONSTANTS, dtype=np.uint32)[:, None]
    init[4:12] = key_words[:, None]
    init[12] = (blocks & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    init[13] = (blocks >> np.uint64(32)).astype(np.uint32)
    init[14] = np.uint32(stream & 0xFFFFFFFF)
    init[15] = np.uint32(stream >> 32)
    w = init.copy()
    for _ in range(4):  # double rounds: columns, then diagonals
        _quarter(w, 0, 4, 8, 12)
        _quarter(w, 1, 5, 9, 13)
        _quarter(w, 2, 6, 10, 14)
        _quarter(w, 3, 7, 11, 15)
        _quarter(w, 0, 5, 10, 15)
        _quarter(w, 1, 6, 11, 12)
        _quarter(w, 2, 7, 8, 13)
        _quarter(w, 3, 4, 9, 14)
    return (w + init).T


def noisysgd_normals(seed: int, leaf: int, t: int, n: int) -> np.ndarray:
    """The standard normal variates of NoisySGD for elements 0..n of a leaf at
    step t: element i reads words 4i..4i+3 of ChaCha8 keyed by seed ‖ leaf, on
    stream t, as two u64s for Box-Muller (the cosine branch)."""
    key = seed.to_bytes(8, "little") + leaf.to_bytes(8, "little") + bytes(16)
    words = chacha8_blocks(key, t, np.arange((n + 3) // 4)).reshape(-1)[: 4 * n]
    words = words.astype(np.uint64).reshape(n, 4)
    a = words[:, 0] | (words[:, 1] << np.uint64(32))
    b = words[:, 2] | (words[:, 3] << np.uint64(32))
    unit = 2.0**-53
    u1 = ((a >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * unit
    u2 = (b >> np.uint64(11)).astype(np.float64) * unit
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * math.pi * u2)


def _apply_noisysgd(rule, state, x, dx, T):
    t, leaf = state
    η, variance, γ = T(rule.eta), T(rule.variance), T(rule.gamma)
    σ = T(math.sqrt(float(variance) / float(t) ** float(γ)))
    z = noisysgd_normals(rule.seed, leaf, t, dx.size).astype(T).reshape(dx.shape)
    return (t + 1, leaf), (dx + z * σ) * η


# optimisers.axon's rules: Axon's formulas (FORMULAS.md §1.1), ϵᵣ inside the root.


def _rooted(mt, vt, βt, ϵ, ϵr, T):
    return mt / _bias(βt[0], T) / (np.sqrt(vt / _bias(βt[1], T) + ϵr) + ϵ)


def _apply_axon_adam(rule, state, x, dx, T):
    η, β, ϵ, ϵr = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon), T(rule.eps_root)
    mt, vt, βt = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(β[1] * vt + (T(1) - β[1]) * (dx * dx), T)
    upd = _rooted(mt, vt, βt, ϵ, ϵr, T) * η
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1])), upd


def _apply_axon_adabelief(rule, state, x, dx, T):
    η, β, ϵ, ϵr = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon), T(rule.eps_root)
    mt, st, βt = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    diff = dx - mt
    st = _arr(β[1] * st + (T(1) - β[1]) * (diff * diff), T)
    upd = _rooted(mt, st, βt, ϵ, ϵr, T) * η
    return (mt, st, (βt[0] * β[0], βt[1] * β[1])), upd


def _apply_axon_radam(rule, state, x, dx, T):
    η, β, ϵ, ϵr = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon), T(rule.eps_root)
    ρinf = T(2) / (T(1) - β[1]) - T(1)
    mt, vt, βt, t = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(β[1] * vt + (T(1) - β[1]) * (dx * dx), T)
    ρ = ρinf - T(2 * t) * βt[1] / (T(1) - βt[1])
    if ρ >= T(rule.threshold):
        num = (ρ - T(4)) * (ρ - T(2)) * ρinf
        den = (ρinf - T(4)) * (ρinf - T(2)) * ρ
        upd = _rooted(mt, vt, βt, ϵ, ϵr, T) * η * np.sqrt(num / den)
    else:
        upd = mt / _bias(βt[0], T) * η
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1]), t + 1), upd


def _apply_axon_yogi(rule, state, x, dx, T):
    η, β, ϵ, ϵr = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon), T(rule.eps_root)
    mt, vt, βt = state
    dx2 = dx * dx
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(vt - (T(1) - β[1]) * _sign(vt - dx2) * dx2, T)
    upd = _rooted(mt, vt, βt, ϵ, ϵr, T) * η
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1])), upd


def _apply_axon_adagrad(rule, s, x, dx, T):
    η, ϵ = T(rule.eta), eps_value(T, rule.epsilon)
    s = _arr(s + dx * dx, T)
    return s, np.where(s > 0, dx * η / np.sqrt(s + ϵ), T(0)).astype(T)


def _apply_axon_rmsprop(rule, state, x, dx, T):
    η, ρ, ϵ = T(rule.eta), T(rule.rho), eps_value(T, rule.epsilon)
    v, m = state
    v = _arr(ρ * v + (T(1) - ρ) * (dx * dx), T)
    if rule.centred:
        m = _arr(ρ * m + (T(1) - ρ) * dx, T)
        return (v, m), dx / np.sqrt(v - m * m + ϵ) * η
    return (v, m), dx / np.sqrt(v + ϵ) * η


def _apply_axon_trace(rule, b, x, dx, T):
    μ = T(rule.mu)
    b = _arr(μ * b + dx, T)
    return b, (μ * b + dx if rule.nesterov else b)


def _apply_weightdecay(rule, state, x, dx, T):
    λ = T(rule.lambda_)
    return state, dx + λ * x


def _apply_signdecay(rule, state, x, dx, T):
    λ = T(rule.lambda_)
    return state, dx + λ * _sign(x)


def _apply_clipgrad(rule, state, x, dx, T):
    δ = T(rule.delta)
    return state, _clamp(dx, -δ, δ)


def _apply_clipnorm(rule, state, x, dx, T):
    nrm = clipnorm_norm(dx, rule.p)
    if rule.throw and not math.isfinite(nrm):
        raise ValueError(f"gradient has {rule.p}-norm {nrm}, for array of shape {np.shape(x)}")
    q = np.float64(rule.omega) / np.float64(nrm)  # ω/0 == ±Inf, ω/NaN == NaN
    lam = q if math.isnan(q) else min(q, 1.0)  # Julia's min propagates NaN
    return state, dx * T(lam)


# Trust ratios (optax's scale_by_trust_ratio): norms and ratio in float64, the
# ratio rounded to T, as ClipNorm's factor.


def _trust_ratio(x, u, min_norm, coef, eps, T):
    def φ(n):
        return n if n > min_norm else min_norm

    nx, nu = φ(clipnorm_norm(x, 2)), φ(clipnorm_norm(u, 2))
    return T(1.0 if nx == 0 or nu == 0 else coef * nx / (nu + eps))


def _apply_trustratio(rule, state, x, dx, T):
    return state, dx * _trust_ratio(x, dx, rule.min_norm, rule.coef, rule.epsilon, T)


def _apply_lamb(rule, state, x, dx, T):
    η, β, ϵ, λ = T(rule.eta), _pair(T, rule.beta), eps_value(T, rule.epsilon), T(rule.lambda_)
    mt, vt, βt = state
    mt = _arr(β[0] * mt + (T(1) - β[0]) * dx, T)
    vt = _arr(β[1] * vt + (T(1) - β[1]) * (dx * dx), T)
    a = mt / _bias(βt[0], T) / (np.sqrt(vt / _bias(βt[1], T)) + ϵ) + λ * x
    upd = a * _trust_ratio(x, a, rule.min_norm, 1.0, 0.0, T) * η
    return (mt, vt, (βt[0] * β[0], βt[1] * β[1])), upd


def _apply_lars(rule, b, x, dx, T):
    η, λ, ρ = T(rule.eta), T(rule.lambda_), T(rule.rho)
    a = dx + λ * x
    u = a * _trust_ratio(x, a, 0.0, rule.coef, 0.0, T) * η
    b = _arr(ρ * b + u, T)
    return b, (ρ * b + u if rule.nesterov else b)


def _apply_chain(rule, states, x, dx, T):
    new_states = []
    upd = dx
    for r, s in zip(rule.rules, states, strict=True):
        if upd is None:
            new_states.append(s)
        else:
            s, upd = _apply_inner(r, s, x, upd)
            new_states.append(s)
    return tuple(new_states), upd


def _apply_accumgrad(rule, state, x, dx, T):
    accum, counter = state
    n = T(rule.n)
    accum = _arr(dx / n if counter == 1 else accum + dx / n, T)
    if counter == rule.n:
        return (accum, 1), accum
    return (accum, counter + 1), None


def _mixed_core(rule, state, x, dx):
    """Returns (new_state, new_xT)."""
    xT, st = state
    Tm = np.dtype(rule.dtype).type
    dxT = np.asarray(dx).astype(Tm)
    st, upd = _apply_inner(rule.rule, st, xT, dxT)
    if upd is not None:
        xT = _arr(xT - upd, Tm)
    return (xT, st), xT


def _apply_mixed(rule, state, x, dx, T):
    new_state, xT = _mixed_core(rule, state, x, dx)
    return new_state, x - xT.astype(T)


class _Fields:
    """A rule's public fields with some replaced, dispatched on the same name."""

    def __init__(self, name, fields):
        self.name = name
        self.__dict__.update(fields)


def _with_fields(rule, values):
    """``rule`` (as the oracle sees it) with each field in ``values`` replaced,
    routed into chains and wrapped rules as ``adjust`` routes it."""
    name = type(rule).__name__ if not isinstance(rule, _Fields) else rule.name
    fields = {k: v for k, v in vars(rule).items() if not k.startswith("_") and k != "name"}
    if name == "OptimiserChain":
        fields["rules"] = tuple(_with_fields(r, values) for r in rule.rules)
    elif "rule" in fields:
        fields["rule"] = _with_fields(rule.rule, values)
    fields.update({k: v for k, v in values.items() if k in fields and k not in ("rule", "rules")})
    return _Fields(name, fields)


def _apply_scheduled(rule, state, x, dx, T):
    step, inner = state
    values = {name: s(step) for name, s in rule.schedules}
    inner, upd = _apply_inner(_with_fields(rule.rule, values), inner, x, dx)
    return (step + 1, inner), upd


def _apply_skip(rule, state, x, dx, T):
    in_a_row, total, inner = state
    if not np.isfinite(dx).all():
        if rule.max_consecutive is not None and in_a_row >= rule.max_consecutive:
            raise FloatingPointError(f"non-finite gradient after {in_a_row} skips in a row")
        return (in_a_row + 1, total + 1, inner), None
    inner, upd = _apply_inner(rule.rule, inner, x, dx)
    return (0, total, inner), upd


def _apply_lookahead(rule, state, x, dx, T):
    slow, count, inner = state
    inner, upd = _apply_inner(rule.rule, inner, x, dx)
    fast = x if upd is None else _arr(x - upd, T)
    count += 1
    if count % rule.k:
        return (slow, count, inner), upd
    slow = _arr(slow + (fast - slow) * T(rule.alpha), T)
    return (slow, count, inner), _arr(x - slow, T)


def global_clip(rule, grads):
    """``ClipGlobalNorm``'s factor for the gradients of one step (all leaves
    whose rule holds it): ``ω/‖G‖ₚ`` when the norm exceeds ω, else None."""
    p = rule.p
    norms = [clipnorm_norm(g, p) for g in grads]
    if p == math.inf:
        nrm = max(norms, default=0.0)
    elif p == -math.inf:
        nrm = min(norms, default=math.inf)
    elif p == 0:
        nrm = float(sum(norms))
    else:
        nrm = float(sum(np.float64(n) ** p for n in norms)) ** (1 / p)
    if rule.throw and not math.isfinite(nrm):
        raise ValueError(f"gradients have global {p}-norm {nrm}")
    return rule.omega / nrm if nrm > rule.omega else None


def _apply_clipglobalnorm(rule, state, x, dx, T):
    factor = global_clip(rule, [dx])
    return state, dx if factor is None else _arr(dx * T(factor), T)


_APPLY = {
    "Descent": _apply_descent,
    "Momentum": _apply_momentum,
    "Nesterov": _apply_nesterov,
    "RMSProp": _apply_rmsprop,
    "Rprop": _apply_rprop,
    "Adam": _apply_adam,
    "Lion": _apply_lion,
    "RAdam": _apply_radam,
    "AdaMax": _apply_adamax,
    "OAdam": _apply_oadam,
    "AdaGrad": _apply_adagrad,
    "AdaDelta": _apply_adadelta,
    "AMSGrad": _apply_amsgrad,
    "NAdam": _apply_nadam,
    "AdamW": _apply_adamw,
    "AdaBelief": _apply_adabelief,
    "InvDecay": _apply_invdecay,
    "Yogi": _apply_yogi,
    "NoisySGD": _apply_noisysgd,
    "AxonAdam": _apply_axon_adam,
    "AxonAdaBelief": _apply_axon_adabelief,
    "AxonRAdam": _apply_axon_radam,
    "AxonYogi": _apply_axon_yogi,
    "AxonAdaGrad": _apply_axon_adagrad,
    "AxonRMSProp": _apply_axon_rmsprop,
    "AxonTrace": _apply_axon_trace,
    "WeightDecay": _apply_weightdecay,
    "SignDecay": _apply_signdecay,
    "ClipGrad": _apply_clipgrad,
    "ClipNorm": _apply_clipnorm,
    "OptimiserChain": _apply_chain,
    "AccumGrad": _apply_accumgrad,
    "MixedPrecision": _apply_mixed,
    "Scheduled": _apply_scheduled,
    "SkipNonFinite": _apply_skip,
    "Lookahead": _apply_lookahead,
    "ClipGlobalNorm": _apply_clipglobalnorm,
    "TrustRatio": _apply_trustratio,
    "Lamb": _apply_lamb,
    "Lars": _apply_lars,
}


def _apply_inner(rule, state, x, dx):
    name = rule.name if isinstance(rule, _Fields) else type(rule).__name__
    try:
        f = _APPLY[name]
    except KeyError:
        raise TypeError(f"oracle: unknown rule {name}") from None
    x = np.asarray(x)
    T = x.dtype.type
    dx = np.asarray(dx, dtype=x.dtype)
    new_state, upd = f(rule, state, x, dx, T)
    if upd is not None:
        upd = np.asarray(upd)
        if upd.dtype != x.dtype:
            raise AssertionError(f"oracle bug in {name}: update dtype {upd.dtype} != {x.dtype}")
    return new_state, upd


def apply(rule, state, x: np.ndarray, dx: np.ndarray):
    """One application of ``rule``: returns ``(new_state, update)``; update may be None.

    The parameter should then become ``x - update`` (see :func:`step`).
    """
    x = np.asarray(x)
    state = _copy(state)
    with np.errstate(all="ignore"):
        return _apply_inner(rule, state, x, dx)


def step(rule, state, x: np.ndarray, dx: np.ndarray):
    """Apply ``rule`` and subtract the update: returns ``(new_state, new_x)``."""
    x = np.asarray(x)
    state = _copy(state)
    with np.errstate(all="ignore"):
        if type(rule).__name__ == "MixedPrecision":
            new_state, xT = _mixed_core(rule, state, x, np.asarray(dx, dtype=x.dtype))
            return new_state, xT.astype(x.dtype)
        new_state, upd = _apply_inner(rule, state, x, dx)
        if upd is None:
            return new_state, x.copy()
        return new_state, np.asarray(x - upd, dtype=x.dtype)


def trajectory(rule, x0: np.ndarray, grads):
    """Run :func:`step` from ``init(rule, x0)`` over ``grads``.

    Returns ``(states, xs)``: deep copies of the state and of x after each step.
    """
    x = np.asarray(x0).copy()
    state = init(rule, x)
    states, xs = [], []
    for g in grads:
        state, x = step(rule, state, x, g)
        states.append(copy.deepcopy(state))
        xs.append(x.copy())
    return states, xs
