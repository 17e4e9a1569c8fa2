"""Optimisers.jl's Duplicated pair, and train_ (the seeds' train!)."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

import optimisers as o


def model_and_grad():
    model = {"w": np.array([1.0, 2.0]), "b": np.array(0.5)}
    grad = {"w": np.array([0.5, -1.0]), "b": np.array(2.0)}
    return model, grad


def test_duplicated_holds_the_pair():
    model, grad = model_and_grad()
    d = o.Duplicated(model, grad)
    assert d.val is model and d.dval is grad


def test_setup_on_duplicated_is_setup_on_the_model():
    model, grad = model_and_grad()
    rule = o.Adam(0.1)
    assert repr(o.setup(rule, o.Duplicated(model, grad))) == repr(o.setup(rule, model))


def test_update_on_duplicated_steps_in_place_and_returns_none():
    model, grad = model_and_grad()
    want_state = o.setup(o.Momentum(0.1), model)
    want_state, want = o.update(want_state, model, grad)
    w = model["w"]
    state = o.setup(o.Momentum(0.1), o.Duplicated(model, grad))
    assert o.update_(state, o.Duplicated(model, grad)) is None
    assert model["w"] is w
    for k in model:
        assert np.array_equal(model[k], want[k])
    assert np.array_equal(state["w"].state, want_state["w"].state)
    with pytest.raises(TypeError, match="needs a gradient"):
        o.update_(state, model)


def regression():
    """A least-squares problem: value_and_grad, data of (x, y) batches, a model."""
    rng = np.random.default_rng(1)
    w_true = np.array([2.0, -3.0])
    xs = rng.standard_normal((20, 8, 2))
    data = [(x, x @ w_true) for x in xs]

    def value_and_grad(model, x, y):
        r = x @ model["w"] - y
        return float(np.mean(r**2)), {"w": 2 * x.T @ r / len(y)}

    return value_and_grad, {"w": np.zeros(2)}, data


def test_train_steps_over_every_batch_and_returns_the_losses():
    value_and_grad, model, data = regression()
    state = o.setup(o.Descent(0.1), model)
    want_model = {"w": model["w"].copy()}
    want_state = o.setup(o.Descent(0.1), want_model)
    want = []
    for x, y in data:
        loss, grad = value_and_grad(want_model, x, y)
        want.append(loss)
        want_state, want_model = o.update_(want_state, want_model, grad)
    losses = o.train_(value_and_grad, model, data, state)
    assert losses == want and losses[-1] < losses[0] / 10
    assert np.array_equal(model["w"], want_model["w"])


def test_a_batch_that_is_not_a_tuple_is_one_argument():
    seen = []

    def value_and_grad(model, batch):
        seen.append(batch)
        return 0.0, {"w": np.ones(2)}

    model = {"w": np.zeros(2)}
    batches = [np.ones(3), [1, 2]]
    o.train_(value_and_grad, model, batches, o.setup(o.Descent(0.5), model))
    assert seen[0] is batches[0] and seen[1] is batches[1]
    assert np.array_equal(model["w"], [-1.0, -1.0])


def test_the_callback_sees_each_step_and_may_stop():
    value_and_grad, model, data = regression()
    seen = []

    def callback(step, loss):
        seen.append((step, loss))
        return step < 4 and None  # None goes on; False at step 4 stops

    losses = o.train_(value_and_grad, model, data, o.setup(o.Adam(), model), callback=callback)
    assert len(losses) == 5 and [s for s, _ in seen] == [0, 1, 2, 3, 4]
    assert [loss for _, loss in seen] == losses


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_progress_bar_with_the_running_loss_on_a_terminal(monkeypatch):
    value_and_grad, model, data = regression()
    out = Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    losses = o.train_(value_and_grad, model, data, o.setup(o.Descent(0.1), model))
    text = out.getvalue()
    assert "20/20" in text
    assert f"loss={np.mean(losses):.4g}" in text


def test_no_bar_without_a_terminal_or_without_tqdm(monkeypatch):
    value_and_grad, model, data = regression()
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    o.train_(value_and_grad, model, data, o.setup(o.Descent(0.1), model))
    assert out.getvalue() == ""
    out = Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(o.train, "tqdm", None)  # as if tqdm were not installed
    losses = o.train_(value_and_grad, model, data, o.setup(o.Descent(0.1), model))
    assert out.getvalue() == "" and len(losses) == 20
