"""The rule objects themselves: constructors (API.md's field names, order and
defaults), attributes, repr, ==, hash, pickling, validation, immutability, and
the agreement of the Python rule table with the kernel's registry."""

from __future__ import annotations

import copy
import inspect
import itertools
import math
import pickle

import numpy as np
import pytest
from conftest import RULES

import optimisers
import optimisers as o
from optimisers import _core

_BETA = (0.9, 0.999)
_ADAM = [("eta", 0.001), ("beta", _BETA), ("epsilon", 1e-8)]

# API.md's table: (positional fields with defaults, keyword-only fields with defaults).
SPEC = {
    "Descent": ([("eta", 0.1)], []),
    "Momentum": ([("eta", 0.01), ("rho", 0.9)], []),
    "Nesterov": ([("eta", 0.001), ("rho", 0.9)], []),
    "Rprop": ([("eta", 1e-3), ("ell", (0.5, 1.2)), ("gamma", (1e-6, 50.0))], []),
    "RMSProp": ([("eta", 0.001), ("rho", 0.9), ("epsilon", 1e-8)], [("centred", False)]),
    "Adam": (_ADAM, []),
    "RAdam": (_ADAM, []),
    "AdaMax": (_ADAM, []),
    "OAdam": ([("eta", 0.001), ("beta", (0.5, 0.9)), ("epsilon", 1e-8)], []),
    "AdaGrad": ([("eta", 0.1), ("epsilon", 1e-8)], []),
    "AdaDelta": ([("rho", 0.9), ("epsilon", 1e-8)], []),
    "AMSGrad": (_ADAM, []),
    "NAdam": (_ADAM, []),
    "AdamW": (
        [("eta", 0.001), ("beta", _BETA), ("lambda_", 0.0), ("epsilon", 1e-8)],
        [("couple", True)],
    ),
    "AdaBelief": ([("eta", 0.001), ("beta", _BETA), ("epsilon", 1e-16)], []),
    "Lion": ([("eta", 0.001), ("beta", _BETA)], []),
    "WeightDecay": ([("lambda_", 5e-4)], []),
    "SignDecay": ([("lambda_", 1e-3)], []),
    "ClipGrad": ([("delta", 10.0)], []),
    "ClipNorm": ([("omega", 10.0), ("p", 2.0)], [("throw", True)]),
    "ClipGlobalNorm": ([("omega", 10.0), ("p", 2.0)], [("throw", True)]),
    "InvDecay": ([("gamma", 0.001)], []),
    "NoisySGD": ([("eta", 0.01), ("variance", 0.1), ("gamma", 0.55)], [("seed", 0)]),
    "Yogi": ([("eta", 0.01), ("beta", _BETA), ("epsilon", 1e-8)], [("initial_accumulator", 0.0)]),
    "TrustRatio": ([("min_norm", 0.0), ("coef", 1.0), ("epsilon", 0.0)], []),
    "Lamb": (
        [("eta", 0.01), ("beta", _BETA), ("epsilon", 1e-8), ("lambda_", 0.0)],
        [("min_norm", 0.0)],
    ),
    "Lars": (
        [("eta", 0.1), ("lambda_", 0.0), ("coef", 0.001), ("rho", 0.9)],
        [("nesterov", False)],
    ),
}
NAMES = list(SPEC)
# Rules made of rules, tested on their own below and in test_whole_tree.py.
WRAPPERS = ["Scheduled", "SkipNonFinite", "Lookahead"]
ALL_CLASSES = [*NAMES, "OptimiserChain", "AccumGrad", "MixedPrecision", *WRAPPERS]

# A repr evaluates back to the rule in this namespace.
NAMESPACE = {name: getattr(o, name) for name in ALL_CLASSES}
NAMESPACE.update(float16=np.float16, float32=np.float32, float64=np.float64, inf=math.inf)


def fields(name):
    positional, keyword = SPEC[name]
    return positional + keyword


def other_value(value):
    """A valid value different from a default."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, tuple):
        return tuple(other_value(v) for v in value)
    if isinstance(value, int):  # NoisySGD's seed
        return value + 3
    return value / 4 if value else 0.25


def public_attributes(rule):
    return {
        a for a in dir(rule) if not a.startswith("_") and not inspect.isroutine(getattr(rule, a))
    }


def examples():
    """One rule of every class, several of some."""
    return [
        *(getattr(o, n)() for n in NAMES),
        *(getattr(o, n)(**{k: other_value(v) for k, v in fields(n)}) for n in NAMES),
        o.AccumGrad(3),
        o.OptimiserChain(),
        o.OptimiserChain(o.ClipNorm(1.0, math.inf), o.AccumGrad(2), o.Adam(0.01)),
        o.OptimiserChain(o.OptimiserChain(o.WeightDecay()), o.Descent()),
        o.MixedPrecision(o.Adam()),
        o.MixedPrecision(np.float64, o.OptimiserChain(o.ClipGrad(), o.Lion())),
    ]


EXAMPLES = [pytest.param(r, id=repr(r).replace(" ", "")) for r in examples()]


# ---------------------------------------------------------------------------
# constructors and attributes


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_attributes(name):
    rule = getattr(o, name)()
    assert public_attributes(rule) == {k for k, _ in fields(name)}
    for key, default in fields(name):
        value = getattr(rule, key)
        assert value == default, f"{name}.{key} = {value!r}, API.md says {default!r}"
        assert type(value) is type(default), f"{name}.{key} is a {type(value).__name__}"


@pytest.mark.parametrize("name", NAMES)
def test_positional_and_keyword_construction(name):
    cls = getattr(o, name)
    positional, keyword = SPEC[name]
    values = {k: other_value(v) for k, v in fields(name)}
    kw_only = {k: values[k] for k, _ in keyword}
    by_position = cls(*(values[k] for k, _ in positional), **kw_only)
    by_keyword = cls(**values)
    assert by_position == by_keyword
    for key, value in values.items():
        assert getattr(by_position, key) == value
        assert getattr(by_keyword, key) == value
    # Leading positional arguments only: the rest keep their defaults.
    first = positional[0][0]
    rule = cls(values[first])
    assert getattr(rule, first) == values[first]
    for key, default in fields(name)[1:]:
        assert getattr(rule, key) == default
    # Keyword-only fields are not positional; no field twice; no unknown field.
    if keyword:
        with pytest.raises(TypeError):
            cls(*(values[k] for k, _ in positional), *kw_only.values())
    with pytest.raises(TypeError):
        cls(values[first], **{first: values[first]})
    with pytest.raises(TypeError):
        cls(no_such_field=1.0)


def test_pairs_are_stored_as_tuples():
    assert o.Adam(0.01, [0.8, 0.99]).beta == (0.8, 0.99)
    assert isinstance(o.Adam(0.01, [0.8, 0.99]).beta, tuple)
    assert o.Rprop(ell=np.array([0.4, 1.1])).ell == (0.4, 1.1)
    assert o.Adam(np.float32(0.5)).eta == 0.5
    assert o.Descent(1).eta == 1


def test_accumgrad():
    rule = o.AccumGrad(3)
    assert rule.n == 3 and type(rule.n) is int
    assert o.AccumGrad(n=5).n == 5
    assert o.AccumGrad(np.int64(4)).n == 4
    assert public_attributes(rule) == {"n"}
    with pytest.raises(TypeError):
        o.AccumGrad()  # n has no default


def test_optimiserchain():
    a, d = o.Adam(0.01), o.Descent()
    chain = o.OptimiserChain(a, d)
    assert chain.rules == (a, d)
    assert isinstance(chain.rules, tuple)
    assert public_attributes(chain) == {"rules"}
    assert o.OptimiserChain().rules == ()
    assert o.OptimiserChain(chain).rules == (chain,)


def test_mixedprecision():
    adam = o.Adam(0.01)
    default = o.MixedPrecision(adam)
    assert np.dtype(default.dtype) == np.float32
    assert default.rule == adam
    assert public_attributes(default) == {"dtype", "rule"}
    wide = o.MixedPrecision(np.float64, adam)
    assert np.dtype(wide.dtype) == np.float64 and wide.rule == adam
    assert o.MixedPrecision(dtype=np.float64, rule=adam) == wide
    assert o.MixedPrecision(rule=adam) == default
    assert o.MixedPrecision(np.dtype("float64"), adam) == wide
    assert o.MixedPrecision("float64", adam) == wide
    assert o.MixedPrecision(np.float64, adam) != default


def test_centered_is_an_alias_of_centred():
    rule = o.RMSProp(centered=True)
    assert rule.centred is True
    assert rule == o.RMSProp(centred=True)
    assert rule != o.RMSProp()
    assert o.RMSProp(0.01, centered=True).eta == 0.01
    assert o.RMSProp(centered=False) == o.RMSProp()
    assert "centred=True" in repr(rule)


# ---------------------------------------------------------------------------
# repr, ==, hash, pickle


def test_repr_exactly():
    assert repr(o.Adam()) == "Adam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-08)"
    assert repr(o.RMSProp(centred=True)) == (
        "RMSProp(eta=0.001, rho=0.9, epsilon=1e-08, centred=True)"
    )
    assert repr(o.AdamW(lambda_=0.1)) == (
        "AdamW(eta=0.001, beta=(0.9, 0.999), lambda_=0.1, epsilon=1e-08, couple=True)"
    )
    assert repr(o.ClipNorm()) == "ClipNorm(omega=10.0, p=2.0, throw=True)"
    assert repr(o.AccumGrad(3)) == "AccumGrad(n=3)"
    assert repr(o.OptimiserChain()) == "OptimiserChain()"
    assert repr(o.OptimiserChain(o.Descent(), o.ClipGrad(1.0))) == (
        "OptimiserChain(Descent(eta=0.1), ClipGrad(delta=1.0))"
    )


@pytest.mark.parametrize("name", NAMES)
def test_repr_shows_every_field_in_order(name):
    for values in ({k: v for k, v in fields(name)}, {k: other_value(v) for k, v in fields(name)}):
        rule = getattr(o, name)(**values)
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        assert repr(rule) == f"{name}({shown})"


@pytest.mark.parametrize("rule", EXAMPLES)
def test_repr_evaluates_back(rule):
    assert eval(repr(rule), NAMESPACE) == rule
    assert str(rule) == repr(rule)


def test_mixedprecision_repr_names_dtype_and_rule():
    text = repr(o.MixedPrecision(np.float64, o.Adam()))
    assert text.startswith("MixedPrecision(")
    assert "float64" in text and repr(o.Adam()) in text
    assert "float32" in repr(o.MixedPrecision(o.Adam()))


@pytest.mark.parametrize("name", NAMES)
def test_equality_by_value(name):
    cls = getattr(o, name)
    assert cls() == cls()
    assert hash(cls()) == hash(cls())
    for key, default in fields(name):
        changed = cls(**{key: other_value(default)})
        assert changed != cls(), f"{name}: changing {key} must change =="
        assert changed == cls(**{key: other_value(default)})
    assert cls() != repr(cls())
    assert cls() != None  # noqa: E711


def test_rules_of_different_types_differ():
    rules = [getattr(o, n)() for n in NAMES] + [
        o.AccumGrad(1),
        o.OptimiserChain(),
        o.MixedPrecision(o.Adam()),
    ]
    for a, b in itertools.combinations(rules, 2):
        assert a != b, f"{a!r} == {b!r}"
    # Adam, RAdam, AdaMax, AMSGrad and NAdam have the very same fields
    assert o.Adam() != o.NAdam() and o.RAdam() != o.AMSGrad()
    assert len(set(rules)) == len(rules)
    assert o.OptimiserChain(o.Adam()) != o.Adam()
    assert o.OptimiserChain(o.Adam()) != o.OptimiserChain(o.NAdam())
    assert o.OptimiserChain(o.Adam(), o.Descent()) != o.OptimiserChain(o.Descent(), o.Adam())
    assert o.MixedPrecision(o.Adam()) != o.MixedPrecision(o.NAdam())


@pytest.mark.parametrize("rule", EXAMPLES)
def test_hash_pickle_and_copy(rule):
    assert hash(rule) == hash(eval(repr(rule), NAMESPACE))
    assert {rule: 1}[eval(repr(rule), NAMESPACE)] == 1
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(rule, protocol=protocol))
        assert type(back) is type(rule)
        assert back == rule and hash(back) == hash(rule)
        assert repr(back) == repr(rule)
    assert copy.copy(rule) == rule
    assert copy.deepcopy(rule) == rule


@pytest.mark.parametrize("rule", RULES)
def test_pickled_state_tree_continues_the_same(rule):
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal(5).astype(np.float32)
    model = {"a": x, "b": [y, "text", 3], "tied": x}
    state = optimisers.setup(rule, model)
    grads = [
        {
            "a": rng.standard_normal((3, 4)),
            "b": [rng.standard_normal(5).astype(np.float32), None, None],
        }
        for _ in range(4)
    ]
    for g in grads[:2]:
        state, model = optimisers.update(state, model, g)
    state2, model2 = pickle.loads(pickle.dumps((state, model)))
    assert state2 == state
    assert state2["a"] is state2["tied"], "the tie must survive pickling"
    assert state2["a"].rule == rule
    for g in grads[2:]:
        state, model = optimisers.update_(state, model, g)
        state2, model2 = optimisers.update_(state2, model2, g)
    assert state2 == state
    np.testing.assert_array_equal(model2["a"], model["a"])
    np.testing.assert_array_equal(model2["b"][0], model["b"][0])
    assert model2["a"] is model2["tied"]


# ---------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("name", [n for n in NAMES if any(k == "eta" for k, _ in fields(n))])
def test_negative_learning_rate_is_a_value_error(name):
    cls = getattr(o, name)
    with pytest.raises(ValueError, match="negative"):
        cls(-0.1)
    with pytest.raises(ValueError, match="negative"):
        cls(eta=-1)
    assert cls(0.0).eta == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_non_numbers_are_type_errors(name):
    cls = getattr(o, name)
    for key, default in fields(name):
        bad_values = ["0.1", None, [0.1], 1j]
        if isinstance(default, tuple):
            bad_values = ["ab", 0.5, (0.5,), (0.5, 0.9, 0.99), (0.5, "x"), None]
        elif isinstance(default, bool):
            bad_values = ["yes", None]
        for bad in bad_values:
            with pytest.raises(TypeError):
                cls(**{key: bad})


def test_accumgrad_validation():
    for bad in [0, -1]:
        with pytest.raises(ValueError):
            o.AccumGrad(bad)
    for bad in [1.5, 3.0, "3", None, True]:
        with pytest.raises(TypeError):
            o.AccumGrad(bad)


def test_chain_and_mixedprecision_validation():
    with pytest.raises(ValueError):
        o.OptimiserChain(o.MixedPrecision(o.Adam()))
    with pytest.raises(ValueError):
        o.OptimiserChain(o.Descent(), o.MixedPrecision(np.float64, o.Adam()))
    with pytest.raises(TypeError):
        o.OptimiserChain(o.Adam(), 0.1)
    with pytest.raises(TypeError):
        o.OptimiserChain(o.Adam)  # the class, not a rule
    with pytest.raises(TypeError):
        o.MixedPrecision(np.int32, o.Adam())
    with pytest.raises(TypeError):
        o.MixedPrecision(np.float64, "Adam")
    with pytest.raises(TypeError):
        o.MixedPrecision()
    with pytest.raises(ValueError):
        o.MixedPrecision(o.MixedPrecision(o.Adam()))


# ---------------------------------------------------------------------------
# immutability


@pytest.mark.parametrize("rule", EXAMPLES)
def test_rules_are_immutable(rule):
    before = repr(rule)
    names = sorted(public_attributes(rule))
    assert names
    for key in names:
        value = getattr(rule, key)
        with pytest.raises(AttributeError):
            setattr(rule, key, value)
        with pytest.raises(AttributeError):
            delattr(rule, key)
    with pytest.raises(AttributeError):
        rule.something_new = 1
    assert repr(rule) == before
    assert rule == eval(before, NAMESPACE)


# ---------------------------------------------------------------------------
# the Python rule table and the kernel's registry


def _kernel_rules(rule):
    """Every rule inside `rule` that the kernel runs, flattening chains and
    looking inside MixedPrecision and the wrappers (whose own steps, and
    ClipGlobalNorm's, the general path takes before the kernel)."""
    if isinstance(rule, o.OptimiserChain):
        return [r for inner in rule.rules for r in _kernel_rules(inner)]
    if isinstance(rule, (o.MixedPrecision, o.Scheduled, o.Lookahead, o.SkipNonFinite)):
        return _kernel_rules(rule.rule)
    return [] if isinstance(rule, o.ClipGlobalNorm) else [rule]


def test_kernel_registry_is_consistent():
    registry = {name: (hyper, per_leaf, states) for name, hyper, per_leaf, states in _core.rules()}
    assert len(registry) == len(_core.rules()), "kernel rule names must be unique"
    for name, (hyper, per_leaf, states) in registry.items():
        assert isinstance(name, str) and name
        assert isinstance(hyper, tuple) and all(isinstance(h, str) and h for h in hyper)
        assert len(set(hyper)) == len(hyper), f"{name} names a hyper-parameter twice"
        assert all(isinstance(v, int) and v >= 0 for v in (per_leaf, states))
    # Every kernel rule is reached from some Python rule, and vice versa.
    # (Reductions are not rules; ClipGlobalNorm's runs from its wrapper.)
    reductions = dict(_core.reductions())
    used = set()
    for rule in [*examples(), o.RMSProp(centred=True), *(p.values[0] for p in RULES)]:
        for r in _kernel_rules(rule):
            for dtype in (np.float32, np.float64):
                used.update(name for name, _ in r._kernel(np.dtype(dtype)))
    assert used - set(reductions) == set(registry)
    assert used & set(reductions) == set(reductions) - {"ClipGlobalNorm"}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_python_rule_table_matches_kernel_registry(rule, dtype):
    """For every kernel step of the rule: the hyper-parameters the kernel
    names, and state arrays / per-leaf scalars that the Python side hands it."""
    registry = {name: (hyper, per_leaf, states) for name, hyper, per_leaf, states in _core.rules()}
    x = np.zeros((2, 3), dtype=dtype)
    for r in _kernel_rules(rule):
        state = r.init(x)
        steps = r._kernel(np.dtype(dtype))
        want_states = want_per_leaf = 0
        for name, hyper in steps:
            assert all(isinstance(h, float) for h in hyper.values()), f"{name}: {hyper!r}"
            if name == "ClipNorm":
                assert hyper == {"omega": r.omega, "p": r.p, "throw": float(r.throw)}
                assert set(hyper) == set(dict(_core.reductions())[name])
                continue
            if name == "TrustRatio":
                assert set(hyper) == set(dict(_core.reductions())[name])
                continue
            assert name in registry, f"{type(r).__name__} asks for unknown kernel rule {name}"
            names, n_per_leaf, n_states = registry[name]
            assert set(hyper) == set(names), f"{name} takes {names}"
            want_states += n_states
            want_per_leaf += n_per_leaf
        arrays, per_leaf = r._arrays(state), r._per_leaf(state)
        assert len(arrays) == want_states
        assert len(per_leaf) == want_per_leaf
        assert all(isinstance(a, np.ndarray) and a.shape == x.shape for a in arrays)
        assert all(a.dtype == x.dtype for a in arrays)
        assert all(isinstance(v, float) for v in per_leaf)
        program = r._program(np.dtype(dtype))
        assert program.states == want_states
        assert program.per_leaf == want_per_leaf


def test_kernel_program_takes_hyper_parameters_by_name_in_any_order():
    names = ("eta", "beta1", "beta2", "epsilon", "lambda", "couple")
    values = (1e-3, 0.9, 0.999, 1e-8, 0.1, 1.0)
    forward = _core.Program([("AdamW", dict(zip(names, values)))], "float64")
    backward = _core.Program([("AdamW", dict(zip(names[::-1], values[::-1])))], "float64")
    assert repr(forward) == repr(backward)


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        ({"eta": 0.1, "beta1": 0.9, "beta2": 0.999}, 'Adam: hyper-parameter "epsilon" missing'),
        (
            {"eta": 0.1, "beta1": 0.9, "beta2": 0.999, "epsilom": 1e-8},
            'Adam: unknown hyper-parameter "epsilom"',
        ),
    ],
)
def test_kernel_program_names_a_missing_or_unknown_hyper_parameter(hyper, message):
    with pytest.raises(ValueError, match=message):
        _core.Program([("Adam", hyper)], "float32")


def test_kernel_reductions_are_steps_by_name():
    """Reductions (norms, trust ratios) are named steps as rules are; only
    one that can fail needs the state before it rolled back."""
    assert dict(_core.reductions())["ClipNorm"] == ["omega", "p", "throw"]
    adam = ("Adam", {"eta": 1.0, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-6})
    trust = ("TrustRatio", {"min_norm": 0.0, "coef": 1.0, "eps": 0.0})
    lamb = _core.Program([adam, ("WeightDecay", {"lambda": 0.01}), trust], "float64")
    assert (lamb.states, lamb.states_before_last_norm) == (2, 0)
    clip = ("ClipGlobalNorm", {"omega": 1.0, "p": 2.0, "throw": 1.0})
    assert _core.Program([adam, clip], "float32").states_before_last_norm == 2
    with pytest.raises(ValueError, match='TrustRatio: hyper-parameter "eps" missing'):
        _core.Program([("TrustRatio", {"min_norm": 0.0, "coef": 1.0})], "float32")
