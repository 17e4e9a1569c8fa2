"""Old Flux's stateful optimisers (optimisers.flux): the seed's walk-through
as written, the decay's placement in each chain, and errors naming the option."""

from __future__ import annotations

import numpy as np
import pytest

from optimisers import flux
from optimisers.flux import ADAM, SGD, Momentum, Nesterov, Param


def test_the_seeds_linear_regression_walk_through():
    rng = np.random.default_rng(0)
    W = Param(rng.random((2, 5)))
    b = Param(rng.random(2))

    def predict(x):
        return W.data @ x + b.data

    def loss(x, y):
        return np.sum((predict(x) - y) ** 2)

    x, y = rng.random(5), rng.random(2)  # dummy data
    l0 = loss(x, y)
    # back!(l): the gradients of the loss, by hand
    r = 2 * (predict(x) - y)
    W.grad += np.outer(r, x)
    b.grad += r
    W0, b0, arrays = W.data.copy(), b.data.copy(), (W.data, b.data)
    gW, gb = W.grad.copy(), b.grad.copy()

    opt = SGD([W, b], 0.1)  # gradient descent with learning rate 0.1
    opt()  # carry out the update, modifying W and b

    assert loss(x, y) < l0
    np.testing.assert_allclose(W.data, W0 - 0.1 * gW, rtol=1e-15)
    np.testing.assert_allclose(b.data, b0 - 0.1 * gb, rtol=1e-15)
    assert W.data is arrays[0] and b.data is arrays[1]  # trained in place
    assert not W.grad.any() and not b.grad.any()  # and the gradients zeroed


def run(make, steps=6, dtype=np.float64):
    """Parameters after each of `steps` calls of the optimiser, with fresh
    gradients filled in before each, and those gradients."""
    rng = np.random.default_rng(3)
    ps = [Param(rng.standard_normal(4).astype(dtype)), Param(rng.standard_normal((2, 3)))]
    opt = make(ps)
    grads, xs = [], []
    for _ in range(steps):
        g = [rng.standard_normal(p.data.shape).astype(p.data.dtype) for p in ps]
        for p, gi in zip(ps, g, strict=True):
            p.grad[...] = gi
        grads.append(g)
        opt()
        xs.append([p.data.copy() for p in ps])
        assert not any(p.grad.any() for p in ps)
    return xs, grads


def start():
    rng = np.random.default_rng(3)
    return [rng.standard_normal(4), rng.standard_normal((2, 3))]


def inverse_decay(decay, t):
    """Flux 0.4-0.6: step t (from 1) is scaled by 1/(1 + decay·(t-1))."""
    return 1 / (1 + decay * (t - 1))


@pytest.mark.parametrize("decay", [0.0, 0.3])
def test_sgd_decays_the_gradient(decay):
    xs, grads = run(lambda ps: SGD(ps, 0.2, decay=decay))
    x = start()
    for t, (g, got) in enumerate(zip(grads, xs, strict=True), start=1):
        x = [xi - 0.2 * inverse_decay(decay, t) * gi for xi, gi in zip(x, g, strict=True)]
        for a, b in zip(got, x, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.mark.parametrize("decay", [0.0, 0.3])
def test_momentum_decays_the_gradient_entering_the_velocity(decay):
    eta, rho = 0.05, 0.7
    xs, grads = run(lambda ps: Momentum(ps, eta, rho=rho, decay=decay))
    x, v = start(), [np.zeros(4), np.zeros((2, 3))]
    for t, (g, got) in enumerate(zip(grads, xs, strict=True), start=1):
        # old Flux: v ← ρv − η g', x += v
        v = [rho * vi - eta * inverse_decay(decay, t) * gi for vi, gi in zip(v, g, strict=True)]
        x = [xi + vi for xi, vi in zip(x, v, strict=True)]
        for a, b in zip(got, x, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("decay", [0.0, 0.3])
def test_nesterov_decays_the_gradient_entering_the_velocity(decay):
    eta, rho = 0.05, 0.7
    xs, grads = run(lambda ps: Nesterov(ps, eta, rho=rho, decay=decay))
    x, v = start(), [np.zeros(4), np.zeros((2, 3))]
    for t, (g, got) in enumerate(zip(grads, xs, strict=True), start=1):
        # old Flux: d = ρ²v − (1+ρ)η g'; v ← ρv − η g'; x += d
        gd = [inverse_decay(decay, t) * gi for gi in g]
        d = [rho**2 * vi - (1 + rho) * eta * gi for vi, gi in zip(v, gd, strict=True)]
        v = [rho * vi - eta * gi for vi, gi in zip(v, gd, strict=True)]
        x = [xi + di for xi, di in zip(x, d, strict=True)]
        for a, b in zip(got, x, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("decay", [0.0, 0.3])
def test_adam_decays_the_final_update(decay):
    eta, b1, b2, eps = 0.01, 0.8, 0.99, 1e-6
    xs, grads = run(lambda ps: ADAM(ps, eta, beta1=b1, beta2=b2, epsilon=eps, decay=decay))
    x = start()
    m, v = [np.zeros_like(a) for a in x], [np.zeros_like(a) for a in x]
    for t, (g, got) in enumerate(zip(grads, xs, strict=True), start=1):
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g, strict=True)]
        v = [b2 * vi + (1 - b2) * gi**2 for vi, gi in zip(v, g, strict=True)]
        u = [
            eta * mi / (1 - b1**t) / (np.sqrt(vi / (1 - b2**t)) + eps)
            for mi, vi in zip(m, v, strict=True)
        ]
        x = [xi - ui * inverse_decay(decay, t) for xi, ui in zip(x, u, strict=True)]
        for a, b in zip(got, x, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_float32_parameters_stay_float32_and_in_place():
    xs, _ = run(lambda ps: ADAM(ps), dtype=np.float32)
    assert xs[-1][0].dtype == np.float32


def test_defaults_are_old_fluxs():
    p = [Param(np.zeros(2))]
    assert repr(SGD(p).rule) == "OptimiserChain(Descent(eta=0.1))"
    assert repr(Momentum(p).rule) == "OptimiserChain(Momentum(eta=0.01, rho=0.9))"
    assert repr(Nesterov(p).rule) == "OptimiserChain(Nesterov(eta=0.01, rho=0.9))"
    assert repr(ADAM(p).rule) == (
        "OptimiserChain(Adam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-08))"
    )
    assert repr(ADAM(p, decay=0.1).rule).endswith("InvDecay(gamma=0.1))")


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda p: SGD(p, decay=-0.1), "decay"),
        (lambda p: SGD(p, -1.0), "eta"),
        (lambda p: Momentum(p, rho=1.0), "rho"),
        (lambda p: Momentum(p, rho=-0.1), "rho"),
        (lambda p: Nesterov(p, decay=-1), "decay"),
        (lambda p: ADAM(p, beta1=1.5), "beta1"),
        (lambda p: ADAM(p, beta2=-0.5), "beta2"),
        (lambda p: ADAM(p, epsilon=-1e-8), "epsilon"),
    ],
)
def test_bad_options_are_named(make, option):
    with pytest.raises(ValueError, match=option):
        make([Param(np.zeros(2))])


def test_bad_params_are_named():
    with pytest.raises(TypeError, match=r"params\[1\]"):
        SGD([Param(np.zeros(2)), np.zeros(2)])
    with pytest.raises(TypeError, match="Param"):
        Param(np.zeros(2, dtype=np.int64))
    with pytest.raises(TypeError, match="decay"):
        SGD([Param(np.zeros(2))], decay="0.1")
    assert flux.__all__ == ["ADAM", "SGD", "Momentum", "Nesterov", "Param"]
