"""Regression tests of issue 19: the cached plan and subtrees, failed steps that
wrote first, errors that did not say where, threads, array-likes and memory.
Each failed on the main branch before its fix."""

from __future__ import annotations

import array
import copy
import gc
import re
import sys
import threading
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optimisers as o


def _model(rng, dtype=np.float64):
    return {
        "l1": {"w": rng.standard_normal((3, 4)).astype(dtype), "b": np.zeros(4, dtype)},
        "l2": {"w": rng.standard_normal(5).astype(dtype)},
    }


def _grad(i, model):
    return {
        k: {n: np.full_like(a, 0.1 * (i + 1) - 0.3 * j) for j, (n, a) in enumerate(v.items())}
        for k, v in model.items()
    }


RULES = [
    o.Adam(),
    o.RAdam(),
    o.OptimiserChain(o.AccumGrad(3), o.Adam(0.01)),
    o.OptimiserChain(o.WeightDecay(), o.NAdam()),
]


# --- 1. the plan and subtrees ---------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=lambda r: type(r).__name__)
def test_subtree_steps_between_whole_tree_steps_match_the_general_path(rule):
    rng = np.random.default_rng(0)
    model = _model(rng)
    ref_model = copy.deepcopy(model)
    state, ref = o.setup(rule, model), o.setup(rule, ref_model)
    for i in range(12):
        g = _grad(i, model)
        if i % 3 == 1:  # the subtree, by update_ (plans of its own) and by update
            o.update_(state["l1"], model["l1"], g["l1"])
            ref["l1"], ref_model["l1"] = o.update(ref["l1"], ref_model["l1"], g["l1"])
        elif i % 5 == 4:
            o.adjust_(state["l2"], 0.02)
            o.adjust_(ref["l2"], 0.02)
            o.update_(state, model, g)
            ref, ref_model = o.update(ref, ref_model, g)
        else:
            o.update_(state, model, g)
            ref, ref_model = o.update(ref, ref_model, g)
    for k in model:
        for n in model[k]:
            assert model[k][n].tobytes() == ref_model[k][n].tobytes(), (k, n)
            assert state[k][n] == ref[k][n], (k, n)


def test_edits_of_leaf_state_and_freeze_between_planned_steps():
    rng = np.random.default_rng(1)
    model = _model(rng)
    ref_model = copy.deepcopy(model)
    state, ref = o.setup(o.Adam(), model), o.setup(o.Adam(), ref_model)
    for i in range(8):
        g = _grad(i, model)
        if i == 3:
            for s in (state, ref):
                m, v, _ = s["l2"]["w"].state
                s["l2"]["w"].state = (m, v, (0.5, 0.25))
        if i == 5:
            o.freeze_(state["l1"])
            o.freeze_(ref["l1"])
        o.update_(state, model, g)
        o.update_(state["l2"], model["l2"], g["l2"])
        ref, ref_model = o.update(ref, ref_model, g)
        ref["l2"], ref_model["l2"] = o.update(ref["l2"], ref_model["l2"], g["l2"])
    assert model["l2"]["w"].tobytes() == ref_model["l2"]["w"].tobytes()
    assert model["l1"]["w"].tobytes() == ref_model["l1"]["w"].tobytes()
    assert state["l2"]["w"] == ref["l2"]["w"]


# --- 2. a failed step changes nothing -------------------------------------


def _snapshot(state, model):
    return copy.deepcopy((state, model))


def _same(a, b):
    sa, ma = a
    sb, mb = b
    return all(
        ma[k][n].tobytes() == mb[k][n].tobytes() and sa[k][n] == sb[k][n] for k in ma for n in ma[k]
    )


@pytest.mark.parametrize("bad", ["copy", "inner"])
def test_mixedprecision_with_a_wrong_state_changes_nothing(bad):
    rng = np.random.default_rng(2)
    model = _model(rng, np.float32)
    state = o.setup(o.MixedPrecision(o.Adam()), model)
    # The same size as the parameter, another shape: the kernel would take it.
    leaf = state["l1"]["w"]
    xT, (m, v, b) = leaf.state
    wrong = np.zeros((4, 3), np.float32)
    leaf.state = (wrong, (m, v, b)) if bad == "copy" else (xT, (wrong, v, b))
    before = _snapshot(state, model)
    with pytest.raises(ValueError, match=re.escape("KeyPath('l1', 'w')")):
        o.update_(state, model, _grad(0, model))
    assert _same(before, (state, model))


def test_read_only_state_arrays_step_like_update():
    rng = np.random.default_rng(3)
    model = _model(rng)
    state = o.setup(o.Adam(), model)
    m, _v, _b = state["l1"]["w"].state
    m.flags.writeable = False
    ref_state, ref_model = o.update(state, model, _grad(0, model))
    state, model = o.update_(state, model, _grad(0, model))
    assert model["l1"]["w"].tobytes() == ref_model["l1"]["w"].tobytes()
    assert state["l1"]["w"] == ref_state["l1"]["w"]
    assert not m.any()  # the read-only array was left as it was


# --- 3. errors that say where ---------------------------------------------


def test_a_state_of_the_wrong_layout_names_the_path():
    model = {"a": np.ones(4)}
    state = o.setup(o.Adam(), model)
    state["a"].state = state["a"].state[:2]
    with pytest.raises(ValueError, match=re.escape("state at KeyPath('a') is not a state of Adam")):
        o.update_(state, model, {"a": np.ones(4)})


def test_two_leafs_sharing_state_arrays_are_refused_with_both_paths():
    model = {"a": np.ones(4), "b": np.ones(4)}
    state = o.setup(o.Adam(), model)
    state["b"].state = state["a"].state
    before = _snapshot({"s": state}, {"m": model})
    with pytest.raises(
        ValueError, match=r"KeyPath\('b'\).*KeyPath\('a'\)|KeyPath\('a'\).*KeyPath\('b'\)"
    ):
        o.update_(state, model, {"a": np.ones(4), "b": np.ones(4)})
    assert model["a"].tobytes() == before[1]["m"]["a"].tobytes()


def test_partly_overlapping_parameters_train_as_two():
    base = np.arange(10.0)
    model = {"a": base[:6], "b": base[4:]}
    with pytest.warns(UserWarning, match="share memory"):
        state = o.setup(o.Descent(0.5), model)
    o.update_(state, model, {"a": np.ones(6), "b": np.full(6, 2.0)})
    expect = np.arange(10.0)
    expect[:6] -= 0.5
    expect[4:] = np.arange(4.0, 10.0) - 1.0  # b was stepped from its own values, last
    assert np.array_equal(base, expect)


@pytest.mark.parametrize("planned", [True, False])
def test_a_state_of_the_same_size_but_another_shape_is_refused(planned):
    model = {"a": np.ones((3, 4))}
    state = o.setup(o.Momentum(), model)
    if planned:
        o.update_(state, model, {"a": np.ones((3, 4))})
    state["a"].state = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"KeyPath\('a'\).*shape \(4, 3\)"):
        o.update_(state, model, {"a": np.ones((3, 4))})
    assert np.array_equal(model["a"], np.ones((3, 4)) - (0.01 if planned else 0))


def test_flatten_widens_to_the_widest_gradient():
    _, re_ = o.destructure({"a": np.ones(3, np.float32), "b": np.ones(2, np.float32)})
    g = re_.flatten({"a": np.array([1.2, 3.4, 5.6]), "b": np.ones(2, np.float32)})
    assert g.dtype == np.float64
    assert g[0] == 1.2 and g[1] == 3.4


@pytest.mark.parametrize("eta", [float("nan"), float("inf")])
@pytest.mark.parametrize("rule", [o.Descent, o.Adam, o.Momentum])
def test_a_non_finite_learning_rate_is_refused(rule, eta):
    with pytest.raises(ValueError, match="learning rate must be finite"):
        rule(eta)
    with pytest.raises(ValueError, match="learning rate must be finite"):
        o.adjust(rule(), eta)


def test_set_num_threads_refuses_negative_numbers_with_a_value_error():
    n = o.get_num_threads()
    with pytest.raises(ValueError, match="at least 1"):
        o.set_num_threads(-1)
    with pytest.raises(TypeError):
        o.set_num_threads(2.5)
    assert o.get_num_threads() == n


# --- 6. no reference cycles -----------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda m: o.setup(o.Adam(), m),
        o.trainables,
        o.destructure,
        lambda m: o.destructure(m)[1].flatten(m),
        lambda m: o.update(o.setup(o.Adam(), m), m, m),
        lambda m: o.update_(*o.update_(o.setup(o.Adam(), m), m, m), m),
        lambda m: o.update_(*o.update_(o.setup(o.Adam(), m[1]), m[1], m[1]), m[1]),
    ],
    ids=["setup", "trainables", "destructure", "flatten", "update", "update_", "update_planned"],
)
def test_a_model_is_freed_when_its_last_reference_goes(call):
    gc.collect()
    gc.disable()
    try:
        w = np.ones(3)
        model = [w, {"b": np.ones(2), "t": w.T}]
        alive = weakref.ref(w)
        out = call(model)
        del out, model, w
        assert alive() is None
    finally:
        gc.enable()


def test_a_model_nested_too_deeply_is_said_clearly():
    model = np.ones(2)
    for _ in range(400):
        model = {"x": model}
    with pytest.raises(RecursionError, match=r"setup: .*nested too deeply.*sys.setrecursionlimit"):
        o.setup(o.Adam(), model)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        state = o.setup(o.Adam(), model)
    finally:
        sys.setrecursionlimit(limit)
    o.update_(state, model, model)  # the planned walk is not recursive: it works
    leaf = model
    while isinstance(leaf, dict):
        leaf = leaf["x"]
    assert np.allclose(leaf, 0.999, rtol=0, atol=1e-9)


def test_a_model_nested_150_deep_trains():
    model = np.ones(2)
    for _ in range(150):
        model = {"x": model}
    state = o.setup(o.Descent(0.5), model)
    for _ in range(2):
        state, model = o.update_(state, model, model)
    _, new = o.update(state, model, model)
    leaf = new
    while isinstance(leaf, dict):
        leaf = leaf["x"]
    assert np.array_equal(leaf, np.full(2, 0.125))


# --- 4. two threads on one model ------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_two_threads_never_corrupt_a_model(dtype):
    n = 100_000
    model = {"w": np.ones(n, dtype)}
    state = o.setup(o.Adam(), model)
    errors: list[str] = []
    done = []

    def run():
        for _ in range(20):
            try:
                o.update_(state, model, {"w": np.ones(n, dtype)})
                done.append(1)
            except RuntimeError as err:
                errors.append(str(err))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(np.unique(model["w"])) == 1  # equal elements, equal gradients, equal values
    assert all("being stepped by another thread" in e for e in errors), set(errors)
    assert len(done) + len(errors) == 40
    # Every step that returned was taken once: the same as that many steps in one thread.
    ref_model = {"w": np.ones(n, dtype)}
    ref = o.setup(o.Adam(), ref_model)
    for _ in range(len(done)):
        ref, ref_model = o.update(ref, ref_model, {"w": np.ones(n, dtype)})
    assert model["w"].tobytes() == ref_model["w"].tobytes()


# --- 5. array-likes -------------------------------------------------------


class _DLPackOnly:
    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class _ArrayOnly:
    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a


def test_gradients_through_array_dlpack_and_buffers():
    model = {"a": np.ones(3), "b": np.ones(2), "c": np.ones(2, np.float32), "d": np.ones(4)}
    grads = {
        "a": _ArrayOnly(np.array([1.0, 2.0, 3.0])),
        "b": array.array("d", [1.0, -1.0]),
        "c": memoryview(np.array([0.5, 1.5], np.float32)),
        "d": _DLPackOnly(np.arange(4.0)),
    }
    plain = {
        k: np.asarray(
            np.array(memoryview(v))
            if isinstance(v, (array.array, memoryview))
            else (v._a if hasattr(v, "_a") else v)
        )
        for k, v in grads.items()
    }
    state = o.setup(o.Adam(), model)
    _ref_state, ref_model = o.update(state, model, plain)
    _new_state, new_model = o.update(state, model, grads)
    o.update_(state, model, grads)
    for k in model:
        assert model[k].tobytes() == ref_model[k].tobytes() == new_model[k].tobytes()
    with pytest.raises(TypeError, match=r"KeyPath\('a'\).*bytes"):
        o.update_(state, model, {"a": b"abc"})


def test_jax_gradients():
    model = {
        "w": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        "b": np.zeros(3, np.float32),
    }
    grad = jax.grad(lambda p: jnp.sum(jnp.tanh(p["w"]) ** 2) + jnp.sum(p["b"] ** 2))(
        {k: jnp.asarray(v) for k, v in model.items()}
    )
    plain = {k: np.array(v) for k, v in grad.items()}
    state = o.setup(o.Adam(0.1), model)
    _, ref_model = o.update(state, model, plain)
    o.update_(state, model, grad)
    _, again = o.update(o.setup(o.Adam(0.1), ref_model), ref_model, grad)
    assert model["w"].tobytes() == ref_model["w"].tobytes()
    assert again["w"].dtype == np.float32


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2"])
def test_non_native_byte_order_trains_like_native(dtype):
    native = np.dtype(dtype).newbyteorder("=")
    x = {"w": np.linspace(-1, 1, 5).astype(dtype)}
    ref = {"w": x["w"].astype(native)}
    sx, sr = o.setup(o.Adam(0.1), x), o.setup(o.Adam(0.1), ref)
    for i in range(3):
        g = np.linspace(0, 1, 5) * (i + 1)
        sx, x = o.update_(sx, x, {"w": g.astype(dtype)})
        sr, ref = o.update_(sr, ref, {"w": g.astype(native)})
    assert x["w"].dtype == np.dtype(dtype)
    assert np.array_equal(x["w"], ref["w"])


def test_a_leaf_replaced_by_hand_after_planning_is_the_one_stepped():
    model = {"w": np.ones(3), "b": np.ones(2)}
    grad = {"w": np.ones(3), "b": np.ones(2)}
    state = o.setup(o.Momentum(), model)
    for _ in range(2):
        o.update_(state, model, grad)  # planned: the plan knows the Leafs by address
    for i in range(20):
        # The old Leaf is freed here, and its address may well be the new one's.
        state["w"] = o.Leaf(o.Momentum(), np.full(3, float(i)))
        ref_state, ref_model = o.update(state, model, grad)
        o.update_(state, model, grad)
        assert model["w"].tobytes() == ref_model["w"].tobytes()
        assert state["w"] == ref_state["w"]


# --- found by tests/test_properties.py --------------------------------------


class _Widen(o.AbstractRule):
    """A Python rule whose update is float64 whatever the parameter."""

    def init(self, x):
        return None

    def apply(self, state, x, dx):
        return state, np.asarray(dx, np.float64)


def test_a_0d_parameter_takes_a_gradient_of_another_dtype():
    model = {"s": np.array(1.0, np.float32)}
    state = o.setup(o.OptimiserChain(_Widen(), o.Descent(0.5)), model)
    state, model = o.update_(state, model, {"s": np.float64(2.0)})
    assert model["s"].shape == () and model["s"] == 0.0


def test_a_tied_0d_parameter_sums_its_gradients():
    s = np.array(1.0, np.float32)
    model = [s, s]
    state = o.setup(o.Descent(0.5), model)
    state, model = o.update_(state, model, [np.array(1.0, np.float32), np.array(1.0, np.float32)])
    assert model[0] is model[1] and model[0] == 0.0
