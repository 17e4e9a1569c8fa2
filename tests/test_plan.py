"""The planned fast path of ``update_`` (``_plan.py``, ``rust/python/src/plan.rs``).

Every scenario runs twice, with plans on and off, and must give the same bits,
the same states (layout and scalar types included) and the same errors: the
plan is an optimisation, never a change of meaning. Other tests check that the
fast path is really taken, and that a plan lets go of its model."""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
import weakref
from collections import namedtuple
from typing import Any, Callable

import numpy as np
import pytest
from layouts import unaligned

import optimisers as opt
from optimisers import _leaf, _plan

Chain = opt.OptimiserChain


def run_both(scenario: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``scenario`` with plans on, then off; check the results are the same
    (or that both raised the same error), and return the planned result."""
    outcomes = []
    for enabled in (True, False):
        monkeypatch.setattr(_plan, "enabled", enabled)
        try:
            outcomes.append(("value", scenario()))
        except Exception as e:  # compared below
            outcomes.append(("error", (type(e), str(e))))
    (kind_on, on), (kind_off, off) = outcomes
    assert kind_on == kind_off, f"planned: {on}; general: {off}"
    if kind_on == "error":
        assert on == off
        pytest.fail(f"the scenario raised {on}")  # scenarios expecting errors catch them
    assert_identical(on, off)
    return on


def assert_identical(a: Any, b: Any, path: str = "") -> None:
    """Same structure, same types, arrays equal bit for bit."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), f"{path}: {a} != {b}"
    elif isinstance(a, opt.Leaf):
        assert a.rule == b.rule and a.frozen == b.frozen, path
        assert_identical(a.state, b.state, path + ".state")
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_identical(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_identical(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def mlp(dtype=np.float32, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    layer = lambda i, o: {  # noqa: E731
        "weight": rng.standard_normal((o, i)).astype(dtype),
        "bias": rng.standard_normal(o).astype(dtype),
        "act": "relu",
    }
    return {"layers": [layer(5, 7), layer(7, 3)], "scale": np.array(2.0, dtype=dtype), "n": 3}


def grads_like(model: Any, rng: np.random.Generator) -> Any:
    if isinstance(model, np.ndarray):
        return rng.standard_normal(model.shape).astype(model.dtype)
    if isinstance(model, dict):
        return {k: grads_like(v, rng) for k, v in model.items()}
    if isinstance(model, list):
        return [grads_like(v, rng) for v in model]
    return None


def is_planned(state: Any) -> bool:
    entry = _plan._plans.get(id(state))
    return entry is not None and entry[0]() is not None and entry[0]().valid


RULES = [
    opt.Adam(),
    opt.RAdam(),
    opt.Descent(0.1),
    opt.Momentum(),
    Chain(opt.ClipGrad(0.5), opt.WeightDecay(), opt.Adam()),
    Chain(opt.ClipNorm(1.0), opt.AdamW(lambda_=0.1)),
    Chain(opt.AccumGrad(3), opt.NAdam()),
    Chain(opt.WeightDecay(), opt.AccumGrad(2), opt.AdaBelief(), opt.ClipGrad()),
    opt.Lamb(lambda_=0.1),
    opt.Lars(lambda_=0.1, nesterov=True),
    Chain(opt.TrustRatio(min_norm=1.0), opt.Momentum()),
]


@pytest.mark.parametrize("rule", RULES, ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_as_general_path(rule, dtype, monkeypatch):
    """Steps, with the state read at some steps and not others, give the bits of
    the general path, and the state layout (scalar types included)."""

    def scenario():
        rng = np.random.default_rng(1)
        model = mlp(dtype)
        state = opt.setup(rule, model)
        seen = []
        for t in range(7):
            state, model = opt.update_(state, model, grads_like(model, rng))
            if t % 3 == 1:
                seen.append(copy.deepcopy(state))
        return state, model, seen

    run_both(scenario, monkeypatch)


def test_steps_are_planned():
    model = mlp()
    state = opt.setup(opt.Adam(), model)
    rng = np.random.default_rng(0)
    opt.update_(state, model, grads_like(model, rng))
    assert is_planned(state)
    leaf = state["layers"][0]["weight"]
    assert leaf._plan is not None
    opt.update_(state, model, grads_like(model, rng))
    b1, b2 = np.float32(0.9), np.float32(0.999)
    assert leaf.state[2] == (b1 * b1 * b1, b2 * b2 * b2)  # βᵗ starts at β
    assert type(leaf.state[2][0]) is np.float32


@pytest.mark.parametrize("rule", [opt.Lamb(), opt.Lars()], ids=repr)
def test_trust_ratio_rules_are_planned(rule):
    """A model of Lamb or Lars leaves steps in the kernel's one planned call."""
    model = mlp()
    state = opt.setup(rule, model)
    rng = np.random.default_rng(0)
    for _ in range(2):
        opt.update_(state, model, grads_like(model, rng))
        assert is_planned(state)


def test_missing_gradients(monkeypatch):
    """None for a leaf or a whole subtree, or keys left out: those leaves keep
    their state (their βᵗ stay behind the others')."""

    def scenario():
        rng = np.random.default_rng(2)
        model = mlp()
        state = opt.setup(opt.Adam(), model)
        for t in range(5):
            g = grads_like(model, rng)
            if t % 2:
                g["layers"][1] = None
            else:
                del g["scale"]
                g["layers"][0]["bias"] = None
            state, model = opt.update_(state, model, g)
        return state, model

    state, _ = run_both(scenario, monkeypatch)
    b1 = np.float32(0.9)
    assert state["scale"].state[2][0] == b1 * b1 * b1  # stepped at t = 1, 3


def test_gradients_the_kernel_cannot_read_as_they_are(monkeypatch):
    """Gradients of another dtype, strided, lists, Python scalars, or sharing
    memory with a parameter are converted by the general path, step by step."""

    def scenario():
        rng = np.random.default_rng(3)
        model = mlp()
        state = opt.setup(opt.Adam(), model)
        for t in range(6):
            g = grads_like(model, rng)
            w = model["layers"][0]["weight"]
            if t == 1:
                g["layers"][0]["weight"] = g["layers"][0]["weight"].astype(np.float64)
            elif t == 2:
                g["layers"][0]["weight"] = np.asfortranarray(g["layers"][0]["weight"])
            elif t == 3:
                g["scale"] = 0.5
                g["layers"][1]["bias"] = [1.0, 2.0, 3.0]
            elif t == 4:
                g["layers"][0]["weight"] = w  # the parameter itself
                g["layers"][1]["bias"] = model["layers"][0]["bias"][:3]  # another's parameter
            state, model = opt.update_(state, model, g)
        return state, model

    run_both(scenario, monkeypatch)


def test_gradients_sharing_written_memory_are_declined(monkeypatch):
    """A gradient that shares memory with a parameter or state array, at any
    offset, is declined by the plan, also right after steps whose gradients
    were clear of them (the walk starts its overlap search where each leaf's
    gradient fell the step before), and taken again once it is clear."""
    outcomes = []

    def spy(real):
        def step(*args):
            outcomes.append(real(*args))
            return outcomes[-1]

        return step

    # A planned step is `step_planned`, or `_step` right after planning.
    monkeypatch.setattr(_plan, "step_planned", spy(_plan.step_planned))
    monkeypatch.setattr(_plan, "_step", spy(_plan._step))
    n = 16
    rng = np.random.default_rng(9)
    model = {"a": rng.standard_normal(2 * n).astype(np.float32), "b": np.ones(n, np.float32)}
    state = opt.setup(opt.Adam(), model)

    def clean():
        return {
            "a": rng.standard_normal(2 * n).astype(np.float32),
            "b": rng.standard_normal(n).astype(np.float32),
        }

    def moment(key):
        return state[key].state[0]

    sharing = [
        lambda: model["a"][:n],
        lambda: model["a"][n:],
        lambda: model["a"][3 : 3 + n],
        lambda: model["b"],
        lambda: moment("a")[5 : 5 + n],
        lambda: moment("b"),
        lambda: state["b"].state[1],
        lambda: state["a"].state[1][n:],
    ]
    for make in sharing:
        for _ in range(2):  # the first clear step moves the hint, the second confirms it
            opt.update_(state, model, clean())
            assert outcomes[-1] is True
        g = clean()
        g["b"] = make()
        before = copy.deepcopy((state, model))
        expected_state, expected_model = copy.deepcopy(before)
        with monkeypatch.context() as m:
            m.setattr(_plan, "enabled", False)
            opt.update_(expected_state, expected_model, copy.deepcopy(g))
        opt.update_(state, model, g)
        assert outcomes[-1] is False  # declined: the general path took the step
        assert_identical((state, model), (expected_state, expected_model))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", [opt.Adam(), Chain(opt.ClipNorm(1.0), opt.Momentum())])
def test_unaligned_parameters_and_gradients(monkeypatch, rule, dtype):
    """Arrays one byte off alignment (from a byte buffer, a packed record) are
    staged by the general path: the same bits as aligned ones, and an unaligned
    parameter is still updated in place."""

    def train(misalign: bool) -> Any:
        rng = np.random.default_rng(7)
        model = mlp(dtype)
        if misalign:
            model["layers"][0]["weight"] = unaligned(model["layers"][0]["weight"])
        weight = model["layers"][0]["weight"]
        state = opt.setup(rule, model)
        for t in range(4):
            g = grads_like(model, rng)
            if misalign and t % 2:
                g["layers"][1]["bias"] = unaligned(g["layers"][1]["bias"])
            state, model = opt.update_(state, model, g)
        assert model["layers"][0]["weight"] is weight
        state, new = opt.update(state, model, grads_like(model, rng))
        return state, model, new

    assert_identical(run_both(lambda: train(True), monkeypatch), train(False))


def errors_of(step: Callable[[], Any]) -> str:
    with pytest.raises((ValueError, TypeError)) as info:
        step()
    return f"{info.type.__name__}: {info.value}"


def test_bad_gradients_raise_as_the_general_path(monkeypatch):
    """Wrong trees are reported with the general path's message and path, and
    change nothing."""

    def scenario():
        rng = np.random.default_rng(4)
        model = mlp()
        state = opt.setup(opt.Adam(), model)
        state, model = opt.update_(state, model, grads_like(model, rng))
        before = copy.deepcopy((state, model))
        messages = []
        for bad in [
            lambda g: g.update(extra=np.ones(3)),
            lambda g: g["layers"].append(None),
            lambda g: g["layers"].__setitem__(0, [1, 2]),
            lambda g: g["layers"][0].__setitem__("weight", np.ones((2, 2), np.float32)),
            lambda g: g["layers"][0].__setitem__("weight", "text"),
            lambda g: g.__setitem__("layers", {"0": None}),
        ]:
            g = grads_like(model, rng)
            bad(g)
            messages.append(errors_of(lambda g=g: opt.update_(state, model, g)))
        assert_identical((state, model), before)
        return messages

    messages = run_both(scenario, monkeypatch)
    assert "'extra'" in messages[0]
    assert "has 3 entries" in messages[1]


def test_non_finite_norm_changes_nothing(monkeypatch):
    def scenario():
        rng = np.random.default_rng(5)
        model = mlp(np.float64)
        state = opt.setup(Chain(opt.ClipNorm(1.0), opt.Adam()), model)
        state, model = opt.update_(state, model, grads_like(model, rng))
        before = copy.deepcopy((state, model))
        g = grads_like(model, rng)
        g["layers"][1]["bias"][1] = np.inf
        message = errors_of(lambda: opt.update_(state, model, g))
        assert_identical((state, model), before)
        state, model = opt.update_(state, model, grads_like(model, rng))
        return message, state, model

    message = run_both(scenario, monkeypatch)[0]
    assert "['layers'][1]['bias']" in message or "layers" in message


def test_changes_between_steps(monkeypatch):
    """Whatever changes between steps, the next step sees it: a replaced array,
    a new key, freezing, thawing, adjusting, a state set by hand, a read-only
    parameter. Each retires the plan or declines it."""

    def scenario():
        rng = np.random.default_rng(6)
        model = mlp()
        state = opt.setup(opt.Adam(), model)
        log = []

        def step():
            nonlocal state, model
            state, model = opt.update_(state, model, grads_like(model, rng))
            log.append(copy.deepcopy((state, model)))

        step()
        step()
        model["layers"][0]["bias"] = np.zeros(7, np.float32)  # a new array, old state
        step()
        opt.freeze_(state["layers"][1])
        step()
        opt.thaw_(state)
        step()
        opt.adjust_(state, eta=0.01)
        step()
        state["scale"].state = opt.Adam().init(model["scale"])
        step()
        model["layers"][1]["weight"].flags.writeable = False
        step()
        step()
        model["extra"] = np.ones(2, np.float32)  # the state has nothing for it
        log.append(errors_of(step))
        return log

    run_both(scenario, monkeypatch)


@dataclasses.dataclass
class Dense:
    weight: np.ndarray
    bias: np.ndarray


Pair = namedtuple("Pair", ["left", "right"])


def test_other_containers(monkeypatch):
    """Dataclasses, named tuples and tuples, with gradients given as the same
    types, as dicts, or as plain tuples."""

    def scenario():
        rng = np.random.default_rng(7)
        f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
        model = Pair(Dense(f32(3, 2), f32(3)), (f32(4), f32(2, 2)))
        state = opt.setup(opt.Adam(), model)
        log = []
        for t in range(6):
            if t % 3 == 0:
                g = Pair(Dense(f32(3, 2), f32(3)), (f32(4), f32(2, 2)))
            elif t % 3 == 1:
                g = {"left": {"weight": f32(3, 2), "bias": None}, "right": [f32(4), None]}
            else:
                g = (Dense(f32(3, 2), f32(3)), (None, f32(2, 2)))
            state, model = opt.update_(state, model, g)
            log.append(copy.deepcopy((state, model)))
        return log

    run_both(scenario, monkeypatch)


def test_a_single_array(monkeypatch):
    def scenario():
        rng = np.random.default_rng(8)
        x = rng.standard_normal(10)
        state = opt.setup(opt.RAdam(), x)
        for _ in range(4):
            state, x = opt.update_(state, x, rng.standard_normal(10))
        return state, x

    run_both(scenario, monkeypatch)


def test_state_survives_pickling_mid_training():
    rng = np.random.default_rng(9)
    model = mlp()
    state = opt.setup(Chain(opt.AccumGrad(2), opt.Adam()), model)
    for _ in range(3):
        state, model = opt.update_(state, model, grads_like(model, rng))
    copied = pickle.loads(pickle.dumps((state, model)))
    assert_identical(copied, (state, model))
    assert copied[0]["scale"]._plan is None
    g = grads_like(model, rng)
    a = opt.update_(*copied, copy.deepcopy(g))
    b = opt.update_(state, model, g)
    assert_identical(a, b)


def test_update_keeps_its_inputs_and_makes_no_plan():
    rng = np.random.default_rng(10)
    model = mlp()
    state = opt.setup(opt.Adam(), model)
    opt.update_(state, model, grads_like(model, rng))
    before = copy.deepcopy((state, model))
    new_state, _ = opt.update(state, model, grads_like(model, rng))
    assert_identical((state, model), before)
    assert not is_planned(new_state)


def test_unplannable_models_take_the_general_path(monkeypatch):
    """float16, MixedPrecision, ties: declined once, then the general path."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((3, 4))
    for model, rule in [
        ({"w": w.astype(np.float16)}, opt.Adam()),
        ({"w": w.copy()}, opt.MixedPrecision(np.float64, opt.Adam())),
        ({"w": w.copy(), "wt": None}, opt.Adam()),
    ]:
        if "wt" in model:
            model["wt"] = model["w"].T  # a tied view
        state = opt.setup(rule, model)
        for _ in range(3):
            state, model = opt.update_(state, model, grads_like(model, rng))
        assert not is_planned(state)
        assert _plan._declined.get(id(state)) == (id(model), _leaf.generation())


def test_a_plan_lets_go_of_its_model():
    model = mlp()
    state = opt.setup(opt.Adam(), model)
    opt.update_(state, model, grads_like(model, np.random.default_rng(0)))
    assert is_planned(state)
    array = weakref.ref(model["layers"][0]["weight"])
    key = id(state)
    del state, model
    gc.collect()
    assert array() is None
    assert key not in _plan._plans


def test_threads_give_the_same_bits():
    from optimisers import _core

    results = []
    before = _core.get_num_threads()
    try:
        for threads in (1, 2):
            _core.set_num_threads(threads)
            rng = np.random.default_rng(12)
            model = [rng.standard_normal(70_000).astype(np.float32) for _ in range(3)]
            state = opt.setup(Chain(opt.ClipNorm(), opt.Adam()), model)
            for _ in range(3):
                state, model = opt.update_(state, model, grads_like(model, rng))
            assert is_planned(state)
            results.append(model)
    finally:
        _core.set_num_threads(before)
    assert_identical(results[0], results[1])


class Handover:
    """A registered container whose ``second`` attribute, read from a gradient
    marked ``lets_go``, drops the gradient's ``first`` array and allocates
    arrays of NaN of its size, which are likely to reuse its memory."""

    def __init__(self, first: np.ndarray, second: np.ndarray, lets_go: bool = False):
        self.first, self.second, self.lets_go = first, second, lets_go

    def __getattribute__(self, name: str) -> Any:
        fields = object.__getattribute__(self, "__dict__")
        if name == "second" and fields.get("lets_go"):
            size = fields.pop("first").size
            fields["poison"] = [np.full(size, np.nan, np.float32) for _ in range(64)]
        return object.__getattribute__(self, name)


opt.register(Handover, ("first", "second"))


def test_a_step_holds_the_gradients_it_reads():
    """The walk runs Python code (here a property) and the kernel runs without
    the GIL, so a gradient the caller's tree lets go of meanwhile must live
    on until the step is done: its data is read after the walk."""
    rng = np.random.default_rng(11)
    x = [rng.standard_normal(1000).astype(np.float32) for _ in range(2)]
    g = [rng.standard_normal(1000).astype(np.float32) for _ in range(2)]
    results = []
    for lets_go in (False, True):
        model = Handover(x[0].copy(), x[1].copy())
        state = opt.setup(opt.Descent(0.5), model)
        opt.update_(state, model, Handover(g[0].copy(), g[1].copy()))
        assert is_planned(state)
        opt.update_(state, model, Handover(g[0].copy(), g[1].copy(), lets_go))
        results.append(model)
    kept, let_go = results
    assert np.isfinite(let_go.first).all()
    np.testing.assert_array_equal(let_go.first, kept.first)
    np.testing.assert_array_equal(let_go.second, kept.second)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_norm_that_cannot_fail_after_rules_with_state_is_planned(dtype, monkeypatch):
    """Such a norm needs no roll-back: the chain is planned, and steps with the
    bits of the general path; one that can fail is still declined."""
    quiet = Chain(opt.Adam(), opt.WeightDecay(), opt.ClipNorm(0.05, throw=False), opt.Descent(0.5))

    def scenario():
        rng = np.random.default_rng(3)
        model = mlp(dtype)
        state = opt.setup(quiet, model)
        for _ in range(5):
            state, model = opt.update_(state, model, grads_like(model, rng))
        return state, model

    run_both(scenario, monkeypatch)
    monkeypatch.setattr(_plan, "enabled", True)
    for rule, planned in [(quiet, True), (Chain(opt.Adam(), opt.ClipNorm(0.05)), False)]:
        model = mlp(dtype)
        state = opt.setup(rule, model)
        rng = np.random.default_rng(4)
        for _ in range(2):
            state, model = opt.update_(state, model, grads_like(model, rng))
        assert is_planned(state) == planned, rule
