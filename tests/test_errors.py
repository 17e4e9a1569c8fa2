"""Bad input: an exception that names what is wrong and where (the key path),
and nothing changed, neither parameters nor state, when any part of the
gradient tree is bad."""

from __future__ import annotations

import pickle
from collections import namedtuple

import numpy as np
import pytest
from custom_rules import InPlaceMomentum

import optimisers as opt

Head = namedtuple("Head", ["w", "act"])


RULES = [
    opt.Adam(),
    opt.OptimiserChain(opt.Momentum(), opt.ClipNorm(1.0), opt.Adam()),
    opt.OptimiserChain(opt.AccumGrad(1), opt.WeightDecay(0.1), opt.RAdam()),
    opt.MixedPrecision(np.float64, opt.Momentum()),
    InPlaceMomentum(),
    opt.OptimiserChain(InPlaceMomentum(), opt.ClipNorm(1.0), opt.Adam()),
]
RULE_IDS = ["Adam", "chain-clipnorm", "accum-radam", "mixed", "python", "python-chain"]


def make_model(n_layers=6):
    rng = np.random.default_rng(0)
    return {
        "layers": [
            {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(3).astype(np.float32)}
            for _ in range(n_layers)
        ],
        "head": Head(rng.standard_normal(2), "softmax"),
        "steps": 7,
    }


def make_grad(n_layers=6):
    rng = np.random.default_rng(1)
    return {
        "layers": [
            {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(3)} for _ in range(n_layers)
        ],
        "head": Head(rng.standard_normal(2), None),
        "steps": None,
    }


def all_arrays(model, state):
    """Copies of every parameter and every state array (and per-leaf scalar)."""
    return pickle.dumps((model, state))


def prepared(rule):
    """A model and a state that has taken a step already (non-trivial state)."""
    model = make_model()
    state = opt.setup(rule, model)
    opt.update_(state, model, make_grad())
    return model, state


def check_fails_cleanly(rule, grad, exc, *fragments):
    """Both update and update_ raise ``exc`` naming every fragment, and
    change nothing at all."""
    model, state = prepared(rule)
    before = all_arrays(model, state)
    for step in (opt.update_, opt.update):
        with pytest.raises(exc) as info:
            step(state, model, grad)
        for f in fragments:
            assert f in str(info.value), (f, str(info.value))
        assert all_arrays(model, state) == before, step.__name__
    # and the same state and model still train
    opt.update_(state, model, make_grad())
    assert all_arrays(model, state) != before
    return info.value


def bad_grad(where, value):
    """The good gradient with one part replaced; ``where`` is a list of keys."""
    g = make_grad()
    node = g
    for k in where[:-1]:
        node = node[k]
    if isinstance(node, tuple):  # a namedtuple: rebuild it
        raise AssertionError("use a dict path")
    node[where[-1]] = value
    return g


# The bad part is in the last layer: every other leaf would have been updated first.
LAST = 5


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("layer", [0, LAST])
def test_wrong_shape(rule, layer):
    err = check_fails_cleanly(
        rule,
        bad_grad(["layers", layer, "w"], np.ones((2, 3))),
        ValueError,
        "'layers'",
        str(layer),
        "'w'",
    )
    assert "(2, 3)" in str(err) and "(3, 2)" in str(err)


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_scalar_for_array(rule):
    check_fails_cleanly(
        rule, bad_grad(["layers", LAST, "b"], 1.0), ValueError, "'layers'", "5", "'b'"
    )


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_list_of_wrong_length(rule):
    g = make_grad()
    g["layers"] = g["layers"][:-1]
    err = check_fails_cleanly(rule, g, ValueError, "'layers'")
    assert "5" in str(err) and "6" in str(err)
    g = make_grad()
    g["layers"].append({"w": np.ones((3, 2))})
    check_fails_cleanly(rule, g, ValueError, "'layers'")


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize(
    "value",
    [np.ones(3), [np.ones((3, 2)), np.ones(3)], "w", 3.0],
    ids=["array", "list", "str", "float"],
)
def test_wrong_structure_for_dict(rule, value):
    check_fails_cleanly(rule, bad_grad(["layers", LAST], value), TypeError, "'layers'", "5")


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize(
    "value", [{"0": np.ones(3)}, np.ones(6), "layers"], ids=["dict", "array", "str"]
)
def test_wrong_structure_for_list(rule, value):
    g = make_grad()
    g["layers"] = value
    check_fails_cleanly(rule, g, TypeError, "'layers'")


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_dict_for_array(rule):
    check_fails_cleanly(
        rule, bad_grad(["layers", LAST, "w"], {"w": np.ones((3, 2))}), TypeError, "'layers'", "'w'"
    )


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_unknown_key(rule):
    err = check_fails_cleanly(
        rule, bad_grad(["layers", LAST, "wieght"], np.ones((3, 2))), ValueError, "'layers'"
    )
    assert "wieght" in str(err)


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_wrong_structure_in_namedtuple(rule):
    g = make_grad()
    g["head"] = (np.ones(2),)  # the named tuple has two fields
    check_fails_cleanly(rule, g, ValueError, "'head'")
    g = make_grad()
    g["head"] = np.ones(2)
    check_fails_cleanly(rule, g, TypeError, "'head'")


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
def test_complex_gradient_for_real_parameter(rule):
    err = check_fails_cleanly(
        rule,
        bad_grad(["layers", LAST, "w"], np.ones((3, 2)) * (1 + 1j)),
        TypeError,
        "'layers'",
        "5",
        "'w'",
    )
    assert "complex" in str(err)


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize(
    "value",
    [
        "abc",
        object(),
        np.array(["a", "b", "c"]),
        np.array([1, 2, 3], dtype=object),
        [1, "a", 3],
        [[1], [2, 3], [4]],
        np.array(["2020-01-01"] * 3, dtype="datetime64[D]"),
    ],
    ids=["str", "object", "str-array", "object-array", "mixed-list", "ragged", "datetime"],
)
def test_non_numeric_gradient(rule, value):
    check_fails_cleanly(
        rule,
        bad_grad(["layers", LAST, "b"], value),
        (TypeError, ValueError),
        "'layers'",
        "5",
        "'b'",
    )


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize(
    "rule",
    [
        opt.ClipNorm(1.0),
        opt.OptimiserChain(opt.Momentum(), opt.ClipNorm(1.0), opt.Adam()),
        opt.OptimiserChain(opt.ClipNorm(5.0, 1.0), opt.Descent()),
        opt.OptimiserChain(opt.ClipNorm(5.0, np.inf), opt.Descent()),
        opt.MixedPrecision(np.float64, opt.OptimiserChain(opt.Adam(), opt.ClipNorm(1.0))),
        opt.OptimiserChain(InPlaceMomentum(), opt.ClipNorm(1.0), opt.Adam()),
    ],
    ids=["alone", "chain", "p=1", "p=inf", "mixed", "python-chain"],
)
@pytest.mark.parametrize("layer", [0, 2, LAST])
def test_clipnorm_throw(rule, bad, layer):
    # Julia's norm(x, Inf) is NaN when x holds a NaN, so ClipNorm throws for it too.
    g = make_grad()
    g["layers"][layer]["b"] = np.array([1.0, bad, 2.0])
    err = check_fails_cleanly(rule, g, ValueError, "'layers'", str(layer), "'b'")
    assert "norm" in str(err)


def test_clipnorm_throw_mixed_dtypes():
    m = {"f32": [np.ones(3, np.float32) for _ in range(3)], "f64": np.ones(3)}
    s = opt.setup(opt.OptimiserChain(opt.ClipNorm(1.0), opt.Adam()), m)
    before = all_arrays(m, s)
    g = {"f32": [np.ones(3)] * 3, "f64": [1, np.inf, 1]}
    with pytest.raises(ValueError, match="'f64'"):
        opt.update_(s, m, g)
    assert all_arrays(m, s) == before


def test_clipnorm_no_throw_and_finite():
    m = {"x": np.array([3.0, 4.0]), "y": np.ones(3)}
    s = opt.setup(opt.ClipNorm(1.0, throw=False), m)
    _, m2 = opt.update(s, m, {"x": [3.0, 4.0], "y": [1, np.inf, 1]})
    np.testing.assert_allclose(m2["x"], [3 - 0.6, 4 - 0.8])
    # as Julia: the infinite norm scales by omega / inf = 0, and inf * 0 is NaN
    np.testing.assert_array_equal(m2["y"], [1, np.nan, 1])


def test_clipnorm_float16_inf_after_overflow():
    # a float16 gradient whose 2-norm overflows float16 only when squared
    m = {"w": np.ones(4, np.float16)}
    s = opt.setup(opt.ClipNorm(1.0), m)
    _, m2 = opt.update(s, m, {"w": np.full(4, 300.0, np.float16)})
    np.testing.assert_allclose(m2["w"], 0.5, rtol=1e-3)  # norm 600, scaled to 1


def test_state_for_another_model():
    model, state = prepared(opt.Adam())
    before = all_arrays(model, state)
    other = make_model()
    other["layers"][LAST]["w"] = np.ones((4, 2))
    g = make_grad()
    g["layers"][LAST]["w"] = np.ones((4, 2))
    for step in (opt.update_, opt.update):
        with pytest.raises(ValueError, match="'layers', 5, 'w'"):
            step(state, other, g)
    assert all_arrays(model, state) == before
    other = make_model()
    other["layers"][LAST]["b"] = "not an array"
    with pytest.raises(TypeError, match="'layers', 5, 'b'"):
        opt.update_(state, other, make_grad())
    assert all_arrays(model, state) == before
    with pytest.raises((TypeError, ValueError)):
        opt.update_(state, {"layers": []}, make_grad())
    assert all_arrays(model, state) == before


class Wrong(opt.AbstractRule):
    """Returns an update of the wrong size."""

    def init(self, x):
        return 0

    def apply(self, state, x, dx):
        return state + 1, np.ones(x.size + 1)


class Boom(opt.AbstractRule):
    """Writes its state, then fails."""

    def init(self, x):
        return np.zeros_like(x)

    def apply(self, state, x, dx):
        state += 1
        raise RuntimeError("boom")


def test_bad_update_from_custom_rule_changes_nothing():
    m = {"good": np.ones(3), "bad": np.ones(2)}
    s = {"good": opt.setup(opt.Adam(), m["good"]), "bad": opt.setup(Wrong(), m["bad"])}
    before = all_arrays(m, s)
    with pytest.raises(ValueError, match="'bad'"):
        opt.update_(s, m, {"good": np.ones(3), "bad": np.ones(2)})
    assert all_arrays(m, s) == before


def test_exception_in_custom_rule_changes_nothing():
    m = {"a": np.ones(3), "z": np.ones(2)}
    s = {"a": opt.setup(opt.Momentum(), m["a"]), "z": opt.setup(Boom(), m["z"])}
    before = all_arrays(m, s)
    with pytest.raises(RuntimeError, match="boom"):
        opt.update_(s, m, {"a": np.ones(3), "z": np.ones(2)})
    assert all_arrays(m, s) == before


@pytest.mark.parametrize(
    "rule",
    [
        opt.Adam(),
        opt.Descent(),
        opt.OptimiserChain(opt.ClipGrad(), opt.Momentum()),
        opt.MixedPrecision(opt.Adam()),
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_parameters_at_setup(rule, dtype):
    m = {"layers": [{"w": np.ones(2)}, {"w": np.ones(2, dtype)}]}
    with pytest.raises(TypeError) as info:
        opt.setup(rule, m)
    msg = str(info.value)
    assert np.dtype(dtype).name in msg
    assert "'layers'" in msg and "1" in msg and "'w'" in msg
    assert "MixedPrecision(numpy.float64" not in msg  # that advice would not help


def test_unsupported_float_dtype_at_setup():
    if np.dtype(np.longdouble) == np.dtype(np.float64):
        pytest.skip("longdouble is float64 here")
    with pytest.raises(TypeError, match="'p'") as info:
        opt.setup(opt.Adam(), {"p": np.ones(2, np.longdouble)})
    assert np.dtype(np.longdouble).name in str(info.value)


def test_freeze_model_error_names_path():
    m = {"enc": [{"w": np.ones(2)}]}
    for f in (opt.freeze_, opt.thaw_):
        with pytest.raises((TypeError, ValueError)) as info:
            f(m)
        msg = str(info.value)
        assert "state tree" in msg and "'enc'" in msg and "'w'" in msg


def test_adjust_unknown_field_names_the_field_and_changes_nothing():
    model, state = prepared(opt.OptimiserChain(opt.ClipGrad(), opt.Adam()))
    before = all_arrays(model, state)
    with pytest.raises((TypeError, ValueError)) as info:
        opt.adjust_(state, rho=0.5)
    assert "rho" in str(info.value) and "'layers'" in str(info.value)
    assert all_arrays(model, state) == before


def test_errors_are_the_documented_types():
    model, state = prepared(opt.Adam())
    with pytest.raises(ValueError):
        opt.update(state, model, bad_grad(["layers", 0, "w"], np.ones(4)))
    with pytest.raises(TypeError):
        opt.update(state, model, bad_grad(["layers", 0, "w"], "x"))
    # freeze_ on a model is Julia's ArgumentError: catchable as either
    with pytest.raises(TypeError):
        opt.freeze_(model)
    with pytest.raises(ValueError):
        opt.freeze_(model)
