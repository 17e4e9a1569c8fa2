"""Tied views: a NumPy view of a parameter held elsewhere in the model (``w.T``,
a reshape, a slice, a broadcast) is that parameter. And read-only models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optimisers as opt
from optimisers import destructure, setup, trainables, update, update_

# Each case: how to make the view from its owner, as a function of the owner's values.
VIEWS = {
    "transpose": lambda w: w.T,
    "slice": lambda w: w[1:, ::2],
    "row": lambda w: w[2],
    "reshape": lambda w: w.reshape(-1),
    "reverse": lambda w: w[::-1, ::-1],
    "broadcast": lambda w: np.broadcast_to(w[0], (2, *w[0].shape)),
    "view of a view": lambda w: w.T[1:, :2].T,
    "swapaxes3d": lambda w: w.reshape(2, 3, 4).transpose(2, 0, 1),
}


def owner_values(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((6, 4))


def pullback(make, owner_shape, g_view):
    """The gradient on the owner of a gradient on ``make(owner)``, found from
    the view's effect on an array of element indices (values, not memory)."""
    index = make(np.arange(int(np.prod(owner_shape))).reshape(owner_shape))
    out = np.zeros(int(np.prod(owner_shape)))
    np.add.at(out, np.asarray(index), g_view)
    return out.reshape(owner_shape)


# A C-order reshape of a Fortran array is a copy, not a view: those two are left out.
CASES = [
    (name, layout)
    for layout in ("C", "F", "outside")
    for name in VIEWS
    if not (layout == "F" and name in ("reshape", "swapaxes3d"))
]


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_view_is_its_owner(name, layout):
    make = VIEWS[name]
    base = owner_values()
    if layout == "C":
        w = base.copy()
    elif layout == "F":
        w = np.asfortranarray(base)
    else:  # the owner itself a view of memory outside the model
        outside = np.zeros(40)
        w = outside[8:32].reshape(6, 4)
        w[...] = base
    v = make(w)
    assert np.shares_memory(v, w)
    rng = np.random.default_rng(1)
    model = {"enc": {"w": w, "b": np.zeros(4)}, "dec": {"w": v, "n": 3}}
    g_w, g_v = rng.standard_normal(w.shape), rng.standard_normal(v.shape)
    grad = {"enc": {"w": g_w}, "dec": {"w": g_v}}
    expected = base - 0.1 * (g_w + pullback(make, w.shape, g_v))

    state = setup(opt.Descent(0.1), model)
    assert state["dec"]["w"] is state["enc"]["w"]
    assert state["enc"]["w"].state is None

    # update: nothing written, the tie kept in the new model
    _, new_model = update(state, model, grad)
    np.testing.assert_array_equal(w, base)
    np.testing.assert_allclose(new_model["enc"]["w"], expected)
    nv = new_model["dec"]["w"]
    assert np.shares_memory(nv, new_model["enc"]["w"]) and not np.shares_memory(nv, w)
    np.testing.assert_array_equal(nv, make(new_model["enc"]["w"]))
    assert nv.flags.writeable == v.flags.writeable

    # update_: in place, the view still views its owner
    state, model2 = update_(state, model, grad)
    assert model2["enc"]["w"] is w and model2["dec"]["w"] is v
    np.testing.assert_allclose(w, expected)
    np.testing.assert_array_equal(v, make(w))

    # counted once, rebuilt as a view
    assert len(trainables(model)) == 2
    flat, re = destructure(model)
    assert flat.size == w.size + 4
    out = re(flat * 2)
    np.testing.assert_allclose(out["enc"]["w"], 2 * w)
    assert np.shares_memory(out["dec"]["w"], out["enc"]["w"])
    np.testing.assert_allclose(out["dec"]["w"], make(out["enc"]["w"]))
    out = re(flat, copy=False)
    assert np.shares_memory(out["dec"]["w"], out["enc"]["w"])
    # the pullback of re maps the view's gradient back
    g_flat = re.flatten(grad)
    np.testing.assert_allclose(g_flat[: w.size], (g_w + pullback(make, w.shape, g_v)).ravel())
    np.testing.assert_array_equal(g_flat[w.size :], 0)


def test_seeds_autoencoder_example():
    """The seeds' "Tied Parameters": enc = Chain(Dense(40 => 20, tanh), Dense(20 => 10));
    dec = Chain(Dense(enc[1].weight', true, tanh), Dense(enc[2].weight', true, tanh))."""
    rng = np.random.default_rng(0)

    def dense(w, act=None):
        return {"weight": w, "bias": np.zeros(w.shape[0], w.dtype), "act": act}

    enc = {
        "layers": [
            dense(rng.standard_normal((20, 40)).astype(np.float32), np.tanh),
            dense(rng.standard_normal((10, 20)).astype(np.float32)),
        ]
    }
    dec = {
        "layers": [
            dense(enc["layers"][0]["weight"].T, np.tanh),
            dense(enc["layers"][1]["weight"].T, np.tanh),
        ]
    }
    model = {"enc": enc, "dec": dec}
    st_ = setup(opt.Adam(), model)
    assert st_["enc"]["layers"][0]["weight"] is st_["dec"]["layers"][0]["weight"]  # one Leaf
    assert st_["enc"]["layers"][1]["weight"] is st_["dec"]["layers"][1]["weight"]
    assert st_["enc"]["layers"][0]["weight"].state[0].shape == (20, 40)  # the owner's
    assert len(trainables(model)) == 2 + 2 + 2  # two weights, four biases
    assert destructure(model)[0].size == 20 * 40 + 10 * 20 + 20 + 10 + 40 + 20


def test_autoencoder_training_matches_explicit_tying():
    """Adam on a tied autoencoder equals Adam on the encoder's weight with the
    decoder's gradient transposed and added by hand."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 5))
    x = rng.standard_normal(5)
    model = {"enc": w, "dec": w.T, "b": np.zeros(5)}
    ref_w, ref_b = w.copy(), np.zeros(5)
    state = setup(opt.Adam(0.05), model)
    ref_state = setup(opt.Adam(0.05), {"w": ref_w, "b": ref_b})

    def grads(enc, dec, b):
        h = np.tanh(enc @ x)
        y = dec @ h + b
        dy = 2 * (y - x)
        dh = dec.T @ dy * (1 - h**2)
        return np.outer(dh, x), np.outer(dy, h), dy

    for _ in range(5):
        ge, gd, gb = grads(model["enc"], model["dec"], model["b"])
        state, model = update_(state, model, {"enc": ge, "dec": gd, "b": gb})
        ge, gd, gb = grads(ref_w, ref_w.T, ref_b)
        ref_state, _ = update_(ref_state, {"w": ref_w, "b": ref_b}, {"w": ge + gd.T, "b": gb})
    np.testing.assert_allclose(model["enc"], ref_w, rtol=1e-12)
    np.testing.assert_array_equal(model["dec"], model["enc"].T)
    assert model["dec"].base is model["enc"]


def test_gradient_only_on_the_view_or_only_on_the_owner():
    w = owner_values()
    model = {"a": w, "b": w.T}
    state = setup(opt.Descent(1.0), model)
    g = np.ones((4, 6))
    update_(state, model, {"a": None, "b": g})
    np.testing.assert_allclose(w, owner_values() - 1)
    update_(state, model, {"b": None, "a": np.ones((6, 4))})
    np.testing.assert_allclose(w, owner_values() - 2)
    update_(state, model, {"b": g})  # a missing key is no gradient
    np.testing.assert_allclose(model["b"], owner_values().T - 3)


def test_view_before_owner_in_tree_order():
    w = owner_values()
    model = [w[::2].T, {"w": w}]
    state = setup(opt.Momentum(0.1), model)
    assert state[0] is state[1]["w"]
    assert state[0].state.shape == w.shape
    g0 = np.ones((4, 3))
    state, model = update_(state, model, [g0, {"w": None}])
    expected = owner_values()
    expected[::2] -= 0.1 * g0.T
    np.testing.assert_allclose(w, expected)
    assert [kp for kp, _ in trainables(model, path=True)] == [opt.KeyPath(1, "w")]


def test_frozen_tie():
    w = owner_values()
    model = {"a": w, "b": w[1:3]}
    state = setup(opt.Descent(1.0), model)
    opt.freeze_(state["b"])
    update_(state, model, {"a": np.ones((6, 4)), "b": np.ones((2, 4))})
    np.testing.assert_array_equal(w, owner_values())


def test_read_only_owner_with_views():
    w = owner_values()
    w.flags.writeable = False
    model = {"w": w, "t": w.T}
    state = setup(opt.Descent(0.5), model)
    state, new = update_(state, model, {"w": np.ones((6, 4)), "t": np.ones((4, 6))})
    np.testing.assert_array_equal(w, owner_values())  # not written
    assert new["w"] is not w
    np.testing.assert_allclose(new["w"], owner_values() - 1.0)
    assert new["t"].base is new["w"] and np.shares_memory(new["t"], new["w"])
    # and again from the new model: the tie holds for the next step
    state, newer = update_(state, new, {"t": np.ones((4, 6))})
    np.testing.assert_allclose(newer["w"], owner_values() - 1.5)
    np.testing.assert_array_equal(newer["t"], newer["w"].T)


def test_state_for_another_model_is_refused():
    w = owner_values()
    state = setup(opt.Descent(0.1), {"w": w, "v": w[:1]})
    with pytest.raises(ValueError, match="not a view"):
        update_(state, {"w": w[:, :2], "v": w[:1]}, {"w": np.ones((6, 2)), "v": np.ones((1, 4))})


def test_overlapping_parameters_that_are_not_views_warn():
    buf = np.arange(12.0)
    with pytest.warns(UserWarning, match="share memory"):
        setup(opt.Descent(), {"a": buf[0:8], "b": buf[4:12]})
    with pytest.warns(UserWarning, match="share memory"):
        destructure([buf[0:8], buf[4:12]])


def test_disjoint_slices_of_one_buffer_are_separate():
    buf = np.zeros(10)
    model = {"a": buf[:4].reshape(2, 2), "b": buf[4:], "c": buf[1::10]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = setup(opt.Descent(1.0), model)
    assert state["a"] is not state["b"]
    assert state["c"] is state["a"]  # c = buf[1:2] is an element of a: a view of it
    update_(state, model, {"a": np.ones((2, 2)), "b": np.ones(6)})
    np.testing.assert_array_equal(buf, [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1])


def test_flat_vector_loop_without_copies():
    rng = np.random.default_rng(3)
    model = {"w": rng.standard_normal((4, 3)), "b": np.zeros(4), "tag": "net"}
    flat, re = destructure(model)
    x = rng.standard_normal(3)

    def grad_of(m):
        y = m["w"] @ x + m["b"]
        return {"w": np.outer(2 * y, x), "b": 2 * y}

    # 1: the optimiser on the flat vector, the model a set of views into it
    state = setup(opt.Descent(0.1), flat)
    for _ in range(3):
        m = re(flat, copy=False)
        assert np.shares_memory(m["w"], flat)
        state, flat2 = update_(state, flat, re.flatten(grad_of(m)))
        assert flat2 is flat
    # 2: the optimiser on the tree of views: writes through into the same flat
    flat_b, _ = destructure(model)
    mb = re(flat_b, copy=False)
    state_b = setup(opt.Descent(0.1), mb)
    for _ in range(3):
        state_b, mb2 = update_(state_b, mb, grad_of(mb))
        assert mb2["w"] is mb["w"]
    np.testing.assert_allclose(flat_b, flat, rtol=1e-12)


# ---------------------------------------------------------------------------
# Read-only models: the non-mutating path


def custom_rule():
    class Halve(opt.AbstractRule):
        def init(self, x):
            return None

        def apply(self, state, x, dx):
            return state, 0.5 * dx

    return Halve()


@pytest.mark.parametrize(
    "rule",
    [opt.Descent(0.1), opt.Adam(0.1), opt.MixedPrecision(np.float64, opt.Adam(0.1)), custom_rule()],
    ids=lambda r: type(r).__name__,
)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_read_only_models(rule, dtype):
    rng = np.random.default_rng(4)
    values = {"w": rng.standard_normal((3, 2)).astype(dtype), "b": np.ones(3, dtype)}
    grad = {"w": np.full((3, 2), 0.5), "b": np.ones(3)}
    writable = {k: v.copy() for k, v in values.items()}
    ref_state = setup(rule, writable)
    update_(ref_state, writable, grad)

    frozen = {k: v.copy() for k, v in values.items()}
    for v in frozen.values():
        v.flags.writeable = False
    state = setup(rule, frozen)
    for step in (update, update_):
        s = setup(rule, frozen)
        _, out = step(s, frozen, grad)
        for k in values:
            np.testing.assert_array_equal(frozen[k], values[k])  # untouched
            assert out[k] is not frozen[k] and out[k].dtype == dtype
            np.testing.assert_array_equal(out[k], writable[k])
    assert state is not None


# ---------------------------------------------------------------------------
# Random views


@st.composite
def owners_and_views(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    ops = draw(
        st.lists(
            st.sampled_from(["T", "slice", "rev", "reshape", "index", "bcast"]),
            min_size=1,
            max_size=3,
        )
    )
    start = draw(st.integers(0, 2))
    step_ = draw(st.integers(1, 2))

    def applicable(op, v):
        if op == "slice":
            return v.ndim > 0 and v.shape[0] > start
        if op == "rev":
            return v.ndim > 0
        if op == "index":
            return v.ndim > 1
        if op == "reshape":
            return v.flags.c_contiguous
        if op == "bcast":
            return v.ndim < 3
        return True

    def make(w, replay=None):
        """The view; ``replay`` (the ops taken on the owner) repeats them
        exactly on another array of the same shape."""
        v, taken = w, []
        for op in ops if replay is None else replay:
            if replay is None and not applicable(op, v):
                continue
            taken.append(op)
            if op == "T":
                v = v.T
            elif op == "slice":
                v = v[start::step_]
            elif op == "rev":
                v = v[::-1]
            elif op == "reshape":
                v = v.reshape(-1)
            elif op == "index":
                v = v[min(start, v.shape[0] - 1)]
            else:
                v = np.broadcast_to(v, (2, *v.shape))
        return v, taken

    return shape, make, draw(st.sampled_from(["C", "F"]))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(owners_and_views(), st.integers(0, 2**16))
def test_random_views(case, seed):
    shape, make, order = case
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(shape)
    w = np.asarray(base, order=order).copy(order=order)
    v, taken = make(w)

    def again(a):
        return make(a, taken)[0]

    model = [w, {"v": v}]
    g_w, g_v = rng.standard_normal(w.shape), rng.standard_normal(v.shape)
    expected = base - 0.5 * (g_w + pullback(again, shape, g_v))
    state = setup(opt.Descent(0.5), model)
    assert state[1]["v"] is state[0]
    _, new = update(state, model, [g_w, {"v": g_v}])
    np.testing.assert_allclose(new[0], expected, atol=1e-12)
    np.testing.assert_allclose(new[1]["v"], again(new[0]), atol=1e-12)
    assert v.size == 0 or np.shares_memory(new[1]["v"], new[0])
    flat, re = destructure(model)
    assert flat.size == w.size
    np.testing.assert_allclose(
        re.flatten([g_w, {"v": g_v}]), (g_w + pullback(again, shape, g_v)).ravel()
    )
    out = re(flat)
    np.testing.assert_array_equal(out[1]["v"], v)
    update_(state, model, [g_w, {"v": g_v}])
    np.testing.assert_allclose(w, expected, atol=1e-12)
    np.testing.assert_array_equal(v, again(w))
