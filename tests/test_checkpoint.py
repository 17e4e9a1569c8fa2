"""Checkpoints: a run saved and resumed continues bit for bit, for every rule of
the table; loads are matched by key path, strict or not; bad and crafted
input is refused with nothing changed. Also ``Optimiser``."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

import optimisers as o
from optimisers import schedules as S


def _model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "enc": {"w": rng.standard_normal((5, 3)).astype(dtype), "b": np.zeros(5, dtype)},
        "dec": [rng.standard_normal((2, 5)).astype(dtype), "relu"],
    }


def _grad(model, t):
    rng = np.random.default_rng(100 + t)

    def g(x):
        return rng.standard_normal(x.shape).astype(x.dtype)

    return {"enc": {k: g(v) for k, v in model["enc"].items()}, "dec": [g(model["dec"][0]), None]}


def _copy(model):
    return {
        "enc": {k: v.copy() for k, v in model["enc"].items()},
        "dec": [model["dec"][0].copy(), "relu"],
    }


def _arrays(model):
    return [model["enc"]["w"], model["enc"]["b"], model["dec"][0]]


def _resumes_bit_for_bit(rule, dtype, k=3, n=7, through_file=True):
    straight = _model(dtype)
    s_straight = o.setup(rule, straight)
    interrupted = _model(dtype)
    s_first = o.setup(rule, interrupted)
    for t in range(n):
        o.update_(s_straight, straight, _grad(straight, t))
    for t in range(k):
        o.update_(s_first, interrupted, _grad(interrupted, t))
    resumed = _copy(interrupted)
    s_resumed = o.setup(rule, resumed)
    if through_file:
        f = io.BytesIO()
        o.save(f, s_first)
        f.seek(0)
        assert o.load(f, s_resumed) == ([], [])
    else:
        assert o.load_state_dict(s_resumed, o.state_dict(s_first)) == ([], [])
    for t in range(k, n):
        o.update_(s_resumed, resumed, _grad(resumed, t))
    for a, b in zip(_arrays(straight), _arrays(resumed)):
        np.testing.assert_array_equal(a, b)
    sd1, sd2 = o.state_dict(s_straight), o.state_dict(s_resumed)
    assert sd1.keys() == sd2.keys()
    for key in sd1:
        assert sd1[key].dtype == sd2[key].dtype, key
        np.testing.assert_array_equal(sd1[key], sd2[key], err_msg=key)


def test_a_run_saved_and_resumed_continues_bit_for_bit(rule, dtype):
    _resumes_bit_for_bit(rule, dtype)


WRAPPED = [
    o.Scheduled(
        o.OptimiserChain(o.ClipGlobalNorm(1.0), o.AdamW(lambda_=0.1)),
        eta=S.warmup_cosine_decay(0.0, 0.01, 2, 8),
    ),
    o.Scheduled(
        o.Momentum(), eta=S.piecewise_constant(0.1, {2: 0.5, 4: 0.1}), rho=S.linear(0.9, 0.5, 6)
    ),
    o.Lookahead(o.Adam(0.01), k=2),
    o.SkipNonFinite(o.NAdam(), max_consecutive=3),
    o.Scheduled(o.RAdam(), eta=S.join([S.constant(0.1), S.cosine_onecycle(5, 0.1)], [2])),
    o.MixedPrecision(np.float64, o.Scheduled(o.Adam(), eta=S.inverse_decay(0.01, 0.5))),
]


@pytest.mark.parametrize(
    "rule", WRAPPED, ids=[type(r).__name__ + str(i) for i, r in enumerate(WRAPPED)]
)
@pytest.mark.parametrize("through_file", [True, False], ids=["file", "dict"])
def test_wrapped_and_scheduled_rules_resume_bit_for_bit(rule, through_file):
    _resumes_bit_for_bit(rule, np.float32, through_file=through_file)


def test_the_state_dict_is_keyed_by_key_path_and_holds_data_only():
    model = _model(np.float32)
    model["tied"] = model["enc"]["w"]
    state = o.setup(o.Adam(), model)
    o.freeze_(state["enc"]["b"])
    sd = o.state_dict(state)
    assert sorted({k.rpartition(":")[0] for k in sd}) == ["dec.0", "enc.b", "enc.w"]
    assert all(isinstance(v, np.ndarray) and not v.dtype.hasobject for v in sd.values())
    assert json.loads(str(sd["enc.w:rule"])) == {
        "rule": "Adam",
        "fields": {"eta": 0.001, "beta": {"tuple": [0.9, 0.999]}, "epsilon": 1e-08},
    }
    assert bool(sd["enc.b:frozen"]) and not bool(sd["enc.w:frozen"])
    assert sd["enc.w:state.2"].dtype == np.float32 and sd["enc.w:state.2"].shape == ()


def test_load_restores_rules_and_frozen_flags_and_matches_by_key_path():
    model = _model(np.float64)
    state = o.setup(o.Adam(), model)
    o.update_(state, model, _grad(model, 0))
    o.adjust_(state["enc"], 0.05)
    o.freeze_(state["dec"])
    sd = o.state_dict(state)
    reordered = {
        "dec": [model["dec"][0].copy(), "relu"],
        "enc": {"b": model["enc"]["b"].copy(), "w": model["enc"]["w"].copy()},
    }
    fresh = o.setup(o.Adam(), reordered)
    assert o.load_state_dict(fresh, dict(reversed(list(sd.items())))) == ([], [])
    assert fresh["enc"]["w"].rule == o.Adam(0.05)
    assert fresh["dec"][0].frozen and not fresh["enc"]["b"].frozen
    assert fresh["enc"]["w"] == state["enc"]["w"]


def test_an_added_layer_loads_with_strict_false_and_is_refused_with_strict():
    model = _model(np.float32)
    state = o.setup(o.Adam(), model)
    o.update_(state, model, _grad(model, 0))
    sd = o.state_dict(state)
    bigger = _copy(model)
    bigger["head"] = np.ones(4, np.float32)
    fresh = o.setup(o.Adam(), bigger)
    kept = pickle.dumps(fresh)
    with pytest.raises(KeyError, match=r"missing.*'head'"):
        o.load_state_dict(fresh, sd)
    assert pickle.dumps(fresh) == kept
    assert o.load_state_dict(fresh, sd, strict=False) == (["head"], [])
    assert fresh["enc"]["w"] == state["enc"]["w"]
    smaller = {"enc": _copy(model)["enc"]}
    assert o.load_state_dict(o.setup(o.Adam(), smaller), sd, strict=False) == ([], ["dec.0"])


def test_a_tied_leaf_is_saved_once_under_its_first_path():
    w = np.ones((2, 2))
    state = o.setup(o.Momentum(), {"a": w, "b": [w, w.T]})
    sd = o.state_dict(state)
    assert {k.rpartition(":")[0] for k in sd} == {"a"}
    w2 = np.zeros((2, 2))
    again = o.setup(o.Momentum(), {"a": w2, "b": [w2, w2.T]})
    assert o.load_state_dict(again, sd) == ([], [])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda sd: sd.__setitem__("enc.w:state.0", np.zeros((3, 5), np.float32)),
            r"'enc\.w'.*float32\[3, 5\]",
        ),
        (
            lambda sd: sd.__setitem__("enc.w:state.1", np.zeros((5, 3), np.float64)),
            r"'enc\.w'.*float64",
        ),
        (lambda sd: sd.__setitem__("enc.w:state.2", np.array(0.9)), r"'enc\.w'.*float64\[\]"),
        (
            lambda sd: sd.__setitem__("enc.b:state.0", np.zeros(5, object)),
            r"'enc\.b:state\.0'.*array",
        ),
        (lambda sd: sd.pop("dec.0:state.1"), r"'dec\.0:state\.1'"),
        (
            lambda sd: sd.__setitem__("dec.0:rule", np.array('{"rule": "os.system"}')),
            "no built-in rule",
        ),
        (lambda sd: sd.__setitem__("dec.0:rule", np.array("{")), r"rule saved at 'dec\.0'"),
        (
            lambda sd: sd.__setitem__("dec.0:layout", np.array('{"tuple": []}')),
            r"'dec\.0'.*does not fit",
        ),
        (lambda sd: sd.__setitem__("dec.0:frozen", np.array(1.5)), "frozen flag"),
        (lambda sd: sd.__setitem__("dec.0:state.9", np.zeros(2)), r"'dec\.0:state\.9'"),
        (
            lambda sd: sd.__setitem__(
                "dec.0:rule", np.array('{"rule": "OptimiserChain", "rules": [' * 3000)
            ),
            "nested too deeply|not valid",
        ),
        (
            lambda sd: sd.__setitem__("dec.0:layout", np.array('{"tuple": [' * 3000 + "]}" * 3000)),
            "nested too deeply|not valid",
        ),
    ],
)
def test_a_bad_checkpoint_is_refused_naming_the_path_with_nothing_changed(change, message):
    model = _model(np.float32)
    state = o.setup(o.Adam(), model)
    o.update_(state, model, _grad(model, 0))
    sd = o.state_dict(state)
    change(sd)
    target = o.setup(o.Adam(0.5), _copy(model))
    kept = pickle.dumps(target)
    with pytest.raises(ValueError, match=message):
        o.load_state_dict(target, sd)
    assert pickle.dumps(target) == kept


def test_a_rule_that_is_not_data_cannot_be_saved():
    with pytest.raises(TypeError, match=r"neither a number nor one of optimisers\.schedules"):
        o.state_dict(o.setup(o.Scheduled(o.Adam(), eta=lambda t: 0.1), {"x": np.ones(2)}))

    class Mine(o.AbstractRule):
        def init(self, x):
            return None

        def apply(self, state, x, dx):
            return state, dx

    with pytest.raises(TypeError, match="not one of optimisers' built-in rules"):
        o.state_dict(o.setup(o.OptimiserChain(Mine()), {"x": np.ones(2)}))


def _saved(state):
    f = io.BytesIO()
    o.save(f, state)
    return f.getvalue()


def _crafted_object_array(good):
    f = io.BytesIO()
    with np.load(io.BytesIO(good)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["enc.w:state.0"] = np.array([{"evil": 1}], dtype=object)
    np.savez(f, **arrays)
    return f.getvalue()


def _crafted_dtype(good):
    f = io.BytesIO()
    with np.load(io.BytesIO(good)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["enc.w:state.0"] = arrays["enc.w:state.0"].astype(np.int64)
    np.savez(f, **arrays)
    return f.getvalue()


def _one_array(good):
    f = io.BytesIO()
    np.save(f, np.ones(3))
    return f.getvalue()


@pytest.mark.parametrize(
    ("craft", "message"),
    [
        (_crafted_object_array, "not a readable checkpoint"),
        (_crafted_dtype, r"'enc\.w'.*int64"),
        (lambda good: good[: len(good) // 2], "not a readable checkpoint"),
        (lambda good: good[:-30], "not a readable checkpoint"),
        (lambda good: b"not a zip at all", "not a readable checkpoint"),
        (_one_array, "one array, not an .npz"),
    ],
    ids=["object-array", "wrong-dtype", "truncated-half", "truncated-tail", "garbage", "npy"],
)
def test_a_crafted_file_is_refused_clearly_with_nothing_changed(craft, message):
    model = _model(np.float32)
    state = o.setup(o.Adam(), model)
    o.update_(state, model, _grad(model, 0))
    data = craft(_saved(state))
    target = o.setup(o.Adam(), _copy(model))
    kept = pickle.dumps(target)
    with pytest.raises(ValueError, match=message):
        o.load(io.BytesIO(data), target)
    assert pickle.dumps(target) == kept


def test_the_archive_holds_no_pickles(tmp_path):
    model = _model(np.float32)
    state = o.setup(o.Scheduled(o.Adam(), eta=S.cosine_decay(0.1, 5)), model)
    o.update_(state, model, _grad(model, 0))
    path = tmp_path / "run.npz"
    o.save(path, state)
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            header = z.read(name)[:128]
            assert b"'descr': '|O'" not in header and b"'descr': 'O'" not in header
    target = o.setup(o.Scheduled(o.Adam(), eta=S.constant(1.0)), _copy(model))
    assert o.load(path, target) == ([], [])
    assert target["enc"]["w"] == state["enc"]["w"]
    with np.load(path, allow_pickle=False) as archive:  # any mapping of arrays will do
        assert o.load_state_dict(target, archive) == ([], [])


# ---------------------------------------------------------------------------
# Optimiser


def test_optimiser_steps_adjusts_and_checkpoints_like_the_functions():
    m1, m2 = _model(np.float32), _model(np.float32)
    opt = o.Optimiser(o.Adam(), m1)
    state = o.setup(o.Adam(), m2)
    assert opt.rule == o.Adam() and opt.model is m1
    for t in range(3):
        assert opt.step(_grad(m1, t)) is m1
        o.update_(state, m2, _grad(m2, t))
    opt.adjust(0.01, beta=(0.8, 0.9))
    o.adjust_(state, 0.01, beta=(0.8, 0.9))
    for t in range(3, 5):
        opt.step(_grad(m1, t))
        o.update_(state, m2, _grad(m2, t))
    for a, b in zip(_arrays(m1), _arrays(m2)):
        np.testing.assert_array_equal(a, b)
    other = o.Optimiser(o.Adam(), _copy(m1))
    assert other.load_state_dict(opt.state_dict()) == ([], [])
    assert other.state == opt.state
