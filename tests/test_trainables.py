"""trainables, KeyPath, getkeypath, haskeypath: Optimisers.jl's tests of
trainables and the seeds' "Collecting all trainable parameters"."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any, NamedTuple

import numpy as np
import pytest
from test_destructure import BatchNorm, models

import optimisers as opt
from optimisers import KeyPath, getkeypath, haskeypath, trainables


def test_trainables_of_the_jl_models():
    m1, m2, m3, m4, m5, m6, m7, m8, m9 = models()
    ps = trainables(m1)
    assert isinstance(ps, list) and len(ps) == 1 and ps[0] is m1
    ps = trainables(m2)
    assert len(ps) == 2 and ps[0] is m2[0] and ps[1] is m2[1]
    ps = trainables(m3)
    assert [p.tolist() for p in ps] == [[1, 2, 3], [4, 5, 6]]
    ps = trainables(m4)
    assert [p.tolist() for p in ps] == [[1, 2, 3], [4, 5, 6]]  # the tie once
    ps = trainables(m5)
    assert [p.tolist() for p in ps] == [[1, 2, 3], [4, 5, 6], [4, 5, 6]]
    ps = trainables(m6)
    assert len(ps) == 2 and ps[1].tolist() == [4 + 1j]
    ps = trainables(m7)
    assert [p.tolist() for p in ps] == [[1, 2, 3]]
    ps = trainables(m8)
    assert [p.tolist() for p in ps] == [[1, 2, 3], [4], [5]]
    ps = trainables(m9)
    assert len(ps) == 2 and ps[1] is m9["b"]


def test_l2_regulariser_gradient():
    """loss(m) = sum(sum(p**2) for p in trainables(m)): its gradient tree is 2p
    at every position, and update sums the tied positions' gradients."""
    m4 = models()[3]
    loss = sum(float(np.sum(p**2)) for p in trainables(m4))
    assert loss == 1 + 4 + 9 + 16 + 25 + 36


def test_docstring_examples():
    @dataclasses.dataclass
    class MyLayer:
        w: Any
        b: Any

        def trainable(self):
            return {"w": self.w}

    x = MyLayer(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))
    assert [p.tolist() for p in trainables(x)] == [[1, 2, 3]]
    x = MyLayer({"a": np.array([1.0, 2.0]), "b": np.array([3.0])}, np.array([4.0, 5.0, 6.0]))
    assert [p.tolist() for p in trainables(x)] == [[1, 2], [3]]

    class AB(NamedTuple):
        a: Any
        b: Any

    x = AB(np.array([1.0, 2.0]), ({"c": np.array([3.0, 4.0]), "d": 5.0}, np.array([6.0, 7.0])))
    pairs = trainables(x, path=True)
    assert [kp for kp, _ in pairs] == [KeyPath("a"), KeyPath("b", 0, "c"), KeyPath("b", 1)]
    assert [str(kp) for kp, _ in pairs] == [
        "KeyPath('a')",
        "KeyPath('b', 0, 'c')",
        "KeyPath('b', 1)",
    ]
    for kp, y in pairs:
        assert getkeypath(x, kp) is y
    np.testing.assert_array_equal(getkeypath(x, KeyPath("b", 0, "c")), [3.0, 4.0])
    assert getkeypath(x, KeyPath("b", 0, "d")) == 5.0
    assert haskeypath(x, KeyPath("b", 0, "d"))
    assert not haskeypath(x, KeyPath("b", 0, "e"))
    assert not haskeypath(x, KeyPath("b", 2))
    with pytest.raises(KeyError, match="KeyPath"):
        getkeypath(x, KeyPath("b", 2))


def test_seeds_chain_dense_batchnorm_dense():
    """Chain(Dense(2 => 3, tanh), BatchNorm(3), Dense(3 => 2)): six arrays,
    BatchNorm's running statistics not among them."""
    rng = np.random.default_rng(0)

    @opt.register
    class Dense:
        def __init__(self, n_in, n_out, act=None):
            self.weight = rng.standard_normal((n_out, n_in)).astype(np.float32)
            self.bias = np.zeros(n_out, np.float32)
            self.act = act

    model = {"layers": (Dense(2, 3, np.tanh), BatchNorm(3), Dense(3, 2))}
    ps = trainables(model)
    assert len(ps) == 6
    assert [p.shape for p in ps] == [(3, 2), (3,), (3,), (3,), (2, 3), (2,)]
    layers = model["layers"]
    expected = [
        layers[0].weight,
        layers[0].bias,
        layers[1].gamma,
        layers[1].beta,
        layers[2].weight,
        layers[2].bias,
    ]
    assert all(p is q for p, q in zip(ps, expected))
    paths = [kp for kp, _ in trainables(model, path=True)]
    assert paths[2] == KeyPath("layers", 1, "gamma")

    def l2reg(m):
        return sum(float(np.sum(p**2)) for p in trainables(m))

    assert l2reg(model) == pytest.approx(
        sum(float(np.sum(p.astype(np.float64) ** 2)) for p in expected), rel=1e-6
    )


def test_seeds_moving_average_example():
    rng = np.random.default_rng(1)
    model = {"enc": [{"w": rng.standard_normal((3, 2)), "b": np.zeros(3)}], "scale": 2, "tag": "m"}
    model_avg = {"enc": [{"w": np.zeros((3, 2)), "b": np.ones(3)}], "scale": 2, "tag": "m"}
    before = [p.copy() for p in trainables(model_avg)]

    for kp, p_avg in trainables(model_avg, path=True):
        p = getkeypath(model, kp)
        p_avg[...] = 0.99 * p_avg + 0.01 * p

    for (kp, now), old in zip(trainables(model_avg, path=True), before):
        np.testing.assert_allclose(now, 0.99 * old + 0.01 * getkeypath(model, kp))


def test_ties_and_views_are_listed_once():
    w = np.arange(6.0).reshape(2, 3)
    model = {"enc": w, "dec": w.T, "again": w, "row": w[1], "b": np.zeros(2)}
    ps = trainables(model, path=True)
    assert [kp for kp, _ in ps] == [KeyPath("enc"), KeyPath("b")]
    assert ps[0][1] is w


def test_view_first_in_tree_order():
    w = np.arange(6.0).reshape(2, 3)
    model = [w.T, w]
    ps = trainables(model, path=True)
    assert len(ps) == 1 and ps[0][1] is w and ps[0][0] == KeyPath(1)


def test_registered_class_and_dataclass_paths():
    @opt.register
    class Thing:
        def __init__(self):
            self.alpha = np.ones(2)
            self.n = 3

    @dataclasses.dataclass
    class Holder:
        thing: Any
        items: list

    h = Holder(Thing(), [np.zeros(1), "x", (np.ones(3),)])
    paths = [kp for kp, _ in trainables(h, path=True)]
    assert paths == [KeyPath("thing", "alpha"), KeyPath("items", 0), KeyPath("items", 2, 0)]
    for kp in paths:
        assert haskeypath(h, kp)
    assert getkeypath(h, KeyPath("thing", "n")) == 3


def test_keypath_behaves():
    kp = KeyPath("layers", 0, "weight")
    assert repr(kp) == "KeyPath('layers', 0, 'weight')"
    assert str(kp) == repr(kp)
    assert kp == KeyPath("layers", 0, "weight") and kp != KeyPath("layers", 1, "weight")
    assert hash(kp) == hash(KeyPath("layers", 0, "weight"))
    assert len({kp, KeyPath("layers", 0, "weight"), KeyPath()}) == 2
    assert KeyPath(KeyPath("a"), "b") == KeyPath("a", "b")
    assert pickle.loads(pickle.dumps(kp)) == kp
    assert list(kp) == ["layers", 0, "weight"] and len(kp) == 3
    assert repr(KeyPath()) == "KeyPath()"
    assert getkeypath({"a": 1}, KeyPath()) == {"a": 1}
    assert getkeypath({"a": [5, 6]}, ("a", 1)) == 6


def test_no_parameters():
    assert trainables({"n": 1, "ints": np.arange(3)}) == []
    assert trainables({"n": 1}, path=True) == []
    assert trainables(np.ones(2), path=True)[0][0] == KeyPath()
