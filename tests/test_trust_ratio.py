"""The trust-ratio rules (``TrustRatio``, ``Lamb``, ``Lars``): each is the
kernel chain it is written as, bit for bit, and the ratio's edge cases (zero
and tiny norms, ``min_norm`` above a norm) match the oracle."""

from __future__ import annotations

import numpy as np
import oracle
import pytest

import optimisers as o
from optimisers.axon import AxonTrace

Chain = o.OptimiserChain


def model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"w": (7, 5), "b": (7,), "big": (300_001,), "s": ()}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def run(rule, dtype, steps=5):
    x, rng = model(dtype), np.random.default_rng(1)
    state = o.setup(rule, x)
    for t in range(steps):
        g = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in x.items()}
        if t == 2:
            g = {k: np.zeros_like(v) for k, v in g.items()}
        state, x = o.update_(state, x, g)
    return state, x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("min_norm", [0.0, 10.0])
def test_lamb_is_its_chain_bit_for_bit(dtype, min_norm):
    lamb = o.Lamb(0.02, (0.8, 0.99), 1e-6, 0.1, min_norm=min_norm)
    chain = Chain(
        o.Adam(1.0, (0.8, 0.99), 1e-6),
        o.WeightDecay(0.1),
        o.TrustRatio(min_norm),
        o.Descent(0.02),
    )
    (s1, x1), (s2, x2) = run(lamb, dtype), run(chain, dtype)
    for k in x1:
        assert x1[k].tobytes() == x2[k].tobytes(), k
        m, v, powers = s1[k].state
        assert m.tobytes() == s2[k].state[0][0].tobytes()
        assert v.tobytes() == s2[k].state[0][1].tobytes()
        assert powers == s2[k].state[0][2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_is_its_chain_bit_for_bit(dtype, nesterov):
    lars = o.Lars(0.05, 0.1, 0.01, 0.8, nesterov=nesterov)
    chain = Chain(
        o.WeightDecay(0.1),
        o.TrustRatio(coef=0.01),
        o.Descent(0.05),
        AxonTrace(0.8, nesterov=nesterov),
    )
    (s1, x1), (s2, x2) = run(lars, dtype), run(chain, dtype)
    for k in x1:
        assert x1[k].tobytes() == x2[k].tobytes(), k
        assert s1[k].state.tobytes() == s2[k].state[3].tobytes()


def edge_cases(dtype):
    """(name, x, g): zero and tiny norms of x and of the gradient."""
    tiny = np.finfo(dtype).tiny  # the smallest normal number
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal(40).astype(dtype), rng.standard_normal(40).astype(dtype)
    return [
        ("x zero", np.zeros_like(x), g),
        ("g zero", x, np.zeros_like(g)),
        ("both zero", np.zeros_like(x), np.zeros_like(g)),
        ("x tiny", x * tiny, g),
        ("x subnormal", np.full_like(x, tiny / 8), g),
        ("g tiny", x, g * tiny),
        ("g subnormal", x, np.full_like(g, tiny / 8)),
        ("x huge", x * dtype(np.finfo(dtype).max / 64), g),
    ]


RULES = [
    o.TrustRatio(),
    o.TrustRatio(0.5, 2.0, 1e-3),
    o.TrustRatio(min_norm=100.0),
    o.Lamb(),
    o.Lamb(0.1, lambda_=0.1),
    o.Lamb(0.1, lambda_=0.1, min_norm=100.0),
    o.Lars(),
    o.Lars(lambda_=0.1, nesterov=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_zero_and_tiny_norms_match_the_oracle(rule, dtype):
    rtol = 1e-5 if dtype == np.float32 else 1e-11
    for name, x, g in edge_cases(dtype):
        state, want_state = o.setup(rule, x), oracle.init(rule, x)
        got, want = x.copy(), x.copy()
        for _ in range(3):
            state, got = o.update(state, got, g)
            want_state, want = oracle.step(rule, want_state, want, g)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=name)
            assert np.isfinite(got).all() == np.isfinite(want).all(), name


def test_the_ratio_is_one_when_a_norm_is_zero():
    x, g = np.array([3.0, 4.0]), np.array([0.0, 2.0])
    zero = np.zeros(2)
    # coef 0.5 would halve the step if the ratio were taken.
    assert (o.update(o.setup(o.TrustRatio(coef=0.5), zero), zero, g)[1] == -g).all()
    assert (o.update(o.setup(o.TrustRatio(coef=0.5), x), x, zero)[1] == x).all()
    # min_norm lifts a zero norm: 4 / max(2, 4) = 1; 5 / max(2, 4) = 1.25.
    assert (o.update(o.setup(o.TrustRatio(min_norm=4.0), zero), zero, g)[1] == -g).all()
    assert (o.update(o.setup(o.TrustRatio(min_norm=4.0), x), x, g)[1] == x - 1.25 * g).all()
    # ϵ added to the update's norm: 5 / (2 + 0.5) = 2.
    assert (o.update(o.setup(o.TrustRatio(epsilon=0.5), x), x, g)[1] == x - 2 * g).all()
