"""adjust / adjust_: learning rates and named fields, through chains and
MixedPrecision, in place and out of place."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from custom_rules import DecayDescent

import optimisers as opt
from optimisers import Leaf


def model():
    return {"alpha": (np.array([0.0]), np.sin), "gamma": np.array([4, 3, 2], np.float32)}


G = {"alpha": None, "gamma": [1, 10, 100]}


def snapshot(tree):
    return pickle.dumps(tree)


# ---------------------------------------------------------------------------
# Julia's "adjusting parameters, out-of-place"


def test_adjust_out_of_place_momentum():
    m = model()
    s = opt.setup(opt.Momentum(0.1, 0.9), m)
    s1, m1 = opt.update(s, m, G)
    np.testing.assert_allclose(m["gamma"] - m1["gamma"], [0.1, 1, 10], rtol=1e-6)
    assert s1["gamma"].rule.eta == 0.1
    np.testing.assert_allclose(s1["gamma"].state, [0.1, 1, 10], rtol=1e-6)
    before = snapshot(s1)

    s2 = opt.adjust(s1, 0.2)
    assert s2["gamma"].rule.eta == 0.2
    assert s2["gamma"].rule.rho == 0.9
    np.testing.assert_array_equal(s2["gamma"].state, s1["gamma"].state)
    assert s2["alpha"][0].rule.eta == 0.2
    np.testing.assert_array_equal(s2["alpha"][0].state, s1["alpha"][0].state)
    assert s2["alpha"][1] is None

    s3 = opt.adjust(s1, eta=0.3, rho=0.7)
    assert s3["gamma"].rule.eta == 0.3 and s3["gamma"].rule.rho == 0.7
    np.testing.assert_array_equal(s3["gamma"].state, s1["gamma"].state)
    assert s3["alpha"][0].rule.rho == 0.7

    _, m3 = opt.update(s3, m, G)
    assert not np.allclose(m["gamma"] - m3["gamma"], [1, 10, 100])
    # momentum kept: v = 0.7 * [0.1, 1, 10] + 0.3 * g
    np.testing.assert_allclose(
        m["gamma"] - m3["gamma"],
        0.7 * np.array([0.1, 1, 10]) + 0.3 * np.array([1, 10, 100]),
        rtol=1e-5,
    )

    assert snapshot(s1) == before  # adjust changed nothing in place
    assert s1["gamma"].rule == opt.Momentum(0.1, 0.9)
    # new Leafs, new state arrays
    assert s2["gamma"] is not s1["gamma"]
    assert s2["gamma"].state is not s1["gamma"].state
    s2["gamma"].state[0] = 123.0
    assert s1["gamma"].state[0] != 123.0


def test_adjust_out_of_place_chain():
    m = model()
    sc = opt.setup(opt.OptimiserChain(opt.ClipGrad(2), opt.Adam()), m)
    sc1, _ = opt.update(sc, m, G)
    assert sc1["gamma"].rule.rules[1].eta == 0.001
    np.testing.assert_allclose(sc1["gamma"].state[1][0], [0.1, 0.2, 0.2], rtol=1e-6)

    sc2 = opt.adjust(sc1, 0.2)
    assert sc2["gamma"].rule.rules[0].delta == 2  # unchanged: ClipGrad has no eta
    assert sc2["gamma"].rule.rules[1].eta == 0.2
    np.testing.assert_allclose(sc2["gamma"].state[1][0], [0.1, 0.2, 0.2], rtol=1e-6)

    sc2 = opt.adjust(sc1, delta=2.5)
    assert sc2["gamma"].rule.rules[0].delta == 2.5
    assert sc2["gamma"].rule.rules[1].eta == 0.001
    np.testing.assert_allclose(sc2["gamma"].state[1][0], [0.1, 0.2, 0.2], rtol=1e-6)
    assert sc1["gamma"].rule.rules[0].delta == 2


def test_adjust_out_of_place_mixed_precision():
    m = model()
    mp = opt.setup(opt.MixedPrecision(opt.Momentum(0.1, 0.9)), m)
    mp1, _ = opt.update(mp, m, G)
    assert mp1["gamma"].rule.rule.eta == 0.1
    np.testing.assert_allclose(mp1["gamma"].state[1], [0.1, 1, 10], rtol=1e-6)

    mp2 = opt.adjust(mp1, 0.2)
    assert mp2["gamma"].rule.rule.eta == 0.2 and mp2["gamma"].rule.rule.rho == 0.9
    assert mp2["gamma"].rule.dtype == np.float32
    mp3 = opt.adjust(mp1, eta=0.3, rho=0.7)
    assert mp3["gamma"].rule.rule.eta == 0.3 and mp3["gamma"].rule.rule.rho == 0.7
    np.testing.assert_array_equal(mp3["gamma"].state[0], mp1["gamma"].state[0])
    assert mp1["gamma"].rule.rule.eta == 0.1


# ---------------------------------------------------------------------------
# Julia's "adjusting parameters, in-place"


def test_adjust_in_place_momentum():
    m = model()
    s = opt.setup(opt.Momentum(0.1, 0.9), m)
    s1, _m1 = opt.update(s, m, G)
    leaf, state_array = s1["gamma"], s1["gamma"].state

    assert opt.adjust_(s1, 0.2) is None
    assert s1["gamma"] is leaf and s1["gamma"].state is state_array
    assert s1["gamma"].rule.eta == pytest.approx(0.2)
    assert s1["gamma"].rule.rho == pytest.approx(0.9)
    np.testing.assert_allclose(s1["gamma"].state, [0.1, 1, 10], rtol=1e-6)
    assert s1["alpha"][0].rule.eta == pytest.approx(0.2)

    opt.adjust_(s1, eta=0.3, rho=0.7)
    assert s1["gamma"].rule.eta == pytest.approx(0.3)
    assert s1["gamma"].rule.rho == pytest.approx(0.7)
    np.testing.assert_allclose(s1["gamma"].state, [0.1, 1, 10], rtol=1e-6)
    assert s1["alpha"][0].rule.rho == pytest.approx(0.7)

    _, m3 = opt.update(s1, m, G)
    assert not np.allclose(m["gamma"] - m3["gamma"], [1, 10, 100])

    # Julia silently ignores an unknown field; API.md makes it an error that changes nothing
    with pytest.raises((TypeError, ValueError), match="zeta"):
        opt.adjust_(s1, zeta="this does nothing")
    assert s1["gamma"].rule.eta == pytest.approx(0.3)


def test_adjust_in_place_chain():
    m = model()
    sc = opt.setup(opt.OptimiserChain(opt.ClipGrad(2), opt.Adam()), m)
    sc1, _ = opt.update(sc, m, G)
    assert sc1["gamma"].rule.rules[1].eta == pytest.approx(0.001)

    opt.adjust_(sc1, 0.2)
    assert sc1["gamma"].rule.rules[0].delta == 2
    assert sc1["gamma"].rule.rules[1].eta == pytest.approx(0.2)
    np.testing.assert_allclose(sc1["gamma"].state[1][0], [0.1, 0.2, 0.2], rtol=1e-6)

    opt.adjust_(sc1, delta=2.5)
    assert sc1["gamma"].rule.rules[0].delta == pytest.approx(2.5)
    assert sc1["gamma"].rule.rules[1].eta == pytest.approx(0.2)
    np.testing.assert_allclose(sc1["gamma"].state[1][0], [0.1, 0.2, 0.2], rtol=1e-6)


def test_adjust_in_place_mixed_precision():
    m = model()
    mp = opt.setup(opt.MixedPrecision(opt.Momentum(0.1, 0.9)), m)
    mp1, _ = opt.update(mp, m, G)
    opt.adjust_(mp1, 0.2)
    assert mp1["gamma"].rule.rule.eta == 0.2 and mp1["gamma"].rule.rule.rho == 0.9
    opt.adjust_(mp1, eta=0.3, rho=0.7)
    assert mp1["gamma"].rule.rule.eta == 0.3 and mp1["gamma"].rule.rule.rho == 0.7
    assert isinstance(mp1["gamma"].rule, opt.MixedPrecision)


# ---------------------------------------------------------------------------
# the seeds' Nesterov example (Optimisers.adjust!'s docstring)


def test_nesterov_adjust_example():
    m = {"vec": np.random.default_rng(0).random(2).astype(np.float32), "fun": np.sin}
    st = opt.setup(opt.Nesterov(), m)
    assert st["fun"] is None
    np.testing.assert_array_equal(st["vec"].state, np.zeros(2, np.float32))
    assert st["vec"].state.dtype == np.float32

    st, m = opt.update(st, m, {"vec": [16, 88], "fun": None})  # fake gradient
    assert st["vec"].rule == opt.Nesterov(0.001, 0.9)
    np.testing.assert_allclose(st["vec"].state, [-0.016, -0.088], rtol=1e-6)

    state_array = st["vec"].state
    opt.adjust_(st, 0.123)  # change the learning rate, momentum untouched
    assert st["vec"].rule == opt.Nesterov(0.123, 0.9)
    assert st["vec"].state is state_array
    np.testing.assert_allclose(st["vec"].state, [-0.016, -0.088], rtol=1e-6)

    st2 = opt.setup(opt.OptimiserChain(opt.ClipGrad(), opt.Adam()), m)
    assert st2["vec"].rule == opt.OptimiserChain(
        opt.ClipGrad(10.0), opt.Adam(0.001, (0.9, 0.999), 1e-8)
    )
    assert st2["vec"].state[0] is None
    st3 = opt.adjust(st2, beta=(0.777, 0.909), delta=11.1)  # delta acts on ClipGrad
    assert st3["vec"].rule == opt.OptimiserChain(
        opt.ClipGrad(11.1), opt.Adam(0.001, (0.777, 0.909), 1e-8)
    )
    b1t, b2t = st3["vec"].state[1][2]  # the stored powers are not touched
    assert b1t == np.float32(0.9) and b2t == np.float32(0.999)

    before = pickle.dumps(st)
    with pytest.raises((TypeError, ValueError), match="beta"):  # Julia: silently ignored
        opt.adjust(st, beta="no such field")
    assert pickle.dumps(st) == before


# ---------------------------------------------------------------------------
# by name, through chains


def test_each_field_goes_to_the_rules_that_have_it():
    chain = opt.OptimiserChain(
        opt.WeightDecay(0.1),
        opt.ClipNorm(5.0),
        opt.Momentum(0.01, 0.9),
        opt.Adam(),
        opt.SignDecay(),
    )
    s = opt.setup(chain, {"w": np.ones(3)})
    opt.adjust_(s, 0.5, rho=0.5, lambda_=0.25, omega=1.0)
    rules = s["w"].rule.rules
    assert rules[0] == opt.WeightDecay(0.25)
    assert rules[1] == opt.ClipNorm(1.0)
    assert rules[2] == opt.Momentum(0.5, 0.5)
    assert rules[3] == opt.Adam(0.5)
    assert rules[4] == opt.SignDecay(0.25)


def test_nested_chain_and_mixed_precision():
    rule = opt.MixedPrecision(
        np.float64,
        opt.OptimiserChain(opt.OptimiserChain(opt.ClipGrad(1.0), opt.Nesterov()), opt.AdamW()),
    )
    s = opt.setup(rule, {"w": np.ones(2, np.float32)})
    s2 = opt.adjust(s, 0.01, lambda_=0.1, couple=False)
    r = s2["w"].rule
    assert isinstance(r, opt.MixedPrecision) and r.dtype == np.float64
    assert r.rule.rules[0].rules[1] == opt.Nesterov(0.01)
    assert r.rule.rules[1] == opt.AdamW(0.01, lambda_=0.1, couple=False)
    assert s["w"].rule == rule


def test_adjust_rule_returns_rule():
    r = opt.adjust(opt.Adam(), 0.1)
    assert r == opt.Adam(0.1) and isinstance(r, opt.Adam)
    assert opt.adjust(opt.Adam(), beta=(0.8, 0.9)) == opt.Adam(beta=(0.8, 0.9))
    mp = opt.adjust(opt.MixedPrecision(np.float64, opt.Adam(1e-3)), 2e-3)
    assert isinstance(mp, opt.MixedPrecision) and mp.dtype == np.float64
    assert mp.rule.eta == 2e-3
    ch = opt.adjust(opt.OptimiserChain(opt.ClipGrad(), opt.Descent()), eta=0.5, delta=1.0)
    assert ch == opt.OptimiserChain(opt.ClipGrad(1.0), opt.Descent(0.5))
    assert opt.adjust(opt.RMSProp(centred=True), rho=0.5) == opt.RMSProp(rho=0.5, centred=True)
    assert opt.adjust(opt.AccumGrad(2), n=4) == opt.AccumGrad(4)
    with pytest.raises((TypeError, ValueError), match="eta"):
        opt.adjust(opt.AdaDelta(), 0.1)  # AdaDelta has no learning rate
    with pytest.raises(ValueError):
        opt.adjust(opt.Adam(), -0.1)


def test_adjust_custom_rule():
    r = DecayDescent(0.1)
    r2 = opt.adjust(r, 0.5)
    assert isinstance(r2, DecayDescent) and r2.eta == 0.5 and r.eta == 0.1
    s = opt.setup(opt.OptimiserChain(opt.ClipGrad(), r), {"w": np.ones(2)})
    opt.adjust_(s, 0.3)
    assert s["w"].rule.rules[1].eta == 0.3
    assert r.eta == 0.1  # the rule object given to setup is not mutated
    with pytest.raises((TypeError, ValueError), match="rho"):
        opt.adjust(r, rho=0.5)


@pytest.mark.parametrize("kw", [{"zeta": 1.0}, {"eta": 0.1, "zeta": 1.0}, {"epsilon": 1e-3}])
def test_unknown_field_raises_and_changes_nothing(kw):
    m = {"a": np.ones(2), "b": [np.ones(3)]}
    s = opt.setup(opt.OptimiserChain(opt.ClipGrad(), opt.Momentum()), m)
    before = snapshot(s)
    with pytest.raises((TypeError, ValueError)) as info:
        opt.adjust_(s, **kw)
    assert list(kw)[-1] in str(info.value)
    assert snapshot(s) == before
    with pytest.raises((TypeError, ValueError)):
        opt.adjust(s, **kw)
    assert snapshot(s) == before


def test_field_one_leaf_has_is_enough():
    m = {"a": np.ones(2), "b": np.ones(3)}
    s = {"a": opt.setup(opt.Adam(), m["a"]), "b": opt.setup(opt.Momentum(), m["b"])}
    opt.adjust_(s, rho=0.5)  # only Momentum has rho: fine
    assert s["b"].rule.rho == 0.5 and s["a"].rule == opt.Adam()
    opt.adjust_(s, beta=(0.5, 0.5), rho=0.25)
    assert s["a"].rule.beta == (0.5, 0.5) and s["b"].rule.rho == 0.25


def test_rmsprop_centred_cannot_be_adjusted():
    m = {"w": np.ones(2)}
    for rule in (opt.RMSProp(), opt.RMSProp(centred=True), opt.OptimiserChain(opt.RMSProp())):
        s = opt.setup(rule, m)
        before = snapshot(s)
        for kw in ({"centred": True}, {"centred": False}, {"centered": True}):
            with pytest.raises((TypeError, ValueError), match="centred"):
                opt.adjust_(s, **kw)
            with pytest.raises((TypeError, ValueError)):
                opt.adjust(s, eta=0.5, **kw)
        assert snapshot(s) == before
    with pytest.raises((TypeError, ValueError)):
        opt.adjust(opt.RMSProp(), centred=True)
    # the other fields can be
    s = opt.setup(opt.RMSProp(centred=True), m)
    opt.adjust_(s, 0.01, rho=0.5)
    assert s["w"].rule == opt.RMSProp(0.01, 0.5, centred=True)


def test_adjust_bad_values_change_nothing():
    m = {"a": np.ones(2), "b": np.ones(2)}
    s = opt.setup(opt.Adam(), m)
    before = snapshot(s)
    for args, kw in [((-1.0,), {}), (("fast",), {}), ((), {"beta": 0.9}), ((), {})]:
        with pytest.raises((TypeError, ValueError)):
            opt.adjust_(s, *args, **kw)
        assert snapshot(s) == before


def test_adjust_model_instead_of_state_raises():
    m = {"layers": [np.ones(2)]}
    with pytest.raises((TypeError, ValueError), match="state tree") as info:
        opt.adjust_(m, 0.1)
    assert "'layers'" in str(info.value)
    np.testing.assert_array_equal(m["layers"][0], [1, 1])


def test_adjust_part_of_a_tree_and_ties():
    w = np.ones(2)
    m = {"enc": {"w": w, "b": np.zeros(2)}, "dec": {"w": w, "b": np.zeros(2)}, "act": "relu"}
    s = opt.setup(opt.Descent(0.1), m)
    opt.adjust_(s["dec"], 0.5)
    assert s["enc"]["w"].rule.eta == 0.5  # the tied Leaf is one Leaf
    assert s["enc"]["b"].rule.eta == 0.1 and s["dec"]["b"].rule.eta == 0.5
    opt.adjust_(s["act"], 0.9)  # no Leaf there: nothing to do
    s2 = opt.adjust(s, 0.2)
    assert s2["enc"]["w"] is s2["dec"]["w"]  # tie kept in the new tree
    assert s["enc"]["w"].rule.eta == 0.5


def test_adjust_keeps_frozen_and_state():
    m = {"w": np.ones(2)}
    s = opt.setup(opt.Momentum(), m)
    opt.update_(s, m, {"w": [1, 1]})
    opt.freeze_(s)
    s2 = opt.adjust(s, 0.5)
    assert isinstance(s2["w"], Leaf) and s2["w"].frozen
    np.testing.assert_array_equal(s2["w"].state, s["w"].state)
    s3 = copy.deepcopy(s)
    opt.adjust_(s3, 0.5)
    assert s3["w"].frozen
