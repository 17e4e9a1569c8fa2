"""``Leaf``, the optimiser state of one parameter, and the walk to the leaves
of a state tree.

A ``Leaf`` planned by ``update_`` (see ``_plan.py``) lends its per-leaf
scalars to the plan, which advances them; the ``Leaf`` stays their one home:
reading ``state`` fetches them back, and before the ``Leaf`` is attached to
another plan, stepped by the general path or changed by hand, it takes them
back and retires the plan.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Any

import numpy as np

from . import tree
from ._errors import ArgumentError
from .keypath import KeyPath
from .rules import AbstractRule

__all__ = ["Leaf", "generation", "leaves_under"]

# Bumped whenever a Leaf is changed by hand: trees that `_plan` once found
# unplannable may be plannable now.
_generation = 0


def _changed() -> None:
    global _generation
    _generation += 1


def generation() -> int:
    """How many times a ``Leaf`` has been changed by hand so far."""
    return _generation


class Leaf:
    """The optimiser state of one parameter: its ``rule``, its ``state``, and
    whether it is ``frozen``. Mutable; the same ``Leaf`` at several places of a
    state tree means the parameter there is one and the same (a tie)."""

    # Once `update_` has planned a step (see `_plan.py`), the plan advances this
    # leaf's per-leaf scalars: `_plan` and `_slot` say where, and reading
    # `state` fetches them. Setting any field, or attaching the leaf to another
    # plan, takes them back and retires the plan.
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
        _changed()

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
        _changed()

    @property
    def frozen(self) -> bool:
        return self._frozen

    @frozen.setter
    def frozen(self, frozen: bool) -> None:
        self._detach()
        self._frozen = bool(frozen)
        _changed()

    def _attach(self, plan: Any, slot: int) -> None:
        """Lend the per-leaf scalars to ``plan`` (which read them from ``state``),
        taking them back from, and retiring, any plan that had them before."""
        if self._plan is not None and self._plan is not plan:
            self._detach()
        self._plan, self._slot = plan, slot

    def _detach(self) -> None:
        """Take the state back from the plan, and retire the plan."""
        plan = self._plan
        if plan is not None:
            self._state = self.state
            self._plan = None
            plan.invalidate()

    def __del__(self) -> None:
        # The plan knows this Leaf by its address only (see `_plan.py`): retire
        # it before the address can be reused.
        plan = self._plan
        if plan is not None:
            with contextlib.suppress(RuntimeError):  # a plan in use by a thread being torn down
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


def leaves_under(tree_: Any, name: str) -> list[tuple[Leaf, KeyPath]]:
    """Every ``Leaf`` under the state tree ``tree_``, once each, with the first
    path it is found at; an ``ArgumentError`` naming ``name`` if ``tree_`` holds
    a model's array or number (a model given for a state tree)."""
    found: dict[int, tuple[Leaf, KeyPath]] = {}
    todo: list[tuple[Any, KeyPath]] = [(tree_, KeyPath())]
    while todo:
        x, path = todo.pop()
        if isinstance(x, Leaf):
            found.setdefault(id(x), (x, path))
            continue
        if isinstance(x, (np.ndarray, numbers.Number, np.generic)):
            raise ArgumentError(
                f"{name} must not be applied to a model, only to the state tree from setup "
                f"(got {type(x).__name__} at {path!r})"
            )
        kids = list(tree.children(x) or ())
        todo.extend((c, path.child(k)) for k, c in reversed(kids))
    return list(found.values())
