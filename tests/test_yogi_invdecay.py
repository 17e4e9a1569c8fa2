"""Yogi's sign-driven second moment and InvDecay's counter, through the kernel,
on values worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

import optimisers as o


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_yogi_moves_v_by_the_sign_of_v_minus_g_squared(dtype):
    """g² equal to v (sign 0: v stays), below it, above it."""
    b2 = 0.75
    rule = o.Yogi(0.1, (0.5, b2), 1e-3, initial_accumulator=4.0)
    x = np.zeros(3, dtype)
    state = o.setup(rule, x)
    g = np.array([2.0, 1.0, 3.0], dtype)
    state, _ = o.update(state, x, g)
    v = state.state[1]
    want = np.array([4.0, 4.0 - (1 - b2) * 1.0, 4.0 + (1 - b2) * 9.0], dtype)
    assert v.dtype == dtype and np.array_equal(v, want)


def test_yogi_with_zero_gradients_keeps_v_and_decays_m():
    rule = o.Yogi(0.1, (0.5, 0.75), 1e-3, initial_accumulator=0.25)
    x = np.zeros(4)
    state = o.setup(rule, x)
    for _ in range(3):
        state, x = o.update(state, x, np.zeros(4))
    m, v, _ = state.state
    assert np.array_equal(v, np.full(4, 0.25)) and np.array_equal(m, np.full(4, 0.25 / 8))


def test_invdecay_decays_from_the_second_step():
    x = np.zeros(2, np.float32)
    state = o.setup(o.InvDecay(0.5), x)
    steps = []
    for _ in range(3):
        before = x.copy()
        state, x = o.update(state, x, np.ones(2, np.float32))
        steps.append(float(before[0] - x[0]))
    assert state.state == 3
    np.testing.assert_allclose(steps, [1.0, 1 / 1.5, 1 / 2.0], rtol=3e-7)  # x - step, rounded
