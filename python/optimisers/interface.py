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
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core, _kernel, _plan, tree
from . import rules as _rules
from . import views as _views
from .duplicated import Duplicated
from .keypath import KeyPath
from .rules import AbstractRule, MixedPrecision

__all__ = ["Leaf", "freeze_", "setup", "thaw_", "update", "update_"]


class Leaf:
    """The optimiser state of one parameter: its ``rule``, its ``state``, and
    whether it is ``frozen``. Mutable; the same ``Leaf`` at several places of a
    state tree means the parameter there is one and the same (a tie)."""

    # Once `update_` has planned a step (see `_plan.py`), the plan keeps this
    # leaf's per-leaf scalars: `_plan` and `_slot` say where, and reading
    # `state` fetches them. Setting any field detaches the leaf and retires the plan.
    __slots__ = ("_frozen", "_plan", "_rule", "_slot", "_state")

    def __init__(self, rule: AbstractRule, state: Any, frozen: bool = False) -> None:
        self._rule = rule
        self._state = state
        self._frozen = bool(frozen)
        self._plan: Any = None
        self._slot = 0

    @property
    def rule(self) -> AbstractRule:
        return self._rule

    @rule.setter
    def rule(self, rule: AbstractRule) -> None:
        self._detach()
        self._rule = rule
        _plan.leaf_changed()

    @property
    def state(self) -> Any:
        if self._plan is not None:
            moved = self._plan.moved(self._slot)
            if moved is not None:
                self._state = self._rule._with_per_leaf(self._state, moved)
        return self._state

    @state.setter
    def state(self, state: Any) -> None:
        self._set_state(state)
        _plan.leaf_changed()

    @property
    def frozen(self) -> bool:
        return self._frozen

    @frozen.setter
    def frozen(self, frozen: bool) -> None:
        self._detach()
        self._frozen = bool(frozen)
        _plan.leaf_changed()

    def _attach(self, plan: Any, slot: int) -> None:
        self._plan, self._slot = plan, slot

    def _detach(self) -> None:
        """Take the state back from the plan, and retire the plan."""
        plan = self._plan
        if plan is not None:
            self._state = self.state
            self._plan = None
            plan.invalidate()

    def _set_state(self, state: Any) -> None:
        """Set the state after a step of the general path."""
        plan = self._plan
        if plan is not None:
            self._plan = None
            plan.invalidate()
        self._state = state

    def __repr__(self) -> str:
        frozen = ", frozen=True" if self.frozen else ""
        return f"Leaf({self.rule!r}, {_show_state(self.state)}{frozen})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Leaf):
            return NotImplemented
        return (
            self.rule == other.rule
            and self.frozen == other.frozen
            and _state_equal(self.state, other.state)
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Leaf, (self.rule, self.state, self.frozen))


def _show_state(state: Any) -> str:
    if isinstance(state, tuple):
        inner = ", ".join(_show_state(s) for s in state)
        return f"({inner}{',' if len(state) == 1 else ''})"
    if isinstance(state, np.ndarray):
        return np.array2string(state, separator=", ", threshold=8, edgeitems=2)
    if isinstance(state, np.generic):
        return repr(state.item())
    return repr(state)


def _state_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


# ---------------------------------------------------------------------------
# setup


def setup(rule: AbstractRule, model: Any) -> Any:
    """The state tree for training ``model`` with ``rule``: the model's shape,
    with a ``Leaf`` for each trainable array (one shared ``Leaf`` per tied
    array) and ``None`` elsewhere."""
    if not isinstance(rule, AbstractRule):
        raise TypeError(f"setup expects an optimisation rule first, got {rule!r}")
    if isinstance(model, Duplicated):
        model = model.val
    cache: dict[int, Leaf] = {}
    ties = _views.find_ties(_views.walk_parameters(model))
    with _rules._packed_states():
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
        if x.dtype.kind == "c" and _is_builtin_any(rule):
            # Checked first: the generic dtype advice (wrap in MixedPrecision) does not help here.
            problem = f"complex parameters are not supported by {type(rule).__name__}"
        else:
            problem = _kernel.check_dtype(x.dtype, rule)
        if problem is not None:
            raise TypeError(f"parameter at {path!r} has dtype {x.dtype}: {problem}")
        _rules._next_leaf()
        leaf = cache[id(x)] = Leaf(rule, rule.init(x))
        return leaf
    if not tree.is_container(x):
        return None
    return tree.map_like(
        x, lambda k, c, trainable: _setup(rule, c, cache, path.child(k)) if trainable else None
    )


def _is_builtin_any(rule: AbstractRule) -> bool:
    from .rules import MixedPrecision, _is_builtin

    return _is_builtin(rule) or isinstance(rule, MixedPrecision)


# ---------------------------------------------------------------------------
# Checking gradients


def checked_gradient(g: Any, shape: tuple[int, ...], real: str | None, where: str) -> np.ndarray:
    """``g`` as an array of numbers of this ``shape``, or a clear error naming
    ``where``. ``real`` names the parameter's real dtype (complex gradients are
    refused), or is None for complex parameters."""
    if isinstance(g, np.ndarray):
        arr = g
    elif isinstance(g, (numbers.Number, np.generic, list, tuple)):
        try:
            arr = np.asarray(g)
        except ValueError as e:
            raise ValueError(f"gradient {where} is not a regular array: {e}") from None
    else:
        raise TypeError(f"gradient {where} must be an array of numbers, got {type(g).__name__}")
    kind = arr.dtype.kind
    if kind == "c" and real is not None:
        raise TypeError(f"gradient {where} is complex ({arr.dtype}) but the parameter is {real}")
    if kind not in "biufc":
        raise TypeError(f"gradient {where} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(
            f"gradient {where} has shape {arr.shape}, but the parameter has shape {shape}"
        )
    return arr


def _as_gradient(g: Any, x: np.ndarray, path: Any) -> np.ndarray:
    """``g`` as an array of ``x``'s dtype and shape that does not overlap ``x``,
    or a clear error naming ``path``."""
    if (
        type(g) is np.ndarray and g.dtype == x.dtype and g.shape == x.shape and g.flags.c_contiguous
    ):  # the common case, checked first: it runs once per leaf and step
        return g.copy() if np.may_share_memory(g, x) else g
    where = f"at {path!r}" if isinstance(path, KeyPath) else f"in {path}"
    arr = checked_gradient(g, x.shape, str(x.dtype) if x.dtype.kind != "c" else None, where)
    if arr.dtype != x.dtype or not arr.flags.c_contiguous:
        return np.ascontiguousarray(arr, dtype=x.dtype)
    if np.may_share_memory(arr, x):
        return arr.copy()
    return arr


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


def _children_of_grad(grad: Any, model: Any, path: KeyPath) -> Any:
    """A function from a model child's key to its gradient (None when absent)."""
    if isinstance(grad, Mapping):
        if isinstance(model, (list, tuple)) and not tree._is_namedtuple(model):
            raise TypeError(
                f"gradient at {path!r} should be a {type(model).__name__} like the model, "
                f"got {type(grad).__name__}"
            )
        if isinstance(model, Mapping):
            extra = [k for k, v in grad.items() if k not in model and v is not None]
            if extra:
                raise ValueError(
                    f"gradient at {path!r} has key(s) {', '.join(map(repr, extra))} "
                    f"that the model does not have"
                )
        return lambda k: grad.get(k)
    if isinstance(model, (list, tuple)) and not tree._is_namedtuple(model):
        if not isinstance(grad, (list, tuple)):
            raise TypeError(
                f"gradient at {path!r} should be a {type(model).__name__} like the model, "
                f"got {type(grad).__name__}"
            )
        if len(grad) != len(model):
            raise ValueError(
                f"gradient at {path!r} has {len(grad)} entries, the model has {len(model)}"
            )
        return lambda k: grad[k]
    if tree._is_namedtuple(model) and isinstance(grad, tuple) and not tree._is_namedtuple(grad):
        if len(grad) != len(model):
            raise ValueError(
                f"gradient at {path!r} has {len(grad)} entries, the model has {len(model)}"
            )
        index = {f: i for i, f in enumerate(type(model)._fields)}
        return lambda k: grad[index[k]]
    if isinstance(grad, (np.ndarray, numbers.Number, str, bytes, list, tuple)) and not (
        tree._is_namedtuple(grad)
    ):
        raise TypeError(
            f"gradient at {path!r} should mirror a {type(model).__name__}, got {type(grad).__name__}"
        )
    return lambda k: getattr(grad, k, None)


def _collect(state: Any, model: Any, grad: Any, path: KeyPath, entries: dict[int, _Entry]) -> None:
    if state is None or grad is None:
        return
    if isinstance(state, Leaf):
        if not tree.is_parameter(model):
            raise TypeError(
                f"the state tree has a Leaf at {path!r} but the model has {type(model).__name__}"
            )
        g = _as_gradient(grad, model, path)
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
            entry.grad, entry.owns_grad = entry.grad + g, True
        return
    kids = tree.children(model)
    if kids is None:
        raise TypeError(
            f"the state tree at {path!r} does not match the model ({type(model).__name__})"
        )
    grad_of = _children_of_grad(grad, model, path)
    for key, child in kids:
        try:
            child_state = tree.child(state, key)
        except (KeyError, IndexError, AttributeError):
            raise ValueError(
                f"the state tree has nothing at {path.child(key)!r}; was it set up for this model?"
            ) from None
        if child_state is None:
            continue
        _collect(child_state, child, grad_of(key), path.child(key), entries)


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
        if done or (done is None and _plan.plan_and_step(state, model, grad)):
            return state, model
    return _update_general(state, model, grad)


def _update_general(state: Any, model: Any, grad: Any) -> tuple[Any, Any]:
    """``update_`` without a plan: every case, one leaf at a time in Python."""
    entries: dict[int, _Entry] = {}
    _collect(state, model, grad, KeyPath(), entries)
    ties = _views.resolve(entries, state, model)  # views' gradients onto their parameters
    live = [e for e in entries.values() if not e.leaf.frozen]

    _unalias_gradients(live)

    kernel_jobs, kernel_entries, python_entries = [], [], []
    for e in live:
        if _kernel.runs_in_kernel(e.leaf.rule, e.x.dtype):
            try:
                job = _kernel.prepare(e.leaf.rule, e.leaf.state, e.x, e.grad)
            except (TypeError, IndexError, AttributeError, ValueError):
                _check_kernel_state(e)  # a clearer error, naming the path
                raise
            # State arrays that do not fit: the kernel checks every job of every
            # dtype before it writes anything, and the handler below names the path.
            kernel_jobs.append(job)
            kernel_entries.append(e)
        else:
            python_entries.append(e)

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
            where = kernel_entries[job].path
            raise ValueError(
                f"gradient at {where!r} has {p}-norm {norm} (ClipNorm with throw=True)"
            ) from None
        except ValueError:
            # The kernel's message names a job number: name the leaf's path instead
            # if its state is the trouble (the shapes were checked above already).
            for e in kernel_entries:
                _check_kernel_state(e)
            raise
        for e, job in zip(kernel_entries, kernel_jobs):
            e.leaf._set_state(e.leaf.rule._advance(e.leaf.state, e.x.dtype)[0])
            if job.result is not e.x:
                replaced[id(e.x)] = job.result

    for e, new_state, update in python_results:
        e.leaf._set_state(new_state)
        if update is not None:
            new = _subtract(e.x, update, e.path)
            if new is not e.x:
                replaced[id(e.x)] = new

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
        arrays = [e.x]
        state = e.leaf.state
        rule = e.leaf.rule
        try:
            if isinstance(rule, MixedPrecision):
                arrays += [state[0], *rule.rule._arrays(state[1])]
            elif _kernel.runs_in_kernel(rule, e.x.dtype):
                arrays += rule._arrays(state)
        except (TypeError, IndexError, AttributeError):
            pass  # a state that does not fit: reported when its job is made
        written += [_views._bounds(a) for a in arrays if isinstance(a, np.ndarray) and a.size]
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


def _check_kernel_state(e: _Entry) -> None:
    """Raise a clear error, naming the path, if a Leaf's state arrays do not fit
    its parameter (a state tree set up for another model); else return."""
    rule, state, shape = e.leaf.rule, e.leaf.state, e.x.shape
    try:
        if isinstance(rule, MixedPrecision):
            arrays = [state[0], *rule.rule._arrays(state[1])]
        else:
            arrays = rule._arrays(state)
        bad = next((arr for arr in arrays if arr.shape != shape), None)
    except (TypeError, IndexError, AttributeError, ValueError):
        raise ValueError(
            f"the state at {e.path!r} is not a state of {rule!r}; was it set up for this model?"
        ) from None
    if bad is not None:
        raise ValueError(
            f"the state at {e.path!r} holds an array of shape {bad.shape}, but the parameter "
            f"has shape {shape}; was the state set up for this model?"
        )


def _apply_python(e: _Entry) -> tuple[Any, Any]:
    """Run a leaf's Python rule on a copy of its state (so that a later failure
    can leave the state as it was); return ``(new_state, checked update or None)``."""
    try:
        new_state, update = e.leaf.rule.apply(_copy_state(e.leaf.state), e.x, e.grad)
    except _core.NonFiniteNormError as err:
        _job, p, norm = err.args
        raise ValueError(
            f"gradient at {e.path!r} has {p}-norm {norm} (ClipNorm with throw=True)"
        ) from None
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


def update(state: Any, model: Any, grad: Any) -> tuple[Any, Any]:
    """One optimisation step, returning ``(new_state, new_model)``; neither
    input is changed. Tied parameters stay tied in the new model."""
    arrays: dict[int, np.ndarray] = _views.tied_copies(state, model)
    leaves: dict[int, Leaf] = {}
    new_state = _copy_state_tree(state, leaves)
    new_model = _copy_parameters(state, model, arrays)
    # A plan would be made for these new trees and then thrown away.
    return _update_general(new_state, new_model, grad)


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
        if not isinstance(model, np.ndarray):
            return model
        if id(model) not in arrays:
            arrays[id(model)] = model.copy()
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


class ArgumentError(TypeError, ValueError):
    """A call was given the wrong kind of argument (a model for a state tree,
    an unknown field)."""


def _set_frozen(tree_: Any, frozen: bool, name: str) -> None:
    leaves: list[Leaf] = []
    _find_leaves(tree_, name, KeyPath(), leaves)  # checks the whole tree before changing any
    for leaf in leaves:
        leaf.frozen = frozen


def _find_leaves(tree_: Any, name: str, path: KeyPath, leaves: list[Leaf]) -> None:
    if isinstance(tree_, Leaf):
        leaves.append(tree_)
        return
    if isinstance(tree_, (np.ndarray, numbers.Number, np.generic)):
        raise ArgumentError(
            f"{name} must not be applied to a model, only to the state tree from setup "
            f"(got {type(tree_).__name__} at {path!r})"
        )
    for k, c in tree.children(tree_) or ():
        _find_leaves(c, name, path.child(k), leaves)


def freeze_(tree_: Any) -> None:
    """Mark every ``Leaf`` under ``tree_`` frozen: not updated, state not advanced."""
    _set_frozen(tree_, True, "freeze_")


def thaw_(tree_: Any) -> None:
    """Undo :func:`freeze_` for every ``Leaf`` under ``tree_``."""
    _set_frozen(tree_, False, "thaw_")
