"""The general path's pre-pass for the rules of ``wrappers.py``, and
``setup``'s choice and check of each leaf's rule.

Before a step of the general path writes anything, ``prepare`` takes apart
the rule of every leaf that holds a wrapper or a whole-tree rule, outside in:

- ``Scheduled`` gives way to its rule at this leaf's step (one rule object per
  step value, so leaves at the same step share one kernel program);
- ``Lookahead`` gives way to its rule, and ``finish`` syncs the weights after
  the step;
- ``SkipNonFinite`` waits for every leaf of the step with an equal rule: if
  any of their gradients is not finite, none of them steps;
- ``ClipGlobalNorm`` (alone, or in a chain after rules without state) waits
  for every leaf with an equal one, and scales all their gradients by the
  norm of all of them.

What is left is a built-in rule (then every such leaf goes to the kernel in
the step's one call) or a Python rule, each standing in for its ``Leaf``
(``_Stand``). ``finish``, called once the whole step has succeeded, puts each
leaf's state back together; a step that raises changes nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _core
from ._global_norm import clip_factor
from .keypath import KeyPath
from .rules import AbstractRule, Descent, MixedPrecision, OptimiserChain, _is_builtin
from .wrappers import ClipGlobalNorm, Lookahead, Scheduled, SkipNonFinite, _Wrapper

__all__ = ["choose", "finish", "prepare"]


# ---------------------------------------------------------------------------
# One leaf's rule, taken apart


class _Stand:
    """Stands in for a ``Leaf`` in the general path for one step: the rule left
    after taking the wrappers apart, its state, and the state it steps to."""

    __slots__ = ("frozen", "new_state", "rule", "state")

    def __init__(self, rule: AbstractRule, state: Any) -> None:
        self.rule, self.state, self.frozen = rule, state, False
        self.new_state: Any = None

    def _set_state(self, state: Any) -> None:
        self.new_state = state


class _Taken:
    """A leaf of the step whose rule is being taken apart."""

    def __init__(self, entry: Any) -> None:
        self.entry = entry
        self.leaf = entry.leaf
        self.rule: AbstractRule = entry.leaf.rule
        self.state: Any = entry.leaf.state
        # From the outside in: how to put the state back around the inner rule's.
        self.wraps: list[Callable[[Any, bool], Any]] = []
        self.lookahead: list[tuple[Lookahead, np.ndarray, int]] = []
        self.skipped = False
        self.order = 0  # its place among the step's taken leaves (tree order)
        # A ClipGlobalNorm's factor not yet applied to the gradient: the kernel
        # applies it as a first Descent(factor), in the same pass as the rule.
        self.factor: float | None = None

    def scale_gradient(self) -> None:
        """Apply a pending factor to the gradient itself."""
        if self.factor is not None:
            e = self.entry
            e.grad, e.owns_grad = e.grad * e.grad.dtype.type(self.factor), True
            self.factor = None


def _first_clip(chain: OptimiserChain) -> int | None:
    for i, r in enumerate(chain.rules):
        if isinstance(r, ClipGlobalNorm):
            return i
    return None


def _peel(t: _Taken) -> tuple[str, AbstractRule] | None:
    """Take ``t``'s rule apart up to a whole-tree rule (returned with its kind),
    or to the end (None)."""
    while True:
        rule = t.rule
        if isinstance(rule, Scheduled):
            step, inner = t.state
            try:
                now = rule.at(step)
            except (TypeError, ValueError) as err:  # a schedule's value the rule refuses
                err.args = (f"{err} (the rule at {t.entry.path!r}, step {step})",)
                raise
            t.wraps.append(lambda s, skipped, step=step: (step + 1, s))
            t.rule, t.state = now, inner
        elif isinstance(rule, Lookahead):
            slow, count, inner = t.state
            t.lookahead.append((rule, slow, count))
            t.wraps.append(
                lambda s, skipped, slow=slow, count=count: (slow, count + (not skipped), s)
            )
            t.rule, t.state = rule.rule, inner
        elif isinstance(rule, SkipNonFinite):
            return ("skip", rule)
        elif isinstance(rule, ClipGlobalNorm):
            return ("clip", rule)
        elif isinstance(rule, OptimiserChain) and _first_clip(rule) is not None:
            return ("clip", rule.rules[_first_clip(rule)])  # type: ignore[index]
        else:
            return None


def _skip_group(group: list[_Taken], rule: SkipNonFinite) -> None:
    bad = [t for t in group if not np.isfinite(t.entry.grad).all()]
    if bad:
        for t in group:
            rule.refuse(t.state[0], f"at {bad[0].entry.path!r}")
    for t in group:
        in_a_row, total, inner = t.state
        if bad:
            t.skipped = True
            t.wraps.append(lambda s, skipped, n=in_a_row, total=total: (n + 1, total + 1, s))
        else:
            t.wraps.append(lambda s, skipped, total=total: (0, total, s))
        t.rule, t.state = rule.rule, inner


def _clip_group(group: list[_Taken], rule: ClipGlobalNorm) -> None:
    grads = []
    # The rules after the clip, made once per chain object: leaves sharing a rule
    # share one program in the kernel call.
    after: dict[int, AbstractRule] = {}
    for t in group:
        t.scale_gradient()  # an earlier clip's factor first
        e = t.entry
        if isinstance(t.rule, ClipGlobalNorm):
            grads.append(e.grad)
            t.wraps.append(lambda s, skipped: None)
            if id(t.rule) not in after:
                after[id(t.rule)] = OptimiserChain()  # the clipped gradient is the update
            t.rule, t.state = after[id(t.rule)], ()
            continue
        chain: OptimiserChain = t.rule  # type: ignore[assignment]
        i = _first_clip(chain)
        assert i is not None
        before, rest = tuple(t.state[: i + 1]), chain.rules[i + 1 :]
        g = e.grad
        if i:  # rules without state before the clip transform the gradient first
            try:
                _, g = OptimiserChain(*chain.rules[:i]).apply(before[:i], e.x, g)
            except _core.NonFiniteNormError as err:  # a ClipNorm among them
                _job, p, norm = err.args
                raise ValueError(
                    f"gradient at {e.path!r} has {p}-norm {norm} (ClipNorm with throw=True)"
                ) from None
        grads.append(g)
        if len(rest) == 1:
            t.wraps.append(lambda s, skipped, before=before: (*before, s))
            t.rule, t.state = rest[0], t.state[i + 1]
        else:
            t.wraps.append(lambda s, skipped, before=before: (*before, *s))
            if id(chain) not in after:
                after[id(chain)] = OptimiserChain(*rest)
            t.rule, t.state = after[id(chain)], tuple(t.state[i + 1 :])
    factor = clip_factor(rule, grads, [t.entry.path for t in group])
    for t, g in zip(group, grads):
        if g is not t.entry.grad:
            t.entry.grad, t.entry.owns_grad = g, True
        t.factor = factor


def _special(rule: AbstractRule) -> bool:
    if isinstance(rule, (_Wrapper, ClipGlobalNorm)):
        return True
    return isinstance(rule, OptimiserChain) and _first_clip(rule) is not None


class Step:
    """The leaves taken apart for one step, to be put back by ``finish``."""

    def __init__(self, taken: list[_Taken]) -> None:
        self.taken = taken


def prepare(live: list[Any]) -> tuple[list[Any], Step | None]:
    """The step's leaves with every wrapper and whole-tree rule taken apart
    (each entry's ``leaf`` a ``_Stand``), and what ``finish`` needs; or
    ``live`` as it is and None when no leaf holds one. Writes nothing."""
    if not any(_special(e.leaf.rule) for e in live):
        return live, None
    taken = [_Taken(e) for e in live if _special(e.leaf.rule)]
    for i, t in enumerate(taken):
        t.order = i
    waiting = {id(t): _peel(t) for t in taken}
    while any(w is not None for w in waiting.values()):
        # The outer barriers first: a leaf skipped by SkipNonFinite takes no part in a norm.
        kind = "skip" if any(w and w[0] == "skip" for w in waiting.values()) else "clip"
        groups = _groups(
            [(waiting[id(t)][1], t) for t in taken if _waits(waiting[id(t)], kind, t)]  # type: ignore[index]
        )
        for rule, group in groups:
            (_skip_group if kind == "skip" else _clip_group)(group, rule)
        for _, group in groups:
            for t in group:
                waiting[id(t)] = None if t.skipped else _peel(t)
    # id(rule), factor -> the rule with Descent(factor) first, or None if Python runs it
    scaled: dict[tuple[int, float], OptimiserChain | None] = {}
    for t in taken:
        if t.skipped:
            continue
        key = (id(t.rule), t.factor)  # type: ignore[assignment]
        if t.factor is not None and key not in scaled:
            rules = t.rule.rules if isinstance(t.rule, OptimiserChain) else (t.rule,)
            # Descent(f) first multiplies by f rounded to the dtype, as NumPy would.
            scaled[key] = OptimiserChain(Descent(t.factor), *rules) if _is_builtin(t.rule) else None
        if t.factor is not None and scaled[key] is not None:
            inner = t.state if isinstance(t.rule, OptimiserChain) else (t.state,)
            single = not isinstance(t.rule, OptimiserChain)
            t.wraps.append(lambda s, skipped, single=single: s[1] if single else s[1:])
            t.rule, t.state, t.factor = scaled[key], (None, *inner), None
        t.scale_gradient()
        t.entry.leaf = _Stand(t.rule, t.state)
    skipped = {id(t.entry) for t in taken if t.skipped}
    return [e for e in live if id(e) not in skipped], Step(taken)


def _waits(w: tuple[str, AbstractRule] | None, kind: str, t: _Taken) -> bool:
    return w is not None and w[0] == kind and not t.skipped


def _groups(members: list[tuple[AbstractRule, _Taken]]) -> list[tuple[AbstractRule, list]]:
    """The leaves grouped by equal rules, in tree order: by identity first (most
    leaves share one rule object), then the distinct objects compared."""
    by_id: dict[int, tuple[AbstractRule, list]] = {}
    for rule, t in members:
        by_id.setdefault(id(rule), (rule, []))[1].append(t)
    groups: list[tuple[AbstractRule, list]] = []
    for rule, group in by_id.values():
        same = next((g for r, g in groups if r == rule), None)
        if same is None:
            groups.append((rule, group))
        else:
            same.extend(group)
    for _, group in groups:  # merged groups back in tree order
        group.sort(key=lambda t: t.order)
    return groups


def finish(step: Step, replaced: dict[int, np.ndarray]) -> None:
    """After the whole step succeeded: sync ``Lookahead``'s weights, and put
    every taken leaf's state back together."""
    for t in step.taken:
        e = t.entry
        if t.skipped:
            new = t.state
        else:
            new = e.leaf.new_state
            for rule, slow, count in reversed(t.lookahead):  # the innermost first
                if (count + 1) % rule.k == 0:
                    x = replaced.get(id(e.x), e.x)
                    rule.sync(slow, x)
                    if x.flags.writeable:
                        np.copyto(x, slow)
                    else:
                        replaced[id(e.x)] = slow.copy()
        for wrap in reversed(t.wraps):
            new = wrap(new, t.skipped)
        t.leaf._set_state(new)


# ---------------------------------------------------------------------------
# setup: each leaf's rule


class Chooser:
    """``setup(fn, model)``: ``fn(x)``, or ``fn(keypath, x)`` with ``path=True``,
    picks each leaf's rule."""

    def __init__(self, fn: Callable[..., Any], path: bool) -> None:
        self.fn, self.path = fn, path

    def pick(self, x: np.ndarray, where: KeyPath) -> AbstractRule:
        rule = self.fn(where, x) if self.path else self.fn(x)
        if not isinstance(rule, AbstractRule):
            raise TypeError(
                f"setup's function returned {rule!r} for the parameter at {where!r}, "
                f"which is not an optimisation rule"
            )
        return rule


def choose(rule: Any, x: np.ndarray, where: KeyPath) -> AbstractRule:
    """The rule of the leaf at ``where``: ``rule``, or the one a ``Chooser``
    picks; checked for whole-tree rules the general path cannot reach."""
    if isinstance(rule, Chooser):
        rule = rule.pick(x, where)
    if _holds_whole_tree(rule):
        _check(rule, True, x, where)
    return rule


def _holds_whole_tree(rule: Any) -> bool:
    if isinstance(rule, (ClipGlobalNorm, SkipNonFinite)):
        return True
    if isinstance(rule, OptimiserChain):
        return any(_holds_whole_tree(r) for r in rule.rules)
    inner = getattr(rule, "rule", None)
    return isinstance(rule, (_Wrapper, MixedPrecision)) and _holds_whole_tree(inner)


def _no_state(state: Any) -> bool:
    if isinstance(state, tuple):
        return all(_no_state(s) for s in state)
    return state is None


def _check(rule: Any, top: bool, x: np.ndarray, where: KeyPath) -> None:
    """Raise ``ValueError`` if a whole-tree rule sits where ``prepare`` cannot
    take it apart: after a rule with state, or inside ``MixedPrecision`` or a
    chain other than the leaf's own."""
    name = type(rule).__name__
    if isinstance(rule, (ClipGlobalNorm, SkipNonFinite)) and not top:
        raise ValueError(
            f"{name} at {where!r} must be the leaf's rule or come first in its chain "
            f"(after rules without state only; it may be wrapped in Scheduled, "
            f"SkipNonFinite or Lookahead), not inside another rule"
        )
    if isinstance(rule, (Scheduled, Lookahead, SkipNonFinite)):
        _check(rule.rule, top, x, where)
    elif isinstance(rule, MixedPrecision):
        _check(rule.rule, False, x, where)
    elif isinstance(rule, OptimiserChain):
        for j, r in enumerate(rule.rules):
            if not _holds_whole_tree(r):
                continue
            stateful = [s for s in rule.rules[:j] if not _no_state(s.init(x))]
            if stateful:
                raise ValueError(
                    f"{type(r).__name__} at {where!r} comes after {stateful[0]!r}, "
                    f"a rule with state: it must come before any"
                )
        i = _first_clip(rule) if top else None
        if i is None:
            for r in rule.rules:
                _check(r, False, x, where)
            return
        rest = rule.rules[i + 1 :]
        for r in rule.rules[:i]:
            _check(r, False, x, where)
        for r in rest:
            _check(r, len(rest) == 1, x, where)
