"""``setup``, ``update``, ``update_``, ``Leaf``, ``freeze_`` and ``thaw_``.

``update_`` first tries the step's plan (``_plan.py``): one call into Rust once
the trees have been flattened. When the plan declines, or for ``update``, the
general path below takes the step, one leaf at a time in Python.

The general path is two walks. The first goes over state, model and gradient together,
checks every gradient and sums the gradients of tied parameters, and writes
nothing. The second runs the leaves whose rules are Python (on copies of their
state), then every kernel leaf in one call into Rust, and only when all have
succeeded commits the Python leaves' results and rebuilds the model where an
array could not be written in place: a step that fails changes nothing.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import numbers
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _alloc, _core, _kernel, _plan, tree, whole_tree
from . import views as _views
from ._errors import ArgumentError as ArgumentError  # where it lived before _errors
from ._errors import norm_error, too_deep, walks_models
from ._gradients import as_gradient, children_of_grad
from ._leaf import Leaf, leaves_under
from .duplicated import Duplicated
from .keypath import KeyPath
from .rules import AbstractRule, MixedPrecision, _is_builtin, check_dtype, runs_in_kernel

__all__ = ["Leaf", "freeze_", "setup", "thaw_", "update", "update_"]


# ---------------------------------------------------------------------------
# setup


@walks_models
def setup(rule: AbstractRule | Callable[..., AbstractRule], model: Any, path: bool = False) -> Any:
    """The state tree for training ``model`` with ``rule``: the model's shape,
    with a ``Leaf`` for each trainable array (one shared ``Leaf`` per tied
    array) and ``None`` elsewhere.

    ``rule`` may instead be a function picking each leaf's rule: ``rule(x)``,
    or ``rule(keypath, x)`` with ``path=True``; a tied array is asked once."""
    if not isinstance(rule, AbstractRule):
        if not callable(rule):
            raise TypeError(f"setup expects an optimisation rule first, got {rule!r}")
        rule = whole_tree.Chooser(rule, path)  # type: ignore[assignment]
    if isinstance(model, Duplicated):
        model = model.val
    cache: dict[int, Leaf] = {}
    ties = _views.find_ties(_views.walk_parameters(model))
    with _alloc.packed_states():
        for owner_id, tied in ties.views.items():  # a NumPy view shares its parameter's Leaf
            leaf = _setup(rule, ties.owners[owner_id], cache, ties.paths[owner_id])
            cache.update((id(view), leaf) for view, _ in tied)
        state = _setup(rule, model, cache, KeyPath())
    if not cache:
        warnings.warn(
            "setup found no trainable parameters in this model", UserWarning, stacklevel=2
        )
    return state


def _setup(rule: AbstractRule, x: Any, cache: dict[int, Leaf], path: KeyPath) -> Any:
    if tree.is_parameter(x):
        if id(x) in cache:
            return cache[id(x)]
        a = tree.parameter_array(x, f"at {path!r}")  # another library's array: a NumPy view
        rule = whole_tree.choose(rule, a, path)  # a function's pick; whole-tree rules checked
        if a.dtype.kind == "c" and _is_builtin_any(rule):
            # Checked first: the generic dtype advice (wrap in MixedPrecision) does not help here.
            problem = f"complex parameters are not supported by {type(rule).__name__}"
        else:
            problem = check_dtype(a.dtype, rule)
        if problem is not None:
            raise TypeError(f"parameter at {path!r} has dtype {a.dtype}: {problem}")
        _alloc.next_leaf()
        leaf = cache[id(x)] = Leaf(rule, rule.init(a))
        return leaf
    if not tree.is_container(x):
        return None
    return tree.map_like(
        x, lambda k, c, trainable: _setup(rule, c, cache, path.child(k)) if trainable else None
    )


def _is_builtin_any(rule: AbstractRule) -> bool:
    return _is_builtin(rule) or isinstance(rule, MixedPrecision)


# ---------------------------------------------------------------------------
# Checking gradients


@dataclass
class _Entry:
    leaf: Leaf
    x: np.ndarray
    grad: np.ndarray
    path: KeyPath
    owns_grad: bool = False
    # Distinct arrays that share this Leaf (a tie made by hand): they get x's new value.
    others: list[tuple[np.ndarray, KeyPath]] = field(default_factory=list)
    # Arrays from the same memory as x under this Leaf (NumPy views, see views.py),
    # with their gradients: views.resolve moves these onto the owner after the walk.
    views: list[tuple[np.ndarray, np.ndarray, KeyPath]] = field(default_factory=list)
    # The state the step reads (kernel leaves: read-only arrays replaced by copies).
    state: Any = None
    # x overlaps another parameter without being its view: the kernel steps a copy.
    private_x: bool = False


def _collect(
    state: Any,
    model: Any,
    grad: Any,
    path: KeyPath,
    entries: dict[int, _Entry],
    viewed: dict[int, np.ndarray] | None = None,
) -> None:
    """Check the step and gather its leaves into ``entries``; ``viewed`` holds
    the NumPy views made of other libraries' arrays (one per array, so that
    an array met twice is one parameter)."""
    if state is None or grad is None:
        return
    if isinstance(state, Leaf):
        if not tree.is_parameter(model):
            raise TypeError(
                f"the state tree has a Leaf at {path!r} but the model has {type(model).__name__}"
            )
        if not isinstance(model, np.ndarray):
            model = _writeable_view(model, path, {} if viewed is None else viewed)
        g = as_gradient(grad, model, path)
        entry = entries.get(id(state))
        if entry is None:
            entries[id(state)] = _Entry(state, model, g, path)
            return
        if model is not entry.x and all(model is not o for o, _ in entry.others):
            if _views.same_memory(model, entry.x):
                entry.views.append((model, g, path))
                return
            if model.shape != entry.x.shape or model.dtype != entry.x.dtype:
                raise ValueError(
                    f"the Leaf at {path!r} is shared with {entry.path!r}, but the arrays there "
                    f"differ: {model.dtype}{list(model.shape)} and "
                    f"{entry.x.dtype}{list(entry.x.shape)}"
                )
            entry.others.append((model, path))
        if entry.owns_grad:
            entry.grad += g
        else:
            # A copy then +=: `a + b` of 0-d arrays is a scalar, not an array.
            entry.grad, entry.owns_grad = entry.grad.copy(), True
            entry.grad += g
        return
    kids = tree.children(model)
    if kids is None:
        raise TypeError(
            f"the state tree at {path!r} does not match the model ({type(model).__name__})"
        )
    grad_of = children_of_grad(grad, model, path)
    for key, child in kids:
        try:
            child_state = tree.child(state, key)
        except (KeyError, IndexError, AttributeError):
            raise ValueError(
                f"the state tree has nothing at {path.child(key)!r}; was it set up for this model?"
            ) from None
        if child_state is None:
            continue
        _collect(child_state, child, grad_of(key), path.child(key), entries, viewed)


def _writeable_view(x: Any, path: KeyPath, viewed: dict[int, np.ndarray]) -> np.ndarray:
    """A writeable NumPy view of another library's array (a torch tensor), or
    an error naming ``path`` (an immutable JAX array): ``update_`` writes
    parameters in place."""
    view = viewed.get(id(x))
    if view is None:
        view = viewed[id(x)] = tree.parameter_array(x, f"at {path!r}")
        if not view.flags.writeable:
            raise TypeError(
                f"update_ cannot write the parameter at {path!r}: {type(x).__name__} is "
                "immutable; use update, which returns NumPy arrays in its place"
            )
    return view


# ---------------------------------------------------------------------------
# update_ and update


_NO_GRADIENT: Any = object()


def update_(state: Any, model: Any, grad: Any = _NO_GRADIENT) -> Any:
    """One optimisation step, writing into the model's and the state's arrays.

    Returns ``(state, model)``: the same objects, except that a parameter that
    cannot be written (read-only) is replaced by a new array in a rebuilt model.
    After the first step on a state tree and model, a step is one call into
    Rust (see ``_plan.py``), with the same results as the general path.
    ``update_(state, Duplicated(model, grad))`` takes the gradient from the
    pair and returns ``None``.
    """
    if grad is _NO_GRADIENT:  # the usual path pays one identity test, no more
        if isinstance(model, Duplicated):
            update_(state, model.val, model.dval)
            return None
        raise TypeError("update_(state, model, grad) needs a gradient (or a Duplicated model)")
    if _plan.enabled:
        try:
            done = _plan.step_planned(state, model, grad)
        except _core.NonFiniteNormError as err:
            raise _plan.norm_error(state, err) from None
        except RuntimeError as err:
            raise _busy(err) from None
        if done:
            return state, model
    # The slow paths, one thread at a time: a thread waits here while another
    # steps a model in Python or plans one; a plan stepping in another thread
    # holds its Leafs, and reaching them from here raises `_busy`.
    with _stepping:
        try:
            if _plan.enabled and done is None and _plan.plan_and_step(state, model, grad):
                return state, model
            return _update_general(state, model, grad)
        except RuntimeError as err:
            if isinstance(err, RecursionError):
                raise too_deep("update_") from None  # in the first walk: nothing changed
            raise _busy(err) from None


_stepping = threading.RLock()

# PyO3's messages when a plan is in use by another thread.
_BORROWED = ("Already borrowed", "Already mutably borrowed")


def _busy(err: RuntimeError) -> RuntimeError:
    """A clear error if `err` says a plan is being stepped by another thread, else `err`."""
    if str(err) not in _BORROWED:
        return err
    return RuntimeError(
        "this model (or part of it) is being stepped by another thread; step a model "
        "from one thread at a time, or hold a lock around update_"
    )


def _update_general(state: Any, model: Any, grad: Any) -> tuple[Any, Any]:
    """``update_`` without a plan: every case, one leaf at a time in Python."""
    entries: dict[int, _Entry] = {}
    _collect(state, model, grad, KeyPath(), entries, {})
    ties = _views.resolve(entries, state, model)  # views' gradients onto their parameters
    live = [e for e in entries.values() if not e.leaf.frozen]
    for e in live:
        # No plan may step these leaves while this step runs without the GIL.
        e.leaf._detach()
    # Wrappers and whole-tree rules taken apart (whole_tree.py); put back by `finish`.
    live, taken = whole_tree.prepare(live)

    kernel_entries, python_entries = [], []
    for e in live:
        if runs_in_kernel(e.leaf.rule, e.x.dtype):
            problem = _state_problem(e.leaf.rule, e.leaf.state, e.x)
            if problem is not None:
                hint = "was it set up for this model?"
                if e.x.base is not None:
                    hint += (
                        " (if the parameter here is a view of another, tied to it by setup, "
                        "step a tree that holds the parameter it views)"
                    )
                raise ValueError(f"the state at {e.path!r} {problem}; {hint}")
            e.state = _writable_state(e.leaf.state)
            kernel_entries.append(e)
        else:
            python_entries.append(e)
    _check_memory(kernel_entries)
    _unalias_gradients(live)

    kernel_jobs = []
    for e in kernel_entries:
        rule = e.leaf.rule
        if isinstance(rule, MixedPrecision):
            job = _kernel.prepare_mixed(rule, e.state, e.x, e.grad)
        else:
            job = _kernel.prepare(rule, e.state, e.x, e.grad, private_x=e.private_x)
        kernel_jobs.append(job)

    # Python rules run first, on copies of their state, and nothing is committed
    # until every leaf (kernel ones too) has succeeded: a failing leaf anywhere
    # (ClipNorm meeting inf inside a chain with a custom rule, a custom rule that
    # raises, an update of the wrong shape) leaves every parameter and state as it was.
    python_results = [(e, *_apply_python(e)) for e in python_entries]

    replaced: dict[int, np.ndarray] = {}
    if kernel_jobs:
        try:
            _kernel.run(kernel_jobs)
        except _core.NonFiniteNormError as err:
            job, p, norm = err.args
            raise norm_error(kernel_entries[job].path, p, norm) from None
        for e, job in zip(kernel_entries, kernel_jobs):
            e.leaf._set_state(e.leaf.rule._advance(e.state, e.x.dtype)[0])
            if job.result is not e.x:
                replaced[id(e.x)] = job.result

    for e, new_state, update in python_results:
        e.leaf._set_state(new_state)
        if update is not None:
            new = _subtract(e.x, update, e.path)
            if new is not e.x:
                replaced[id(e.x)] = new
    if taken is not None:
        whole_tree.finish(taken, replaced)

    for e in live:
        new = replaced.get(id(e.x), e.x)
        for other, _ in e.others:
            if other.flags.writeable:
                np.copyto(other, new)
            else:
                replaced[id(other)] = new.copy()

    if replaced:
        _views.follow(replaced, ties, state, model)  # views of a new array view it too
        model = _replace_arrays(model, replaced)
    return state, model


def _unalias_gradients(live: list[_Entry]) -> None:
    """Copy every gradient that shares memory with an array the step writes (a
    parameter or a state array, of any leaf): the kernel reads gradients while
    it writes those."""
    written = []
    for e in live:
        arrays = [a for a, _ in _kernel_arrays(e)] if e.state is not None else [e.x]
        written += [_views._bounds(a) for a in arrays if a.size]
    if not written:
        return
    written.sort()
    starts = [lo for lo, _ in written]
    ends = list(itertools.accumulate((hi for _, hi in written), max))
    for e in live:
        if e.owns_grad or not e.grad.size:
            continue
        lo, hi = _views._bounds(e.grad)
        # Some written span starts before `hi` and ends after `lo`.
        i = bisect.bisect_left(starts, hi)
        if i and ends[i - 1] > lo:
            e.grad, e.owns_grad = e.grad.copy(), True


def _state_problem(rule: AbstractRule, state: Any, x: np.ndarray) -> str | None:
    """What is wrong with a kernel leaf's state for the parameter ``x``, if anything."""
    if isinstance(rule, MixedPrecision):
        if not (isinstance(state, tuple) and len(state) == 2):
            return f"is not a state of {rule!r}"
        xT = state[0]
        if not isinstance(xT, np.ndarray) or xT.shape != x.shape:
            shape = getattr(xT, "shape", type(xT).__name__)
            return f"holds a copy of shape {shape}, but the parameter has shape {x.shape}"
        return _state_problem(rule.rule, state[1], xT)
    try:
        arrays = rule._arrays(state)
        scalars = rule._per_leaf(state)
    except (TypeError, IndexError, AttributeError, ValueError, KeyError):
        return f"is not a state of {rule!r}"
    program = rule._program(x.dtype)  # type: ignore[attr-defined]
    if len(arrays) != program.states or len(scalars) != program.per_leaf:
        return f"is not a state of {rule!r}"
    for a in arrays:
        if not isinstance(a, np.ndarray):
            return f"holds a {type(a).__name__} where {rule!r} keeps an array"
        if a.shape != x.shape:
            return f"holds an array of shape {a.shape}, but the parameter has shape {x.shape}"
    return None


def _writable_state(state: Any) -> Any:
    """``state`` with every array that cannot be written (``np.load(mmap_mode="r")``,
    a JAX array's buffer) replaced by a writeable copy; ``state`` itself if none."""
    if isinstance(state, np.ndarray):
        return state if state.flags.writeable else state.copy()
    if isinstance(state, tuple) and not tree._is_namedtuple(state):
        new = tuple(_writable_state(s) for s in state)
        return state if all(n is o for n, o in zip(new, state)) else new
    return state


def _kernel_arrays(e: _Entry) -> list[tuple[np.ndarray, str]]:
    """The arrays the kernel writes for a leaf, each with what it is."""
    rule, state = e.leaf.rule, e.state
    if isinstance(rule, MixedPrecision):
        rule, state = rule.rule, state[1]
        out = [(e.x, "parameter"), (e.state[0], "state")]
    else:
        out = [(e.x, "parameter")]
    return out + [(a, "state") for a in rule._arrays(state)]  # type: ignore[attr-defined]


def _check_memory(entries: list[_Entry]) -> None:
    """Refuse state arrays that share memory with another written array (two
    Leafs holding the same state arrays, say), naming both paths; a parameter
    that overlaps another without being its view (``setup`` warned) is trained
    as a parameter of its own, through a copy."""
    spans = []
    for i, e in enumerate(entries):
        for a, what in _kernel_arrays(e):
            if a.size:
                spans.append((*_views._bounds(a), i, what, a))
    spans.sort(key=lambda s: s[0])
    widest = None  # the span reaching furthest so far
    for span in spans:
        lo, hi, i, what, a = span
        if widest is not None and lo < widest[1]:
            j, other = widest[2], widest[3]
            if what == other == "parameter" and i != j:
                entries[i].private_x = True
                continue
            raise ValueError(
                f"the {what} at {entries[i].path!r} shares memory with the {other} at "
                f"{entries[j].path!r}; each Leaf needs state arrays of its own "
                "(two Leafs holding the same arrays? copy one with copy.deepcopy)"
            )
        if widest is None or hi > widest[1]:
            widest = span


def _apply_python(e: _Entry) -> tuple[Any, Any]:
    """Run a leaf's Python rule on a copy of its state (so that a later failure
    can leave the state as it was); return ``(new_state, checked update or None)``."""
    try:
        new_state, update = e.leaf.rule.apply(_copy_state(e.leaf.state), e.x, e.grad)
    except _core.NonFiniteNormError as err:
        _job, p, norm = err.args
        raise norm_error(e.path, p, norm) from None
    if update is None:
        return new_state, None
    update = np.asarray(update)
    if update.dtype.kind not in "biufc" or (update.dtype.kind == "c" and e.x.dtype.kind != "c"):
        raise TypeError(
            f"the rule at {e.path!r} returned an update of dtype {update.dtype} "
            f"for a parameter of dtype {e.x.dtype}"
        )
    try:
        fits = np.broadcast_shapes(e.x.shape, update.shape) == e.x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"the update at {e.path!r} has shape {update.shape}, "
            f"but the parameter has shape {e.x.shape}"
        )
    return new_state, update


def _subtract(x: np.ndarray, update: np.ndarray, path: KeyPath) -> np.ndarray:
    if x.flags.writeable:
        np.subtract(x, update, out=x, casting="unsafe")
        return x
    return np.asarray(x - update).astype(x.dtype, copy=False)


def _replace_arrays(x: Any, replaced: dict[int, Any]) -> Any:
    """``x`` with arrays replaced by id; ``replaced`` also memoises rebuilt
    containers, so a container met twice (a shared layer) stays one object."""
    if id(x) in replaced:
        return replaced[id(x)]
    if isinstance(x, np.ndarray):
        return x
    kids = tree.children(x)
    if kids is None:
        return x
    new = {}
    for k, c in kids:
        c2 = _replace_arrays(c, replaced)
        if c2 is not c:
            new[k] = c2
    out = replaced[id(x)] = tree.rebuild(x, new)
    return out


@walks_models
def update(state: Any, model: Any, grad: Any) -> tuple[Any, Any]:
    """One optimisation step, returning ``(new_state, new_model)``; neither
    input is changed. Tied parameters stay tied in the new model."""
    with _stepping:
        try:
            arrays: dict[int, np.ndarray] = _views.tied_copies(state, model)
            leaves: dict[int, Leaf] = {}
            new_state = _copy_state_tree(state, leaves)
            new_model = _copy_parameters(state, model, arrays)
            # A plan would be made for these new trees and then thrown away.
            return _update_general(new_state, new_model, grad)
        except RuntimeError as err:
            raise _busy(err) from None


def _copy_state(s: Any) -> Any:
    if isinstance(s, np.ndarray):
        return s.copy()
    if isinstance(s, tuple) and not tree._is_namedtuple(s):
        return tuple(_copy_state(v) for v in s)
    if isinstance(s, (numbers.Number, np.generic, str, type(None))):
        return s
    return copy.deepcopy(s)


def _copy_state_tree(state: Any, leaves: dict[int, Leaf]) -> Any:
    if isinstance(state, Leaf):
        if id(state) not in leaves:
            leaves[id(state)] = Leaf(state.rule, _copy_state(state.state), state.frozen)
        return leaves[id(state)]
    kids = tree.children(state)
    if kids is None:
        return state
    new = {}
    for k, c in kids:
        c2 = _copy_state_tree(c, leaves)
        if c2 is not c:
            new[k] = c2
    return tree.rebuild(state, new)


def _copy_parameters(state: Any, model: Any, arrays: dict[int, Any]) -> Any:
    """The model with every array that has a ``Leaf`` copied (ties kept: ``arrays``
    memoises copies, and rebuilt containers, by the id of the original)."""
    if state is None:
        return model
    if isinstance(state, Leaf):
        if not tree.is_parameter(model):
            return model  # the step says what is wrong
        if id(model) not in arrays:
            # Another library's array becomes a NumPy array of its own.
            arrays[id(model)] = np.array(tree.parameter_array(model, "in the model"))
        return arrays[id(model)]
    if id(model) in arrays:
        return arrays[id(model)]
    kids = tree.children(model)
    if kids is None:
        return model
    new = {}
    for k, c in kids:
        try:
            s = tree.child(state, k)
        except (KeyError, IndexError, AttributeError):
            continue
        c2 = _copy_parameters(s, c, arrays)
        if c2 is not c:
            new[k] = c2
    out = arrays[id(model)] = tree.rebuild(model, new)
    return out


# ---------------------------------------------------------------------------
# freeze_ / thaw_


def _set_frozen(tree_: Any, frozen: bool, name: str) -> None:
    for leaf, _ in leaves_under(tree_, name):  # the whole tree checked before any is changed
        leaf.frozen = frozen


def freeze_(tree_: Any) -> None:
    """Mark every ``Leaf`` under ``tree_`` frozen: not updated, state not advanced."""
    _set_frozen(tree_, True, "freeze_")


def thaw_(tree_: Any) -> None:
    """Undo :func:`freeze_` for every ``Leaf`` under ``tree_``."""
    _set_frozen(tree_, False, "thaw_")
