"""The worked examples of the seed documents, and a port of the "Features"
testsets of Optimisers.jl's test/runtests.jl (plus the AccumGrad,
MixedPrecision and Float16-epsilon testsets of test/rules.jl). Gradients are
computed by hand; the Zygote / ChainRules / StaticArrays / Enzyme parts do not
apply.

Elsewhere: the seeds' "Incomplete or nothing gradients" Adam example, the
freeze examples and Julia's "tied weights" and "freeze/thaw" testsets are in
test_interface.py; the Nesterov adjust example and the "adjusting parameters"
testsets are in test_adjust.py.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
from custom_rules import DecayDescent

import optimisers as opt
from optimisers import Leaf


def a(*v, dtype=np.float64):
    return np.array(v, dtype=dtype)


# ---------------------------------------------------------------------------
# seed examples


def test_optimiserchain_docstring_example():
    o = opt.OptimiserChain(opt.ClipGrad(1.0), opt.Descent(0.1))
    m = (np.zeros(3),)
    s = opt.setup(o, m)
    assert isinstance(s, tuple) and len(s) == 1
    assert isinstance(s[0], Leaf)
    assert s[0].rule == opt.OptimiserChain(opt.ClipGrad(1.0), opt.Descent(0.1))
    assert s[0].state == (None, None)
    new = opt.update(s, m, ([0.3, 1, 7],))[1]  # clips before discounting
    assert isinstance(new, tuple) and len(new) == 1
    np.testing.assert_allclose(new[0], [-0.03, -0.1, -0.1], rtol=1e-15)
    np.testing.assert_array_equal(m[0], [0, 0, 0])


def test_empty_chain_is_descent_one():
    x = a(1, 10, 100)
    s = opt.setup(opt.OptimiserChain(), x)
    np.testing.assert_allclose(opt.update(s, x, a(1, 2, 3))[1], [0, 8, 97])


def test_weightdecay_and_signdecay_docs():
    x = a(1.0, -2.0, 3.0)
    g = a(0.5, 0.5, -0.5)
    # WeightDecay adds λ x to the gradient; SignDecay adds λ sign(x)
    s = opt.setup(opt.OptimiserChain(opt.WeightDecay(0.1), opt.Descent(1.0)), x)
    np.testing.assert_allclose(opt.update(s, x, g)[1], x - (g + 0.1 * x))
    s = opt.setup(opt.OptimiserChain(opt.SignDecay(0.1), opt.Descent(1.0)), x)
    np.testing.assert_allclose(opt.update(s, x, g)[1], x - (g + 0.1 * np.sign(x)))
    # OptimiserChain(SignDecay(0.012), WeightDecay(0.034), Adam()) is adding
    # 0.012 * norm(x, 1) + 0.017 * norm(x, 2)^2 to the loss
    rule = opt.OptimiserChain(opt.SignDecay(0.012), opt.WeightDecay(0.034), opt.Adam())
    s1, x1 = opt.setup(rule, x), x
    s2, x2 = opt.setup(opt.Adam(), x), x
    for t in range(5):
        gt = g * (t + 1)
        s1, x1 = opt.update(s1, x1, gt)
        s2, x2 = opt.update(s2, x2, gt + 0.012 * np.sign(x2) + 2 * 0.017 * x2)
        np.testing.assert_allclose(x1, x2, rtol=1e-14)


def test_weightdecay_chain_training_docs():
    """The Flux docs' OptimiserChain(WeightDecay(1e-4), Descent()) loop, on a
    gradient by hand: loss(w, x) = mse(w[0] @ x, w[1] @ x)."""
    rng = np.random.default_rng(0)
    w = [rng.standard_normal((10, 10)), rng.standard_normal((10, 10))]
    opt_state = opt.setup(opt.OptimiserChain(opt.WeightDecay(1e-4), opt.Descent()), w)
    assert all(isinstance(leaf, Leaf) and leaf.state == (None, None) for leaf in opt_state)

    def loss_and_grad(w, x):
        d = w[0] @ x - w[1] @ x
        g = 2 * np.outer(d, x) / d.size
        return np.mean(d**2), [g, -g]

    xs = rng.random((300, 10))
    _first, g = loss_and_grad(w, xs[0])
    w0 = [p.copy() for p in w]
    opt.update_(opt_state, w, g)
    for p, p0, gp in zip(w, w0, g):  # one step by hand: x -= η (g + λ x)
        np.testing.assert_allclose(p, p0 - 0.1 * (gp + 1e-4 * p0), rtol=1e-14)
    for x in xs[1:]:
        opt.update_(opt_state, w, loss_and_grad(w, x)[1])
    test = rng.random((20, 10))
    before = np.mean([loss_and_grad(w0, x)[0] for x in test])
    after = np.mean([loss_and_grad(w, x)[0] for x in test])
    assert after < 0.5 * before


def test_accumgrad_docstring_example():
    m = {"x": a(1, dtype=np.float32), "y": a(2, dtype=np.float32)}
    r = opt.OptimiserChain(opt.AccumGrad(2), opt.WeightDecay(0.01), opt.Descent(0.1))
    s = opt.setup(r, m)
    opt.update_(s, m, {"x": [33], "y": [0]})
    np.testing.assert_array_equal(m["x"], [1.0])  # model not yet changed
    np.testing.assert_array_equal(m["y"], [2.0])
    opt.update_(s, m, {"x": [0], "y": [444]})  # n=2 gradients applied at once
    assert m["x"].dtype == np.float32 and m["y"].dtype == np.float32
    np.testing.assert_allclose(m["x"], np.float32(-0.651), rtol=1e-6)
    np.testing.assert_allclose(m["y"], np.float32(-20.202002), rtol=1e-6)


def test_decaydescent_docs_rule():
    """The custom rule of the docs: newx̄ = T(eta / √state) .* x̄, state += 1."""

    x = np.ones(3, np.float32)
    s = opt.setup(DecayDescent(0.1), x)
    for t in (1, 2, 3, 4):
        s, x2 = opt.update(s, x, np.ones(3, np.float32))
        assert x2.dtype == np.float32
        np.testing.assert_allclose(x2, x - np.float32(0.1 / np.sqrt(t)), rtol=1e-6)
        x = x2
    assert s.state == 5


# ---------------------------------------------------------------------------
# runtests.jl "Features"


def test_very_basics():
    m = (a(1, 2),)
    mid = id(m[0])
    g = (np.array([25, 33]),)
    s = opt.setup(opt.Descent(0.1), m)
    _s2, m2 = opt.update(s, m, g)
    np.testing.assert_array_equal(m[0], [1, 2])  # not mutated
    np.testing.assert_allclose(m2[0], a(1, 2) - 0.1 * a(25, 33))
    _s3, m3 = opt.update_(s, m, g)
    assert id(m3[0]) == mid
    np.testing.assert_allclose(m3[0], a(1, 2) - 0.1 * a(25, 33))

    m = (a(1, 2),)
    s5 = opt.setup(opt.Momentum(0.1), m)
    s6, _ = opt.update(s5, m, g)
    np.testing.assert_allclose(s6[0].state, [2.5, 3.3])
    np.testing.assert_array_equal(s5[0].state, [0, 0])  # not mutated
    s7, _ = opt.update_(s5, m, g)
    assert s7[0].state is s5[0].state  # same array
    assert s7[0] is s5[0]  # same Leaf


def test_gradient_clipping():
    rng = np.random.default_rng(0)
    m = {"alpha": (a(0.0), np.sin), "gamma": rng.random(3)}
    s1 = opt.setup(opt.ClipGrad(13), m)
    _, m1 = opt.update(s1, m, {"alpha": None, "gamma": [1, 10, 100]})
    np.testing.assert_allclose(m["gamma"] - m1["gamma"], [1, 10, 13])

    s2 = opt.setup(opt.ClipNorm(10), m)
    _, m2 = opt.update(s2, m, {"alpha": ([0.1], None), "gamma": [1, 10, 100]})
    np.testing.assert_allclose(m["alpha"][0] - m2["alpha"][0], [0.1])
    np.testing.assert_allclose(np.linalg.norm(m["gamma"] - m2["gamma"]), 10)
    with pytest.raises(ValueError):  # Julia's DomainError
        opt.update(s2, m, {"alpha": ([0.1], None), "gamma": [1, 10, np.nan]})

    s3 = opt.setup(opt.ClipNorm(5, 1, throw=False), m)
    _, m3 = opt.update(s3, m, {"alpha": ([0.1], None), "gamma": [1, 10, 100]})
    np.testing.assert_allclose(m["alpha"][0] - m3["alpha"][0], [0.1])
    np.testing.assert_allclose(np.linalg.norm(m["gamma"] - m3["gamma"], 1), 5)
    _, m3n = opt.update_(s3, m, {"alpha": None, "gamma": [1, 10, np.inf]})
    assert np.isnan(m3n["gamma"][2])


def test_dict_support_simple():
    d = {"a": a(1, 2), "b": a(3, 4), "c": 1}
    s = opt.setup(opt.AdamW(0.1), d)
    assert isinstance(s, dict)
    assert isinstance(s["a"], Leaf) and isinstance(s["b"], Leaf) and s["c"] is None
    g = {"a": 2 * d["a"], "b": None, "c": None}  # gradient of sum(abs2, model["a"])
    s2, d2 = opt.update(s, d, g)
    assert isinstance(s2, dict) and isinstance(d2, dict)
    np.testing.assert_allclose(d2["a"], [0.9, 1.9])
    np.testing.assert_allclose(d2["b"], [3, 4])
    assert d2["c"] == 1


def test_dict_support_nested():
    C = namedtuple("C", ["c"])
    d = {1: a(1, 2), 2: {"a": C(a(3, 4)), "b": 1}}
    s = opt.setup(opt.AdamW(0.1), d)
    assert isinstance(s[2]["a"].c, Leaf)
    g = {1: None, 2: {"a": C(a(1, 1)), "b": None}}  # gradient of sum(d[2]["a"].c)
    _s2, d2 = opt.update(s, d, g)
    np.testing.assert_allclose(d2[2]["a"].c, [2.9, 3.9])
    np.testing.assert_allclose(d2[1], [1, 2])
    assert d2[2]["b"] == 1
    assert isinstance(d2[2]["a"], C)


def test_optimiserchain():
    x = a(1, 10, 100)
    dx = a(1, 2, 3)

    def step(rule, x=x, dx=dx):
        return opt.update(opt.setup(rule, x), x, dx)[1]

    np.testing.assert_allclose(step(opt.WeightDecay(0.1)), [1 - 0.1 - 1, 10 - 1 - 2, 100 - 10 - 3])
    np.testing.assert_allclose(step(opt.SignDecay(0.1)), [1 - 0.1 - 1, 10 - 0.1 - 2, 100 - 0.1 - 3])
    np.testing.assert_allclose(step(opt.ClipGrad(2)), [1 - 1, 10 - 2, 100 - 2])

    o2 = opt.OptimiserChain(opt.ClipGrad(2), opt.WeightDecay(0.1))
    np.testing.assert_allclose(step(o2), [1 - 0.1 - 1, 10 - 1 - 2, 100 - 10 - 2])
    o2n = opt.OptimiserChain(opt.OptimiserChain(opt.ClipGrad(2), opt.WeightDecay(0.1)))  # nested
    np.testing.assert_allclose(step(o2n), [1 - 0.1 - 1, 10 - 1 - 2, 100 - 10 - 2])
    o2r = opt.OptimiserChain(opt.WeightDecay(0.1), opt.ClipGrad(2))  # reversed
    # (Julia checks `!= [1-0.1-1, 10-2, 100-2]`, which holds only by rounding: the decay
    # comes first, then the clip, so the result is this)
    np.testing.assert_allclose(step(o2r), [1 - 1.1, 10 - 2, 100 - 2])

    np.testing.assert_allclose(step(opt.OptimiserChain(opt.Descent(0.1))), [0.9, 9.8, 99.7])
    np.testing.assert_allclose(step(opt.OptimiserChain()), [1 - 1, 10 - 2, 100 - 3])

    xm, dxm = a(1, -10, 100), a(3, 2, -1)  # L1 norm via sign
    np.testing.assert_allclose(
        step(opt.SignDecay(0.1), xm, dxm), [1 - 0.1 - 3, -10 + 0.1 - 2, 100 - 0.1 + 1]
    )


class Foo:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def trainable(self):
        return {"y": self.y, "x": self.x}  # both, in another order


class TwoThirds:
    def __init__(self, a, b, c):
        self.a, self.b, self.c = a, b, c

    def trainable(self):
        return {"a": self.a}


opt.register(Foo)
opt.register(TwoThirds, fields=("a", "c"))
NT3 = namedtuple("NT3", ["a", "b", "c"])


def test_trainable_subset():
    mf = Foo(a(1, 2), NT3(np.sin, a(3, 4), 5))
    sf = opt.setup(opt.Descent(0.1), mf)
    gf = {"x": None, "y": NT3(None, [1, 1], 1)}
    _, mf2 = opt.update(sf, mf, gf)
    np.testing.assert_array_equal(mf2.x, [1, 2])
    assert mf2.y.a is np.sin and mf2.y.c == 5
    np.testing.assert_allclose(mf2.y.b, [2.9, 3.9])

    f32 = np.float32
    mt = TwoThirds(a(1, 2, dtype=f32), a(3, 4, dtype=f32), a(5, 6, dtype=f32))
    st = opt.setup(opt.Momentum(0.1, 0.9), mt)
    gt = {"a": 2 * mt.a, "b": 200 * mt.b, "c": None}  # sum(abs2, m.a) + 100 sum(abs2, m.b)
    _, mtup = opt.update(st, mt, gt)
    np.testing.assert_allclose(mtup.a, [0.8, 1.6], rtol=1e-6)
    np.testing.assert_array_equal(mtup.b, [3, 4])
    np.testing.assert_array_equal(mtup.c, [5, 6])

    # various kinds of missing branches together
    Q = namedtuple("Q", ["q", "r"])
    P = namedtuple("P", ["p"])
    m = Foo(
        TwoThirds(Foo(1.0, a(2, 3, 4, dtype=f32)), 5.0, a(6, 7, dtype=f32)),
        TwoThirds(P(a(1, 2, 3, dtype=f32)), np.sin, Q(4.0, np.cos)),
    )
    s = opt.setup(opt.Momentum(0.1, 0.9), m)
    # gradient of sum(abs2, m.x.a.y) + m.x.b^2 + log(m.y.c.q)
    g = {
        "x": {"a": {"x": None, "y": 2 * m.x.a.y}, "b": 10.0, "c": None},
        "y": {"a": None, "b": None, "c": Q(0.25, None)},
    }
    _s2, m2 = opt.update_(s, m, g)
    assert isinstance(m2, Foo)
    np.testing.assert_allclose(m.x.a.y, [1.6, 2.4, 3.2], rtol=1e-6)
    np.testing.assert_array_equal(m.y.a.p, [1, 2, 3])
    assert m.x.b == 5.0 and m.y.c.q == 4.0


def test_eltype_preservation():
    m = (np.array([1, 2], np.float16), np.array([3, 4], np.float32))
    s1 = opt.setup(opt.Descent(0.1), m)
    _s2, m2 = opt.update(s1, m, m)
    assert m2[0].dtype == np.float16 and m2[1].dtype == np.float32
    np.testing.assert_allclose(m2[0], [0.9, 1.8], rtol=1e-3)

    # Rprop re-creates its state arrays: they are not widened by float64 gradients
    s5 = opt.setup(opt.Rprop(0.1), m)
    s6, m6 = opt.update(s5, m, (a(1, 2), a(3, 4)))
    assert m6[0].dtype == np.float16 and m6[1].dtype == np.float32
    for i, t in ((0, np.float16), (1, np.float32)):
        assert s6[i].state[0].dtype == t and s6[i].state[1].dtype == t


def test_keyword_arguments():
    assert opt.Nesterov(rho=0.8, eta=0.1) == opt.Nesterov(0.1, 0.8)
    assert opt.AdamW(lambda_=0.3, eta=0.1) == opt.AdamW(0.1, (0.9, 0.999), 0.3, 1.0e-8)


def test_forgotten_gradient():
    x = a(1, 2)
    sx = opt.setup(opt.Descent(), x)
    with pytest.raises(TypeError):
        opt.update(sx, x)  # type: ignore[call-arg]
    m = {"x": x, "y": np.sin}
    sm = opt.setup(opt.Descent(), m)
    with pytest.raises(TypeError):
        opt.update(sm, m)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        opt.update_(sm, m)  # type: ignore[call-arg]


# ---------------------------------------------------------------------------
# rules.jl: AccumGrad, Float16 epsilon, MixedPrecision


def test_accumgrad():
    rng = np.random.default_rng(3)
    x0 = rng.random(5)
    x = x0.copy()
    lr = 0.01
    tree = opt.setup(opt.OptimiserChain(opt.AccumGrad(3), opt.Descent(lr)), x)
    g1, g2, g3, g4 = (rng.random(5) for _ in range(4))
    tree, x1 = opt.update(tree, x, g1)
    np.testing.assert_allclose(x1, x0)
    tree, x2 = opt.update(tree, x1, g2)
    np.testing.assert_allclose(x2, x0)
    tree, x3 = opt.update(tree, x2, g3)
    np.testing.assert_allclose(x3, x0 - lr * (g1 + g2 + g3) / 3)
    tree, x4 = opt.update(tree, x3, g4)
    np.testing.assert_allclose(x4, x3)
    np.testing.assert_array_equal(x, x0)


def test_float16_epsilon():
    # Optimisers.jl issue 167
    x = np.array([0.579, -0.729, 0.5493], np.float16)
    dx = np.array([-0.001497, 0.0001875, -0.013176], np.float16)
    os_ = opt.setup(opt.Adam(1e-4), x)
    os_, x = opt.update(os_, x, dx)
    assert x.dtype == np.float16
    np.testing.assert_allclose(
        x.astype(np.float64), np.array([1.835, -0.886, 0.5493], np.float16), rtol=1e-3
    )


def test_float16_epsilon_is_floored():
    # The part of the Float16 testset that holds either way: ϵ = 1e-8 is not rounded
    # to zero (which would divide 0/0 here), and the result is finite float16.
    x = np.zeros(3, np.float16)
    s = opt.setup(opt.Adam(1e-4), x)
    s, x2 = opt.update(s, x, np.zeros(3, np.float16))
    assert x2.dtype == np.float16 and np.all(np.isfinite(x2))
    np.testing.assert_array_equal(x2, 0)


def test_mixed_precision():
    rng = np.random.default_rng(4)
    x = rng.random(2).astype(np.float16)
    opt_state = opt.setup(opt.MixedPrecision(opt.Adam(1e-3)), x)
    assert opt_state.state[0].dtype == np.float32
    assert opt_state.state[1][0].dtype == np.float32
    g = rng.random(2).astype(np.float16)
    new_state, new_x = opt.update(opt_state, x, g)
    np.testing.assert_array_equal(new_x, new_state.state[0].astype(np.float16))
    assert new_x.dtype == np.float16
    np.testing.assert_allclose(
        new_x, x - np.float16(1e-3), rtol=1e-2
    )  # Adam's first step: η sign(g)

    x = rng.random(2).astype(np.float16)
    opt_state = opt.setup(opt.MixedPrecision(np.float64, opt.Adam(1e-3)), x)
    assert opt_state.state[0].dtype == np.float64
    assert opt_state.state[1][0].dtype == np.float64

    o = opt.MixedPrecision(np.float64, opt.Adam(1e-3))
    o2 = opt.adjust(o, 2e-3)
    assert o2.rule.eta == 2e-3
    assert isinstance(o2, opt.MixedPrecision) and isinstance(o2.rule, opt.Adam)
    assert o2.dtype == np.float64
    with pytest.raises(ValueError):  # Julia's ArgumentError
        opt.OptimiserChain(opt.MixedPrecision(opt.Adam()))
