"""Property-based tests of the whole surface (Hypothesis; the ``ci`` profile of
conftest.py: a fixed number of derandomised examples).

Random models (dicts, lists, tuples, named tuples, dataclasses, registered
classes; tied arrays and tied views; non-trainable leaves), random rules and
chains (every built-in, custom Python rules among them), random dtypes and
memory layouts, random gradients (``None``, other dtypes, lists). Invariants:

- ``update`` never changes its inputs;
- ``update_`` gives, bit for bit, what ``update`` gives, also when steps on
  random subtrees, ``adjust_`` and ``freeze_``/``thaw_`` are interleaved;
- a step with a bad gradient injected late in a large tree raises an error that
  names its path, and changes nothing.

A model is built from a *recipe* (plain data that Hypothesis draws), so that
every side gets fresh, equal trees with the same ties and views.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, NamedTuple

import numpy as np
import pytest
from custom_rules import DecayDescent, InPlaceMomentum
from hypothesis import given
from hypothesis import strategies as st

import optimisers as o

Chain = o.OptimiserChain


class Pair(NamedTuple):
    first: Any
    second: Any


@dataclasses.dataclass
class Block:
    weight: Any
    extra: Any


@o.register
class Layer:
    """A registered class: its children are its instance attributes."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a = a
        self.b = b


# ---------------------------------------------------------------------------
# Recipes and building

DTYPES = ["float32", "float64", "float16"]
LAYOUTS = ["C", "F", "strided", "readonly"]

leaf_recipe = st.tuples(
    st.just("array"),
    st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple),
    st.sampled_from(DTYPES),
    st.sampled_from(LAYOUTS),
    st.integers(0, 2**16),
)
other_recipe = st.one_of(
    st.tuples(st.just("tie"), st.integers(0, 50)),
    st.tuples(st.just("view"), st.integers(0, 50)),
    st.tuples(st.just("const"), st.sampled_from([3, "relu", None, 2.5])),
    st.tuples(st.just("ints"), st.integers(1, 3)),
)


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.tuples(st.just("dict"), st.lists(children, min_size=1, max_size=3)),
        st.tuples(st.just("list"), st.lists(children, min_size=1, max_size=3)),
        st.tuples(st.just("tuple"), st.lists(children, min_size=1, max_size=3)),
        st.tuples(st.just("pair"), st.lists(children, min_size=2, max_size=2)),
        st.tuples(st.just("block"), st.lists(children, min_size=2, max_size=2)),
        st.tuples(st.just("layer"), st.lists(children, min_size=2, max_size=2)),
    )


model_recipe = st.tuples(
    st.just("dict"),
    st.lists(
        st.recursive(st.one_of(leaf_recipe, leaf_recipe, other_recipe), _containers, max_leaves=8),
        min_size=1,
        max_size=3,
    ),
)


def _array(recipe: tuple) -> np.ndarray:
    _, shape, dtype, layout, seed = recipe
    values = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    if layout == "F":
        return np.asfortranarray(values)
    if layout == "strided" and values.ndim:
        wide = np.zeros((*shape[:-1], 2 * shape[-1]), dtype)
        wide[..., ::2] = values
        return wide[..., ::2]
    if layout == "readonly":
        values.flags.writeable = False
    return values


def build(recipe: tuple, arrays: list[np.ndarray] | None = None) -> Any:
    """A fresh model from ``recipe``; ties and views refer to arrays built before."""
    arrays = [] if arrays is None else arrays
    kind = recipe[0]
    if kind == "array":
        arrays.append(_array(recipe))
        return arrays[-1]
    if kind in ("tie", "view"):
        if not arrays:
            arrays.append(np.linspace(-1, 1, 6))
        a = arrays[recipe[1] % len(arrays)]
        return a if kind == "tie" else a.T
    if kind == "const":
        return recipe[1]
    if kind == "ints":
        return np.arange(recipe[1])  # integers: not trainable
    kids = [build(r, arrays) for r in recipe[1]]
    if kind == "dict":
        return {f"k{i}": k for i, k in enumerate(kids)}
    if kind == "list":
        return kids
    if kind == "tuple":
        return tuple(kids)
    if kind == "pair":
        return Pair(*kids)
    if kind == "block":
        return Block(*kids)
    return Layer(*kids)


def gradient(model: Any, seed: int, style: int) -> Any:
    """A gradient tree for ``model``: arrays of the parameter's shape (of its
    dtype, of float64, or as nested lists, by ``style``), ``None`` at times."""
    rng = np.random.default_rng(seed)

    def go(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            if x.dtype.kind != "f" or rng.random() < 0.15:
                return None
            g = rng.standard_normal(x.shape)
            pick = (style + int(rng.integers(3))) % 3
            if pick == 0:
                return g.astype(x.dtype)
            return g if pick == 1 else g.tolist()
        if isinstance(x, dict):
            return {k: go(v) for k, v in x.items()}
        if isinstance(x, Pair):
            return Pair(go(x.first), go(x.second))
        if isinstance(x, (list, tuple)):
            return type(x)(go(v) for v in x)
        if isinstance(x, Block):
            return {"weight": go(x.weight), "extra": go(x.extra)}
        if isinstance(x, Layer):
            return {"a": go(x.a), "b": go(x.b)}
        return None

    return go(model)


RULES = [
    o.Descent(0.1),
    o.Momentum(0.05, 0.8),
    o.Nesterov(),
    o.Rprop(0.01),
    o.RMSProp(0.01, centred=True),
    o.Adam(0.01),
    o.RAdam(),
    o.AdaMax(),
    o.OAdam(),
    o.AdaGrad(),
    o.AdaDelta(),
    o.AMSGrad(),
    o.NAdam(),
    o.AdamW(0.01, lambda_=0.1),
    o.AdaBelief(),
    o.Lion(),
    Chain(o.WeightDecay(), o.SignDecay(), o.Adam()),
    Chain(o.ClipGrad(0.5), o.Momentum()),
    Chain(o.ClipNorm(1.0), o.Adam()),
    Chain(o.AccumGrad(2), o.Adam(0.01)),
    Chain(o.ClipNorm(2.0, math.inf, throw=False), o.RMSProp()),
    o.MixedPrecision(np.float64, o.Adam()),
    o.MixedPrecision(Chain(o.AccumGrad(2), o.Nesterov())),
    DecayDescent(),
    InPlaceMomentum(),
    Chain(DecayDescent(0.05), o.Adam()),
    Chain(o.WeightDecay(), InPlaceMomentum()),
]
rules = st.sampled_from(RULES)


# ---------------------------------------------------------------------------
# Comparing trees bit for bit


def _bits(x: Any, out: list, seen: dict[int, int]) -> list:
    """Everything in a state tree or model, arrays as bytes, ties as references."""
    if id(x) in seen:
        out.append(("seen", seen[id(x)]))
        return out
    if isinstance(x, o.Leaf):
        seen[id(x)] = len(seen)
        # A custom rule's repr shows its address: the same rule on both sides differs.
        out.append(("leaf", re.sub(r" at 0x[0-9a-f]+", "", repr(x.rule)), x.frozen))
        _bits(x.state, out, seen)
    elif isinstance(x, np.ndarray):
        seen[id(x)] = len(seen)
        out.append((x.dtype.str, x.shape, x.tobytes()))
    elif isinstance(x, dict):
        for k, v in x.items():
            out.append(k)
            _bits(v, out, seen)
    elif isinstance(x, (list, tuple)):
        out.append(type(x).__name__)
        for v in x:
            _bits(v, out, seen)
    elif isinstance(x, (Block, Layer)):
        out.append(type(x).__name__)
        for v in vars(x).values():
            _bits(v, out, seen)
    elif isinstance(x, (float, np.floating)):
        out.append(np.float64(x).tobytes())
    else:
        out.append(repr(x))
    return out


def bits(*trees: Any) -> list:
    seen: dict[int, int] = {}
    out: list = []
    for t in trees:
        _bits(t, out, seen)
    return out


def _subtrees(state: Any, model: Any, grad: Any, path: tuple = ()) -> list:
    """``(path, state, model, grad)`` of every container of the model."""
    out = [(path, state, model, grad)]
    if isinstance(model, dict) and isinstance(state, dict):
        for k in model:
            if isinstance(model[k], (dict, list)) and state.get(k) is not None:
                g = grad.get(k) if isinstance(grad, dict) else None
                out += _subtrees(state[k], model[k], g, (*path, k))
    return out


# ---------------------------------------------------------------------------
# Properties

# Random models may hold no parameter, or arrays that overlap (a view of a view).
pytestmark = [
    pytest.mark.filterwarnings("ignore:setup found no trainable parameters:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*share memory:UserWarning"),
]


@given(recipe=model_recipe, rule=rules, seed=st.integers(0, 2**16), style=st.integers(0, 2))
def test_update_changes_nothing_and_update_in_place_gives_the_same_bits(recipe, rule, seed, style):
    model_a, model_b = build(recipe), build(recipe)
    state_a, state_b = o.setup(rule, model_a), o.setup(rule, model_b)
    for step in range(3):
        grad_a, grad_b = (
            gradient(model_a, seed + step, style),
            gradient(model_b, seed + step, style),
        )
        before = bits(state_a, model_a, grad_a)
        new_state, new_model = o.update(state_a, model_a, grad_a)
        assert bits(state_a, model_a, grad_a) == before  # update changed nothing
        state_b, model_b = o.update_(state_b, model_b, grad_b)
        assert bits(new_state, new_model) == bits(state_b, model_b)
        state_a, model_a = new_state, new_model


OPS = st.lists(
    st.tuples(
        st.sampled_from(["update_", "update_", "update_sub", "adjust_", "freeze_", "thaw_"]),
        st.integers(0, 10),
    ),
    min_size=4,
    max_size=10,
)


@given(recipe=model_recipe, rule=rules, ops=OPS, seed=st.integers(0, 2**16))
def test_interleaved_steps_on_subtrees_match_the_general_path(recipe, rule, ops, seed):
    model, ref_model = build(recipe), build(recipe)
    state, ref = o.setup(rule, model), o.setup(rule, ref_model)
    for i, (op, pick) in enumerate(ops):
        grad, ref_grad = gradient(model, seed + i, 0), gradient(ref_model, seed + i, 0)
        subs = _subtrees(state, model, grad)
        ref_subs = _subtrees(ref, ref_model, ref_grad)
        path, s, m, g = subs[pick % len(subs)]
        _, rs, rm, rg = ref_subs[pick % len(subs)]
        if op == "update_":
            # The same answer, or the same error (a tie that an earlier step on a
            # subtree broke by returning a new array for a read-only parameter).
            try:
                state, model = o.update_(state, model, grad)
                failed = None
            except ValueError as err:
                failed = str(err)
            try:
                ref, ref_model = o.update(ref, ref_model, ref_grad)
                assert failed is None, failed
            except ValueError as err:
                assert str(err) == failed
        elif op == "update_sub" and path:
            # Stepped in place on both sides (the general path: update
            # returns a new subtree, which the parent containers would not see).
            errors = []
            for args, planned in (((s, m, g), True), ((rs, rm, rg), False)):
                o._plan.enabled = planned
                try:
                    _, new_sub = o.update_(*args)
                    # A read-only parameter comes back as a new array in a new subtree.
                    root = model if planned else ref_model
                    for k in path[:-1]:
                        root = root[k]
                    root[path[-1]] = new_sub
                except ValueError as err:  # a tied view stepped without its parameter
                    errors.append(str(err))
                finally:
                    o._plan.enabled = True
            assert len(errors) in (0, 2), errors
            assert all("a view of another" in e for e in errors), errors
        elif op in ("freeze_", "thaw_"):
            getattr(o, op)(s)
            getattr(o, op)(rs)
        elif op == "adjust_" and hasattr(getattr(rule, "rule", rule), "eta"):
            o.adjust_(s, 0.001 * (pick + 1))
            o.adjust_(rs, 0.001 * (pick + 1))
    assert bits(state, model) == bits(ref, ref_model)


def _large_model(n: int, dtype: str) -> dict:
    rng = np.random.default_rng(n)
    return {f"layer{i}": {"w": rng.standard_normal((3, 2)).astype(dtype)} for i in range(n)}


BAD = st.sampled_from(["shape", "complex", "string", "ragged", "nan", "state"])


@given(
    n=st.integers(20, 60),
    rule=st.sampled_from([o.Adam(), Chain(o.ClipNorm(1.0), o.Adam()), o.MixedPrecision(o.Lion())]),
    bad=BAD,
    dtype=st.sampled_from(["float32", "float64"]),
    warm=st.booleans(),
)
def test_a_bad_input_late_in_a_large_tree_changes_nothing_and_names_the_path(
    n, rule, bad, dtype, warm
):
    model = _large_model(n, dtype)
    state = o.setup(rule, model)
    good = {k: {"w": np.ones_like(v["w"])} for k, v in model.items()}
    if warm:  # planned first
        state, model = o.update_(state, model, good)
    last = f"layer{n - 1}"
    grad = {k: {"w": np.ones_like(v["w"])} for k, v in model.items()}
    if bad == "shape":
        grad[last]["w"] = np.ones((2, 3), dtype)
    elif bad == "complex":
        grad[last]["w"] = np.ones((3, 2), complex)
    elif bad == "string":
        grad[last]["w"] = "gradient"
    elif bad == "ragged":
        grad[last]["w"] = [[1.0, 2.0], [3.0]]
    elif bad == "nan":
        grad[last]["w"] = np.full((3, 2), np.nan, dtype)
    else:  # a state array of the parameter's size but another shape
        leaf = state[last]["w"]
        wrong = np.zeros((2, 3), dtype)
        if isinstance(rule, o.Adam):
            leaf.state = (wrong, *leaf.state[1:])
        elif isinstance(rule, Chain):
            clip, adam = leaf.state
            leaf.state = (clip, (wrong, *adam[1:]))
        else:
            leaf.state = (wrong.astype(np.float32), leaf.state[1])
    before = bits(state, model)
    try:
        o.update_(state, model, grad)
    except (ValueError, TypeError) as err:
        assert re.search(re.escape(f"KeyPath('{last}', 'w')"), str(err)), str(err)
        assert bits(state, model) == before
    else:
        # Only a NaN gradient may be taken: by rules without a throwing norm.
        assert bad == "nan" and not isinstance(rule, Chain)
