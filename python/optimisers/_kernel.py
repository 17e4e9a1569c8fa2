"""Turning leaves into kernel jobs, running them in one call, and finishing up.

The kernel wants, per leaf, C-contiguous, aligned float32 or float64 buffers that do not
overlap: the parameter, the gradient, the rule's state arrays. Most leaves are
already like that and go in as they are. The rest are staged here:

- float16 leaves run in float32 copies (hyper-parameters still rounded to
  float16) and are rounded back;
- parameters that are not C-contiguous, aligned and writeable run in a copy that
  is written back, or returned as the new parameter when it cannot be written;
- ``MixedPrecision`` runs its rule on its own high-precision copy ``xT``, then
  copies ``xT`` into the parameter.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np

from . import _core
from ._gradients import as_gradient

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
#: The dtypes the kernel runs (float16 runs in float32 copies).
KERNEL_DTYPES = (_F32, _F64)


def work_dtype(dtype: np.dtype) -> np.dtype | None:
    """The dtype the kernel steps a parameter of ``dtype`` in (float16 and
    non-native byte orders run in copies), or None if it cannot."""
    if dtype in KERNEL_DTYPES:
        return dtype
    if dtype.kind != "f":
        return None
    native = dtype.newbyteorder("=")
    if native == np.float16:
        return _F32
    return native if native in KERNEL_DTYPES else None


class Job:
    """One leaf prepared for the kernel, with what must happen after it ran."""

    __slots__ = ("after", "args", "arrays", "program", "result")

    def __init__(self, args: tuple, program: Any, arrays: list[np.ndarray], result: Any = None):
        self.args = args
        self.program = program
        self.arrays = arrays
        # Called after the kernel, in order; each may replace `result`.
        self.after: list[Callable[[], None]] = []
        self.result = result


def _readable(a: np.ndarray, dtype: np.dtype) -> bool:
    """Whether the kernel can read `a` as it is: a C-contiguous, aligned buffer of `dtype`."""
    flags = a.flags
    return a.dtype == dtype and flags.c_contiguous and flags.aligned


def _writable(a: np.ndarray, dtype: np.dtype) -> bool:
    return _readable(a, dtype) and a.flags.writeable


def _buffer(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`a` itself if the kernel can write it, else a C-contiguous copy in `dtype`."""
    return a if _writable(a, dtype) else np.array(a, dtype=dtype, order="C", copy=True)


def prepare(
    rule: Any,
    state: Any,
    x: np.ndarray,
    grad: np.ndarray,
    want_update: bool = False,
    private_x: bool = False,
) -> Job:
    """The kernel job for one leaf. `grad` has x's dtype and shape and does not
    overlap `x`. After the kernel and `finish`, `job.result` is the new
    parameter (or, with `want_update`, the update, or None if it was held).
    `rule` is a built-in rule or chain (``MixedPrecision``: `prepare_mixed`).
    With `private_x` the kernel steps a copy of `x` (which overlaps another
    parameter), copied back after."""
    dtype = x.dtype
    if not want_update and not private_x and dtype in KERNEL_DTYPES and _writable(x, dtype):
        # The common case, first: everything goes to the kernel as it is.
        arrays = rule._arrays(state)
        if _readable(grad, dtype) and all(_writable(a, dtype) for a in arrays):
            program = rule._program(dtype)
            return Job((program, x, grad, arrays, rule._per_leaf(state), None), program, arrays, x)
    work = work_dtype(dtype)
    assert work is not None, dtype  # runs_in_kernel said so
    xbuf = np.array(x, dtype=work, order="C", copy=True) if private_x else _buffer(x, work)
    gbuf = grad if _readable(grad, work) else np.array(grad, dtype=work, order="C", copy=True)
    arrays = rule._arrays(state)
    bufs = [_buffer(a, work) for a in arrays]
    # Zeros, not empty: an AccumGrad that holds the update leaves it unwritten,
    # and a float16 leaf still casts it back (garbage would warn on overflow).
    update = np.zeros(x.shape, dtype=work) if want_update else None
    program = rule._program(dtype)
    job = Job((program, xbuf, gbuf, bufs, rule._per_leaf(state), update), program, arrays)
    for a, b in zip(arrays, bufs):
        if a is not b:
            job.after.append(lambda a=a, b=b: np.copyto(a, b, casting="unsafe"))
    if want_update:
        job.result = update if dtype == work else None
        if dtype != work:
            job.after.append(lambda: setattr(job, "result", update.astype(dtype)))
    elif xbuf is x:
        job.result = x
    elif x.flags.writeable:
        job.result = x
        job.after.append(lambda: np.copyto(x, xbuf, casting="unsafe"))
    else:
        job.result = xbuf if dtype == work else None
        if dtype != work:
            job.after.append(lambda: setattr(job, "result", xbuf.astype(dtype)))
    return job


def prepare_mixed(
    rule: Any, state: Any, x: np.ndarray, grad: np.ndarray, want_update: bool = False
) -> Job:
    """`prepare` for a ``MixedPrecision`` rule: its rule runs on the state's ``xT``."""
    xT, inner_state = state
    high = np.dtype(rule.dtype)
    job = prepare(rule.rule, inner_state, xT, grad.astype(high), want_update=False)
    # xT is normally ours (C-contiguous, writeable) and the kernel writes into it;
    # a state from elsewhere (read-only, say) is updated from the kernel's copy.

    def finish() -> None:
        new_xT = job.result
        if new_xT is not xT:
            np.copyto(xT, new_xT, casting="unsafe")
        if want_update:
            job.result = (x - xT.astype(x.dtype)).astype(x.dtype)
        elif x.flags.writeable:
            np.copyto(x, xT, casting="unsafe")
            job.result = x
        else:
            job.result = xT.astype(x.dtype)

    job.after.append(finish)
    return job


def run(jobs: list[Job]) -> None:
    """Run every job in one kernel call, then finish them. On a failing norm,
    roll back the state the kernel may have advanced and re-raise with the job's
    index as `error.args[0]`."""
    snapshots = []
    for j in jobs:
        keep = j.program.states_before_last_norm
        if keep:
            snapshots.append([(b, b.copy()) for b in j.args[3][:keep]])
    try:
        _core.step([j.args for j in jobs])
    except _core.NonFiniteNormError:
        for snap in snapshots:
            for b, saved in snap:
                np.copyto(b, saved)
        raise
    for j in jobs:
        for f in j.after:
            f()


def apply_builtin(rule: Any, state: Any, x: np.ndarray, dx: Any) -> tuple[Any, Any]:
    """`rule.apply` for a built-in rule: one kernel job with an update buffer."""
    x = np.asarray(x)
    grad = as_gradient(dx, x, "apply")
    job = prepare(rule, state, x, grad, want_update=True)
    run([job])
    new_state, through = rule._advance(state, x.dtype)
    return new_state, (job.result if through else None)


def apply_mixed(rule: Any, state: Any, x: np.ndarray, dx: Any) -> tuple[Any, Any]:
    """`MixedPrecision.apply`: the rule runs on ``xT``; the update is ``x - xT``."""
    xT, inner_state = state
    high = np.dtype(rule.dtype)
    grad = as_gradient(dx, x, "apply").astype(high)
    inner_state, update = rule.rule.apply(inner_state, xT, grad)
    if update is not None:
        np.subtract(xT, update, out=xT, casting="unsafe")
    return (xT, inner_state), (np.asarray(x) - xT.astype(x.dtype)).astype(x.dtype)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (at least 1) for every step from now on."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: the number of threads must be an integer, got {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads: the number of threads must be at least 1, got {n}")
    _core.set_num_threads(int(n))
