"""Scheduled, ReduceOnPlateau, setup(fn), ClipGlobalNorm, SkipNonFinite,
Lookahead and ema: each against its formula, plus the whole-step semantics
(groups of equal rules, nothing changed on error, one kernel call)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import optimisers as o
from optimisers import _core
from optimisers import schedules as S
from optimisers._global_norm import global_norm


def _model(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "layers": [
            {
                "w": rng.standard_normal((4, 3)).astype(dtype),
                "b": rng.standard_normal(4).astype(dtype),
            },
            {
                "w": rng.standard_normal((2, 4)).astype(dtype),
                "b": rng.standard_normal(2).astype(dtype),
            },
        ],
        "name": "mlp",
    }


def _grad(model, seed, scale=1.0):
    rng = np.random.default_rng(seed)

    def g(x):
        return (scale * rng.standard_normal(x.shape)).astype(x.dtype)

    return {"layers": [{"w": g(layer["w"]), "b": g(layer["b"])} for layer in model["layers"]]}


def _arrays(model):
    return [a for layer in model["layers"] for a in (layer["w"], layer["b"])]


def _copy(model):
    return {
        "layers": [{k: v.copy() for k, v in layer.items()} for layer in model["layers"]],
        "name": model["name"],
    }


# ---------------------------------------------------------------------------
# Scheduled


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scheduled_equals_adjusting_by_hand_at_each_step(dtype):
    schedule = S.warmup_cosine_decay(0.0, 0.1, 3, 12)
    m1, m2 = _model(dtype), _model(dtype)
    s1 = o.setup(o.Scheduled(o.Adam(), eta=schedule), m1)
    s2 = o.setup(o.Adam(), m2)
    for t in range(15):
        o.adjust_(s2, schedule(t))
        g = _grad(m1, t)
        o.update_(s1, m1, g)
        o.update_(s2, m2, g)
        for a, b in zip(_arrays(m1), _arrays(m2)):
            np.testing.assert_array_equal(a, b)
    assert s1["layers"][0]["w"].state[0] == 15


def test_scheduled_routes_a_field_into_a_chain_as_adjust_does():
    rule = o.Scheduled(
        o.OptimiserChain(o.WeightDecay(0.1), o.Momentum()), eta=S.linear(0.1, 0.0, 4)
    )
    assert rule.at(2) == o.OptimiserChain(o.WeightDecay(0.1), o.Momentum(0.05))
    with pytest.raises(o.interface.ArgumentError, match="'rho'"):
        o.Scheduled(o.Adam(), rho=S.constant(0.5))
    with pytest.raises(ValueError, match="learning rate cannot be negative"):
        o.Scheduled(o.Adam(), eta=S.constant(-1.0))


def test_scheduled_leaves_at_one_step_share_one_kernel_call(monkeypatch):
    model = {f"x{i}": np.ones(5) * i for i in range(20)}
    state = o.setup(o.Scheduled(o.Adam(), eta=S.cosine_decay(0.1, 10)), model)
    calls = []
    step = _core.step
    monkeypatch.setattr(_core, "step", lambda jobs: (calls.append(len(jobs)), step(jobs))[1])
    for _ in range(3):
        o.update_(state, model, {k: np.ones(5) for k in model})
    assert calls == [20, 20, 20]
    programs = {id(job_rule) for job_rule in state["x0"].rule.__dict__["_at"].values()}
    assert len(programs) == 3


def test_scheduled_is_a_value():
    rule = o.Scheduled(o.Adam(), eta=S.cosine_decay(0.1, 10), epsilon=S.constant(1e-6))
    assert rule == o.Scheduled(o.Adam(), epsilon=S.constant(1e-6), eta=S.cosine_decay(0.1, 10))
    assert rule.at(10) == o.Adam(0.0, (0.9, 0.999), 1e-6)
    pairs = o.Scheduled(o.Adam(), beta=lambda t: (0.9, 0.99 + 0.001 * t))
    assert pairs.at(2).beta == (0.9, 0.992)
    assert pickle.loads(pickle.dumps(rule)) == rule
    assert repr(rule).startswith("Scheduled(Adam(")
    with pytest.raises(TypeError, match="not callable"):
        o.Scheduled(o.Adam(), eta=0.1)


def test_adjust_reaches_through_every_wrapper():
    rule = o.Lookahead(
        o.SkipNonFinite(o.Scheduled(o.MixedPrecision(o.Adam()), epsilon=S.constant(1e-6)))
    )
    new = o.adjust(rule, 0.5, epsilon=1e-3, k=3)
    inner = new.rule.rule.rule.rule
    assert inner == o.Adam(0.5, (0.9, 0.999), 1e-3)
    assert new.rule.rule.at(0).rule == o.Adam(0.5, (0.9, 0.999), 1e-6)  # the schedule still rules
    assert new.k == 3
    state = o.setup(rule, {"x": np.ones(2, np.float32)})
    o.adjust_(state, 0.25)
    assert state["x"].rule.rule.rule.rule.rule.eta == 0.25


# ---------------------------------------------------------------------------
# ReduceOnPlateau, against a transcription of torch's ReduceLROnPlateau


class TorchPlateau:
    def __init__(
        self, lr, factor, patience, threshold, threshold_mode, mode, cooldown, min_lr, eps
    ):
        self.lr, self.factor, self.patience = lr, factor, patience
        self.threshold, self.threshold_mode, self.mode = threshold, threshold_mode, mode
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = 0

    def is_better(self, a):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < self.best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < self.best - self.threshold
        if self.threshold_mode == "rel":
            return a > self.best * (self.threshold + 1.0)
        return a > self.best + self.threshold

    def step(self, metric):
        if self.is_better(metric):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
@pytest.mark.parametrize(("cooldown", "min_eta"), [(0, 0.0), (2, 0.0), (1, 0.004)])
def test_reduce_on_plateau_follows_torch(mode, threshold_mode, cooldown, min_eta):
    model = {"a": np.ones(3), "b": np.ones(2)}
    state = o.setup(lambda x: o.OptimiserChain(o.ClipGrad(1.0), o.Adam(0.1)), model)
    settings = dict(factor=0.5, patience=2, threshold=0.01, cooldown=cooldown)
    plateau = o.ReduceOnPlateau(
        state, threshold_mode=threshold_mode, mode=mode, min_eta=min_eta, **settings
    )
    torch = TorchPlateau(0.1, 0.5, 2, 0.01, threshold_mode, mode, cooldown, min_eta, 1e-8)
    rng = np.random.default_rng(3)
    metrics = np.concatenate([np.linspace(1, 0.5, 5), 0.5 + 0.004 * rng.standard_normal(40)])
    if mode == "max":
        metrics = 2 - metrics
    lrs = []
    for metric in metrics:
        plateau.step(metric)
        torch.step(float(metric))
        assert state["a"].rule.rules[1].eta == torch.lr
        assert state["b"].rule.rules[1].eta == torch.lr
        lrs.append(torch.lr)
    assert len(set(lrs)) >= 3  # the trajectory does lower the rate, more than once


def test_reduce_on_plateau_refuses_bad_settings():
    with pytest.raises(ValueError, match="factor"):
        o.ReduceOnPlateau({}, factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        o.ReduceOnPlateau({}, mode="up")


# ---------------------------------------------------------------------------
# setup(fn)


def test_setup_with_a_function_picks_each_leafs_rule():
    model = _model()
    state = o.setup(lambda x: o.AdamW(lambda_=0.1) if x.ndim == 2 else o.Adam(), model)
    assert state["layers"][0]["w"].rule == o.AdamW(lambda_=0.1)
    assert state["layers"][1]["b"].rule == o.Adam()
    assert state["name"] is None

    seen = []

    def by_path(kp, x):
        seen.append(kp)
        return o.Descent(0.0) if kp[-1] == "b" else o.Descent(0.1)

    state = o.setup(by_path, model, path=True)
    assert seen[0] == o.KeyPath("layers", 0, "w")
    assert state["layers"][1]["b"].rule == o.Descent(0.0)


def test_setup_with_a_function_asks_once_for_a_tied_array_and_its_view():
    w = np.ones((3, 2))
    model = {"a": w, "b": w, "c": w.T, "d": np.ones(2)}
    asked = []
    state = o.setup(lambda kp, x: (asked.append(kp), o.Adam())[1], model, path=True)
    assert asked == [o.KeyPath("a"), o.KeyPath("d")]
    assert state["a"] is state["b"] is state["c"]


def test_setup_with_a_function_that_returns_no_rule_names_the_path():
    with pytest.raises(TypeError, match=r"KeyPath\('layers', 0, 'b'\).*not an optimisation rule"):
        o.setup(lambda kp, x: o.Adam() if kp[-1] == "w" else 0.1, _model(), path=True)


# ---------------------------------------------------------------------------
# ClipGlobalNorm


def _numpy_global_norm(grads, p):
    flat = np.concatenate([g.astype(np.float64).ravel() for g in grads])
    return np.linalg.norm(flat, p)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_global_norm_scales_by_the_norm_of_every_leaf(p, dtype):
    model = _model(dtype)
    before = [a.copy() for a in _arrays(model)]
    state = o.setup(o.OptimiserChain(o.ClipGlobalNorm(0.7, p), o.Descent(1.0)), model)
    grad = _grad(model, 1)
    grads = _arrays(grad)
    norm = _numpy_global_norm(grads, p)
    assert norm > 0.7
    o.update_(state, model, grad)
    for x0, x, g in zip(before, _arrays(model), grads):
        want = x0 - g * dtype(0.7 / norm)
        np.testing.assert_allclose(x, want, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_clip_global_norm_below_omega_leaves_gradients_as_they_are():
    model = _model()
    before = [a.copy() for a in _arrays(model)]
    state = o.setup(o.ClipGlobalNorm(100.0), model)
    grad = _grad(model, 1)
    o.update_(state, model, grad)
    for x0, x, g in zip(before, _arrays(model), _arrays(grad)):
        np.testing.assert_array_equal(x, x0 - g)


def test_clip_global_norm_counts_only_leaves_that_step_with_an_equal_rule():
    model = {"a": np.ones(3), "b": np.ones(3), "c": np.ones(3), "d": np.ones(3), "t": np.ones(2)}
    model["u"] = model["t"]  # tied: counted once
    clip = o.OptimiserChain(o.ClipGlobalNorm(1.0), o.Descent(1.0))
    state = o.setup(
        lambda kp, x: (
            o.OptimiserChain(o.ClipGlobalNorm(2.0), o.Descent(1.0))
            if kp == o.KeyPath("c")
            else clip
        ),
        model,
        path=True,
    )
    o.freeze_(state["d"])
    g = {k: np.full(model[k].shape, 3.0) for k in model}
    g["b"] = None
    o.update_(state, model, g)
    # a, t (once, its two gradients summed: 6) step together; b has no gradient; d is frozen
    norm = math.sqrt(3 * 9 + 2 * 36)
    np.testing.assert_allclose(model["a"], 1 - 3 / norm)
    np.testing.assert_allclose(model["t"], 1 - 6 / norm)
    assert model["u"] is model["t"]
    np.testing.assert_array_equal(model["b"], 1.0)
    np.testing.assert_array_equal(model["d"], 1.0)
    np.testing.assert_allclose(model["c"], 1 - 3 * 2.0 / math.sqrt(27))


def test_clip_global_norm_after_stateless_rules_and_under_a_schedule():
    model = _model()
    m2 = _copy(model)
    rule = o.Scheduled(
        o.OptimiserChain(o.WeightDecay(0.1), o.ClipGlobalNorm(0.5), o.Adam()),
        eta=S.linear(0.01, 0.001, 5),
    )
    state = o.setup(rule, model)
    state2 = o.setup(o.Adam(), m2)
    for t in range(6):
        grad = _grad(model, t)
        decayed = [g + 0.1 * x for g, x in zip(_arrays(grad), _arrays(m2))]
        norm = _numpy_global_norm(decayed, 2)
        scaled = [d * min(0.5 / norm, 1.0) for d in decayed]
        it = iter(scaled)
        g2 = {"layers": [{"w": next(it), "b": next(it)} for _ in range(2)]}
        o.adjust_(state2, S.linear(0.01, 0.001, 5)(t))
        o.update_(state, model, grad)
        o.update_(state2, m2, g2)
        for a, b in zip(_arrays(model), _arrays(m2)):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_clip_global_norm_gives_the_same_bits_for_any_thread_count(kernel_settings):
    big = {"a": np.random.default_rng(0).standard_normal(300_000), "b": np.ones(1000)}
    grad = {"a": np.random.default_rng(1).standard_normal(300_000), "b": np.ones(1000)}
    results = []
    for threads in (1, 2):
        kernel_settings.set_num_threads(threads)
        model = {k: v.copy() for k, v in big.items()}
        state = o.setup(o.OptimiserChain(o.ClipGlobalNorm(1.0), o.Adam()), model)
        for _ in range(3):
            o.update_(state, model, grad)
        results.append(model)
    for k in big:
        np.testing.assert_array_equal(results[0][k], results[1][k])


def test_clip_global_norm_after_a_rule_with_state_is_refused_at_setup():
    with pytest.raises(ValueError, match=r"ClipGlobalNorm at KeyPath\('x'\) comes after Momentum"):
        o.setup(o.OptimiserChain(o.Momentum(), o.ClipGlobalNorm()), {"x": np.ones(2)})
    with pytest.raises(ValueError, match=r"ClipGlobalNorm.*not inside"):
        o.setup(o.MixedPrecision(o.OptimiserChain(o.ClipGlobalNorm())), {"x": np.ones(2)})


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_clip_global_norm_with_throw_refuses_a_non_finite_norm_and_changes_nothing(bad):
    model = _model()
    state = o.setup(o.OptimiserChain(o.ClipGlobalNorm(1.0), o.Adam()), model)
    o.update_(state, model, _grad(model, 0))
    before = [a.copy() for a in _arrays(model)]
    kept = pickle.dumps(state)
    grad = _grad(model, 1)
    grad["layers"][1]["b"][0] = bad
    with pytest.raises(
        ValueError, match=r"KeyPath\('layers', 0, 'w'\) and 3 other.*global 2.0-norm"
    ):
        o.update_(state, model, grad)
    for a, b in zip(before, _arrays(model)):
        np.testing.assert_array_equal(a, b)
    assert pickle.dumps(state) == kept


def test_clip_global_norm_is_a_rule_value():
    rule = o.ClipGlobalNorm(1.0, math.inf, throw=False)
    assert repr(rule) == "ClipGlobalNorm(omega=1.0, p=inf, throw=False)"
    assert pickle.loads(pickle.dumps(rule)) == rule
    assert o.adjust(rule, omega=2.0) == o.ClipGlobalNorm(2.0, math.inf, throw=False)


# ---------------------------------------------------------------------------
# SkipNonFinite


def test_skip_non_finite_skips_every_leaf_of_its_group_and_counts():
    model = _model()
    state = o.setup(o.SkipNonFinite(o.Adam()), model)
    o.update_(state, model, _grad(model, 0))
    before = [a.copy() for a in _arrays(model)]
    moments = [s.state[2][0].copy() for s in (state["layers"][0]["w"], state["layers"][1]["b"])]
    grad = _grad(model, 1)
    grad["layers"][1]["b"][1] = np.nan
    for n in (1, 2):
        o.update_(state, model, grad)
        for a, b in zip(before, _arrays(model)):
            np.testing.assert_array_equal(a, b)
        for leaf in (state["layers"][0]["w"], state["layers"][1]["b"]):
            assert leaf.state[:2] == (n, n)
        np.testing.assert_array_equal(state["layers"][0]["w"].state[2][0], moments[0])
    o.update_(state, model, _grad(model, 2))
    assert state["layers"][0]["w"].state[:2] == (0, 2)
    assert not np.array_equal(before[0], model["layers"][0]["w"])


def test_skip_non_finite_steps_like_its_rule_when_finite():
    m1, m2 = _model(np.float32), _model(np.float32)
    s1, s2 = o.setup(o.SkipNonFinite(o.Lion()), m1), o.setup(o.Lion(), m2)
    for t in range(4):
        o.update_(s1, m1, _grad(m1, t))
        o.update_(s2, m2, _grad(m2, t))
    for a, b in zip(_arrays(m1), _arrays(m2)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("limit", [0, 2])
def test_skip_non_finite_raises_after_max_consecutive_with_nothing_changed(limit):
    model = {"a": np.ones(3), "b": np.ones(3)}
    state = o.setup(o.SkipNonFinite(o.Momentum(), max_consecutive=limit), model)
    grad = {"a": np.ones(3), "b": np.array([1.0, np.inf, 1.0])}
    for _ in range(limit):
        o.update_(state, model, grad)
    kept = pickle.dumps((state, model))
    with pytest.raises(FloatingPointError, match=rf"KeyPath\('b'\).*{limit} skipped"):
        o.update_(state, model, grad)
    assert pickle.dumps((state, model)) == kept


# ---------------------------------------------------------------------------
# Lookahead


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lookahead_follows_its_formula(dtype):
    model = _model(dtype)
    fast = [a.copy() for a in _arrays(model)]
    slow = [a.copy() for a in fast]
    state = o.setup(o.Lookahead(o.Descent(0.1), k=3, alpha=0.4), model)
    for t in range(10):
        grad = _grad(model, t)
        o.update_(state, model, grad)
        for i, g in enumerate(_arrays(grad)):
            fast[i] = fast[i] - dtype(0.1) * g
            if (t + 1) % 3 == 0:
                slow[i] = slow[i] + dtype(0.4) * (fast[i] - slow[i])
                fast[i] = slow[i].copy()
        for a, b in zip(_arrays(model), fast):
            np.testing.assert_array_equal(a, b)
    assert state["layers"][0]["w"].state[1] == 10


def test_lookahead_with_update_leaves_its_inputs_alone():
    model = _model()
    kept = pickle.dumps(model)
    state = o.setup(o.Lookahead(o.Adam(), k=1), model)
    state2, model2 = o.update(state, model, _grad(model, 0))
    assert pickle.dumps(model) == kept
    assert state["layers"][0]["w"].state[1] == 0 and state2["layers"][0]["w"].state[1] == 1
    np.testing.assert_array_equal(state2["layers"][0]["w"].state[0], model2["layers"][0]["w"])


# ---------------------------------------------------------------------------
# ema


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ema_follows_its_formula_by_key_path(dtype):
    model, average = _model(dtype, 0), _model(dtype, 1)
    want = [
        (a.astype(np.float64) * 0.9 + 0.1 * x.astype(np.float64))
        for a, x in zip(_arrays(average), _arrays(model))
    ]
    kept = pickle.dumps(average)
    new = o.ema(average, model, decay=0.9)
    assert pickle.dumps(average) == kept
    for a, w in zip(_arrays(new), want):
        np.testing.assert_allclose(a, w, rtol=1e-6 if dtype == np.float32 else 1e-14)
        assert a.dtype == dtype
    assert o.ema_(average, model, decay=0.9) is average
    for a, b in zip(_arrays(average), _arrays(new)):
        np.testing.assert_array_equal(a, b)


def test_ema_refuses_a_model_that_does_not_match_with_nothing_changed():
    average = {"a": np.ones(2), "b": np.ones(3)}
    with pytest.raises(ValueError, match=r"KeyPath\('b'\)"):
        o.ema_(average, {"a": np.zeros(2), "b": np.zeros(4)})
    np.testing.assert_array_equal(average["a"], 1.0)
    with pytest.raises(ValueError, match="decay"):
        o.ema_(average, average, decay=1.5)


def test_a_schedule_value_the_rule_refuses_names_the_path_and_changes_nothing():
    model = {"x": np.ones(3)}
    state = o.setup(o.Scheduled(o.Descent(), eta=S.linear(0.1, -0.1, 2)), model)
    o.update_(state, model, {"x": np.ones(3)})
    o.update_(state, model, {"x": np.ones(3)})
    kept = pickle.dumps((state, model))
    with pytest.raises(ValueError, match=r"cannot be negative.*KeyPath\('x'\), step 2"):
        o.update_(state, model, {"x": np.ones(3)})
    assert pickle.dumps((state, model)) == kept


def test_ema_of_a_model_with_a_view_keeps_the_view():
    w = np.ones((2, 3))
    average = {"w": w, "wt": w.T}
    new = o.ema(average, {"w": np.zeros((2, 3)), "wt": np.zeros((3, 2))}, decay=0.5)
    np.testing.assert_array_equal(new["w"], 0.5)
    np.testing.assert_array_equal(new["wt"], 0.5)
    np.testing.assert_array_equal(w, 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_global_norm_then_adam_equals_adam_on_the_scaled_gradients_bit_for_bit(dtype):
    m1, m2 = _model(dtype), _model(dtype)
    s1 = o.setup(o.OptimiserChain(o.ClipGlobalNorm(0.5), o.Adam(0.01)), m1)
    s2 = o.setup(o.Adam(0.01), m2)
    for t in range(5):
        grad = _grad(m1, t)
        factor = 0.5 / global_norm(_arrays(grad), 2.0)
        assert factor < 1
        scaled = {
            "layers": [{k: v * dtype(factor) for k, v in layer.items()} for layer in grad["layers"]]
        }
        o.update_(s1, m1, grad)
        o.update_(s2, m2, scaled)
        for a, b in zip(_arrays(m1), _arrays(m2)):
            np.testing.assert_array_equal(a, b)
    adam1, adam2 = s1["layers"][0]["w"].state[1], s2["layers"][0]["w"].state
    np.testing.assert_array_equal(adam1[0], adam2[0])
    assert adam1[2] == adam2[2]


def test_two_global_clips_in_a_chain_apply_one_after_the_other():
    model = {"a": np.zeros(4), "b": np.zeros(5)}
    state = o.setup(o.OptimiserChain(o.ClipGlobalNorm(2.0), o.ClipGlobalNorm(0.5, 1)), model)
    o.update_(state, model, {"a": np.full(4, 1.0), "b": np.full(5, 1.0)})
    # 2-norm 3 -> scaled by 2/3; then the 1-norm 6 -> scaled by 0.5/6
    np.testing.assert_allclose(model["a"], -0.5 / 9)
    np.testing.assert_allclose(model["b"], -0.5 / 9)


def test_a_model_with_a_rule_per_leaf_is_still_planned_as_one_call():
    from optimisers import _plan

    model = _model(np.float32)
    state = o.setup(
        lambda kp, x: o.AdamW(lambda_=0.1) if kp[-1] == "w" else o.Adam(), model, path=True
    )
    o.update_(state, model, _grad(model, 0))
    assert id(state) in _plan._plans
    assert _plan._plans[id(state)][0]().leaves == 4


def test_a_clip_norm_before_the_global_clip_refuses_inf_naming_the_path():
    model = {"a": np.ones(2), "b": np.ones(2)}
    state = o.setup(o.OptimiserChain(o.ClipNorm(1.0), o.ClipGlobalNorm(1.0), o.Adam()), model)
    kept = pickle.dumps((state, model))
    with pytest.raises(ValueError, match=r"KeyPath\('b'\) has 2.0-norm inf \(ClipNorm"):
        o.update_(state, model, {"a": np.ones(2), "b": np.array([1.0, np.inf])})
    assert pickle.dumps((state, model)) == kept


def test_update_with_whole_tree_rules_leaves_its_inputs_alone():
    model = _model()
    rule = o.SkipNonFinite(o.OptimiserChain(o.ClipGlobalNorm(0.1), o.Lookahead(o.Adam(), k=1)))
    state = o.setup(rule, model)
    kept = pickle.dumps((state, model))
    grad = _grad(model, 0)
    new_state, new_model = o.update(state, model, grad)
    assert pickle.dumps((state, model)) == kept
    assert new_state["layers"][0]["w"].state[2][1][1] == 1  # Lookahead's count
    assert not np.array_equal(new_model["layers"][0]["w"], model["layers"][0]["w"])
    grad["layers"][0]["b"][0] = np.nan
    skipped_state, same = o.update(new_state, new_model, grad)
    assert skipped_state["layers"][1]["w"].state[:2] == (1, 1)
    for a, b in zip(_arrays(same), _arrays(new_model)):
        np.testing.assert_array_equal(a, b)


def test_leaves_sharing_a_clipped_chain_share_one_program(monkeypatch):
    model = {f"x{i}": np.ones(4) for i in range(6)}
    state = o.setup(o.OptimiserChain(o.ClipGlobalNorm(0.1), o.ClipGrad(1.0), o.Adam()), model)
    programs = []
    step = _core.step
    monkeypatch.setattr(
        _core, "step", lambda jobs: (programs.extend(id(j[0]) for j in jobs), step(jobs))[1]
    )
    o.update_(state, model, {k: np.ones(4) for k in model})
    assert len(programs) == 6 and len(set(programs)) == 1
