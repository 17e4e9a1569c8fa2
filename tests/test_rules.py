"""Every rule of the table in conftest.py, run through the package and compared,
step by step, with the plain-NumPy oracle (tests/oracle.py): parameters and the
whole state (arrays and per-leaf scalars, in the oracle's exact layout).

The kernel evaluates each formula in the oracle's order, so float64 agrees to
~1e-12 and float32 to a few ulp; a chain with ``ClipNorm`` compares a little
looser, because the kernel sums the norm (in float64) in another order.
"""

from __future__ import annotations

import copy
import functools
import itertools
import zlib

import numpy as np
import oracle
import pytest
from conftest import global_clip, is_clipnorm

import optimisers
from optimisers import _core

STEPS = 10
SMALL_SHAPES = {"0d": (), "1": (1,), "7": (7,), "3x5": (3, 5)}
# More than 64Ki elements: the kernel cuts it into several tasks, run on threads.
LARGE_SHAPE = (271, 263)
GRADS = ["random", "zero", "large"]
CASES = [
    *(
        pytest.param(shape, kind, id=f"{name}-{kind}")
        for name, shape in SMALL_SHAPES.items()
        for kind in GRADS
    ),
    pytest.param(LARGE_SHAPE, "random", id="271x263-random"),
    pytest.param(LARGE_SHAPE, "zero", id="271x263-zero"),
    pytest.param(LARGE_SHAPE, "large", id="271x263-large"),
]


# ---------------------------------------------------------------------------
# helpers


def tolerances(rule, dtype):
    """(rtol, atol) for comparing the package with the oracle. The kernels may
    multiply by a reciprocal where the formula divides (within an ulp), so a
    parameter near cancellation may differ by a few ulps of its magnitude (~4)."""
    if isinstance(rule, optimisers.MixedPrecision):  # computed in its own dtype
        dtype = min(np.dtype(dtype), np.dtype(rule.dtype), key=lambda d: d.itemsize)
    if np.dtype(dtype) == np.float16:
        return 1e-2, 2e-3
    if np.dtype(dtype) == np.float32:
        return (1e-5, 2e-6) if is_clipnorm(rule) else (1e-6, 2e-6)
    return (1e-11, 1e-13) if is_clipnorm(rule) else (1e-12, 4e-15)


def make_inputs(kind, shape, dtype, seed, steps=STEPS):
    """A starting parameter and `steps` gradients of one kind."""
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal(shape).astype(dtype)
    grads = []
    for _ in range(steps):
        if kind == "random":
            g = rng.standard_normal(shape)
        elif kind == "zero":
            g = np.zeros(shape)
        elif kind == "large":  # magnitudes 1e3 .. 1e6, random signs
            g = rng.choice([-1.0, 1.0], size=shape) * 10.0 ** rng.uniform(3, 6, size=shape)
        else:
            raise AssertionError(kind)
        grads.append(np.asarray(g, dtype=dtype))
    return x0, grads


@functools.lru_cache(maxsize=2)
def expected(rule, dtype, shape, kind):
    """The inputs and the oracle's trajectory (cached: `update_` and `update`
    compare with the same one)."""
    seed = zlib.crc32(f"{rule!r} {np.dtype(dtype).str} {shape} {kind}".encode())
    x0, grads = make_inputs(kind, shape, dtype, seed)
    states, xs = oracle.trajectory(rule, x0, grads)
    return x0, grads, states, xs


def assert_close(got, want, rtol, atol, what):
    """np.testing.assert_allclose (NaN equal to NaN), with a fast path for the
    usual case that passes."""
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype == want.dtype and np.array_equal(got, want):
        return  # the usual case: the same bits
    g, w = got.astype(np.float64), want.astype(np.float64)
    with np.errstate(all="ignore"):
        close = np.abs(g - w) <= atol + rtol * np.abs(w)
        ok = np.where(np.isfinite(w), close, (g == w) | (np.isnan(g) & np.isnan(w)))
    if not ok.all():
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def assert_state_close(got, want, rtol, atol, path="state"):
    """`got` has `want`'s exact layout (tuples, arrays of the same dtype and
    shape, scalars of the same type) and its numbers agree."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), f"{path}: expected an array, got {got!r}"
        assert got.dtype == want.dtype, f"{path}: dtype {got.dtype}, expected {want.dtype}"
        assert got.shape == want.shape, f"{path}: shape {got.shape}, expected {want.shape}"
        assert_close(got, want, rtol, atol, path)
    elif isinstance(want, tuple):
        assert type(got) is tuple, f"{path}: expected a tuple, got {got!r}"
        assert len(got) == len(want), f"{path}: {len(got)} entries, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_state_close(g, w, rtol, atol, f"{path}[{i}]")
    elif isinstance(want, np.generic):
        assert type(got) is type(want), f"{path}: {type(got).__name__}, expected {type(want)}"
        assert_close(got, want, rtol, atol, path)
    else:  # None, False, an int counter
        assert type(got) is type(want), f"{path}: {got!r}, expected {want!r}"
        assert got == want, f"{path}: {got!r}, expected {want!r}"


def assert_param_close(got, want, rtol, atol, what="parameter"):
    """Parameters agree within rounding: a few ulps of the largest magnitude in
    the array (where x - update cancels, the difference of an ulp in the update
    shows against a small result)."""
    assert isinstance(got, np.ndarray), f"{what}: expected an array, got {got!r}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    finite = np.abs(want[np.isfinite(want)]).astype(np.float64)
    if finite.size and np.dtype(want.dtype) != np.float16:
        atol = max(atol, 4 * float(np.finfo(want.dtype).eps) * float(finite.max()))
    assert_close(got, want, rtol, atol, what)


def assert_same(a, b, path="state"):
    """Exactly equal values and layout (for 'the input did not change')."""
    assert_state_close(a, b, 0, 0, path)


# ---------------------------------------------------------------------------
# the package against the oracle, through update_ and update


# "update_": planned once, then one call per step (see _plan.py); "update_general":
# the same with plans off, one leaf at a time; "update": out of place.
@pytest.mark.parametrize("fn", ["update_", "update_general", "update"])  # varies fastest
@pytest.mark.parametrize(("shape", "kind"), CASES)
def test_matches_oracle(rule, dtype, shape, kind, fn, monkeypatch):
    if fn == "update_general":
        monkeypatch.setattr(optimisers._plan, "enabled", False)
    x0, grads, states, xs = expected(rule, dtype, shape, kind)
    rtol, atol = tolerances(rule, dtype)
    model = {"w": x0.copy()}
    state = optimisers.setup(rule, model)
    assert_state_close(state["w"].state, oracle.init(rule, x0), 0, 0, "initial state")
    for t, (g, want_state, want_x) in enumerate(zip(grads, states, xs), start=1):
        grad = {"w": g.copy()}
        if fn != "update":
            state, model = optimisers.update_(state, model, grad)
        else:
            before_state, before_x = copy.deepcopy(state["w"].state), model["w"].copy()
            new_state, new_model = optimisers.update(state, model, grad)
            assert_same(state["w"].state, before_state, f"step {t}: update changed its state")
            assert_same(model["w"], before_x, f"step {t}: update changed the model")
            state, model = new_state, new_model
        assert_same(grad["w"], g, f"step {t}: the gradient was changed")
        assert_param_close(model["w"], want_x, rtol, atol, f"step {t}: parameter")
        assert_state_close(state["w"].state, want_state, rtol, atol, f"step {t}: state")


def test_float16_matches_oracle_loosely(rule):
    """float16 parameters stay float16 (as does their state); the kernel computes
    them in float32 with float16 hyper-parameters, the oracle in float16."""
    rtol, atol = tolerances(rule, np.float16)
    for shape in [(), (7,), (3, 5)]:
        # 4 steps: at the 5th, RAdam's rectifier overflows float16 in the oracle (and in
        # Optimisers.jl) to NaN, while the kernel computes it in float32.
        x0, grads = make_inputs("random", shape, np.float16, seed=16, steps=4)
        states, xs = oracle.trajectory(rule, x0, grads)
        model = {"w": x0.copy()}
        state = optimisers.setup(rule, model)
        assert_state_close(state["w"].state, oracle.init(rule, x0), 0, 0, "initial state")
        for t, (g, want_state, want_x) in enumerate(zip(grads, states, xs), start=1):
            state, model = optimisers.update_(state, model, {"w": g})
            assert_param_close(model["w"], want_x, rtol, atol, f"{shape} step {t}: parameter")
            assert_state_close(state["w"].state, want_state, rtol, atol, f"{shape} step {t}")


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((), id="0d"),
        pytest.param((3, 5), id="3x5"),
        pytest.param(LARGE_SHAPE, id="271x263"),
    ],
)
def test_apply_matches_oracle(rule, dtype, shape):
    """`rule.apply(state, x, dx)` on its own (no tree) returns the oracle's update
    (None while an AccumGrad holds it) and state, and leaves x and dx alone."""
    _check_apply(rule, dtype, shape, steps=7)


def test_apply_float16_matches_oracle_loosely(rule):
    _check_apply(rule, np.float16, (3, 5), steps=4)


def _check_apply(rule, dtype, shape, steps):
    rtol, atol = tolerances(rule, dtype)
    x, grads = make_inputs("random", shape, dtype, seed=7, steps=steps)
    state, want_state = rule.init(x), oracle.init(rule, x)
    assert_state_close(state, want_state, 0, 0, "init")
    for t, g in enumerate(grads, start=1):
        want_state, want_update = oracle.apply(rule, want_state, x, g)
        x_in, g_in = x.copy(), g.copy()
        state, update = rule.apply(state, x_in, g_in)
        assert_same(x_in, x, f"step {t}: apply changed x")
        assert_same(g_in, g, f"step {t}: apply changed dx")
        if want_update is None:
            assert update is None, f"step {t}: expected no update, got {update!r}"
        else:
            assert_param_close(np.asarray(update), want_update, rtol, atol, f"step {t}: update")
            x = (x - want_update).astype(dtype)
        assert_state_close(state, want_state, rtol, atol, f"step {t}: state")


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly"])
def test_parameter_layouts(rule, dtype, layout):
    """Parameters the kernel cannot use as they are (Fortran order, a strided
    view, read-only) still get the oracle's step: written back into the array,
    or, when it is read-only, returned as a new array."""
    rtol, atol = tolerances(rule, dtype)
    rng = np.random.default_rng(9)
    base = rng.standard_normal((6, 10)).astype(dtype)
    if layout == "fortran":
        x = np.asfortranarray(base[:, :5])
    elif layout == "strided":
        x = base[:, ::2]
    else:
        x = base[:, :5].copy()
        x.flags.writeable = False
    base_before = base.copy()
    model = {"w": x}
    state = optimisers.setup(rule, model)
    want_state, want_x = oracle.init(rule, x), x.copy()
    for t in range(1, 5):
        g = rng.standard_normal(x.shape).astype(dtype)
        want_state, want_x = oracle.step(rule, want_state, want_x, g)
        state, model = optimisers.update_(state, model, {"w": g})
        assert_param_close(model["w"], want_x, rtol, atol, f"step {t}: parameter")
        assert_state_close(state["w"].state, want_state, rtol, atol, f"step {t}: state")
        if layout == "readonly":
            assert_same(x, base_before[:, :5], "a read-only parameter was written")
        else:
            assert model["w"] is x, "a writeable parameter is updated in place"
    if layout == "strided":
        assert_same(base[:, 1::2], base_before[:, 1::2], "elements outside the view changed")


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "shape", [pytest.param((7,), id="7"), pytest.param(LARGE_SHAPE, id="271x263")]
)
def test_non_finite_gradient(rule, dtype, special, shape):
    """A NaN or infinite gradient element propagates as in Optimisers.jl (NaN stays
    in a state that takes a max, as Julia's `max` keeps it). Where the oracle's
    `ClipNorm(throw=True)` raises, the package raises ValueError too and changes
    nothing, and the next finite step goes on from the same state."""
    rtol, atol = tolerances(rule, dtype)
    x0, grads = make_inputs("random", shape, dtype, seed=13, steps=6)
    grads[2].flat[3] = special
    grads[4].flat[-1] = special
    want_state, want_x = oracle.init(rule, x0), x0.copy()
    model = {"w": x0.copy()}
    state = optimisers.setup(rule, model)
    for t, g in enumerate(grads, start=1):
        try:
            want_state, want_x = oracle.step(rule, want_state, want_x, g)
        except ValueError:
            before_state, before_x = copy.deepcopy(state["w"].state), model["w"].copy()
            with pytest.raises(ValueError, match="norm"):
                optimisers.update_(state, model, {"w": g})
            assert_same(model["w"], before_x, f"step {t}: a failed step wrote the parameter")
            assert_same(state["w"].state, before_state, f"step {t}: a failed step moved the state")
            continue
        state, model = optimisers.update_(state, model, {"w": g})
        assert_param_close(model["w"], want_x, rtol, atol, f"step {t}: parameter")
        assert_state_close(state["w"].state, want_state, rtol, atol, f"step {t}: state")


@pytest.mark.parametrize(
    ("p", "scale", "shape"),
    [
        *(
            pytest.param(p, scale, (3, 5), id=f"p={p}-scale={scale:g}")
            for p in (0.5, -1, -1.5, -2.5, 1.5, 7, 100, -100)
            for scale in (1e-30, 1e-3, 1e3, 1e30)
        ),
        pytest.param(-100, 1e30, LARGE_SHAPE, id="p=-100-scale=1e30-271x263"),
    ],
)
def test_clipnorm_other_p(dtype, p, scale, shape):
    """ClipNorm with other p, on tiny and huge gradients (where LinearAlgebra's
    norm rescales by the largest or smallest magnitude)."""
    rule = optimisers.OptimiserChain(
        optimisers.ClipNorm(0.5, p, throw=False), optimisers.Descent(1)
    )
    rtol, atol = tolerances(rule, dtype)
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(shape).astype(dtype)
    grads = [(rng.standard_normal(shape) * scale).astype(dtype) for _ in range(3)]
    _, xs = oracle.trajectory(rule, x0, grads)
    model = {"w": x0.copy()}
    state = optimisers.setup(rule, model)
    for t, (g, want_x) in enumerate(zip(grads, xs), start=1):
        state, model = optimisers.update_(state, model, {"w": g})
        assert_param_close(model["w"], want_x, rtol, atol * scale, f"step {t}: parameter")


_LEAVES = {
    "a": ((7,), np.float32),
    "b": ((3, 5), np.float64),
    "c": ((), np.float32),
    "d": (LARGE_SHAPE, np.float32),
    "e": ((2, 3), np.float64),
    "f": ((1,), np.float64),
}


@pytest.mark.parametrize("convert", [True, False], ids=["converted", "as-is"])
def test_many_leaves_in_one_call(rule, convert):
    """Leaves of several shapes and both dtypes go to the kernel in one call;
    some get no gradient at some steps (their state stays, so AccumGrad counters
    and powers differ between leaves); each still follows its own oracle. With
    every gradient in its parameter's dtype the steps take the plan."""
    rng = np.random.default_rng(11)
    x0 = {k: rng.standard_normal(s).astype(d) for k, (s, d) in _LEAVES.items()}
    model = {k: v.copy() for k, v in x0.items()}
    state = optimisers.setup(rule, model)
    # Leaves numbered in setup's order (NoisySGD's key).
    want = {k: (oracle.init(rule, v, i), v.copy()) for i, (k, v) in enumerate(x0.items())}
    for t in range(1, 9):
        grad = {}
        for k, (shape, dt) in _LEAVES.items():
            if k != "a" and rng.random() < 0.3:
                grad[k] = None  # no gradient: no step, no state change
                continue
            g = rng.standard_normal(shape)
            # "e" gets float32 gradients for float64 parameters: converted first
            grad[k] = g.astype(np.float32) if k == "e" and convert else g.astype(dt)
        # A ClipGlobalNorm scales the gradients of every leaf of the step by one
        # factor; the oracle's own (per leaf) then finds each within omega.
        stepping = {k: grad[k].astype(_LEAVES[k][1]) for k in grad if grad[k] is not None}
        clip = global_clip(rule)
        factor = None if clip is None else oracle.global_clip(clip, list(stepping.values()))
        for k, g in stepping.items():
            if factor is not None:
                g = g * g.dtype.type(factor)
            want[k] = oracle.step(rule, *want[k], g)
        state, model = optimisers.update_(state, model, grad)
        for k, (_, dt) in _LEAVES.items():
            rtol, atol = tolerances(rule, dt)
            assert_param_close(model[k], want[k][1], rtol, atol, f"step {t}, leaf {k}")
            assert_state_close(state[k].state, want[k][0], rtol, atol, f"step {t}, leaf {k}")


@pytest.mark.parametrize("fn", ["update_", "update"])
@pytest.mark.parametrize("how", ["itself", "view", "reversed", "model"])
def test_gradient_aliasing_the_parameter(rule, dtype, how, fn):
    """A gradient that is the parameter array itself (`update_(st, m, m)` or
    `{"w": m["w"]}`), or a view of it, is the parameter's value before the step."""
    rtol, atol = tolerances(rule, dtype)
    x0, _ = make_inputs("random", (4, 6), dtype, seed=3, steps=0)
    model = {"w": x0.copy()}
    state = optimisers.setup(rule, model)
    want_state, want_x = oracle.init(rule, x0), x0.copy()
    for t in range(1, 5):
        x = model["w"]
        if how == "model":
            grad, g = model, want_x.copy()
        elif how == "itself":
            grad, g = {"w": x}, want_x.copy()
        elif how == "view":
            grad, g = {"w": x.view()}, want_x.copy()
        else:
            grad, g = {"w": x[::-1]}, want_x[::-1].copy()
        want_state, want_x = oracle.step(rule, want_state, want_x, g)
        state, model = getattr(optimisers, fn)(state, model, grad)
        assert_param_close(model["w"], want_x, rtol, atol, f"step {t}: parameter")
        assert_state_close(state["w"].state, want_state, rtol, atol, f"step {t}: state")


# ---------------------------------------------------------------------------
# the same bits for any thread count and any instruction set


def _run_bits(rule, x0, grads):
    model = {"w": x0.copy()}
    state = optimisers.setup(rule, model)
    for g in grads:
        state, model = optimisers.update_(state, model, {"w": g})
    arrays = [model["w"]]

    def walk(s):
        if isinstance(s, np.ndarray):
            arrays.append(s)
        elif isinstance(s, tuple):
            for v in s:
                walk(v)

    walk(state["w"].state)
    return [a.tobytes() for a in arrays]


_INVARIANCE_INPUTS = {}


def _invariance_inputs():
    if not _INVARIANCE_INPUTS:
        rng = np.random.default_rng(2024)
        n = 200_000
        x0 = rng.standard_normal(n).astype(np.float32)
        grads = [
            rng.standard_normal(n).astype(np.float32),
            (rng.standard_normal(n) * 1e4).astype(np.float32),
            rng.standard_normal(n).astype(np.float32),
            np.zeros(n, np.float32),
        ]
        _INVARIANCE_INPUTS["f32"] = (x0, grads)
    return _INVARIANCE_INPUTS["f32"]


def test_threads_and_isa_give_the_same_bits(rule, kernel_settings):
    core = kernel_settings
    x0, grads = _invariance_inputs()
    isas = core.available_isas()
    assert "baseline" in isas
    core.set_num_threads(1)
    core.set_isa("baseline")
    reference = _run_bits(rule, x0, grads)
    for threads, isa in itertools.product([1, 2, 3], isas):
        core.set_num_threads(threads)
        core.set_isa(isa)
        assert core.get_num_threads() == threads
        assert core.get_isa() == isa
        got = _run_bits(rule, x0, grads)
        assert len(got) == len(reference)
        for i, (a, b) in enumerate(zip(got, reference)):
            assert a == b, f"array {i} differs with {threads} threads and isa {isa}"


def test_kernel_settings_are_validated(kernel_settings):
    core = kernel_settings
    with pytest.raises(ValueError):
        core.set_num_threads(0)
    with pytest.raises(ValueError):
        core.set_isa("not-an-isa")
    assert core.get_isa() in core.available_isas()
    assert core.get_num_threads() >= 1
    assert optimisers.get_num_threads is _core.get_num_threads
