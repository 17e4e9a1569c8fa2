"""The tree interface: setup / update / update_ over every kind of container,
ties, missing gradients, freezing, read-only and strided parameters, and
custom rules written in Python."""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict, namedtuple
from typing import Any

import numpy as np
import pytest
from custom_rules import DecayDescent, InPlaceMomentum

import optimisers as opt
from optimisers import Leaf

# ---------------------------------------------------------------------------
# helpers


def assert_same_tree(a: Any, b: Any, path: str = "") -> None:
    """``a`` and ``b`` hold equal values (arrays by value and dtype, Leafs by
    rule, state and frozen flag) in the same structure."""
    assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=True), f"{path}: {a} != {b}"
    elif isinstance(a, Leaf):
        assert rules_equal(a.rule, b.rule) and a.frozen == b.frozen, path
        assert_same_tree(a.state, b.state, path + ".state")
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same_tree(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same_tree(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif attributes(a) is not None:
        assert_same_tree(attributes(a), attributes(b), path)
    else:
        assert a == b or a is b, f"{path}: {a!r} != {b!r}"


def attributes(x: Any) -> dict | None:
    """The instance attributes of a plain object (``__dict__`` or ``__slots__``), else None."""
    if callable(x) or isinstance(x, (str, bytes, int, float, np.generic, type(None))):
        return None
    if hasattr(x, "__dict__"):
        return vars(x)
    slots = getattr(type(x), "__slots__", None)
    if slots is None:
        return None
    return {k: getattr(x, k) for k in slots if hasattr(x, k)}


def rules_equal(r1: Any, r2: Any) -> bool:
    """Built-in rules by ``==``; custom rules (no ``__eq__``) by their attributes."""
    if type(r1) is not type(r2):
        return False
    if isinstance(r1, opt.OptimiserChain):
        return len(r1.rules) == len(r2.rules) and all(map(rules_equal, r1.rules, r2.rules))
    if isinstance(r1, opt.MixedPrecision):
        return r1.dtype == r2.dtype and rules_equal(r1.rule, r2.rule)
    return bool(r1 == r2) or vars(r1) == vars(r2)


def arrays_in(x: Any) -> list[np.ndarray]:
    """Every array in a tree (model or state), in order, repeats included."""
    if isinstance(x, np.ndarray):
        return [x]
    if isinstance(x, Leaf):
        return arrays_in(x.state)
    if isinstance(x, dict):
        return [a for v in x.values() for a in arrays_in(v)]
    if isinstance(x, (list, tuple)):
        return [a for v in x for a in arrays_in(v)]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return [a for f in dataclasses.fields(x) for a in arrays_in(getattr(x, f.name))]
    if attributes(x) is not None:
        return arrays_in(attributes(x))
    return []


def leaves_in(x: Any) -> list[Leaf]:
    if isinstance(x, Leaf):
        return [x]
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in leaves_in(v)]
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in leaves_in(v)]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return [leaf for f in dataclasses.fields(x) for leaf in leaves_in(getattr(x, f.name))]
    if attributes(x) is not None:
        return leaves_in(attributes(x))
    return []


def adam_ref(x, grads, eta=0.001, beta=(0.9, 0.999), eps=1e-8):
    """Optimisers.jl's Adam by hand, float64."""
    x = np.array(x, dtype=np.float64)
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    b1t, b2t = beta
    for g in grads:
        g = np.asarray(g, dtype=np.float64)
        m = beta[0] * m + (1 - beta[0]) * g
        v = beta[1] * v + (1 - beta[1]) * g**2
        x = x - eta * (m / (1 - b1t)) / (np.sqrt(v / (1 - b2t)) + eps)
        b1t, b2t = b1t * beta[0], b2t * beta[1]
    return x


# ---------------------------------------------------------------------------
# containers

NT = namedtuple("NT", ["w", "act"])


@dataclasses.dataclass
class DC:
    w: np.ndarray
    b: np.ndarray
    n: int = 3


@dataclasses.dataclass(frozen=True)
class FrozenDC:
    w: np.ndarray
    name: str = "frozen"


class Reg:
    """Registered with every instance attribute as a child."""

    inits = 0

    def __init__(self, w, b, act):
        Reg.inits += 1
        self.w, self.b, self.act = w, b, act


class RegFields:
    """Registered with only ``w`` and ``inner`` as children; ``extra`` is not one."""

    inits = 0

    def __init__(self, w, inner, extra):
        RegFields.inits += 1
        self.w, self.inner, self.extra = w, inner, extra


class Slotted:
    __slots__ = ("k", "w")


opt.register(Reg)
opt.register(RegFields, fields=("w", "inner"))
opt.register(Slotted)


def _slotted(w):
    s = Slotted()
    s.w, s.k = w, 7
    return s


def a(*v):
    return np.array(v, dtype=np.float64)


# (name, model builder, gradient builder (ten times each parameter), parameter getters)
CONTAINERS = [
    (
        "dict",
        lambda: {"w": a(1, 2), "b": a(3), "k": 5},
        lambda: {"w": a(10, 20), "b": a(30)},
        [lambda m: m["w"], lambda m: m["b"]],
    ),
    (
        "ordered-dict",
        lambda: OrderedDict(w=a(1, 2), b=a(3)),
        lambda: {"w": a(10, 20), "b": a(30)},
        [lambda m: m["w"], lambda m: m["b"]],
    ),
    (
        "list",
        lambda: [a(1, 2), "relu", a(3)],
        lambda: [a(10, 20), None, a(30)],
        [lambda m: m[0], lambda m: m[2]],
    ),
    (
        "tuple",
        lambda: (a(1, 2), len, a(3)),
        lambda: (a(10, 20), None, a(30)),
        [lambda m: m[0], lambda m: m[2]],
    ),
    (
        "namedtuple",
        lambda: (NT(a(1, 2), np.tanh), NT(a(3), None)),
        lambda: (NT(a(10, 20), None), {"w": a(30)}),
        [lambda m: m[0].w, lambda m: m[1].w],
    ),
    (
        "namedtuple-grad-as-tuple",
        lambda: NT(a(1, 2), NT(a(3), "x")),
        lambda: (a(10, 20), (a(30), None)),
        [lambda m: m.w, lambda m: m.act.w],
    ),
    (
        "dataclass",
        lambda: DC(a(1, 2), a(3)),
        lambda: DC(a(10, 20), a(30), None),
        [lambda m: m.w, lambda m: m.b],
    ),
    (
        "dataclass-grad-as-dict",
        lambda: DC(a(1, 2), a(3)),
        lambda: {"w": a(10, 20), "b": a(30)},
        [lambda m: m.w, lambda m: m.b],
    ),
    (
        "frozen-dataclass",
        lambda: [FrozenDC(a(1, 2)), FrozenDC(a(3))],
        lambda: [{"w": a(10, 20)}, FrozenDC(a(30), None)],
        [lambda m: m[0].w, lambda m: m[1].w],
    ),
    (
        "registered",
        lambda: Reg(a(1, 2), a(3), np.tanh),
        lambda: {"w": a(10, 20), "b": a(30), "act": None},
        [lambda m: m.w, lambda m: m.b],
    ),
    (
        "registered-grad-as-object",
        lambda: Reg(a(1, 2), a(3), np.tanh),
        lambda: Reg(a(10, 20), a(30), None),
        [lambda m: m.w, lambda m: m.b],
    ),
    (
        "registered-fields",
        lambda: RegFields(a(1, 2), {"b": a(3)}, a(100)),
        lambda: {"w": a(10, 20), "inner": {"b": a(30)}},
        [lambda m: m.w, lambda m: m.inner["b"]],
    ),
    (
        "slotted",
        lambda: [_slotted(a(1, 2)), _slotted(a(3))],
        lambda: [{"w": a(10, 20)}, {"w": a(30)}],
        [lambda m: m[0].w, lambda m: m[1].w],
    ),
    (
        "nested",
        lambda: {
            "layers": [
                DC(a(1, 2), a(4)),
                (Reg(a(3), np.zeros(0), "id"), {"scale": a(5)}),
            ],
            "head": NT(a(6), "softmax"),
        },
        lambda: {
            "layers": [
                DC(a(10, 20), a(40), None),
                ({"w": a(30), "b": np.zeros(0)}, {"scale": a(50)}),
            ],
            "head": NT(a(60), None),
        },
        [
            lambda m: m["layers"][0].w,
            lambda m: m["layers"][0].b,
            lambda m: m["layers"][1][0].w,
            lambda m: m["layers"][1][0].b,
            lambda m: m["layers"][1][1]["scale"],
            lambda m: m["head"].w,
        ],
    ),
]


@pytest.mark.parametrize(
    "name, make, make_grad, getters", CONTAINERS, ids=[c[0] for c in CONTAINERS]
)
def test_containers_update_and_update_(name, make, make_grad, getters):
    model = make()
    state = opt.setup(opt.Descent(0.01), model)
    assert type(state) is type(model)
    leaves = leaves_in(state)
    assert len(leaves) == len(getters)
    assert all(leaf.rule == opt.Descent(0.01) and leaf.state is None for leaf in leaves)

    # every case's gradient is ten times the parameter: Descent(0.01) leaves 0.9 of it
    before = [get(model).copy() for get in getters]
    expected = [0.9 * x for x in before]
    grad, grad2 = make_grad(), make_grad()
    inits = (Reg.inits, RegFields.inits)

    new_state, new_model = opt.update(state, model, grad)
    assert type(new_model) is type(model)
    for get, x0, want in zip(getters, before, expected):
        np.testing.assert_allclose(get(new_model), want, rtol=1e-15)
        np.testing.assert_array_equal(get(model), x0)  # input not changed
        assert get(new_model) is not get(model)
    assert (Reg.inits, RegFields.inits) == inits  # rebuilt without __init__
    assert type(new_state) is type(state)

    ids = [id(get(model)) for get in getters]
    s2, m2 = opt.update_(state, model, grad2)
    assert s2 is state and m2 is model
    for get, want, i in zip(getters, expected, ids):
        assert id(get(model)) == i  # written in place
        np.testing.assert_allclose(get(model), want, rtol=1e-15)
    assert (Reg.inits, RegFields.inits) == inits


def test_registered_fields_keep_other_attributes():
    m = RegFields(a(1, 2), {"b": a(3)}, a(100))
    s = opt.setup(opt.Adam(), m)
    assert isinstance(s.w, Leaf) and isinstance(s.inner["b"], Leaf)
    _, m2 = opt.update(s, m, {"w": a(1, 1), "inner": {"b": a(1)}})
    assert m2.extra is m.extra  # not a child: kept, never trained
    np.testing.assert_array_equal(m2.extra, a(100))
    assert isinstance(m2, RegFields)


def test_register_as_decorator_returns_class():
    @opt.register
    class Layer:
        def __init__(self):
            self.w = a(1.0)

    assert isinstance(Layer, type)
    s = opt.setup(opt.Descent(1.0), Layer())
    assert isinstance(s.w, Leaf)


def test_frozen_dataclass_is_rebuilt_not_mutated():
    m = FrozenDC(a(1, 2))
    s = opt.setup(opt.Descent(0.5), m)
    _s2, m2 = opt.update(s, m, FrozenDC(a(2, 2), None))
    assert isinstance(m2, FrozenDC) and m2 is not m and m2.name == "frozen"
    np.testing.assert_array_equal(m2.w, a(0, 1))
    np.testing.assert_array_equal(m.w, a(1, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        m2.w = a(0)  # still a frozen dataclass


# ---------------------------------------------------------------------------
# trainable(self)


class Layer:
    """Optimisers.jl docs: only ``alpha`` is trainable."""

    def __init__(self, n):
        self.alpha = np.arange(1.0, n + 1)
        self.beta = np.zeros(n)
        self.length = n

    def trainable(self):
        return {"alpha": self.alpha}


opt.register(Layer)


def test_trainable_subset():
    m = Layer(3)
    s = opt.setup(opt.Momentum(0.1, 0.9), m)
    assert isinstance(s.alpha, Leaf)
    assert s.beta is None and s.length is None
    g = {"alpha": a(1, 1, 1), "beta": a(100, 100, 100), "length": None}
    _s2, m2 = opt.update(s, m, g)
    np.testing.assert_allclose(m2.alpha, a(0.9, 1.9, 2.9))
    assert m2.beta is m.beta  # never changed, even with a gradient
    np.testing.assert_array_equal(m2.beta, np.zeros(3))
    opt.update_(s, m, g)
    np.testing.assert_allclose(m.alpha, a(0.9, 1.9, 2.9))
    np.testing.assert_array_equal(m.beta, np.zeros(3))


class TwoThirds:
    """Julia's TwoThirds: children a and c, trainable a only."""

    def __init__(self, a, b, c):
        self.a, self.b, self.c = a, b, c

    def trainable(self):
        return {"a": self.a}


opt.register(TwoThirds, fields=("a", "c"))


def test_trainable_subset_with_registered_fields():
    mt = TwoThirds(
        np.array([1, 2], np.float32), np.array([3, 4], np.float32), np.array([5, 6], np.float32)
    )
    st = opt.setup(opt.Momentum(0.1, 0.9), mt)
    assert isinstance(st.a, Leaf) and st.c is None
    gt = {"a": 2 * mt.a, "b": 200 * mt.b, "c": None}
    _, mtup = opt.update(st, mt, gt)
    np.testing.assert_allclose(mtup.a, [0.8, 1.6], rtol=1e-6)
    np.testing.assert_array_equal(mtup.b, [3, 4])
    np.testing.assert_array_equal(mtup.c, [5, 6])


def test_trainable_must_be_a_subset():
    class Bad:
        def __init__(self):
            self.w = a(1.0)

        def trainable(self):
            return {"nope": self.w}

    opt.register(Bad)
    with pytest.raises(ValueError, match="nope"):
        opt.setup(opt.Descent(), {"layer": Bad()})


# ---------------------------------------------------------------------------
# what is trainable


def test_non_trainable_leaves_are_kept():
    fn = np.tanh
    ints = np.arange(3)
    bools = np.array([True, False])
    m = {
        "int": 3,
        "float": 2.5,
        "np_scalar": np.float64(1.5),
        "str": "relu",
        "fn": fn,
        "none": None,
        "ints": ints,
        "bools": bools,
        "w": np.ones(2),
        "w0d": np.array(2.0),
        "w16": np.ones(2, np.float16),
        "w32": np.ones(2, np.float32),
    }
    s = opt.setup(opt.Descent(0.5), m)
    for k in ("int", "float", "np_scalar", "str", "fn", "none", "ints", "bools"):
        assert s[k] is None, k
    for k in ("w", "w0d", "w16", "w32"):
        assert isinstance(s[k], Leaf), k
    g = {k: None for k in m}
    g.update(w=a(1, 1), w0d=2.0, w16=[1, 1], w32=a(1, 1), ints=np.ones(3))
    for fn_ in (opt.update, opt.update_):
        _s2, m2 = fn_(s, dict(m), g)
        for k in ("int", "float", "np_scalar", "str", "fn", "none", "ints", "bools"):
            assert m2[k] is m[k], k
        np.testing.assert_array_equal(ints, [0, 1, 2])
        np.testing.assert_array_equal(bools, [True, False])
    assert m["w0d"].shape == () and m["w0d"] == 1.0  # update_ wrote the 0-d parameter
    assert m["w16"].dtype == np.float16 and m["w32"].dtype == np.float32


@pytest.mark.parametrize(
    "model", [{"a": 1, "b": "x"}, [], {"ints": np.arange(3), "f": len}, (None, True)]
)
def test_setup_warns_when_nothing_to_train(model):
    with pytest.warns(UserWarning, match="no trainable"):
        s = opt.setup(opt.Adam(), model)
    assert leaves_in(s) == []


def test_setup_rejects_non_rule():
    with pytest.raises(TypeError):
        opt.setup(np.ones(2), opt.Adam())


# ---------------------------------------------------------------------------
# update never mutates; update_ does, in place

RULES = [
    opt.Descent(0.1),
    opt.Momentum(0.1),
    opt.Adam(0.1),
    opt.RAdam(),
    opt.Rprop(),
    opt.OAdam(),
    opt.AMSGrad(),
    opt.RMSProp(centred=True),
    opt.OptimiserChain(opt.AccumGrad(2), opt.Adam()),
    opt.OptimiserChain(opt.ClipNorm(1.0), opt.WeightDecay(0.1), opt.Momentum()),
    opt.MixedPrecision(np.float64, opt.Adam()),
    DecayDescent(0.1),
    opt.OptimiserChain(opt.ClipGrad(1.0), DecayDescent(0.1), opt.Adam()),
]


def _model():
    rng = np.random.default_rng(0)
    shared = rng.standard_normal(3)
    return {
        "a": rng.standard_normal((2, 3)),
        "b": [rng.standard_normal(4).astype(np.float32), shared],
        "c": (shared, "tag", np.array(0.5)),
    }


def _grad():
    rng = np.random.default_rng(1)
    return {
        "a": rng.standard_normal((2, 3)),
        "b": [rng.standard_normal(4), rng.standard_normal(3)],
        "c": (rng.standard_normal(3), None, 0.25),
    }


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_update_does_not_mutate_inputs(rule):
    model = _model()
    state = opt.setup(rule, model)
    state = opt.update(state, model, _grad())[0]  # some non-trivial state
    model0, state0 = copy.deepcopy(model), copy.deepcopy(state)
    leaves = leaves_in(state)
    leaf_parts = [(leaf.rule, leaf.state, leaf.frozen) for leaf in leaves]
    grad = _grad()
    grad0 = copy.deepcopy(grad)

    for _ in range(3):
        new_state, new_model = opt.update(state, model, grad)
    assert_same_tree(model, model0)
    assert_same_tree(state, state0)
    assert_same_tree(grad, grad0)
    for leaf, (r, st, fr) in zip(leaves, leaf_parts):
        assert leaf.rule is r and leaf.state is st and leaf.frozen is fr
    assert not any(leaf is new for leaf in leaves for new in leaves_in(new_state))
    old_ids = {id(x) for x in arrays_in(model) + arrays_in(state)}
    assert not any(id(x) in old_ids for x in arrays_in(new_model) + arrays_in(new_state))
    assert new_model["b"][1] is new_model["c"][0]  # tie kept


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_update_in_place_matches_update(rule):
    model = _model()
    state = opt.setup(rule, model)
    ref_state, ref_model = state, model
    for _ in range(3):
        ref_state, ref_model = opt.update(ref_state, ref_model, _grad())
    ids = [id(x) for x in arrays_in(model)]
    leaves = leaves_in(state)
    grad = _grad()
    grad0 = copy.deepcopy(grad)
    for _ in range(3):
        s2, m2 = opt.update_(state, model, grad)
        assert s2 is state and m2 is model
    assert [id(x) for x in arrays_in(model)] == ids
    assert all(x is y for x, y in zip(leaves, leaves_in(state)))
    assert_same_tree(model, ref_model)
    assert_same_tree(state, ref_state)
    assert_same_tree(grad, grad0)  # the gradient is never written
    assert model["b"][1] is model["c"][0]


# ---------------------------------------------------------------------------
# ties


def test_tie_setup_one_leaf():
    w = a(1, 2)
    m = {"enc": [w, a(3)], "dec": {"w": w}}
    s = opt.setup(opt.Adam(), m)
    assert s["enc"][0] is s["dec"]["w"]
    assert s["enc"][1] is not s["enc"][0]


@pytest.mark.parametrize("inplace", [False, True])
def test_tied_tuples(inplace):
    """Julia's tied weights / tuples."""
    step = opt.update_ if inplace else opt.update

    def fresh():
        twice = a(1, 2)
        return (twice, (twice.copy(), twice))

    mtup = fresh()
    stup = opt.setup(opt.Momentum(0.1), mtup)
    assert stup[0] is stup[1][1] and stup[1][0] is not stup[0]
    gtup = (np.array([3, 3]), (np.array([10, 10]), np.array([7, 7])))
    snew, mnew = step(stup, mtup, gtup)
    np.testing.assert_allclose(mnew[0], mnew[1][0])  # gradient was accumulated
    assert mnew[1][1] is mnew[0]  # and the tie is not broken
    assert snew[0] is snew[1][1]

    mtup = fresh()
    stup = opt.setup(opt.Momentum(0.1), mtup)
    _st3, mt3 = step(stup, mtup, (np.array([3, 3]), None))
    np.testing.assert_allclose(mt3[0], a(1, 2) - 0.1 * a(3, 3))
    assert mt3[1][1] is mt3[0]

    mtup = fresh()
    stup = opt.setup(opt.Momentum(0.1), mtup)
    _st4, mt4 = step(stup, mtup, (None, (np.array([5, 5]), np.array([7, 7]))))
    np.testing.assert_allclose(mt4[0], a(1, 2) - 0.1 * a(7, 7))
    np.testing.assert_allclose(mt4[1][0], a(1, 2) - 0.1 * a(5, 5))
    assert mt4[1][1] is mt4[0]


def test_tied_named():
    """Julia's tied weights / named, gradients by hand."""
    thrice = np.array([3.0], np.float32)
    P = namedtuple("P", ["x", "y", "z"])
    M = namedtuple("M", ["m"])
    C = namedtuple("C", ["x", "y"])
    model = {
        "a": P(thrice, np.array([4, 5, 6], np.float32), True),
        "b": (M((0, 1, thrice)),),
        "c": C(np.array([7, 8], np.float32), thrice),
    }
    tree = opt.setup(opt.Momentum(0.1, 0.9), model)
    assert tree["a"].x is tree["b"][0].m[2] is tree["c"].y
    # loss(m) = sum(2 * loss(x) for x in m), loss(array) = sum(abs2), loss(number) = x^3
    ga = {"x": 8 * thrice, "y": 8 * model["a"].y, "z": None}
    gb = (M((None, None, 16 * thrice)),)
    gc = {"x": 8 * model["c"].x, "y": 8 * thrice}
    _, m2 = opt.update(tree, model, {"a": ga, "b": gb, "c": gc})
    assert m2["a"].x is m2["b"][0].m[2] is m2["c"].y
    np.testing.assert_allclose(m2["a"].x, thrice - 0.1 * (8 + 16 + 8) * thrice)
    assert m2["a"].z is True and m2["b"][0].m[:2] == (0, 1)

    _, m3 = opt.update(tree, model, {"a": ga, "b": None, "c": gc})  # the b limb truncated
    assert m3["a"].x is m3["b"][0].m[2] is m3["c"].y
    np.testing.assert_allclose(m3["a"].x, thrice - 0.1 * 16 * thrice)
    np.testing.assert_array_equal(thrice, [3.0])


def test_tied_artificial():
    """A Leaf shared by hand between distinct arrays makes them one parameter."""
    model = {k: a(1, 2) for k in "abcd"}
    auto = opt.setup(opt.Momentum(0.1), model)
    assert auto["a"] is not auto["b"]  # not tied just by value
    trick = {"a": auto["a"], "b": auto["a"], "c": auto["c"], "d": auto["d"]}
    g = {"a": [3, 3], "b": [7, 7], "c": [3, 3], "d": [10, 10]}
    trick2, model2 = opt.update(trick, model, g)
    trick3, model3 = opt.update(trick2, model2, g)
    np.testing.assert_allclose(model3["a"], model3["b"])
    np.testing.assert_allclose(model3["a"], model3["d"])  # same as having the gradients added
    assert not np.allclose(model3["a"], model3["c"])
    assert trick3["a"] is trick3["b"]  # leaves remain shared
    for k in "abcd":
        np.testing.assert_array_equal(model[k], [1, 2])
    opt.update_(trick, model, g)
    opt.update_(trick, model, g)
    for k in "abcd":
        np.testing.assert_allclose(model[k], model3[k])


class MutTwo:
    def __init__(self, x, y):
        self.x, self.y = x, y


opt.register(MutTwo)


def test_tied_mutable_containers():
    """Julia's tied weights / mutable containers."""
    tmp = MutTwo(a(1.0), a(2.0))
    model = {"a": tmp, "b": tmp, "c": MutTwo(tmp.x, tmp.y)}
    state = opt.setup(opt.Momentum(), model)
    assert state["a"].x is state["b"].x is state["c"].x
    mgrad = {
        "a": {"x": [1], "y": [10]},
        "b": {"x": [100], "y": [1000]},
        "c": {"x": [1 / 3], "y": [1 / 30]},
    }
    _state2, model2 = opt.update(state, model, mgrad)
    assert model2["a"] is model2["b"]  # the tie of the containers is kept
    assert model2["a"] is not model2["c"]  # but no new tie is made
    assert model2["a"].x is model2["c"].x
    np.testing.assert_allclose(model2["a"].x, 1 - 0.01 * (1 + 100 + 1 / 3))
    np.testing.assert_allclose(model2["c"].y, 2 - 0.01 * (10 + 1000 + 1 / 30))
    np.testing.assert_array_equal(tmp.x, [1.0])


def test_tie_with_python_rule_and_chain():
    w = a(1, -2)
    m = [w, {"again": w}]
    rule = opt.OptimiserChain(opt.ClipGrad(1.0), DecayDescent(0.5))
    s = opt.setup(rule, m)
    assert s[0] is s[1]["again"]
    s2, m2 = opt.update(s, m, [a(0.25, 0.25), {"again": a(0.5, -5)}])
    assert m2[0] is m2[1]["again"]
    np.testing.assert_allclose(m2[0], a(1 - 0.5 * 0.75, -2 + 0.5 * 1))
    assert s2[0].state == (None, 2)


def test_tie_of_read_only_array():
    w = a(1, 2)
    w.flags.writeable = False
    m = (w, [w])
    s = opt.setup(opt.Descent(0.1), m)
    for step in (opt.update, opt.update_):
        _, m2 = step(s, m, (a(1, 1), [a(2, 2)]))
        assert m2[0] is m2[1][0]
        np.testing.assert_allclose(m2[0], a(0.7, 1.7))
    np.testing.assert_array_equal(w, [1, 2])


# ---------------------------------------------------------------------------
# missing gradients prune; zero gradients do not


def test_none_prunes_and_zero_moves_adam():
    """The seeds' "Incomplete or nothing gradients" example."""
    x = {"a": np.ones(2), "b": np.ones(2)}
    st = opt.setup(opt.Adam(0.1), x)
    for k in "ab":
        np.testing.assert_array_equal(st[k].state[0], [0.0, 0.0])
        np.testing.assert_array_equal(st[k].state[1], [0.0, 0.0])
        assert st[k].state[2] == pytest.approx((0.9, 0.999))
    opt.update_(st, x, {"a": np.ones(2), "b": np.ones(2)})
    for k in "ab":
        np.testing.assert_allclose(st[k].state[0], [0.1, 0.1])
        np.testing.assert_allclose(st[k].state[1], [0.001, 0.001])
        assert st[k].state[2] == pytest.approx((0.81, 0.998001))
    b_state = st["b"].state
    b_before = copy.deepcopy(b_state)
    xb = x["b"].copy()
    opt.update_(st, x, {"a": np.zeros(2), "b": None})
    np.testing.assert_allclose(st["a"].state[0], [0.09, 0.09])
    np.testing.assert_allclose(st["a"].state[1], [0.000999, 0.000999])
    assert st["a"].state[2] == pytest.approx((0.729, 0.997003))
    assert st["b"].state is b_state
    assert_same_tree(st["b"].state, b_before)
    np.testing.assert_array_equal(x["b"], xb)


@pytest.mark.parametrize(
    "grad",
    [
        {"enc": None, "dec": {"w": a(1, 1)}},
        {"dec": {"w": a(1, 1)}},  # key missing
        {"enc": [None, None], "dec": {"w": a(1, 1), "b": None}},
        {"enc": [None, None], "dec": {"w": a(1, 1)}},
    ],
)
@pytest.mark.parametrize("inplace", [False, True])
def test_missing_branches_leave_state(grad, inplace):
    m = {"enc": [a(1, 2), a(3)], "dec": {"w": a(4, 5), "b": a(6)}}
    s = opt.setup(opt.Adam(), m)
    s = opt.update(s, m, {"enc": [a(1, 1), a(1)], "dec": {"w": a(1, 1), "b": a(1)}})[0]
    s0, m0 = copy.deepcopy(s), copy.deepcopy(m)
    s2, m2 = (opt.update_ if inplace else opt.update)(s, m, grad)
    assert_same_tree(s2["enc"], s0["enc"])
    assert_same_tree(s2["dec"]["b"], s0["dec"]["b"])
    assert_same_tree(m2["enc"], m0["enc"])
    assert_same_tree(m2["dec"]["b"], m0["dec"]["b"])
    assert not np.array_equal(m2["dec"]["w"], m0["dec"]["w"])
    assert s2["dec"]["w"].state[2] != s0["dec"]["w"].state[2]


def test_none_gradient_for_whole_model():
    m = {"w": a(1, 2)}
    s = opt.setup(opt.Adam(), m)
    s0 = copy.deepcopy(s)
    s2, m2 = opt.update(s, m, None)
    assert_same_tree(s2, s0)
    np.testing.assert_array_equal(m2["w"], [1, 2])
    opt.update_(s, m, None)
    assert_same_tree(s, s0)


# ---------------------------------------------------------------------------
# gradient conversion


@pytest.mark.parametrize(
    "grad",
    [
        [1, 2, 3],
        (1, 2, 3),
        np.array([1, 2, 3]),
        np.array([1, 2, 3], np.int8),
        np.array([1, 2, 3], np.uint16),
        np.array([1, 2, 3], np.float16),
        np.array([1.0, 2.0, 3.0]),
        np.array([1, 2, 3, 9, 9, 9], np.float32)[:3],
        np.array([1, 9, 2, 9, 3, 9], np.float64)[::2],
    ],
    ids=lambda g: type(g).__name__ + str(getattr(g, "dtype", "")),
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_gradients_are_converted(grad, dtype):
    x = np.ones(3, dtype)
    s = opt.setup(opt.Momentum(0.5, 0.0), {"x": x})
    s2, m2 = opt.update(s, {"x": x}, {"x": grad})
    assert m2["x"].dtype == dtype
    assert s2["x"].state.dtype == dtype
    np.testing.assert_allclose(m2["x"], np.array([0.5, 0.0, -0.5], dtype))


def test_scalar_gradient_for_0d_parameter():
    m = {"s": np.array(1.0, np.float32)}
    s = opt.setup(opt.Descent(0.5), m)
    for g in (1, 1.0, np.float64(1.0), np.array(1), [1.0][0]):
        _, m2 = opt.update(s, m, {"s": g})
        assert m2["s"].shape == () and m2["s"].dtype == np.float32 and m2["s"] == 0.5


# ---------------------------------------------------------------------------
# freeze_ / thaw_


def test_freeze_docstring_example():
    """Optimisers.freeze!'s docstring example."""
    m = {"x": (a(1.0), 2.0), "y": a(3.0)}
    s = opt.setup(opt.Momentum(), m)
    opt.freeze_(s["x"])
    opt.update_(s, m, {"x": ([np.pi], 10 * np.pi), "y": [100 * np.pi]})
    np.testing.assert_array_equal(m["x"][0], [1.0])
    assert m["x"][1] == 2.0
    np.testing.assert_allclose(m["y"], [-0.14159265358979312])
    assert s["x"][0].frozen and s["x"][1] is None
    np.testing.assert_array_equal(s["x"][0].state, [0.0])
    np.testing.assert_allclose(s["y"].state, [3.14159], rtol=1e-5)
    assert not s["y"].frozen
    assert "frozen=True" in repr(s["x"][0])
    opt.thaw_(s)
    assert not s["x"][0].frozen
    assert "frozen" not in repr(s["x"][0])


def test_freeze_thaw_julia():
    """Julia's "freeze/thaw" testset."""
    m = {"x": a(1, 2), "y": (a(3, 4), np.sin)}
    st = opt.setup(opt.Descent(0.1), m)
    opt.freeze_(st["y"])
    g = {"x": [1, 10], "y": ([100, 1000], None)}
    st, m = opt.update(st, m, g)
    np.testing.assert_allclose(m["x"], [0.9, 1.0])
    np.testing.assert_allclose(m["y"][0], [3, 4])

    st = opt.adjust(st, 0.2)
    opt.thaw_(st)
    st, m = opt.update(st, m, g)
    np.testing.assert_allclose(m["y"][0], [-17.0, -196.0])
    np.testing.assert_allclose(m["x"], [0.7, -1.0])

    for f in (opt.freeze_, opt.thaw_):
        with pytest.raises((TypeError, ValueError), match="state tree"):
            f(m)


def test_freeze_flux_example():
    """The seeds' Flux example: freeze the third layer, its bias and momentum stay zero."""
    net = [
        {"weight": np.ones((3, 1, 3, 3), np.float32)},
        "flatten",
        {"weight": np.ones((2, 12), np.float32), "bias": np.zeros(2, np.float32)},
    ]
    st = opt.setup(opt.Momentum(), net)
    opt.freeze_(st[2])
    assert st[2]["bias"].frozen and "frozen=True" in repr(st[2]["bias"])
    grad = [{"weight": np.ones((3, 1, 3, 3))}, None, {"weight": np.ones((2, 12)), "bias": [1, 1]}]
    opt.update_(st, net, grad)
    np.testing.assert_array_equal(net[2]["bias"], [0, 0])  # still zero
    np.testing.assert_array_equal(st[2]["bias"].state, [0, 0])  # and so is its momentum
    np.testing.assert_allclose(net[0]["weight"], 0.99)  # the rest trained
    opt.thaw_(st)
    assert not st[2]["bias"].frozen
    opt.update_(st, net, grad)
    np.testing.assert_allclose(net[2]["bias"], [-0.01, -0.01])


def test_frozen_leaf_in_tie_and_update():
    w = a(1, 2)
    m = [w, w, a(3)]
    s = opt.setup(opt.Adam(), m)
    opt.freeze_(s[1])  # the tied Leaf: frozen everywhere
    s0 = copy.deepcopy(s)
    s2, m2 = opt.update(s, m, [a(1, 1), a(1, 1), a(1)])
    assert m2[0] is m2[1]
    np.testing.assert_array_equal(m2[0], [1, 2])
    assert_same_tree(s2[0], s0[0])
    assert not np.array_equal(m2[2], [3])


@pytest.mark.parametrize("bad", [np.ones(2), {"w": np.ones(2)}, [1.0, np.ones(1)], 3.0])
def test_freeze_model_raises_and_changes_nothing(bad):
    s = opt.setup(opt.Descent(), {"w": np.ones(2)})
    tree = {"state": s, "oops": bad}
    with pytest.raises((TypeError, ValueError), match="state tree") as info:
        opt.freeze_(tree)
    assert "'oops'" in str(info.value)
    assert not s["w"].frozen  # nothing changed, not even the Leaf before the bad part


# ---------------------------------------------------------------------------
# read-only and strided parameters


@pytest.mark.parametrize(
    "rule",
    [opt.Descent(0.1), opt.Adam(0.1), opt.MixedPrecision(opt.Momentum(0.1)), DecayDescent(0.1)],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_read_only_parameters(rule, dtype):
    w = np.array([1.0, 2.0, 3.0], dtype)
    w.flags.writeable = False
    ref = {"w": w.copy(), "b": np.ones(2, dtype)}
    m = {"w": w, "b": np.ones(2, dtype)}
    g = {"w": [1, 1, 1], "b": [1, 1]}
    s_ref = opt.setup(rule, ref)
    opt.update_(s_ref, ref, g)

    s = opt.setup(rule, m)
    _s2, m2 = opt.update(s, m, g)
    np.testing.assert_array_equal(m2["w"], ref["w"])
    assert m2["w"].dtype == dtype

    s3, m3 = opt.update_(s, m, g)
    assert s3 is s
    assert m3["w"] is not w and m3["w"].dtype == dtype
    np.testing.assert_array_equal(m3["w"], ref["w"])
    np.testing.assert_array_equal(m3["b"], ref["b"])
    assert m3["b"] is m["b"]  # the writeable one was written in place
    np.testing.assert_array_equal(w, np.array([1, 2, 3], dtype))  # never written
    assert_same_tree(s, s_ref)


@pytest.mark.parametrize(
    "rule",
    [
        opt.Descent(0.1),
        opt.Adam(0.1),
        opt.MixedPrecision(np.float64, opt.Adam(0.1)),
        DecayDescent(),
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_strided_parameters(rule, dtype):
    base = np.arange(24, dtype=dtype).reshape(4, 6)
    views = {"row": base[1, ::2], "col": base[:, 3], "t": base[2:, :2].T}
    g = {"row": np.ones(3), "col": np.arange(4.0), "t": np.full((2, 2), -1.0)}
    contiguous = {k: np.ascontiguousarray(v) for k, v in views.items()}
    s_ref = opt.setup(rule, contiguous)
    for _ in range(2):
        opt.update_(s_ref, contiguous, g)

    s = opt.setup(rule, views)
    base0 = base.copy()
    s_out, m_out = s, views
    for _ in range(2):
        s_out, m_out = opt.update(s_out, m_out, g)
    np.testing.assert_array_equal(base, base0)  # update wrote nothing
    for k in views:
        np.testing.assert_array_equal(m_out[k], contiguous[k])

    for _ in range(2):
        _s2, m2 = opt.update_(s, views, g)
    for k in views:
        assert m2[k] is views[k]
        np.testing.assert_array_equal(views[k], contiguous[k])
    np.testing.assert_array_equal(base[1, ::2], contiguous["row"])  # through to the base
    untouched = np.ones_like(base, dtype=bool)
    untouched[1, ::2] = untouched[:, 3] = False
    untouched[2:, :2] = False
    np.testing.assert_array_equal(base[untouched], base0[untouched])


# ---------------------------------------------------------------------------
# custom rules


def test_custom_rule_alone():
    m = {"w": a(1, 2)}
    s = opt.setup(DecayDescent(0.1), m)
    assert s["w"].state == 1
    x = a(1, 2)
    for t in range(1, 4):
        s, m = opt.update(s, m, {"w": a(1, -1)})
        x = x - 0.1 / np.sqrt(t) * a(1, -1)
        np.testing.assert_allclose(m["w"], x, rtol=1e-14)
        assert s["w"].state == t + 1


def test_custom_rule_in_chain_with_builtin_rules():
    rule = opt.OptimiserChain(opt.ClipGrad(1.0), DecayDescent(0.1), opt.Adam())
    x0 = a(0.5, -3.0, 2.0, 0.1)
    grads = [a(0.3, -5, 7, 0.0), a(-0.2, 0.5, 3, 1e-3), a(2, 2, -2, 0.5)]
    m = {"x": x0.copy()}
    s = opt.setup(rule, m)
    assert s["x"].state[0] is None and s["x"].state[1] == 1
    transformed = []
    for t, g in enumerate(grads, start=1):
        transformed.append(0.1 / np.sqrt(t) * np.clip(g, -1, 1))
        s, m = opt.update(s, m, {"x": g})
        np.testing.assert_allclose(m["x"], adam_ref(x0, transformed), rtol=1e-12, atol=1e-15)
    assert s["x"].state[1] == 4
    assert s["x"].state[2][2] == pytest.approx((0.9**4, 0.999**4))

    # and in place, to the same result
    m2 = {"x": x0.copy()}
    s2 = opt.setup(rule, m2)
    for g in grads:
        opt.update_(s2, m2, {"x": g})
    np.testing.assert_allclose(m2["x"], m["x"], rtol=1e-15)


def test_custom_rule_between_builtin_stateful_rules():
    rule = opt.OptimiserChain(opt.Momentum(0.5, 0.5), DecayDescent(1.0), opt.WeightDecay(0.1))
    x = a(1.0, 2.0)
    s = opt.setup(rule, x)
    s, x1 = opt.update(s, x, a(1, 1))
    # momentum: v = 0.5 * 1 = 0.5; decay: 0.5 / 1; weight decay adds 0.1 * x
    np.testing.assert_allclose(x1, x - (0.5 + 0.1 * x))
    s, x2 = opt.update(s, x1, a(1, 1))
    v = 0.5 * 0.5 + 0.5 * 1
    np.testing.assert_allclose(x2, x1 - (v / np.sqrt(2) + 0.1 * x1))


class HoldRule(opt.AbstractRule):
    """Returns no update every other step."""

    def init(self, x):
        return 0

    def apply(self, state, x, dx):
        return state + 1, (dx if state % 2 else None)


@pytest.mark.parametrize("inplace", [False, True])
def test_custom_rule_returning_none(inplace):
    step = opt.update_ if inplace else opt.update
    m = {"w": a(1, 2)}
    s = opt.setup(HoldRule(), m)
    s, m2 = step(s, m, {"w": a(1, 1)})
    np.testing.assert_array_equal(m2["w"], [1, 2])
    assert s["w"].state == 1
    s, m3 = step(s, m2, {"w": a(1, 1)})
    np.testing.assert_array_equal(m3["w"], [0, 1])
    chained = opt.setup(opt.OptimiserChain(HoldRule(), opt.Adam()), {"w": a(1, 2)})
    s4, m4 = step(chained, {"w": a(1, 2)}, {"w": a(1, 1)})
    np.testing.assert_array_equal(m4["w"], [1, 2])
    assert s4["w"].state[0] == 1
    np.testing.assert_array_equal(s4["w"].state[1][0], [0, 0])  # Adam never ran


def test_custom_rule_mutating_state_is_safe_under_update():
    m = {"w": a(1, 2)}
    s = opt.setup(InPlaceMomentum(), m)
    s1, m1 = opt.update(s, m, {"w": a(1, 1)})
    np.testing.assert_array_equal(s["w"].state, [0, 0])
    s2, m2 = opt.update(s1, m1, {"w": a(1, 1)})
    np.testing.assert_allclose(s1["w"].state, [1, 1])
    np.testing.assert_allclose(s2["w"].state, [1.9, 1.9])
    np.testing.assert_allclose(m2["w"], a(1, 2) - 0.1 - 0.19)


def test_mixed_rules_in_one_state_tree():
    m = {"k": a(1, 2), "p": a(3, 4)}
    s = {"k": opt.setup(opt.Descent(0.5), m["k"]), "p": opt.setup(DecayDescent(0.5), m["p"])}
    _s2, m2 = opt.update(s, m, {"k": a(1, 1), "p": a(1, 1)})
    np.testing.assert_allclose(m2["k"], [0.5, 1.5])
    np.testing.assert_allclose(m2["p"], [2.5, 3.5])


def test_keypaths_into_containers():
    m = {"layers": [NT(a(1, 2), DC(a(3), a(4))), 5]}
    assert opt.getkeypath(m, opt.KeyPath("layers", 0, "act", "b")) is m["layers"][0].act.b
    assert opt.getkeypath(m, ("layers", 0, 0)) is m["layers"][0].w  # a named tuple by position
    assert opt.getkeypath(m, ("layers", np.int64(1))) == 5
    assert opt.haskeypath(m, opt.KeyPath("layers", 0, "w"))
    assert not opt.haskeypath(m, opt.KeyPath("layers", 2))
    assert not opt.haskeypath(m, opt.KeyPath("layers", True))  # True is not the index 1
    with pytest.raises(KeyError, match="'layers', 3"):
        opt.getkeypath(m, opt.KeyPath("layers", 3))
