"""NoisySGD's noise: its distribution, and that it is a pure function of the
seed, the leaf, the step and the element (threads, update/update_, checkpoints)."""

from __future__ import annotations

import pickle

import numpy as np
import oracle
import pytest

import optimisers as o

MILLION = 1_000_000


def noise_steps(rule, n, steps, dtype=np.float64):
    """The noise ξ of each of `steps` steps on one leaf of `n` elements, with
    zero gradients and η = 1 (so that the update is ξ itself)."""
    x = np.zeros(n, dtype)
    state = o.setup(rule, x)
    out = []
    for _ in range(steps):
        before = x.copy()
        state, x = o.update_(state, x, np.zeros_like(x))
        out.append(before - x)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_and_variance_follow_variance_over_t_to_the_gamma(dtype):
    variance, gamma = 0.3, 0.55
    xis = noise_steps(o.NoisySGD(1.0, variance, gamma, seed=17), MILLION, 4, dtype)
    for t, xi in enumerate(xis, start=1):
        want = variance / t**gamma
        xi = xi.astype(np.float64)
        # standard errors: √(want/n) for the mean, want·√(2/n) for the variance
        assert abs(xi.mean()) < 5 * np.sqrt(want / MILLION), t
        assert abs(xi.var() / want - 1) < 5 * np.sqrt(2 / MILLION), t


def test_the_update_is_eta_times_the_noisy_gradient():
    x, g = np.zeros(1000), np.full(1000, 2.0)
    rule = o.NoisySGD(0.5, 0.2, 0.55, seed=4)
    state = o.setup(rule, x)
    _, x1 = o.update(state, x, g)
    xi = oracle.noisysgd_normals(4, 0, 1, 1000) * np.sqrt(0.2)
    np.testing.assert_allclose(-x1, 0.5 * (g + xi), rtol=1e-14)


def test_same_bits_for_any_thread_count_and_either_update(kernel_settings):
    rule = o.NoisySGD(0.1, 0.5, seed=99)
    model = {"big": np.linspace(-1, 1, 300_001), "small": np.ones(5, np.float32)}
    grad = {"big": np.full(300_001, 0.25), "small": np.full(5, 0.5, np.float32)}
    results = []
    for threads in (1, 2, 3):
        kernel_settings.set_num_threads(threads)
        m = {k: v.copy() for k, v in model.items()}
        state = o.setup(rule, m)
        for _ in range(3):
            state, m = o.update_(state, m, grad)
        results.append(m)
    kernel_settings.set_num_threads(2)
    state, m = o.setup(rule, model), model
    for _ in range(3):
        state, m = o.update(state, m, grad)
    results.append(m)
    for other in results[1:]:
        for k in model:
            assert np.array_equal(other[k], results[0][k]), k


def test_every_element_draws_from_its_own_index():
    """A leaf cut into tasks on threads draws, at each element, the normal of
    that element's index: the oracle computes them all at once."""
    n = 262_147
    (xi,) = noise_steps(o.NoisySGD(1.0, 1.0, seed=5), n, 1)
    np.testing.assert_allclose(xi, oracle.noisysgd_normals(5, 0, 1, n), rtol=1e-14, atol=1e-300)


def test_a_pickled_state_resumes_bit_for_bit():
    rule = o.NoisySGD(0.1, seed=8)
    model = [np.zeros(1000), np.zeros(10)]
    grad = [np.ones(1000), np.ones(10)]
    state = o.setup(rule, model)
    straight = [a.copy() for a in model]
    s1 = o.setup(rule, straight)
    for _ in range(5):
        s1, straight = o.update_(s1, straight, grad)
    for _ in range(2):
        state, model = o.update_(state, model, grad)
    state, model = pickle.loads(pickle.dumps((state, model)))
    for _ in range(3):
        state, model = o.update_(state, model, grad)
    assert state[0].state == (6, 0) and state[1].state == (6, 1)
    for a, b in zip(model, straight, strict=True):
        assert np.array_equal(a, b)


def corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def test_seeds_leaves_and_steps_are_independent():
    n = MILLION
    bound = 5 / np.sqrt(n)  # five standard errors of a correlation of zero
    (a,) = noise_steps(o.NoisySGD(1.0, 1.0, seed=0), n, 1)
    (b,) = noise_steps(o.NoisySGD(1.0, 1.0, seed=1), n, 1)
    assert abs(corr(a, b)) < bound
    # two leaves of one setup
    model = [np.zeros(n), np.zeros(n)]
    state = o.setup(o.NoisySGD(1.0, 1.0, seed=0), model)
    assert [leaf.state for leaf in state] == [(1, 0), (1, 1)]
    _, new = o.update(state, model, [np.zeros(n), np.zeros(n)])
    assert np.array_equal(-new[0], a)  # the first leaf is the lone leaf above
    assert abs(corr(new[0], new[1])) < bound
    # consecutive steps of one leaf
    first, second = noise_steps(o.NoisySGD(1.0, 1.0, 0.0, seed=0), n, 2)
    assert abs(corr(first, second)) < bound


def test_seed_is_validated():
    with pytest.raises(ValueError, match="seed"):
        o.NoisySGD(seed=-1)
    with pytest.raises(ValueError, match="seed"):
        o.NoisySGD(seed=2**64)
    with pytest.raises(TypeError, match="seed"):
        o.NoisySGD(seed=1.5)
    assert o.NoisySGD(seed=2**64 - 1).seed == 2**64 - 1
