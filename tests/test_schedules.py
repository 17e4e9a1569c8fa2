"""The schedules against a NumPy transcription of optax's formulas, at every
step from 0 past the last boundary, boundaries included."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from optimisers import schedules as S

# --- optax's formulas, vectorised over an array of steps, in NumPy float64 ---


def ref_polynomial(count, init_value, end_value, power, transition_steps, transition_begin=0):
    if transition_steps <= 0:
        return np.full(count.shape, init_value)
    transition_begin = max(transition_begin, 0)
    c = np.clip(count - transition_begin, 0, transition_steps)
    frac = 1 - c / transition_steps
    return (init_value - end_value) * frac**power + end_value


def ref_cosine_decay(count, init_value, decay_steps, alpha=0.0, exponent=1.0):
    c = np.minimum(count, decay_steps)
    cosine = 0.5 * (1 + np.cos(np.pi * c / decay_steps))
    return init_value * ((1 - alpha) * cosine**exponent + alpha)


def ref_join(count, schedules, boundaries):
    out = schedules[0](count)
    for b, s in zip(boundaries, schedules[1:]):
        out = np.where(count < b, out, s(count - b))
    return out


def ref_warmup_cosine_decay(
    count, init_value, peak_value, warmup_steps, decay_steps, end_value=0.0, exponent=1.0
):
    alpha = 0.0 if peak_value == 0 else end_value / peak_value
    return ref_join(
        count,
        [
            lambda c: ref_polynomial(c, init_value, peak_value, 1, warmup_steps),
            lambda c: ref_cosine_decay(c, peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )


def ref_exponential_decay(
    count,
    init_value,
    transition_steps,
    decay_rate,
    transition_begin=0,
    staircase=False,
    end_value=None,
):
    if transition_steps <= 0 or decay_rate == 0:
        return np.full(count.shape, init_value)
    dc = count - max(transition_begin, 0)
    p = dc / transition_steps
    if staircase:
        p = np.floor(p)
    out = np.where(dc <= 0, init_value, init_value * np.power(decay_rate, p))
    if end_value is not None:
        out = (np.maximum if decay_rate < 1 else np.minimum)(out, end_value)
    return out


def ref_piecewise_constant(count, init_value, boundaries_and_scales):
    v = np.full(count.shape, init_value)
    for threshold, scale in sorted(boundaries_and_scales.items()):
        indicator = np.maximum(0.0, np.sign(threshold - count))
        v = v * indicator + (1 - indicator) * scale * v
    return v


def ref_cosine_onecycle(
    count, transition_steps, peak_value, pct_start=0.3, div_factor=25.0, final_div_factor=1e4
):
    bs = {
        int(pct_start * transition_steps): div_factor,
        int(transition_steps): 1.0 / (div_factor * final_div_factor),
    }
    boundaries, scales = zip(*sorted(bs.items()))
    bounds = np.array((0, *boundaries))
    values = np.cumprod(np.array((peak_value / div_factor, *scales)))
    out = []
    for c in count:
        indicator = (bounds[:-1] <= c) & (c < bounds[1:])
        pct = (c - bounds[:-1]) / (bounds[1:] - bounds[:-1])
        interp = values[1:] + (values[:-1] - values[1:]) / 2.0 * (np.cos(np.pi * pct) + 1)
        out.append(indicator.dot(interp) + (bounds[-1] <= c) * values[-1])
    return np.array(out)


CASES = [
    (S.constant(0.3), lambda c: np.full(c.shape, 0.3)),
    (S.linear(1.0, 0.1, 10), lambda c: ref_polynomial(c, 1.0, 0.1, 1, 10)),
    (S.linear(0.0, 2.0, 7, 5), lambda c: ref_polynomial(c, 0.0, 2.0, 1, 7, 5)),
    (S.linear(0.5, 1.0, 0), lambda c: ref_polynomial(c, 0.5, 1.0, 1, 0)),
    (S.polynomial(1.0, 0.01, 2.0, 12, 3), lambda c: ref_polynomial(c, 1.0, 0.01, 2.0, 12, 3)),
    (S.polynomial(1.0, 0.0, 0.5, 9), lambda c: ref_polynomial(c, 1.0, 0.0, 0.5, 9)),
    (S.cosine_decay(0.1, 20), lambda c: ref_cosine_decay(c, 0.1, 20)),
    (S.cosine_decay(1.0, 13, 0.1, 2.0), lambda c: ref_cosine_decay(c, 1.0, 13, 0.1, 2.0)),
    (
        S.warmup_cosine_decay(0.0, 1.0, 5, 25),
        lambda c: ref_warmup_cosine_decay(c, 0.0, 1.0, 5, 25),
    ),
    (
        S.warmup_cosine_decay(0.1, 2.0, 4, 19, 0.05, 1.5),
        lambda c: ref_warmup_cosine_decay(c, 0.1, 2.0, 4, 19, 0.05, 1.5),
    ),
    (
        S.warmup_cosine_decay(0.1, 1.0, 0, 10),
        lambda c: ref_warmup_cosine_decay(c, 0.1, 1.0, 0, 10),
    ),
    (S.exponential_decay(1.0, 5, 0.5), lambda c: ref_exponential_decay(c, 1.0, 5, 0.5)),
    (
        S.exponential_decay(2.0, 4, 0.7, 3, True, 0.5),
        lambda c: ref_exponential_decay(c, 2.0, 4, 0.7, 3, True, 0.5),
    ),
    (
        S.exponential_decay(0.1, 3, 1.5, end_value=1.0),
        lambda c: ref_exponential_decay(c, 0.1, 3, 1.5, end_value=1.0),
    ),
    (S.exponential_decay(1.0, 0, 0.5), lambda c: ref_exponential_decay(c, 1.0, 0, 0.5)),
    (
        S.piecewise_constant(1.0, {5: 0.5, 12: 0.1, 3: 2.0}),
        lambda c: ref_piecewise_constant(c, 1.0, {5: 0.5, 12: 0.1, 3: 2.0}),
    ),
    (S.cosine_onecycle(30, 1.0), lambda c: ref_cosine_onecycle(c, 30, 1.0)),
    (
        S.cosine_onecycle(17, 0.5, 0.45, 10.0, 100.0),
        lambda c: ref_cosine_onecycle(c, 17, 0.5, 0.45, 10.0, 100.0),
    ),
    (S.inverse_decay(0.5, 0.1), lambda c: 0.5 / (1 + 0.1 * c)),
    (
        S.join([S.constant(1.0), S.linear(1.0, 0.0, 4), S.constant(0.25)], [3, 9]),
        lambda c: ref_join(
            c,
            [
                lambda c: np.full(c.shape, 1.0),
                lambda c: ref_polynomial(c, 1.0, 0.0, 1, 4),
                lambda c: np.full(c.shape, 0.25),
            ],
            [3, 9],
        ),
    ),
]


@pytest.mark.parametrize(("schedule", "reference"), CASES, ids=[repr(s) for s, _ in CASES])
def test_each_schedule_follows_optax_formula_at_every_step(schedule, reference):
    steps = np.arange(0, 40)
    got = np.array([schedule(int(s)) for s in steps])
    want = reference(steps.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
    assert all(isinstance(schedule(int(s)), float) for s in steps)


@pytest.mark.parametrize("schedule", [s for s, _ in CASES], ids=[repr(s) for s, _ in CASES])
def test_schedules_are_values_that_pickle_and_compare(schedule):
    again = pickle.loads(pickle.dumps(schedule))
    assert again == schedule
    assert hash(again) == hash(schedule)
    assert repr(again) == repr(schedule)
    assert again(7) == schedule(7)
    assert eval(repr(schedule), vars(S)) == schedule


def test_schedules_with_other_arguments_differ():
    assert S.cosine_decay(0.1, 20) != S.cosine_decay(0.1, 21)
    assert S.linear(1.0, 0.0, 5) != S.polynomial(1.0, 0.0, 1.0, 5)
    assert S.piecewise_constant(1.0, {1: 0.5}) == S.piecewise_constant(1.0, {1: 0.5})


def test_boundaries_fall_where_optax_puts_them():
    # warm-up reaches the peak exactly at warmup_steps; the decay ends at decay_steps
    s = S.warmup_cosine_decay(0.0, 1.0, 10, 30, end_value=0.1)
    assert s(10) == 1.0 and s(30) == pytest.approx(0.1) and s(31) == s(30)
    # a piecewise boundary scales from its own step on
    p = S.piecewise_constant(1.0, {4: 0.5})
    assert (p(3), p(4)) == (1.0, 0.5)
    # exponential decay starts counting after transition_begin
    e = S.exponential_decay(1.0, 2, 0.5, transition_begin=3, staircase=True)
    assert [e(i) for i in range(2, 8)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: S.cosine_decay(1.0, 0), "positive decay_steps"),
        (lambda: S.warmup_cosine_decay(0.0, 1.0, 10, 10), "decay_steps > warmup_steps"),
        (lambda: S.piecewise_constant(1.0, {3: -1.0}), "non-negative"),
        (lambda: S.join([S.constant(1.0)], [3]), "one boundary fewer"),
        (lambda: S.cosine_onecycle(0, 1.0), "positive transition_steps"),
        (lambda: S.inverse_decay(1.0, -0.1), "gamma"),
    ],
)
def test_bad_arguments_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_arguments_of_the_wrong_type_are_refused():
    with pytest.raises(TypeError, match="decay_steps"):
        S.cosine_decay(1.0, 2.5)
    with pytest.raises(TypeError, match="value must be a real number"):
        S.constant("fast")
