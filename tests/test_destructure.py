"""destructure, Restructure and Restructure.flatten: Optimisers.jl's tests of
destructure, the seeds' "Obtaining a flat parameter vector", the copy and
dtype rules, errors, and round-trip properties on random nested models."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layouts import unaligned

import optimisers as opt
from optimisers import Restructure, destructure, trainables

# ---------------------------------------------------------------------------
# Models of Optimisers.jl's test/destructure.jl, in Python


@dataclasses.dataclass
class Foo:
    x: Any
    y: Any


@dataclasses.dataclass
class TwoThirds:
    """Only ``a`` is trainable (Optimisers.jl's TwoThirds)."""

    a: Any
    b: Any
    c: Any

    def trainable(self):
        return {"a": self.a}


def models():
    m1 = np.arange(1, 4.0)
    m2 = (np.arange(1, 4.0), np.arange(4, 7.0))
    m3 = {"x": m1, "y": np.sin, "z": np.arange(4, 7.0)}
    m4 = {"x": m1, "y": m1, "z": np.arange(4, 7.0)}
    m5 = {"a": (m3, True), "b": (m1, False), "c": (m4, True)}
    m6 = {"a": m1, "b": np.array([4.0 + 1j]), "c": m1}
    m7 = TwoThirds(
        (np.sin, np.arange(1, 4.0)), (np.cos, np.arange(4, 7.0)), (np.tan, np.arange(7, 10.0))
    )
    m8 = [Foo(m1, m1), {"a": True, "b": Foo(np.array([4.0]), False), "c": ()}, [[np.array([5.0])]]]
    mat = np.array([[4, 6], [5, 7]], dtype=np.float32)
    m9 = {"a": m1, "b": mat, "c": [mat, m1]}
    return m1, m2, m3, m4, m5, m6, m7, m8, m9


def test_flatten():
    m1, m2, m3, m4, m5, m6, m7, m8, m9 = models()
    flat1 = destructure(m1)[0]
    assert isinstance(flat1, np.ndarray) and flat1.dtype == np.float64
    np.testing.assert_array_equal(flat1, [1, 2, 3])
    np.testing.assert_array_equal(destructure(m2)[0], np.arange(1, 7))
    np.testing.assert_array_equal(destructure(m3)[0], np.arange(1, 7))
    np.testing.assert_array_equal(destructure(m4)[0], np.arange(1, 7))  # tie once
    np.testing.assert_array_equal(destructure(m5)[0], [1, 2, 3, 4, 5, 6, 4, 5, 6])
    flat6 = destructure(m6)[0]
    assert flat6.dtype == np.complex128
    np.testing.assert_array_equal(flat6, [1, 2, 3, 4 + 1j])
    np.testing.assert_array_equal(destructure(m7)[0], [1, 2, 3])
    np.testing.assert_array_equal(destructure(m8)[0], np.arange(1, 6))
    flat9 = destructure(m9)[0]
    assert flat9.dtype == np.float64  # float32 and float64 promote
    np.testing.assert_array_equal(flat9, [1, 2, 3, 4, 6, 5, 7])  # C order


def test_rebuild():
    m1, m2, m3, m4, m5, m6, m7, m8, m9 = models()
    np.testing.assert_array_equal(destructure(m1)[1](np.arange(7, 10)), [7, 8, 9])
    r2 = destructure(m2)[1](np.arange(4, 10))
    assert isinstance(r2, tuple)
    np.testing.assert_array_equal(r2[0], [4, 5, 6])
    np.testing.assert_array_equal(r2[1], [7, 8, 9])
    r3 = destructure(m3)[1](np.arange(4, 10))
    assert r3["y"] is np.sin
    np.testing.assert_array_equal(r3["x"], [4, 5, 6])
    np.testing.assert_array_equal(r3["z"], [7, 8, 9])

    r4 = destructure(m4)[1](np.arange(4, 10))
    assert r4["x"] is r4["y"]
    np.testing.assert_array_equal(r4["x"], [4, 5, 6])
    np.testing.assert_array_equal(r4["z"], [7, 8, 9])

    r5 = destructure(m5)[1](np.arange(9, 0, -1))
    assert r5["a"][0]["x"] is r5["b"][0]
    assert r5["b"][1] is False
    np.testing.assert_array_equal(r5["c"][0]["z"], [3, 2, 1])

    r6 = destructure(m6)[1](np.arange(4, 8) + np.arange(1, 5) * 1j)
    assert r6["a"].dtype == np.float64  # the real part, for a real parameter
    np.testing.assert_array_equal(r6["a"], [4, 5, 6])
    assert r6["a"] is r6["c"]
    np.testing.assert_array_equal(r6["b"], [7 + 4j])

    r7 = destructure(m7)[1](np.array([10, 20, 30]))
    assert isinstance(r7, TwoThirds)
    assert r7.a[0] is np.sin
    np.testing.assert_array_equal(r7.a[1], [10, 20, 30])
    assert r7.b is m7.b and r7.c is m7.c  # hidden by trainable: kept as they were

    r8 = destructure(m8)[1](np.arange(1, 6))
    assert r8[0].x is r8[0].y
    assert r8[1]["b"].y is False
    np.testing.assert_array_equal(r8[2][0][0], [5.0])

    r9 = destructure(m9)[1](np.arange(10, 71, 10))
    assert r9["b"] is r9["c"][0]
    assert r9["b"].dtype == np.float32
    np.testing.assert_array_equal(r9["b"], [[40, 50], [60, 70]])


def test_wrong_length_names_both():
    _, re = destructure(models()[6])
    with pytest.raises(ValueError, match=r"length 3.*length 2"):
        re(np.array([10.0, 20.0]))
    with pytest.raises(ValueError, match=r"length 3.*length 4"):
        re(np.arange(4.0))
    with pytest.raises(ValueError, match="1-d"):
        re(np.ones((3, 1)))
    with pytest.raises(TypeError):
        re(np.array(["a", "b", "c"]))


def test_repr_len_pickle():
    m = {"a": np.arange(3.0), "b": (np.ones((1, 3), np.float32), "text", 7)}
    flat, re = destructure(m)
    assert repr(re) == "Restructure(dict, ..., 6)"
    assert len(re) == 6 == flat.size
    assert repr(destructure(np.ones(2))[1]) == "Restructure(ndarray, ..., 2)"
    assert repr(destructure(models()[6])[1]) == "Restructure(TwoThirds, ..., 3)"
    re2 = pickle.loads(pickle.dumps(re))
    assert len(re2) == 6 and repr(re2) == repr(re)
    out = re2(np.arange(6.0))
    np.testing.assert_array_equal(out["a"], [0, 1, 2])
    assert out["b"][0].dtype == np.float32 and out["b"][1:] == ("text", 7)
    np.testing.assert_array_equal(re2.flatten(m), flat)
    re3 = pickle.loads(pickle.dumps(destructure(models()[4])[1]))  # ties survive pickling
    r5 = re3(np.arange(9.0))
    assert r5["a"][0]["x"] is r5["b"][0] is r5["c"][0]["y"]


def test_readme_example():
    m = {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    vector, re = destructure(m)
    model2 = re(2 * vector)
    np.testing.assert_array_equal(model2["w"], 2 * m["w"])
    assert model2["w"].dtype == np.float32


# ---------------------------------------------------------------------------
# dtypes, copies, what is kept


def test_dtype_promotion():
    f16, f32, f64 = (np.ones(2, d) for d in (np.float16, np.float32, np.float64))
    assert destructure([f32, f32])[0].dtype == np.float32
    assert destructure([f32, f64])[0].dtype == np.float64
    assert destructure([f16, f32])[0].dtype == np.float32
    assert destructure([f16])[0].dtype == np.float16
    assert destructure([f32, np.ones(1, np.complex64)])[0].dtype == np.complex64
    assert destructure([f64, np.ones(1, np.complex64)])[0].dtype == np.complex128
    flat, re = destructure({"n": 1, "s": "x", "i": np.arange(3)})
    assert flat.shape == (0,) and len(re) == 0
    out = re(flat)
    assert out["n"] == 1 and out["s"] == "x"


def test_each_array_gets_its_own_dtype_shape_and_layout_back():
    m = {
        "h": np.arange(3, dtype=np.float16),
        "s": np.arange(6, dtype=np.float32).reshape(2, 3),
        "d": np.asfortranarray(np.arange(6.0).reshape(3, 2)),
        "z": np.array(2.5),
        "e": np.empty((0, 4), np.float32),
        "strided": np.arange(10.0)[::3],
    }
    flat, re = destructure(m)
    assert flat.dtype == np.float64 and flat.size == 3 + 6 + 6 + 1 + 0 + 4
    for copy in (True, False):
        out = re(flat, copy=copy)
        for k, v in m.items():
            assert out[k].dtype == v.dtype and out[k].shape == v.shape, k
            np.testing.assert_array_equal(out[k], v)
    out = re(flat + 1)
    assert all(not np.shares_memory(out[k], flat) for k in m)
    assert all(not np.shares_memory(out[k], m[k]) for k in m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_and_strided_arrays(dtype):
    w = np.arange(12, dtype=dtype).reshape(3, 4)
    m = {"w": unaligned(w), "t": np.arange(5.0, 11.0, dtype=dtype).reshape(2, 3).T}
    flat, re = destructure(m)
    np.testing.assert_array_equal(flat, np.concatenate([w.ravel(), m["t"].ravel()]))
    for source in (flat, unaligned(flat)):
        out = re(source)
        np.testing.assert_array_equal(out["w"], w)
        np.testing.assert_array_equal(out["t"], m["t"])
    grad = {"w": unaligned(w + 1), "t": m["t"][::-1]}
    np.testing.assert_array_equal(
        re.flatten(grad), np.concatenate([(w + 1).ravel(), m["t"][::-1].ravel()])
    )


def test_copy_false_views_into_flat():
    m = {"a": np.ones((2, 3)), "b": [np.zeros(4), np.ones(2, np.float32)], "c": np.arange(3)}
    flat, re = destructure(m)
    out = re(flat, copy=False)
    assert np.shares_memory(out["a"], flat) and np.shares_memory(out["b"][0], flat)
    assert not np.shares_memory(out["b"][1], flat)  # float32 from a float64 flat: a copy
    assert out["b"][1].dtype == np.float32
    flat[:6] = 7.0
    np.testing.assert_array_equal(out["a"], np.full((2, 3), 7.0))
    assert out["c"] is m["c"]
    copied = re(flat)
    flat[:6] = -1.0
    np.testing.assert_array_equal(copied["a"], np.full((2, 3), 7.0))


def test_flat_from_a_list_or_ints():
    _, re = destructure({"a": np.ones(2, np.float32), "b": np.ones(1)})
    out = re([1, 2, 3])
    np.testing.assert_array_equal(out["a"], [1, 2])
    assert out["a"].dtype == np.float32 and out["b"].dtype == np.float64


def test_non_trainable_parts_are_kept():
    @opt.register
    class Layer:
        def __init__(self, n):
            self.alpha = np.random.default_rng(0).standard_normal(n)
            self.beta = np.zeros(n)
            self.length = n
            self.act = np.tanh

        def trainable(self):
            return {"alpha": self.alpha}

    layer = Layer(3)
    model = {
        "layer": layer,
        "ints": np.arange(4),
        "flags": np.array([True, False]),
        "name": "L",
        "none": None,
    }
    flat, re = destructure(model)
    np.testing.assert_array_equal(flat, layer.alpha)
    out = re(np.zeros(3))
    assert isinstance(out["layer"], Layer) and out["layer"] is not layer
    np.testing.assert_array_equal(out["layer"].alpha, np.zeros(3))
    assert (
        out["layer"].beta is layer.beta and out["layer"].length == 3 and out["layer"].act is np.tanh
    )
    for k in ("ints", "flags", "name", "none"):
        assert out[k] is model[k]
    np.testing.assert_array_equal(layer.alpha, flat)  # the original is untouched


def test_shared_container_stays_shared():
    layer = {"w": np.ones(2)}
    model = [layer, layer, {"w": np.zeros(1)}]
    flat, re = destructure(model)
    assert flat.size == 3
    out = re(np.arange(3.0))
    assert out[0] is out[1]
    np.testing.assert_array_equal(out[0]["w"], [0, 1])


def test_containers_rebuilt_as_their_types():
    class Pair(NamedTuple):
        left: Any
        right: Any

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        w: Any
        k: int = 3

    m = {"p": Pair(np.ones(2), "r"), "f": Frozen(np.ones(1)), "t": (np.ones(1),), "l": [np.ones(1)]}
    _, re = destructure(m)
    out = re(np.arange(5.0))
    assert isinstance(out["p"], Pair) and out["p"].right == "r"
    assert isinstance(out["f"], Frozen) and out["f"].k == 3
    assert isinstance(out["t"], tuple) and isinstance(out["l"], list)
    np.testing.assert_array_equal(out["f"].w, [2])


# ---------------------------------------------------------------------------
# flatten: the pullback of re


def test_flatten_is_the_gradient_of_rebuild():
    """Optimisers.jl's "gradient of rebuild" tests, with the gradient of the
    model written out by hand."""
    m1, m2, m3, m4, _, _, m7, m8, m9 = models()
    re1 = destructure(m1)[1]
    np.testing.assert_array_equal(re1.flatten(np.array([1.0, 0, 0])), [1, 0, 0])
    re2 = destructure(m2)[1]
    np.testing.assert_array_equal(re2.flatten((np.array([0, 1, 0]), None)), [0, 1, 0, 0, 0, 0])
    re3 = destructure(m3)[1]
    np.testing.assert_array_equal(re3.flatten({"x": [0, 0, 1]}), [0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(re3.flatten({"z": [1, 0, 0], "y": None}), [0, 0, 0, 1, 0, 0])

    re4 = destructure(m4)[1]
    np.testing.assert_array_equal(re4.flatten({"x": [1, 0, 0]}), [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(re4.flatten({"y": [0, 1, 0]}), [0, 1, 0, 0, 0, 0])
    # m.x[0] + 2 m.y[1] + 3 m.z[2]: tied gradients summed
    g = {"x": np.array([1.0, 0, 0]), "y": np.array([0, 2.0, 0]), "z": np.array([0, 0, 3.0])}
    np.testing.assert_array_equal(re4.flatten(g), [1, 2, 0, 0, 0, 3])

    re7 = destructure(m7)[1]
    np.testing.assert_array_equal(
        re7.flatten(TwoThirds((None, np.array([0, 0, 1.0])), None, None)), [0, 0, 1]
    )
    np.testing.assert_array_equal(re7.flatten({"b": (None, np.ones(3))}), [0, 0, 0])

    v8, re8 = destructure(m8)
    # sum(abs2, re8(x)[0].y): 2 y, into the tied slot
    np.testing.assert_array_equal(re8.flatten([Foo(None, 2 * v8[:3]), None, None]), [2, 4, 6, 0, 0])
    np.testing.assert_array_equal(re8.flatten([None, None, [[np.array([10.0])]]]), [0, 0, 0, 0, 10])

    re9 = destructure(m9)[1]
    mat = np.array([[4, 5], [6, 7]], np.float32)
    np.testing.assert_array_equal(re9.flatten({"c": [2 * mat, None]}), [0, 0, 0, 8, 10, 12, 14])
    out = re9.flatten({"b": mat, "c": [mat, np.ones(3)]})
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1, 1, 1, 8, 10, 12, 14])


def test_flatten_against_finite_differences():
    """d/dv L(re(v)) by central differences equals re.flatten(dL/dmodel), for a
    loss that uses a tied array, a transposed view and a float32 array."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4))
    model = {
        "enc": {"w": w, "b": rng.standard_normal(3)},
        "dec": {"w": w.T, "b": rng.standard_normal(4).astype(np.float32)},
        "again": w,
        "scale": 0.5,
    }
    x = rng.standard_normal(4)

    def loss(m):
        h = np.tanh(m["enc"]["w"] @ x + m["enc"]["b"])
        y = m["dec"]["w"] @ h + m["dec"]["b"].astype(np.float64)
        return float(np.sum(y**2) + m["scale"] * np.sum(m["again"] ** 3))

    def grad(m):
        h = np.tanh(m["enc"]["w"] @ x + m["enc"]["b"])
        y = m["dec"]["w"] @ h + m["dec"]["b"]
        dy = 2 * y
        dh = m["dec"]["w"].T @ dy * (1 - h**2)
        return {
            "enc": {"w": np.outer(dh, x), "b": dh},
            "dec": {"w": np.outer(dy, h), "b": dy},
            "again": 3 * m["scale"] * m["again"] ** 2,
        }

    v, re = destructure(model)
    assert v.size == 12 + 3 + 4
    analytic = re.flatten(grad(re(v)))
    # float32 entries (the last four) need a step float32 can resolve.
    steps = np.where(np.arange(v.size) < 15, 1e-6, 1e-3)
    numeric = np.array(
        [
            (loss(re(v + h * e)) - loss(re(v - h * e))) / (2 * h)
            for h, e in zip(steps, np.eye(v.size))
        ]
    )
    np.testing.assert_allclose(analytic[:15], numeric[:15], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(analytic[15:], numeric[15:], rtol=1e-4)


def test_flatten_errors_name_the_path():
    _, re = destructure({"a": np.ones(2), "b": [np.ones(3)]})
    with pytest.raises(ValueError, match=r"KeyPath\('b', 0\).*\(2,\).*\(3,\)"):
        re.flatten({"b": [np.ones(2)]})
    with pytest.raises(TypeError, match="complex"):
        re.flatten({"a": np.ones(2, complex)})
    with pytest.raises(TypeError, match=r"KeyPath\('a'\)"):
        re.flatten({"a": "text"})
    with pytest.raises(ValueError, match="entries"):
        re.flatten({"b": [np.ones(3), np.ones(3)]})
    np.testing.assert_array_equal(re.flatten(None), np.zeros(5))
    np.testing.assert_array_equal(re.flatten({"b": [[1, 2, 3]]}), [0, 0, 1, 2, 3])


def test_flatten_drives_a_flat_vector_optimiser():
    rng = np.random.default_rng(2)
    model = {"w": rng.standard_normal((2, 3)).astype(np.float32), "b": np.zeros(2, np.float32)}
    flat, re = destructure(model)
    state = opt.setup(opt.Adam(0.1), flat)
    assert isinstance(state, opt.Leaf)  # state is one Leaf now
    for _ in range(3):
        m = re(flat, copy=False)
        g = {"w": 2 * m["w"], "b": 2 * (m["b"] - 1)}
        state, flat = opt.update_(state, flat, re.flatten(g))
    ref_state = opt.setup(opt.Adam(0.1), model)
    ref = {k: v.copy() for k, v in model.items()}
    for _ in range(3):
        ref_state, ref = opt.update(ref_state, ref, {"w": 2 * ref["w"], "b": 2 * (ref["b"] - 1)})
    np.testing.assert_allclose(re(flat)["w"], ref["w"], rtol=1e-6)
    np.testing.assert_allclose(re(flat)["b"], ref["b"], rtol=1e-6)


# ---------------------------------------------------------------------------
# The seeds' "Obtaining a flat parameter vector", in NumPy


@opt.register
class Conv:
    """A 1x1 convolution without bias: ``y[o] = sum_i w[o, i] x[i]``."""

    def __init__(self, w):
        self.w = w

    def __call__(self, x):
        return np.einsum("oi,ihw->ohw", self.w, x)


@opt.register
class BatchNorm:
    """Trainable ``gamma``, ``beta``; running statistics ``mu``, ``sigma2`` are not."""

    def __init__(self, n):
        self.gamma = np.ones(n, np.float32)
        self.beta = np.zeros(n, np.float32)
        self.mu = np.zeros(n, np.float32)
        self.sigma2 = np.ones(n, np.float32)
        self.act = np.tanh

    def trainable(self):
        return {"gamma": self.gamma, "beta": self.beta}

    def __call__(self, x):
        z = (x - self.mu[:, None, None]) / np.sqrt(self.sigma2[:, None, None] + 1e-5)
        return self.act(self.gamma[:, None, None] * z + self.beta[:, None, None])


def test_seeds_flat_parameter_vector_example():
    rng = np.random.default_rng(3)
    model = [
        Conv(rng.standard_normal((5, 3)).astype(np.float32)),
        BatchNorm(5),
        Conv(rng.standard_normal((3, 5)).astype(np.float32)),
    ]
    image = rng.random((3, 8, 8)).astype(np.float32)

    def forward(m):
        out = image
        for layer in m:
            out = layer(out)
        return float(np.sum(out))

    before = forward(model)
    flat, re = destructure(model)
    assert flat.size == 15 + 5 + 5 + 15  # the running statistics are not in flat
    np.testing.assert_array_equal(re(flat)[1].mu, model[1].mu)
    rule = opt.Descent(0.01)
    state = opt.setup(rule, flat)
    assert isinstance(state, opt.Leaf)
    eps = 1e-2
    grad_flat = np.array(
        [
            (forward(re(flat + eps * e)) - forward(re(flat - eps * e))) / (2 * eps)
            for e in np.eye(flat.size, dtype=np.float32)
        ],
        dtype=np.float32,
    )
    state, flat = opt.update(state, flat, grad_flat)
    assert forward(re(flat)) < before


def test_seeds_lux_style_params():
    params = {"layer_1": {"weight": np.ones((2, 3)), "bias": np.zeros(2)}, "layer_2": {}}
    flat, re = destructure(params)
    assert flat.size == 8
    p = re(flat * 3)
    assert p["layer_2"] == {}
    np.testing.assert_array_equal(p["layer_1"]["weight"], np.full((2, 3), 3.0))


# ---------------------------------------------------------------------------
# Properties on random nested models


@dataclasses.dataclass
class Box:
    first: Any
    second: Any


class Pt(NamedTuple):
    a: Any
    b: Any


_DTYPES = [np.float32, np.float64]


@st.composite
def nested_models(draw):
    """A random model: nested dicts, lists, tuples, named tuples, dataclasses;
    float32/float64 arrays (0-d included), ints, strings, integer arrays, None;
    some arrays repeated (ties) and some NumPy views of earlier arrays."""
    made: list[np.ndarray] = []
    views: list[np.ndarray] = []
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)

    def leaf():
        kind = draw(st.sampled_from(["new", "new", "new", "tie", "tie", "view", "view", "other"]))
        if kind == "tie" and made:
            pool = made + views
            return pool[draw(st.integers(0, len(pool) - 1))]
        if kind == "view" and made:
            base = made[draw(st.integers(0, len(made) - 1))]
            how = draw(st.sampled_from(["T", "slice", "reshape", "rev"]))
            if how == "T":
                v = base.T
            elif how == "slice" and base.ndim >= 1 and base.shape[0] > 1:
                v = base[1:]
            elif how == "reshape" and base.flags.c_contiguous:
                v = base.reshape(-1)
            elif how == "rev" and base.ndim >= 1:
                v = base[::-1]
            else:
                return base
            views.append(v)
            return v
        if kind == "other":
            return draw(st.sampled_from([3, "s", None, np.arange(3), np.sin, True]))
        shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
        a = rng.standard_normal(shape).astype(draw(st.sampled_from(_DTYPES)))
        made.append(a)
        return a

    def node(depth):
        if depth == 0 or draw(st.booleans()):
            return leaf()
        kind = draw(st.sampled_from(["dict", "list", "tuple", "box", "pt"]))
        n = draw(st.integers(1, 3))
        kids = [node(depth - 1) for _ in range(n)]
        if kind == "dict":
            return {f"k{i}": c for i, c in enumerate(kids)}
        if kind == "list":
            return kids
        if kind == "tuple":
            return tuple(kids)
        kids = [*kids, None][:2]
        return Box(*kids) if kind == "box" else Pt(*kids)

    return node(4)


def assert_same_model(a: Any, b: Any) -> None:
    """Same structure, equal arrays of the same dtype and shape, other leaves identical."""
    if isinstance(b, np.ndarray) and b.dtype.kind in "fc":
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        return
    kids_a, kids_b = opt.tree.children(a), opt.tree.children(b)
    if kids_b is None:
        assert a is b
        return
    assert type(a) is type(b) and kids_a is not None and len(kids_a) == len(kids_b)
    for (ka, ca), (kb, cb) in zip(kids_a, kids_b):
        assert ka == kb
        assert_same_model(ca, cb)


def arrays_by_position(m: Any) -> list[np.ndarray]:
    return [a for _, a in opt.views.walk_parameters(m)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nested_models())
def test_round_trip(model):
    flat, re = destructure(model)
    assert flat.ndim == 1 and len(re) == flat.size
    assert flat.size == sum(a.size for a in trainables(model))
    np.testing.assert_array_equal(
        flat, np.concatenate([np.ravel(a) for a in trainables(model)] or [np.zeros(0)])
    )
    for copy in (True, False):
        out = re(flat, copy=copy)
        assert_same_model(out, model)
        # Ties and views come back as ties and views.
        old, new = arrays_by_position(model), arrays_by_position(out)
        for i in range(len(old)):
            for j in range(i):
                if old[i] is old[j]:
                    assert new[i] is new[j]
                elif old[i].size and np.shares_memory(old[i], old[j]):
                    assert np.shares_memory(new[i], new[j])
    np.testing.assert_array_equal(destructure(re(flat))[0], flat)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nested_models(), st.integers(0, 2**16))
def test_flatten_is_the_adjoint_of_rebuild(model, seed):
    """<re.flatten(G), v> == <G, re(v)> summed over every parameter position,
    for any gradient tree G and flat vector v (float64 rounding aside)."""
    _, re = destructure(model)
    rng = np.random.default_rng(seed)
    g_tree = _grad_like(model, rng)
    v = rng.standard_normal(len(re))
    lhs = float(np.dot(re.flatten(g_tree), v))
    out = re(v)
    rhs = sum(
        float(np.sum(np.asarray(g, np.float64) * np.asarray(x, np.float64)))
        for g, x in zip(arrays_by_position(g_tree), arrays_by_position(out))
    )
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4)


def _grad_like(m: Any, rng: np.random.Generator) -> Any:
    """A gradient tree of ``m``: a fresh random array at every parameter position
    (ties and views get their own), the rest left as it is."""
    if opt.tree.is_parameter(m):
        return rng.standard_normal(m.shape).astype(m.dtype)
    kids = opt.tree.children(m)
    if kids is None:
        return m
    return opt.tree.rebuild(m, {k: _grad_like(c, rng) for k, c in kids}) if kids else m


def test_restructure_is_exported():
    assert isinstance(destructure(np.ones(1))[1], Restructure)


# ---------------------------------------------------------------------------
# examples/lbfgs.py


def _load_lbfgs_example():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "lbfgs.py"
    spec = importlib.util.spec_from_file_location("lbfgs_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


def test_lbfgs_example_gradient_and_fit():
    pytest.importorskip("scipy")
    from scipy.optimize import check_grad

    _, example = _load_lbfgs_example()
    out = example.fit(n=60, hidden=8, maxiter=80)
    assert out["parameters"] == 8 * 2 + 8 + 8 + 1 + 2  # the tied decoder weight once
    assert out["final_loss"] < 0.05 * out["initial_loss"]
    fun = out["fun"]
    v = out["flat"] + 0.1
    err = check_grad(lambda u: fun(u)[0], lambda u: fun(u)[1], v)
    assert err < 1e-5 * max(1.0, float(np.linalg.norm(fun(v)[1])))
    m = out["model"]
    assert np.shares_memory(m["dec"]["weight"], m["enc"]["weight"])
    np.testing.assert_array_equal(m["dec"]["weight"], m["enc"]["weight"].T)


def test_lbfgs_example_runs_as_a_script():
    pytest.importorskip("scipy")
    import subprocess
    import sys

    path, _ = _load_lbfgs_example()
    done = subprocess.run(
        [sys.executable, str(path), "--small"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "L-BFGS-B" in done.stdout and "transposed: True" in done.stdout
