"""``adjust`` and ``adjust_``: change hyper-parameters, keeping the state."""

from __future__ import annotations

import numbers
from typing import Any

from ._errors import ArgumentError
from ._leaf import leaves_under
from .interface import _copy_state_tree
from .rules import AbstractRule
from .rules import adjusted as _adjust_rule
from .rules import check_used as _check_used

__all__ = ["adjust", "adjust_"]


def _fields_of(eta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    if eta is not None:
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real):
            raise TypeError(f"adjust: the learning rate must be a real number, got {eta!r}")
        if "eta" in fields:
            raise TypeError("adjust: eta given both by position and by keyword")
        fields = {"eta": eta, **fields}
    if not fields:
        raise ArgumentError("adjust must be given something to change: a learning rate or fields")
    return fields


def adjust_(tree_: Any, eta: Any = None, **fields: Any) -> None:
    """Change the learning rate ``eta``, or any named fields, of every rule in
    the state tree ``tree_`` (or part of it), in place, keeping the state.
    Inside a chain each field goes to the rules that have it; a field that no
    rule has is an error, and then nothing is changed."""
    fields = _fields_of(eta, fields)
    found = dict(enumerate(leaves_under(tree_, "adjust")))
    if not found:
        return  # no Leaf under tree_ (say, the state of a layer without parameters)
    used: set[str] = set()
    new_rules = {}
    for i, (leaf, path) in found.items():
        try:
            new_rules[i] = _adjust_rule(leaf.rule, fields, used)
        except (TypeError, ValueError) as err:
            err.args = (f"{err} (the rule at {path!r})",)
            raise
    rules = {}
    for leaf, path in found.values():
        rules.setdefault(type(leaf.rule).__name__, path)
    held = ", ".join(f"{name} at {path!r}" for name, path in rules.items())
    _check_used(fields, used, f"in the tree (it holds {held})")
    for i, (leaf, _) in found.items():
        leaf.rule = new_rules[i]


def adjust(tree_: Any, eta: Any = None, **fields: Any) -> Any:
    """Like :func:`adjust_`, but returns a new tree (state arrays copied), or,
    given a rule, the adjusted rule."""
    fields = _fields_of(eta, fields)
    if isinstance(tree_, AbstractRule):
        used: set[str] = set()
        new = _adjust_rule(tree_, fields, used)
        _check_used(fields, used)
        return new
    new_tree = _copy_state_tree(tree_, {})
    adjust_(new_tree, **fields)
    return new_tree
