"""optimisers.torch: the Optimizer against torch's own optimisers, and the
module trees of NumPy views."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch

import optimisers as o
import optimisers.torch as ot

DTYPES = [torch.float32, torch.float64]


def _params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), ()]
    return [torch.randn(s, generator=g, dtype=dtype, requires_grad=True) for s in shapes]


def _grads(params, step, seed=1):
    g = torch.Generator().manual_seed(seed * 1000 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def _run(opt, params, steps, schedule=None):
    for t in range(steps):
        for p, g in zip(params, _grads(params, t)):
            p.grad = g.clone()
        opt.step()
        if schedule is not None:
            schedule.step()
    return [p.detach().clone() for p in params]


# torch's optimiser, ours, and why they agree. Where the formulas differ in
# the order of operations only (Adam: torch divides √v by √(1-β₂ᵗ), we take
# √(v/(1-β₂ᵗ))) the results agree to rounding, hence the tolerances.
AGREEING = {
    "adam": (
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-7),
        o.Adam(0.01, (0.8, 0.99), 1e-7),
    ),
    "adamw": (
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
        o.AdamW(0.01, lambda_=0.1),
    ),
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.05), o.Descent(0.05)),
    # torch: b = μb + g, x -= ηb; ours: v = ρv + ηg, x -= v (v = ηb at a fixed η).
    "momentum": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), o.Momentum(0.05, 0.9)),
    "nesterov": (
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
        o.Nesterov(0.05, 0.9),
    ),
    "rmsprop": (
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8),
        o.RMSProp(0.01, 0.9, 1e-8),
    ),
    "rmsprop-centred": (
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8, centered=True),
        o.RMSProp(0.01, 0.9, 1e-8, centred=True),
    ),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(AGREEING))
def test_against_torch(name, dtype):
    make_torch, rule = AGREEING[name]
    ours, theirs = _params(dtype), _params(dtype)
    got = _run(ot.Optimizer(ours, rule), ours, 200)
    want = _run(make_torch(theirs), theirs, 200)
    rtol, atol = (2e-5, 1e-6) if dtype == torch.float32 else (1e-12, 1e-14)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=atol)
    assert not torch.equal(got[0], _params(dtype)[0])  # it trained


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_same_bits_as_update_(dtype):
    params = _params(dtype)
    views = [p.detach().numpy().copy() for p in params]
    rule = o.OptimiserChain(o.ClipNorm(1.0), o.Adam(0.01))
    state = o.setup(rule, views)
    opt = ot.Optimizer(params, rule)
    for t in range(20):
        grads = _grads(params, t)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        o.update_(state, views, [g.numpy() for g in grads])
    for p, v in zip(params, views):
        assert np.array_equal(p.detach().numpy(), v)


def test_groups_with_their_own_rules():
    a, b = _params(torch.float64, 0), _params(torch.float64, 1)
    a2, b2 = (
        [p.detach().clone().requires_grad_() for p in a],
        [p.detach().clone().requires_grad_() for p in b],
    )
    opt = ot.Optimizer([{"params": a, "rule": o.Adam(0.01)}, {"params": b}], o.Momentum(0.02))
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.02]
    alone = [ot.Optimizer(a2, o.Adam(0.01)), ot.Optimizer(b2, o.Momentum(0.02))]
    for t in range(30):
        for p, q, g in zip(a + b, a2 + b2, _grads(a + b, t)):
            p.grad, q.grad = g, g.clone()
        opt.step()
        for each in alone:
            each.step()
    for p, q in zip(a + b, a2 + b2):
        assert torch.equal(p, q)


def test_a_group_needs_a_rule_with_a_learning_rate():
    with pytest.raises(TypeError, match="no rule"):
        ot.Optimizer(_params(torch.float32))
    with pytest.raises(TypeError, match="no learning rate"):
        ot.Optimizer(_params(torch.float32), o.ClipGrad(1.0))
    with pytest.raises(TypeError, match="optimisation rule"):
        ot.Optimizer(_params(torch.float32), "adam")


def test_lr_given_in_a_group_sets_eta():
    opt = ot.Optimizer([{"params": _params(torch.float32), "lr": 0.5}], o.Adam(0.1))
    assert opt.param_groups[0]["rule"] == o.Adam(0.5)


def test_zero_grad():
    params = _params(torch.float32)
    opt = ot.Optimizer(params, o.Adam())
    for p in params:
        p.grad = torch.ones_like(p)
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.zero_grad(set_to_none=False)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lr_scheduler(dtype):
    """A StepLR halving η every 10 steps: torch's Adam and ours agree (Adam's
    update is linear in η, so the two see the same η each step)."""
    ours, theirs = _params(dtype), _params(dtype)
    mine = ot.Optimizer(ours, o.Adam(0.02))
    torchs = torch.optim.Adam(theirs, lr=0.02)
    got = _run(mine, ours, 50, torch.optim.lr_scheduler.StepLR(mine, 10, gamma=0.5))
    want = _run(torchs, theirs, 50, torch.optim.lr_scheduler.StepLR(torchs, 10, gamma=0.5))
    rtol = 2e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=1e-7)
    assert mine.param_groups[0]["lr"] == 0.02 * 0.5**5
    # The rule follows lr at the next step, or state_dict.
    assert mine.state_dict()["param_groups"][0]["rule"]["eta"] == 0.02 * 0.5**5
    assert mine.param_groups[0]["rule"].eta == 0.02 * 0.5**5


def test_lambda_lr_each_step_matches_update_():
    params = _params(torch.float64)
    views = [p.detach().numpy().copy() for p in params]
    state = o.setup(o.Adam(0.01), views)
    opt = ot.Optimizer(params, o.Adam(0.01))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    for t in range(10):
        grads = _grads(params, t)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        o.update_(state, views, [g.numpy() for g in grads])
        sched.step()
        o.adjust_(state, eta=0.01 / (2 + t))
    for p, v in zip(params, views):
        assert np.array_equal(p.detach().numpy(), v)


@pytest.mark.parametrize(
    "rule",
    [o.Adam(0.01), o.OptimiserChain(o.ClipNorm(1.0), o.AdamW(0.01, lambda_=0.1)), o.Momentum()],
    ids=repr,
)
def test_state_dict_round_trip_through_torch_save(rule):
    params = _params(torch.float32)
    opt = ot.Optimizer([{"params": params[:2]}, {"params": params[2:], "lr": 0.003}], rule)
    _run(opt, params, 7)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer)  # weights_only=True by default
    assert set(saved["state"]) == {0, 1, 2, 3}
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1], [2, 3]]
    assert saved["param_groups"][1]["lr"] == 0.003

    clones = [p.detach().clone().requires_grad_() for p in params]
    fresh = ot.Optimizer([{"params": clones[:2]}, {"params": clones[2:]}], o.Descent())
    fresh.load_state_dict(saved)
    assert fresh.param_groups[1]["rule"] == opt.param_groups[1]["rule"]
    _run(opt, params, 5)
    _run(fresh, clones, 5)
    for p, q in zip(params, clones):
        assert torch.equal(p, q)  # bit for bit


def test_load_state_dict_refuses_another_layout():
    params = _params(torch.float32)
    opt = ot.Optimizer(params, o.Adam())
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="parameters"):
        ot.Optimizer(params[:2], o.Adam()).load_state_dict(saved)
    other = ot.Optimizer([torch.zeros(p.shape[::-1], requires_grad=True) for p in params], o.Adam())
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(saved)


def test_grad_none_and_frozen_are_not_trained():
    params = _params(torch.float32)
    before = [p.detach().clone() for p in params]
    params[3].requires_grad_(False)
    opt = ot.Optimizer(params, o.Adam(0.1))
    params[0].grad = torch.ones_like(params[0])
    params[2].grad = torch.ones_like(params[2])
    params[3].grad = torch.ones_like(params[3])  # frozen: ignored
    opt.step()
    assert not torch.equal(params[0], before[0])
    assert torch.equal(params[1], before[1])
    assert not torch.equal(params[2], before[2])
    assert torch.equal(params[3], before[3])
    # The skipped ones' state did not advance: their first step is Adam's first step.
    params[1].grad = torch.ones_like(params[1])
    opt.step()
    np.testing.assert_allclose(params[1].detach().numpy(), before[1].numpy() - 0.1, rtol=1e-6)


def test_tied_parameters_once():
    lin = torch.nn.Linear(4, 4, bias=False)
    model = torch.nn.Sequential(lin, torch.nn.Tanh(), lin)
    ours = list(model.parameters())
    assert len(ours) == 1
    opt = ot.Optimizer([lin.weight, lin.weight], o.Descent(0.1))  # listed twice by hand
    assert len(opt.param_groups[0]["params"]) == 1
    before = lin.weight.detach().clone()
    model(torch.ones(2, 4)).sum().backward()
    grad = lin.weight.grad.clone()
    opt.step()
    assert torch.equal(lin.weight.detach(), before - 0.1 * grad)


def test_tensors_that_cannot_be_viewed_are_refused_by_name():
    good = torch.zeros(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[1\].*bfloat16"):
        ot.Optimizer([good, torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)], o.Adam())
    sparse = torch.zeros(3).to_sparse().requires_grad_()
    with pytest.raises(TypeError, match="layout"):
        ot.Optimizer([sparse], o.Adam())
    with pytest.raises(TypeError, match="floating"):
        ot.Optimizer([torch.zeros(3, dtype=torch.int64)], o.Adam())
    with pytest.raises(TypeError, match="complex"):
        ot.Optimizer([torch.zeros(3, dtype=torch.complex64, requires_grad=True)], o.Adam())


def test_sparse_gradient_is_refused_by_name():
    p = torch.zeros(3, requires_grad=True)
    opt = ot.Optimizer([p], o.Adam())
    p.grad = torch.ones(3).to_sparse()
    with pytest.raises(TypeError, match=r"gradient of param_groups\[0\]\['params'\]\[0\]"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(3))


def test_float16_and_non_contiguous_tensors_train_like_their_copies():
    base = torch.randn(6, 4, dtype=torch.float32)
    strided = base.t().requires_grad_()  # a non-contiguous leaf
    half = torch.randn(5, dtype=torch.float16, requires_grad=True)
    copies = [strided.detach().numpy().copy(), half.detach().numpy().copy()]
    state = o.setup(o.Adam(0.01), copies)
    opt = ot.Optimizer([strided, half], o.Adam(0.01))
    for t in range(5):
        grads = _grads([strided, half], t)
        strided.grad, half.grad = grads
        opt.step()
        o.update_(state, copies, [g.numpy() for g in grads])
    assert np.array_equal(strided.detach().numpy(), copies[0])
    assert np.array_equal(half.detach().numpy(), copies[1])


def test_parameter_memory_replaced_is_followed():
    p = torch.zeros(3, requires_grad=True)
    opt = ot.Optimizer([p], o.Descent(1.0))
    p.grad = torch.ones(3)
    opt.step()
    p.data = torch.full((3,), 5.0)  # new memory: the old view must not be trained
    opt.step()
    assert torch.equal(p.detach(), torch.full((3,), 4.0))


def test_closure_and_loss():
    p = torch.tensor([3.0], requires_grad=True)
    opt = ot.Optimizer([p], o.Descent(0.25))

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 9.0
    assert p.item() == 1.5


def test_module_trees():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    tree = ot.parameters(model)
    assert set(tree) == {"0", "2"} and set(tree["0"]) == {"weight", "bias"}
    assert np.shares_memory(tree["0"]["weight"], model[0].weight.detach().numpy())
    assert ot.gradients(model) == {
        "0": {"weight": None, "bias": None},
        "2": {"weight": None, "bias": None},
    }
    model(torch.ones(4, 3)).sum().backward()
    grads = ot.gradients(model)
    assert np.shares_memory(grads["2"]["bias"], model[2].bias.grad.numpy())
    state = o.setup(o.Descent(0.5), tree)
    want = model[2].bias.detach() - 0.5 * model[2].bias.grad
    o.update_(state, tree, grads)
    assert torch.equal(model[2].bias.detach(), want)
    flat, re = o.destructure(tree)
    assert flat.size == sum(p.numel() for p in model.parameters())
    assert np.array_equal(re(flat)["0"]["weight"], model[0].weight.detach().numpy())


def _example(name):
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_example_reduced():
    assert _example("train_torch").main(["--steps", "150"]) > 0.85


def test_jax_example_reduced():
    assert _example("train_jax").main(["--steps", "150"]) < 0.05


def test_gradients_written_in_place_between_steps():
    """zero_grad(set_to_none=False) keeps the gradient tensors: the views of
    the last step are reused, and must see the new values."""
    params = _params(torch.float64)
    views = [p.detach().numpy().copy() for p in params]
    state = o.setup(o.Adam(0.01), views)
    opt = ot.Optimizer(params, o.Adam(0.01))
    for p in params:
        p.grad = torch.zeros_like(p)
    for t in range(5):
        opt.zero_grad(set_to_none=False)
        grads = _grads(params, t)
        for p, g in zip(params, grads):
            p.grad += g  # as backward accumulates
        opt.step()
        o.update_(state, views, [g.numpy() for g in grads])
    for p, v in zip(params, views):
        assert np.array_equal(p.detach().numpy(), v)
    # Frozen later, its gradient tensor kept: no longer trained.
    params[0].requires_grad_(False)
    before = params[0].detach().clone()
    opt.step()
    assert torch.equal(params[0], before)


def test_a_group_added_later_leaves_the_others_state():
    params = _params(torch.float64)
    views = [p.detach().numpy().copy() for p in params]
    state = o.setup(o.Adam(0.01), views[:2])
    opt = ot.Optimizer(params[:2], o.Adam(0.01))
    late_rule = o.Momentum(0.1)
    late_state = o.setup(late_rule, views[2:])
    for t in range(6):
        grads = _grads(params, t)
        for p, g in zip(params, grads):
            p.grad = g
        if t == 3:
            opt.param_groups[0]["lr"] = 0.005  # not yet stepped when the group comes
            o.adjust_(state, eta=0.005)
            opt.add_param_group({"params": params[2:], "rule": late_rule})
        opt.step()
        o.update_(state, views[:2], [g.numpy() for g in grads[:2]])
        if t >= 3:
            o.update_(late_state, views[2:], [g.numpy() for g in grads[2:]])
    for p, v in zip(params, views):
        assert np.array_equal(p.detach().numpy(), v)
