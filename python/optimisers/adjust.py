"""``adjust`` and ``adjust_``: change hyper-parameters, keeping the state."""

from __future__ import annotations

import copy
import numbers
from typing import Any

import numpy as np

from . import tree
from .interface import ArgumentError, Leaf, _copy_state_tree
from .keypath import KeyPath
from .rules import AbstractRule, MixedPrecision, OptimiserChain, RMSProp, _Rule
from .wrappers import _Wrapper

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


def _adjust_rule(rule: AbstractRule, fields: dict[str, Any], used: set[str]) -> AbstractRule:
    """``rule`` with each field it has replaced; records which fields it used."""
    if isinstance(rule, OptimiserChain):
        return OptimiserChain(*(_adjust_rule(r, fields, used) for r in rule.rules))
    if isinstance(rule, MixedPrecision):
        return MixedPrecision(rule.dtype, _adjust_rule(rule.rule, fields, used))
    if isinstance(rule, _Wrapper):  # Scheduled, SkipNonFinite, Lookahead: into the rule inside
        own = {k: v for k, v in fields.items() if k in rule._field_names() and k != "rule"}
        used.update(own)
        return rule._replace(rule=_adjust_rule(rule.rule, fields, used), **own)
    if isinstance(rule, RMSProp) and ("centred" in fields or "centered" in fields):
        raise ArgumentError(
            "adjust cannot change RMSProp's centred: the two variants keep different state"
        )
    if isinstance(rule, _Rule):
        mine = {k: v for k, v in fields.items() if k in rule._field_names()}
        used.update(mine)
        return rule._replace(**mine) if mine else rule
    mine = {k: v for k, v in fields.items() if hasattr(rule, k)}
    used.update(mine)
    if not mine:
        return rule
    new = copy.copy(rule)
    for k, v in mine.items():
        setattr(new, k, v)
    return new


def _leaves(x: Any, found: dict[int, tuple[Leaf, KeyPath]], path: KeyPath) -> None:
    if isinstance(x, Leaf):
        found.setdefault(id(x), (x, path))
        return
    if isinstance(x, (np.ndarray, numbers.Number, np.generic)):
        raise ArgumentError(
            "adjust must not be applied to a model, only to the state tree from setup "
            f"(got {type(x).__name__} at {path!r})"
        )
    for k, c in tree.children(x) or ():
        _leaves(c, found, path.child(k))


def _check_used(fields: dict[str, Any], used: set[str], where: str = "") -> None:
    unused = [k for k in fields if k not in used]
    if unused:
        raise ArgumentError(
            f"adjust: no rule {where or 'given'} has the field(s) {', '.join(map(repr, unused))}"
        )


def adjust_(tree_: Any, eta: Any = None, **fields: Any) -> None:
    """Change the learning rate ``eta``, or any named fields, of every rule in
    the state tree ``tree_`` (or part of it), in place, keeping the state.
    Inside a chain each field goes to the rules that have it; a field that no
    rule has is an error, and then nothing is changed."""
    fields = _fields_of(eta, fields)
    found: dict[int, tuple[Leaf, KeyPath]] = {}
    _leaves(tree_, found, KeyPath())
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
