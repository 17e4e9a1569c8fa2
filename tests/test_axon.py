"""optimisers.axon: each function against a NumPy float64 transcription of
Axon's formula as composed in Axon (FORMULAS.md §1.1, signs flipped so that
the update is subtracted), with every option away from its default; the
signatures of API.md; errors naming the option."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import optimisers as o
from optimisers import axon

STEPS = 12


def trajectory(rule, x0, grads):
    state, x = o.setup(rule, x0.copy()), x0.copy()
    xs = []
    for g in grads:
        state, x = o.update(state, x, g)
        xs.append(x)
    return xs


def inputs(seed=0, shape=(3, 7)):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) * 10.0 ** rng.uniform(-4, 1) for _ in range(STEPS)]
    grads[3] = np.zeros(shape)  # a zero gradient
    return x0, grads


def reference(step, x0, grads):
    """Run `step(state, x, g, t) -> (state, update)` (t from 1) from state None."""
    x, state, xs = x0.copy(), None, []
    for t, g in enumerate(grads, start=1):
        state, u = step(state, x, g, t)
        x = x - u
        xs.append(x)
    return xs


def moments(state, g, b1, b2, start=0.0):
    m, v = state if state is not None else (np.full_like(g, start), np.full_like(g, start))
    return b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2


def check(rule, step, rtol=1e-12, seed=0):
    x0, grads = inputs(seed)
    for got, want in zip(trajectory(rule, x0, grads), reference(step, x0, grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-14)


def test_adam():
    lr, b1, b2, eps, er = 0.02, 0.8, 0.99, 1e-6, 1e-4

    def step(s, x, g, t):
        m, v = moments(s, g, b1, b2)
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        return (m, v), lr * mh / (np.sqrt(vh + er) + eps)

    check(axon.adam(lr, b1=b1, b2=b2, eps=eps, eps_root=er), step)


def test_adam_default_eps_root_is_inside_the_root():
    """Axon's 1e-15 halves a step where v̂ is 1e-16 (FORMULAS.md §1.1)."""
    x, g = np.zeros(1), np.full(1, 1e-8)
    _, a = o.update(o.setup(axon.adam(1.0, eps=0.0), x), x, g)
    _, b = o.update(o.setup(axon.adam(1.0, eps=0.0, eps_root=0.0), x), x, g)
    np.testing.assert_allclose(a / b, 1e-8 / np.sqrt(1e-16 + 1e-15), rtol=1e-12)


def test_adamw():
    lr, b1, b2, eps, er, decay = 0.02, 0.8, 0.99, 1e-6, 1e-4, 0.3

    def step(s, x, g, t):
        m, v = moments(s, g, b1, b2)
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        return (m, v), lr * (mh / (np.sqrt(vh + er) + eps) + decay * x)

    check(axon.adamw(lr, b1=b1, b2=b2, eps=eps, eps_root=er, decay=decay), step)


def test_adabelief_takes_the_second_moment_of_the_surprise():
    lr, b1, b2, eps, er = 0.02, 0.8, 0.99, 1e-6, 1e-4

    def step(s, x, g, t):
        m, v = s if s is not None else (np.zeros_like(g), np.zeros_like(g))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g - m) ** 2
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        return (m, v), lr * mh / (np.sqrt(vh + er) + eps)

    check(axon.adabelief(lr, b1=b1, b2=b2, eps=eps, eps_root=er), step)


def test_adagrad_starts_at_a_tenth_with_eps_inside_the_root():
    lr, eps = 0.3, 1e-3

    def step(s, x, g, t):
        s = (0.1 if s is None else s) + g**2
        return s, lr * g / np.sqrt(s + eps)

    check(axon.adagrad(lr, eps=eps), step)


@pytest.mark.parametrize("threshold", [5.0, 4.5, 30.0])
def test_radam_rectifies_from_its_threshold(threshold):
    lr, b1, b2, eps, er = 0.02, 0.8, 0.9, 1e-6, 1e-4
    rho_inf = 2 / (1 - b2) - 1  # the paper's, from b2

    def step(s, x, g, t):
        m, v = moments(s, g, b1, b2)
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            return (m, v), lr * r * mh / (np.sqrt(vh + er) + eps)
        return (m, v), lr * mh

    check(axon.radam(lr, b1=b1, b2=b2, eps=eps, eps_root=er, threshold=threshold), step)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize(("momentum", "nesterov"), [(None, False), (0.6, False), (0.6, True)])
def test_rmsprop(centered, momentum, nesterov):
    lr, decay, eps, scale = 0.05, 0.8, 1e-4, 0.5

    def step(s, x, g, t):
        v, m, b = s if s is not None else (np.full_like(g, scale), np.zeros_like(g), 0 * g)
        v = decay * v + (1 - decay) * g**2
        m = decay * m + (1 - decay) * g
        d = lr * g / np.sqrt((v - m**2 if centered else v) + eps)  # the lr, then the trace
        if momentum is None:
            return (v, m, b), d
        b = momentum * b + d
        return (v, m, b), (momentum * b + d if nesterov else b)

    rule = axon.rmsprop(
        lr, centered=centered, momentum=momentum, nesterov=nesterov,
        initial_scale=scale, decay=decay, eps=eps,
    )  # fmt: skip
    check(rule, step)


@pytest.mark.parametrize(("momentum", "nesterov"), [(None, False), (0.7, False), (0.7, True)])
def test_sgd(momentum, nesterov):
    lr = 0.05

    def step(b, x, g, t):
        if momentum is None:
            return b, lr * g
        b = momentum * (0 * g if b is None else b) + g  # the trace, then the lr
        return b, lr * (g + momentum * b if nesterov else b)

    check(axon.sgd(lr, momentum=momentum, nesterov=nesterov), step)


@pytest.mark.parametrize("eps_root", [0.0, 1e-4])
def test_yogi(eps_root):
    lr, b1, b2, eps, start = 0.05, 0.8, 0.99, 1e-3, 1e-2

    def step(s, x, g, t):
        m, v = s if s is not None else (np.full_like(g, start), np.full_like(g, start))
        m = b1 * m + (1 - b1) * g
        v = v - (1 - b2) * np.sign(v - g**2) * g**2
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        return (m, v), lr * mh / (np.sqrt(vh + eps_root) + eps)

    rule = axon.yogi(lr, initial_accumulator_value=start, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    assert type(rule) is (o.Yogi if eps_root == 0 else axon.AxonYogi)
    check(rule, step)


@pytest.mark.parametrize(
    ("eps_root", "min_norm"), [(0.0, 0.0), (1e-4, 0.0), (1e-4, 6.0), (0.0, 6.0)]
)
def test_lamb(eps_root, min_norm):
    """min_norm 6 is above both norms (about 4.6) at the first steps."""
    lr, b1, b2, eps, decay = 0.02, 0.8, 0.99, 1e-6, 0.3

    def phi(n):
        return n if n > min_norm else min_norm

    def step(s, x, g, t):
        m, v = moments(s, g, b1, b2)
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        a = mh / (np.sqrt(vh + eps_root) + eps) + decay * x
        nx, na = phi(np.linalg.norm(x)), phi(np.linalg.norm(a))
        ratio = 1.0 if nx == 0 or na == 0 else nx / na
        return (m, v), lr * ratio * a

    options = {"b1": b1, "b2": b2, "eps": eps, "decay": decay, "min_norm": min_norm}
    rule = axon.lamb(lr, eps_root=eps_root, **options)
    assert type(rule) is (o.Lamb if eps_root == 0 else o.OptimiserChain)
    check(rule, step)


def test_lamb_is_lamb_at_axons_documented_defaults():
    assert axon.lamb() == o.Lamb()
    assert axon.lamb(0.1, decay=0.2, min_norm=1.0) == o.Lamb(0.1, lambda_=0.2, min_norm=1.0)


def test_noisy_sgd_is_noisysgd_with_eta_the_variance():
    rule = axon.noisy_sgd(0.05, eta=0.2, gamma=0.6, seed=9)
    assert rule == o.NoisySGD(0.05, variance=0.2, gamma=0.6, seed=9)
    assert axon.noisy_sgd() == o.NoisySGD(0.01, 0.1, 0.55, seed=0)


# API.md's signatures: (name, default learning rate, keyword options with defaults).
SIGNATURES = {
    "adabelief": (1e-3, {"b1": 0.9, "b2": 0.999, "eps": 0.0, "eps_root": 1e-16}),
    "adagrad": (1e-3, {"eps": 1e-7}),
    "adam": (1e-3, {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 1e-15}),
    "adamw": (1e-3, {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0, "decay": 0.0}),
    "lamb": (
        1e-2,
        {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0, "decay": 0.0, "min_norm": 0.0},
    ),
    "noisy_sgd": (1e-2, {"eta": 0.1, "gamma": 0.55, "seed": 0}),
    "radam": (
        1e-3,
        {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0, "threshold": 5.0},
    ),
    "rmsprop": (
        1e-2,
        {
            "centered": False,
            "momentum": None,
            "nesterov": False,
            "initial_scale": 0.0,
            "decay": 0.9,
            "eps": 1e-8,
        },
    ),
    "sgd": (1e-2, {"momentum": None, "nesterov": False}),
    "yogi": (
        1e-2,
        {"initial_accumulator_value": 0.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0},
    ),
}


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_signatures_are_api_mds(name):
    lr, options = SIGNATURES[name]
    params = list(inspect.signature(getattr(axon, name)).parameters.values())
    assert params[0].name == "learning_rate" and params[0].default == lr
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert {p.name: p.default for p in params[1:]} == options
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    assert isinstance(getattr(axon, name)(), o.AbstractRule)


@pytest.mark.parametrize(
    ("call", "option", "error"),
    [
        (lambda: axon.sgd(nesterov=True), "nesterov", ValueError),
        (lambda: axon.sgd(momentum=1.0), "momentum", ValueError),
        (lambda: axon.sgd(momentum=-0.1), "momentum", ValueError),
        (lambda: axon.rmsprop(nesterov=True), "nesterov", ValueError),
        (lambda: axon.rmsprop(momentum=1.5), "momentum", ValueError),
        (lambda: axon.rmsprop(decay=1.0), "decay", ValueError),
        (lambda: axon.rmsprop(initial_scale=-1.0), "initial_scale", ValueError),
        (lambda: axon.rmsprop(centered=1), "centered", TypeError),
        (lambda: axon.adamw(decay=-0.1), "decay", ValueError),
        (lambda: axon.lamb(min_norm=-1.0), "min_norm", ValueError),
        (lambda: axon.lamb(eps_root=-1.0), "eps_root", ValueError),
        (lambda: axon.adam(-1e-3), "learning_rate", ValueError),
        (lambda: axon.adam(b1=1.0), "b1", ValueError),
        (lambda: axon.adam(b2="0.9"), "b2", TypeError),
        (lambda: axon.adam(eps_root=-1.0), "eps_root", ValueError),
        (lambda: axon.radam(threshold="5"), "threshold", TypeError),
        (lambda: axon.yogi(eps=-1e-8), "eps", ValueError),
        (lambda: axon.noisy_sgd(eta=-0.1), "eta", ValueError),
        (lambda: axon.noisy_sgd(seed=-1), "seed", ValueError),
    ],
)
def test_bad_options_are_named(call, option, error):
    with pytest.raises(error, match=option):
        call()


def test_rules_are_values():
    import pickle

    rules = (axon.rmsprop(centered=True, momentum=0.5), axon.adamw(decay=0.1))
    for rule in (*rules, axon.lamb(eps_root=1e-4, min_norm=1.0)):
        assert pickle.loads(pickle.dumps(rule)) == rule
        assert eval(repr(rule), vars(axon) | vars(o)) == rule
