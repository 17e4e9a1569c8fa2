"""The fast path of ``update_``: a model's step planned once, then taken in one call.

The first ``update_`` on a state tree and model flattens them into a
``_core.Plan``: the containers on the way to every ``Leaf`` and, per leaf, its
parameter, state arrays, program and per-leaf scalars (``βᵗ``, counters), which
from then on the plan keeps. Each later step is one call into Rust that walks
the three trees along the cached paths, checks that the model and state are
still what was planned and that every gradient is an array the kernel reads as
it is, and then runs every leaf at once, with no per-leaf Python at all.

What the plan cannot vouch for it declines, having changed nothing, and
``update_`` takes its general path: a gradient of another dtype or layout, a
list for an array, a tree of another shape, a replaced array ("stale": the
plan is then dropped and rebuilt on the next step). Models it never plans:
Python rules, ``MixedPrecision``, float16 or complex parameters, arrays that are
not C-contiguous and writeable, tied parameters and views, and chains that
would need a roll-back (``ClipNorm(throw=True)`` after a rule with state).

A planned ``Leaf`` reads its per-leaf scalars from the plan when its ``state``
is read; setting its ``rule``, ``state`` or ``frozen`` detaches it and retires
the plan (see ``Leaf`` in ``interface.py``).
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import numpy as np

from . import _core, _leaf, tree
from ._errors import norm_error as _norm_error_at
from ._kernel import KERNEL_DTYPES
from ._leaf import Leaf
from .keypath import KeyPath
from .rules import _is_builtin

__all__ = ["enabled", "norm_error", "plan_and_step", "step_planned"]

#: Whether ``update_`` uses plans; the tests turn it off to check the general path.
enabled = True

# id(state tree) -> (weak reference to its plan, the key path of each planned leaf),
# read from Rust by `_core.step_planned` in that layout.
# The planned Leaf objects hold the plan, so it lives as long as they do; a plan
# holds neither the trees nor the Leafs (that would be a reference cycle) but
# their addresses, and a Leaf retires its plan when it is freed, so that no
# address is reused while its plan is valid.
_plans: dict[int, tuple[weakref.ref, list[KeyPath]]] = {}

# id(state tree) -> (id(model), generation): trees found unplannable, not retried
# until a Leaf somewhere is changed by hand (a new generation) or the model differs.
_declined: dict[int, tuple[int, int]] = {}

#: ``step_planned(state, model, grad)``: ``update_`` through the plan made for
#: ``state``; whether it did, or ``None`` when there is no plan for these trees
#: (then ``plan_and_step``). On ``False`` or ``None`` nothing has changed; a
#: failing norm raises ``_core.NonFiniteNormError`` (see ``norm_error``). The
#: registry is searched in Rust (see ``_core.step_planned``).
step_planned = functools.partial(_core.step_planned, _plans)


def plan_and_step(state: Any, model: Any, grad: Any) -> bool:
    """After ``step_planned`` found no plan that fits: plan the trees and take
    the step through the new plan if one can; return whether it did. On
    ``False`` nothing has changed."""
    # Plan again, unless this tree was found unplannable and nothing has changed since.
    if _declined.get(id(state)) == (id(model), _leaf.generation()):
        return False
    made = _make(state, model)
    if made is None:
        if len(_declined) > 64:
            _declined.clear()
        _declined[id(state)] = (id(model), _leaf.generation())
        return False
    return bool(_step(*made, state, model, grad))


def _step(plan: Any, paths: list[KeyPath], state: Any, model: Any, grad: Any) -> bool | None:
    """``plan.step``, with a failing norm reported at its key path."""
    try:
        return plan.step(state, model, grad)
    except _core.NonFiniteNormError as err:
        raise _norm_error(paths, err) from None


def norm_error(state: Any, err: _core.NonFiniteNormError) -> ValueError:
    """The error for a norm that failed in ``step_planned(state, ...)``, at its key path."""
    return _norm_error(_plans[id(state)][1], err)


def _norm_error(paths: list[KeyPath], err: _core.NonFiniteNormError) -> ValueError:
    leaf, p, norm = err.args
    return _norm_error_at(paths[leaf], p, norm)


class _Flat:
    """A state tree and model flattened for ``_core.Plan.build``."""

    def __init__(self) -> None:
        self.nodes: list[tuple] = []
        self.leaves: list[tuple] = []
        self.leaf_objects: list[Any] = []
        self.paths: list[KeyPath] = []
        self.seen: set[int] = set()

    def add(self, state: Any, model: Any, parent: int, key: Any, index: int, path: KeyPath) -> bool:
        """Add the subtree; False if it cannot be planned."""
        if isinstance(state, Leaf):
            return self._add_leaf(state, model, parent, key, index, path)
        kids = tree.children(model)
        if kids is None:
            return False
        if isinstance(model, dict):
            kind, keys = "dict", list(model)
        elif tree._is_namedtuple(model):
            kind, keys = "namedtuple", []
        elif isinstance(model, (list, tuple)):
            kind, keys = "seq", []
        else:
            kind, keys = "object", []
        me = len(self.nodes)
        self.nodes.append((parent, key, index, kind, type(model), keys, len(kids), 0))
        for i, (k, child) in enumerate(kids):
            try:
                child_state = tree.child(state, k)
            except (KeyError, IndexError, AttributeError, TypeError):
                return False
            if child_state is not None and not self.add(
                child_state, child, me, k, i, path.child(k)
            ):
                return False
        return True

    def _add_leaf(
        self, leaf: Any, x: Any, parent: int, key: Any, index: int, path: KeyPath
    ) -> bool:
        if type(x) is not np.ndarray or x.dtype not in KERNEL_DTYPES:
            return False
        if id(leaf) in self.seen:  # a Leaf in two places: a tie, for the general path
            return False
        rule = leaf.rule
        if not _is_builtin(rule):
            return False
        state = leaf.state  # current, if an older plan had it
        try:
            arrays = rule._arrays(state)
            per_leaf = rule._per_leaf(state)
        except (TypeError, IndexError, AttributeError, ValueError):
            return False
        program = rule._program(x.dtype)
        if len(arrays) != program.states or len(per_leaf) != program.per_leaf:
            return False
        if any(getattr(a, "shape", None) != x.shape for a in arrays):
            return False  # the general path says what is wrong
        self.nodes.append((parent, key, index, "leaf", None, [], 0, len(self.leaves)))
        self.leaves.append((leaf, x, arrays, program, per_leaf, leaf.frozen))
        self.leaf_objects.append(leaf)
        self.paths.append(path)
        self.seen.add(id(leaf))
        return True


def _make(state: Any, model: Any) -> tuple[Any, list[KeyPath]] | None:
    flat = _Flat()
    if not flat.add(state, model, -1, None, 0, KeyPath()):
        return None
    plan = _core.Plan.build(state, model, flat.nodes, flat.leaves)
    if plan is None:
        return None
    for slot, leaf in enumerate(flat.leaf_objects):
        leaf._attach(plan, slot)
    key = id(state)

    def forget(ref: weakref.ref) -> None:
        current = _plans.get(key)
        if current is not None and current[0] is ref:
            del _plans[key]

    _plans[key] = (weakref.ref(plan, forget), flat.paths)
    _declined.pop(key, None)
    return plan, flat.paths
