"""Checks of the NumPy oracle (tests/oracle.py) against numbers from Optimisers.jl.

The expected values come from Optimisers.jl's documentation and test suite. The rules
used here are small stand-in classes defined below (same names and public attributes
as the package's rules), so these tests run without the compiled package.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import numpy as np
import pytest

try:
    import oracle
except ImportError:  # e.g. with pytest's --import-mode=importlib
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import oracle

# ---------------------------------------------------------------------------
# stand-in rules (attribute names as documented for the real rule objects)
# ---------------------------------------------------------------------------


class Descent:
    def __init__(self, eta=0.1):
        self.eta = eta


class Momentum:
    def __init__(self, eta=0.01, rho=0.9):
        self.eta, self.rho = eta, rho


class Nesterov:
    def __init__(self, eta=0.001, rho=0.9):
        self.eta, self.rho = eta, rho


class Rprop:
    def __init__(self, eta=1e-3, ell=(0.5, 1.2), gamma=(1e-6, 50.0)):
        self.eta, self.ell, self.gamma = eta, tuple(ell), tuple(gamma)


class RMSProp:
    def __init__(self, eta=0.001, rho=0.9, epsilon=1e-8, centred=False):
        self.eta, self.rho, self.epsilon, self.centred = eta, rho, epsilon, centred


class _AdamLike:
    default_beta = (0.9, 0.999)
    default_epsilon = 1e-8

    def __init__(self, eta=0.001, beta=None, epsilon=None):
        self.eta = eta
        self.beta = tuple(self.default_beta if beta is None else beta)
        self.epsilon = self.default_epsilon if epsilon is None else epsilon


class Adam(_AdamLike):
    pass


class RAdam(_AdamLike):
    pass


class AdaMax(_AdamLike):
    pass


class OAdam(_AdamLike):
    default_beta = (0.5, 0.9)


class AMSGrad(_AdamLike):
    pass


class NAdam(_AdamLike):
    pass


class AdaBelief(_AdamLike):
    default_epsilon = 1e-16


class AdaGrad:
    def __init__(self, eta=0.1, epsilon=1e-8):
        self.eta, self.epsilon = eta, epsilon


class AdaDelta:
    def __init__(self, rho=0.9, epsilon=1e-8):
        self.rho, self.epsilon = rho, epsilon


class AdamW:
    def __init__(self, eta=0.001, beta=(0.9, 0.999), lambda_=0.0, epsilon=1e-8, couple=True):
        self.eta, self.beta, self.lambda_ = eta, tuple(beta), lambda_
        self.epsilon, self.couple = epsilon, couple


class Lion:
    def __init__(self, eta=0.001, beta=(0.9, 0.999)):
        self.eta, self.beta = eta, tuple(beta)


class WeightDecay:
    def __init__(self, lambda_=5e-4):
        self.lambda_ = lambda_


class SignDecay:
    def __init__(self, lambda_=1e-3):
        self.lambda_ = lambda_


class ClipGrad:
    def __init__(self, delta=10.0):
        self.delta = delta


class ClipNorm:
    def __init__(self, omega=10.0, p=2.0, throw=True):
        self.omega, self.p, self.throw = float(omega), float(p), throw


class InvDecay:
    def __init__(self, gamma=0.001):
        self.gamma = gamma


class Yogi:
    def __init__(self, eta=0.01, beta=(0.9, 0.999), epsilon=1e-8, initial_accumulator=0.0):
        self.eta, self.beta, self.epsilon = eta, tuple(beta), epsilon
        self.initial_accumulator = initial_accumulator


class NoisySGD:
    def __init__(self, eta=0.01, variance=0.1, gamma=0.55, seed=0):
        self.eta, self.variance, self.gamma, self.seed = eta, variance, gamma, seed


class OptimiserChain:
    def __init__(self, *rules):
        self.rules = tuple(rules)


class AccumGrad:
    def __init__(self, n):
        self.n = n


class MixedPrecision:
    def __init__(self, dtype, rule=None):
        if rule is None:
            dtype, rule = np.float32, dtype
        self.dtype, self.rule = dtype, rule


class Scheduled:
    def __init__(self, rule, **schedules):
        self.rule, self.schedules = rule, tuple(sorted(schedules.items()))


class SkipNonFinite:
    def __init__(self, rule, max_consecutive=None):
        self.rule, self.max_consecutive = rule, max_consecutive


class Lookahead:
    def __init__(self, rule, k=5, alpha=0.5):
        self.rule, self.k, self.alpha = rule, k, alpha


class ClipGlobalNorm:
    def __init__(self, omega=10.0, p=2.0, throw=True):
        self.omega, self.p, self.throw = float(omega), float(p), throw


class TrustRatio:
    def __init__(self, min_norm=0.0, coef=1.0, epsilon=0.0):
        self.min_norm, self.coef, self.epsilon = min_norm, coef, epsilon


class Lamb:
    def __init__(self, eta=0.01, beta=(0.9, 0.999), epsilon=1e-8, lambda_=0.0, min_norm=0.0):
        self.eta, self.beta, self.epsilon = eta, tuple(beta), epsilon
        self.lambda_, self.min_norm = lambda_, min_norm


class Lars:
    def __init__(self, eta=0.1, lambda_=0.0, coef=0.001, rho=0.9, nesterov=False):
        self.eta, self.lambda_, self.coef, self.rho = eta, lambda_, coef, rho
        self.nesterov = nesterov


def all_rules():
    return [
        Descent(),
        Adam(),
        Momentum(),
        Nesterov(),
        Rprop(),
        RMSProp(),
        AdaGrad(),
        AdaMax(),
        AdaDelta(),
        AMSGrad(),
        NAdam(),
        AdamW(),
        RAdam(),
        OAdam(),
        AdaBelief(),
        Lion(),
        InvDecay(0.5),
        Yogi(initial_accumulator=1e-6),
        NoisySGD(seed=5),
        MixedPrecision(np.float64, Adam()),
        OptimiserChain(SignDecay(0.001), Adam(0.001)),
        OptimiserChain(ClipNorm(), Adam(0.001)),
        OptimiserChain(ClipGrad(0.5), Momentum()),
        OptimiserChain(WeightDecay(), OAdam(), ClipGrad(1)),
        RMSProp(centred=True),
        AdamW(couple=False, lambda_=0.01),
        OptimiserChain(AccumGrad(3), Adam(0.01)),
        ClipNorm(1.0, 1),
        ClipNorm(1.0, math.inf),
        ClipNorm(1.0, 3.0),
        ClipNorm(1.0, 0),
        TrustRatio(),
        TrustRatio(3.0, 0.5, 1e-3),
        Lamb(),
        Lamb(lambda_=0.1, min_norm=3.0),
        Lars(),
        Lars(lambda_=0.1, nesterov=True),
    ]


def _update(rule, x, dx):
    """Optimisers.update(setup(rule, x), x, dx)[2]"""
    _, new_x = oracle.step(rule, oracle.init(rule, x), x, dx)
    return new_x


# ---------------------------------------------------------------------------
# numbers from the docs
# ---------------------------------------------------------------------------


def test_adam_state_docs():
    rule = Adam(0.1)
    x = np.ones(2)
    s = oracle.init(rule, x)
    assert s[2] == (0.9, 0.999)
    s, x = oracle.step(rule, s, x, np.ones(2))
    mt, vt, (b1, b2) = s
    np.testing.assert_allclose(mt, [0.1, 0.1], rtol=1e-12)
    np.testing.assert_allclose(vt, [0.001, 0.001], rtol=1e-12)
    # (the docs print these with 6 significant digits)
    assert b1 == pytest.approx(0.81, rel=1e-14) and b2 == pytest.approx(0.998001, rel=1e-14)
    assert isinstance(b1, np.float64) and isinstance(b2, np.float64)
    s, x = oracle.step(rule, s, x, np.zeros(2))
    mt, vt, (b1, b2) = s
    np.testing.assert_allclose(mt, [0.09, 0.09], rtol=1e-12)
    np.testing.assert_allclose(vt, [0.000999, 0.000999], rtol=1e-12)
    assert b1 == pytest.approx(0.729, rel=1e-6) and b2 == pytest.approx(0.997003, rel=1e-6)
    assert b1 == np.float64(0.81) * np.float64(0.9) and b2 == np.float64(0.998001) * 0.999


def test_chain_clipgrad_descent_docs():
    o = OptimiserChain(ClipGrad(1.0), Descent(0.1))
    x = np.zeros(3)
    s = oracle.init(o, x)
    assert s == (None, None)
    _, x = oracle.step(o, s, x, np.array([0.3, 1, 7]))
    np.testing.assert_allclose(x, [-0.03, -0.1, -0.1], rtol=1e-15)


def test_accumgrad_docs():
    r = OptimiserChain(AccumGrad(2), WeightDecay(0.01), Descent(0.1))
    x = np.array([1.0], dtype=np.float32)
    y = np.array([2.0], dtype=np.float32)
    sx, sy = oracle.init(r, x), oracle.init(r, y)
    assert sx[0][1] == 1
    sx, x1 = oracle.step(r, sx, x, np.array([33]))
    sy, y1 = oracle.step(r, sy, y, np.array([0]))
    assert x1.dtype == np.float32 and x1[0] == 1 and y1[0] == 2  # model not yet changed
    assert sx[0][1] == 2
    sx, x2 = oracle.step(r, sx, x1, np.array([0]))
    sy, y2 = oracle.step(r, sy, y1, np.array([444]))
    assert x2.dtype == np.float32 and y2.dtype == np.float32
    assert x2[0] == np.float32(-0.651)
    assert y2[0] == np.float32(-20.202002)
    assert sx[0][1] == 1


def test_nesterov_docs():
    rule = Nesterov()
    x = np.array([0.3, 0.7], dtype=np.float32)
    s = oracle.init(rule, x)
    assert s.dtype == np.float32 and np.all(s == 0)
    s, x2 = oracle.step(rule, s, x, np.array([16, 88]))
    assert s.dtype == np.float32 and x2.dtype == np.float32
    # docs print Float32[-0.016, -0.088] in compact form; exactly it is -(0.001f0 * g)
    np.testing.assert_allclose(s, [-0.016, -0.088], rtol=1e-6)
    np.testing.assert_array_equal(s, -(np.float32(0.001) * np.array([16, 88], np.float32)))


def test_float16_epsilon():
    # Optimisers.jl issue 167: without the Float16 floor on epsilon this gives Inf
    x = np.array([0.579, -0.729, 0.5493], dtype=np.float16)
    dx = np.array([-0.001497, 0.0001875, -0.013176], dtype=np.float16)
    rule = Adam(1e-4)
    _, x2 = oracle.step(rule, oracle.init(rule, x), x, dx)
    assert x2.dtype == np.float16
    np.testing.assert_allclose(
        x2.astype(np.float64),
        np.array([1.835, -0.886, 0.5493], dtype=np.float16).astype(np.float64),
        rtol=1e-3,
    )
    assert oracle.eps_value(np.float16, 1e-8) == np.float16(1e-7)
    assert oracle.eps_value(np.float16, 0) == 0
    assert oracle.eps_value(np.float32, 1e-8) == np.float32(1e-8)


# ---------------------------------------------------------------------------
# Optimisers.jl test/runtests.jl: "OptimiserChain" and "gradient clipping"
# ---------------------------------------------------------------------------


def test_optimiserchain_testset():
    x = np.array([1, 10, 100.0])
    dx = np.array([1, 2, 3.0])
    close = np.testing.assert_allclose
    close(_update(WeightDecay(0.1), x, dx), [1 - 0.1 - 1, 10 - 1 - 2, 100 - 10 - 3])
    close(_update(SignDecay(0.1), x, dx), [1 - 0.1 - 1, 10 - 0.1 - 2, 100 - 0.1 - 3])
    close(_update(ClipGrad(2), x, dx), [1 - 1, 10 - 2, 100 - 2])

    o2 = OptimiserChain(ClipGrad(2), WeightDecay(0.1))
    close(_update(o2, x, dx), [1 - 0.1 - 1, 10 - 1 - 2, 100 - 10 - 2])
    o2n = OptimiserChain(OptimiserChain(ClipGrad(2), WeightDecay(0.1)))
    close(_update(o2n, x, dx), [1 - 0.1 - 1, 10 - 1 - 2, 100 - 10 - 2])
    o2r = OptimiserChain(WeightDecay(0.1), ClipGrad(2))
    assert not np.array_equal(_update(o2r, x, dx), [1 - 0.1 - 1, 10 - 2, 100 - 2])

    close(_update(OptimiserChain(Descent(0.1)), x, dx), [0.9, 9.8, 99.7])
    o0 = OptimiserChain()
    assert oracle.init(o0, x) == ()
    close(_update(o0, x, dx), [1 - 1, 10 - 2, 100 - 3])

    xm = np.array([1, -10, 100.0])
    dxm = np.array([3, 2, -1.0])
    close(_update(SignDecay(0.1), xm, dxm), [1 - 0.1 - 3, -10 + 0.1 - 2, 100 - 0.1 + 1])

    # x and dx are never mutated
    np.testing.assert_array_equal(x, [1, 10, 100.0])
    np.testing.assert_array_equal(dx, [1, 2, 3.0])


def test_gradient_clipping_testset():
    rng = np.random.default_rng(0)
    alpha = np.array([0.0])
    gamma = rng.random(3)

    g1 = _update(ClipGrad(13), gamma, np.array([1, 10, 100]))
    np.testing.assert_allclose(gamma - g1, [1, 10, 13])

    r2 = ClipNorm(10)
    a2 = _update(r2, alpha, np.array([0.1]))
    g2 = _update(r2, gamma, np.array([1, 10, 100]))
    assert (alpha - a2)[0] == pytest.approx(0.1)
    assert np.linalg.norm(gamma - g2) == pytest.approx(10)
    with pytest.raises(ValueError):
        _update(r2, gamma, np.array([1, 10, np.nan]))

    r3 = ClipNorm(5, 1, throw=False)
    a3 = _update(r3, alpha, np.array([0.1]))
    g3 = _update(r3, gamma, np.array([1, 10, 100]))
    assert (alpha - a3)[0] == pytest.approx(0.1)
    assert np.linalg.norm(gamma - g3, 1) == pytest.approx(5)
    g3n = _update(r3, gamma, np.array([1, 10, np.inf]))
    assert np.isnan(g3n[2])


def test_clipnorm_norms_and_nan():
    dx = np.array([3.0, -4.0, 0.0])
    assert oracle.clipnorm_norm(dx, 2) == 5
    assert oracle.clipnorm_norm(dx, 1) == 7
    assert oracle.clipnorm_norm(dx, math.inf) == 4
    assert oracle.clipnorm_norm(dx, -math.inf) == 0
    assert oracle.clipnorm_norm(dx, 0) == 2
    assert oracle.clipnorm_norm(dx, 3) == pytest.approx((27 + 64) ** (1 / 3))
    # no overflow for large float64 values (LinearAlgebra rescales)
    assert oracle.clipnorm_norm(np.array([1e300, 1e300]), 2) == pytest.approx(math.sqrt(2) * 1e300)
    # NaN norm without throw: λ is NaN, so the whole update is NaN
    s, u = oracle.apply(ClipNorm(1, 2, throw=False), None, np.zeros(2), np.array([1.0, np.nan]))
    assert s is None and np.all(np.isnan(u))
    # zero gradient: ω/0 = Inf, λ = 1
    _, u = oracle.apply(ClipNorm(1), None, np.zeros(2), np.zeros(2))
    np.testing.assert_array_equal(u, [0.0, 0.0])
    # float32: λ computed in float64 then cast to T
    _, u = oracle.apply(ClipNorm(1), None, np.zeros(2, np.float32), np.array([3, 4], np.float32))
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, [0.6, 0.8], rtol=1e-6)


# ---------------------------------------------------------------------------
# other properties of the oracle
# ---------------------------------------------------------------------------


def test_mixedprecision():
    rng = np.random.default_rng(1)
    x = rng.random(2).astype(np.float16)
    g = rng.random(2).astype(np.float16)
    rule = MixedPrecision(Adam(1e-3))
    s = oracle.init(rule, x)
    assert s[0].dtype == np.float32 and s[1][0].dtype == np.float32
    s2, x2 = oracle.step(rule, s, x, g)
    assert x2.dtype == np.float16
    np.testing.assert_array_equal(x2, s2[0].astype(np.float16))
    np.testing.assert_allclose(x2.astype(np.float64), x - 1e-3 * g.astype(np.float64), rtol=0.03)
    s64 = oracle.init(MixedPrecision(np.float64, Adam(1e-3)), x)
    assert s64[0].dtype == np.float64 and s64[1][0].dtype == np.float64
    _, u = oracle.apply(rule, s, x, g)
    assert u.dtype == np.float16


def test_adam_matches_textbook_float64():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(4)]
    states, xs = oracle.trajectory(Adam(0.01), x, grads)
    m = np.zeros(5)
    v = np.zeros(5)
    xx = x.copy()
    for t, g in enumerate(grads, start=1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        xx = xx - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(xs[t - 1], xx, rtol=1e-12)
        np.testing.assert_allclose(states[t - 1][0], m, rtol=1e-12)


def test_radam_branches():
    rule = RAdam(0.1)
    x = np.ones(3)
    grads = [np.full(3, 0.5)] * 8
    states, xs = oracle.trajectory(rule, x, grads)
    assert [s[3] for s in states] == list(range(2, 10))
    # first steps: rho_t <= 4, so the update is the bias-corrected momentum times eta
    np.testing.assert_allclose(xs[0], 1 - 0.1 * 0.5, rtol=1e-12)
    # rho_t = rho_inf - 2 t b2^t / (1 - b2^t) exceeds 4 from t = 5 when b2 = 0.999
    ρinf = 2 / (1 - 0.999) - 1
    ρ5 = ρinf - 2 * 5 * 0.999**5 / (1 - 0.999**5)
    assert ρ5 > 4 and ρinf - 2 * 4 * 0.999**4 / (1 - 0.999**4) <= 4
    r = math.sqrt((ρ5 - 4) * (ρ5 - 2) * ρinf / ((ρinf - 4) * (ρinf - 2) * ρ5))
    np.testing.assert_allclose(xs[4], xs[3] - 0.1 * r, rtol=1e-9)


def test_invdecay_first_step_is_undecayed():
    # old Flux 0.4-0.6: the t-th step is scaled by 1/(1 + γ(t-1))
    x = np.zeros(2)
    _, xs = oracle.trajectory(InvDecay(0.5), x, [np.ones(2)] * 3)
    np.testing.assert_allclose([v[0] for v in xs], [-1.0, -1.0 - 1 / 1.5, -1.0 - 1 / 1.5 - 1 / 2.0])


def test_chacha8_matches_the_published_keystream():
    """ChaCha8's keystream for the zero key and nonce, as published with the
    cipher (its first 16 bytes)."""
    words = oracle.chacha8_blocks(bytes(32), 0, [0])[0]
    first = words.astype("<u4").tobytes()[:16].hex()
    assert first == "3e00ef2f895f40d67f5bb8e81f09a5a1"


def test_noisysgd_normals_are_standard():
    z = oracle.noisysgd_normals(0, 0, 1, 200_000)
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01


def test_yogi_by_hand():
    """Two steps worked by hand, with a gradient equal to the root of v (sign 0)."""
    eta, b1, b2, eps = 0.1, 0.5, 0.75, 1e-3
    rule = Yogi(eta, (b1, b2), eps, initial_accumulator=4.0)
    x = np.array([0.0, 0.0, 0.0])
    g = np.array([2.0, 1.0, 3.0])  # g² = v, below v, above v
    state, xs = oracle.trajectory(rule, x, [g])
    m = 0.5 * 4.0 + 0.5 * g
    v = 4.0 - 0.25 * np.array([0.0, 1.0, -1.0]) * g**2
    assert np.array_equal(state[0][1], v)
    expected = -(m / (1 - b1) / (np.sqrt(v / (1 - b2)) + eps) * eta)
    np.testing.assert_allclose(xs[0], expected, rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_rules_dtypes_no_warnings_no_mutation(dtype):
    rng = np.random.default_rng(3)
    for rule in all_rules():
        x0 = rng.standard_normal((2, 3)).astype(dtype)
        grads = [rng.standard_normal((2, 3)).astype(dtype) for _ in range(4)]
        grads.append(np.zeros((2, 3), dtype))
        x0c = x0.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            states, xs = oracle.trajectory(rule, x0, grads)
            s = oracle.init(rule, x0)
            s_before = oracle._copy(s)
            oracle.apply(rule, s, x0, grads[0])
            _assert_same_state(s, s_before)
        np.testing.assert_array_equal(x0, x0c)
        for xi in xs:
            assert xi.dtype == dtype and xi.shape == (2, 3)
        if dtype != np.float16 and type(rule).__name__ != "MixedPrecision":
            assert np.all(np.isfinite(xs[-1])), type(rule).__name__
        _check_state_dtypes(states[-1], np.dtype(dtype), type(rule).__name__)


def test_extreme_values_emit_no_warnings():
    big = np.array([6e4, -6e4, np.inf, np.nan, 0.0], dtype=np.float16)
    for dtype in (np.float16, np.float32, np.float64):
        x = big.astype(dtype)
        for rule in all_rules():
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                s = oracle.init(rule, x)
                try:
                    oracle.step(rule, s, x, x)
                except ValueError:
                    assert "ClipNorm" in repr([type(rule).__name__, *_names(rule)])


def test_zero_dim_arrays_keep_layout():
    x = np.array(1.5)
    for rule in all_rules():
        states, xs = oracle.trajectory(rule, x, [np.array(0.25)] * 3)
        assert isinstance(xs[-1], np.ndarray) and xs[-1].shape == ()
        _check_zero_dim_arrays(states[-1], type(rule).__name__)
        _check_state_dtypes(states[-1], np.dtype(np.float64), type(rule).__name__)


def test_state_layouts():
    x = np.zeros(3, np.float32)
    f32 = np.float32
    assert oracle.init(Descent(), x) is None
    s = oracle.init(Rprop(0.1), x)
    assert s[1].dtype == f32 and np.all(s[1] == f32(0.1))
    assert oracle.init(RMSProp(), x)[1] is False
    assert oracle.init(RMSProp(centred=True), x)[1].shape == (3,)
    s = oracle.init(RAdam(), x)
    assert s[3] == 1 and s[2] == (f32(0.9), f32(0.999)) and isinstance(s[2][0], f32)
    assert len(oracle.init(OAdam(), x)) == 4
    assert np.all(oracle.init(AdaGrad(), x) == f32(1e-8))
    assert all(np.all(a == f32(1e-8)) for a in oracle.init(AMSGrad(), x))
    assert oracle.init(AccumGrad(4), x)[1] == 1
    assert oracle.init(AdaDelta(), x)[0].dtype == f32


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _names(rule):
    out = []
    for r in getattr(rule, "rules", ()):
        out.append(type(r).__name__)
        out.extend(_names(r))
    if hasattr(rule, "rule"):
        out.append(type(rule.rule).__name__)
    return out


def _assert_same_state(a, b):
    if isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, tuple):
        assert len(a) == len(b)
        for ai, bi in zip(a, b, strict=True):
            _assert_same_state(ai, bi)
    else:
        assert a == b or np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def _check_state_dtypes(s, dtype, name):
    if isinstance(s, (np.ndarray, np.generic)):
        if name != "MixedPrecision":
            assert s.dtype == dtype, name
    elif isinstance(s, tuple):
        for e in s:
            _check_state_dtypes(e, dtype, name)
    else:
        assert s is None or s is False or isinstance(s, int), (name, s)


def _check_zero_dim_arrays(s, name):
    """Array slots stay 0-d ndarrays; only βt entries are NumPy scalars."""
    if name in ("Adam", "AdaMax", "NAdam", "AdamW", "AdaBelief", "RAdam", "OAdam"):
        assert isinstance(s[0], np.ndarray) and isinstance(s[1], np.ndarray), name
        assert all(isinstance(b, np.generic) for b in s[2]), name
    elif name in ("Momentum", "Nesterov", "Lion", "AdaGrad"):
        assert isinstance(s, np.ndarray), name
    elif name in ("Rprop", "AdaDelta", "AMSGrad"):
        assert all(isinstance(a, np.ndarray) for a in s), name


def test_scheduled_takes_each_value_at_its_step():
    rule = Scheduled(Descent(), eta=lambda step: 0.1 * (step + 1))
    _, xs = oracle.trajectory(rule, np.zeros(2), [np.ones(2)] * 3)
    np.testing.assert_allclose(xs[-1], -(0.1 + 0.2 + 0.3), rtol=1e-15)


def test_scheduled_routes_into_chains():
    rule = Scheduled(
        OptimiserChain(ClipGrad(1.0), Descent()), eta=lambda step: 0.5, delta=lambda s: 0.1
    )
    _, upd = oracle.apply(rule, oracle.init(rule, np.zeros(1)), np.zeros(1), np.array([3.0]))
    assert upd[0] == 0.05


def test_lookahead_pulls_back_every_k_steps():
    rule = Lookahead(Descent(0.1), k=3, alpha=0.5)
    states, xs = oracle.trajectory(rule, np.zeros(1), [np.ones(1)] * 4)
    np.testing.assert_allclose(xs[2], -0.15, rtol=1e-15)  # half of three steps of 0.1
    np.testing.assert_allclose(xs[3], -0.25, rtol=1e-15)  # then fast again
    assert states[2][1] == 3 and states[2][0][0] == xs[2][0]


def test_skipnonfinite_skips_and_counts():
    rule = SkipNonFinite(Descent(0.1), max_consecutive=1)
    state = oracle.init(rule, np.zeros(1))
    state, upd = oracle.apply(rule, state, np.zeros(1), np.array([np.nan]))
    assert upd is None and state[:2] == (1, 1)
    with pytest.raises(FloatingPointError):
        oracle.apply(rule, state, np.zeros(1), np.array([np.inf]))
    state, upd = oracle.apply(rule, state, np.zeros(1), np.array([1.0]))
    assert state[:2] == (0, 1) and upd[0] == 0.1


def test_clipglobalnorm_scales_the_whole_step():
    rule = ClipGlobalNorm(1.0)
    assert oracle.global_clip(rule, [np.array([3.0]), np.array([4.0])]) == 0.2
    assert oracle.global_clip(rule, [np.array([0.3]), np.array([0.4])]) is None
    _, upd = oracle.apply(rule, None, np.zeros(2), np.array([3.0, 4.0]))
    np.testing.assert_allclose(upd, [0.6, 0.8], rtol=1e-15)
    with pytest.raises(ValueError):
        oracle.global_clip(rule, [np.array([np.inf])])


def test_trust_ratio_by_hand():
    """‖x‖ = 5 and ‖g‖ = 2: the ratio 1·5/(2 + ϵ), min_norm raising a norm, and
    a ratio of 1 when either norm (after min_norm) is 0."""
    x, g = np.array([3.0, 4.0]), np.array([0.0, 2.0])

    def update(rule, x, g):
        return oracle.apply(rule, None, x, g)[1]

    np.testing.assert_array_equal(update(TrustRatio(epsilon=0.5), x, g), [0.0, 4.0])
    np.testing.assert_array_equal(update(TrustRatio(coef=0.5), x, g), [0.0, 2.5])
    np.testing.assert_array_equal(update(TrustRatio(min_norm=4.0), x, g), [0.0, 2.5])
    np.testing.assert_array_equal(update(TrustRatio(min_norm=10.0), x, g), g)
    np.testing.assert_array_equal(update(TrustRatio(coef=0.5), 0 * x, g), g)
    np.testing.assert_array_equal(update(TrustRatio(coef=0.5), x, 0 * g), 0 * g)
    np.testing.assert_array_equal(update(TrustRatio(min_norm=4.0), 0 * x, g), g)  # 4/4
    np.testing.assert_array_equal(update(TrustRatio(min_norm=1.0), 0 * x, g), [0.0, 1.0])


def test_lamb_by_hand():
    """At step 1 m̂ = g and v̂ = g², so with ϵ = 0, a = sign(g) + λx."""
    x, g = np.array([3.0, 4.0]), np.array([1.0, -2.0])
    a = np.sign(g) + 0.5 * x  # [2.5, 1]: ‖a‖ = √7.25, ‖x‖ = 5
    rule = Lamb(0.1, epsilon=0.0, lambda_=0.5)
    state, u = oracle.apply(rule, oracle.init(rule, x), x, g)
    np.testing.assert_allclose(u, 0.1 * 5 / np.sqrt(7.25) * a, rtol=1e-14)
    assert state[2] == (0.81, 0.998001)
    # min_norm above both norms: the ratio is min_norm / min_norm
    rule = Lamb(0.1, epsilon=0.0, lambda_=0.5, min_norm=10.0)
    np.testing.assert_allclose(oracle.apply(rule, oracle.init(rule, x), x, g)[1], 0.1 * a)
    # zero gradient and no decay: a = 0, a ratio of 1, no step
    rule = Lamb(0.1)
    assert not oracle.apply(rule, oracle.init(rule, x), x, 0 * g)[1].any()
    # x = 0: a ratio of 1, the step η·a
    u = oracle.apply(rule, oracle.init(rule, x), 0 * x, g)[1]
    np.testing.assert_allclose(u, 0.1 * np.sign(g), rtol=1e-7)


def test_lars_by_hand():
    """a = g + λx = [1.5, 4]; u = η·coef·‖x‖/‖a‖·a; the trace b = ρb + u."""
    x, g = np.array([3.0, 4.0]), np.array([0.0, 2.0])
    u = 0.1 * (0.01 * 5 / np.sqrt(18.25)) * np.array([1.5, 4.0])
    for nesterov, out in [(False, u), (True, 1.8 * u)]:
        rule = Lars(0.1, 0.5, 0.01, 0.8, nesterov=nesterov)
        b, got = oracle.apply(rule, oracle.init(rule, x), x, g)
        np.testing.assert_allclose(b, u, rtol=1e-15)
        np.testing.assert_allclose(got, out, rtol=1e-15)
        b2, _ = oracle.apply(rule, b, x, g)
        np.testing.assert_allclose(b2, 1.8 * u, rtol=1e-15)
