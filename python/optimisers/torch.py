"""``optimisers`` for torch: a ``torch.optim.Optimizer`` over CPU tensors, and a
module's parameters and gradients as trees of NumPy views for the tree API.

The optimiser keeps one model tree of zero-copy NumPy views of its parameters
(a list per group) and the state tree ``setup`` made for it, both built once:
each ``step`` hands ``update_`` the same two trees and the gradients' views
(new views only of new gradient tensors), so that the step ``update_`` planned
first is one call into Rust from then on. A group's ``lr`` is its rule's
``eta``; a new ``lr`` (set by a scheduler) reaches the rule through
``adjust_`` before the step, and replans it once.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, Callable

import numpy as np
import torch

from . import rules as _rules
from .adjust import adjust, adjust_
from .interface import Leaf, setup, update_

__all__ = ["Optimizer", "gradients", "parameters"]


# ---------------------------------------------------------------------------
# Views of tensors


def _refusal(t: torch.Tensor) -> str | None:
    """Why the tensor ``t`` cannot be trained through a NumPy view, if it cannot."""
    if t.device.type != "cpu":
        return f"is on {t.device}; optimisers.torch trains CPU tensors only"
    if t.layout != torch.strided:
        return f"has layout {t.layout}; only dense (strided) tensors can be trained"
    if t.dtype == torch.bfloat16:
        return "is bfloat16, which NumPy cannot view; train it in float32 (or float16)"
    if not t.dtype.is_floating_point:
        return f"has dtype {t.dtype}; only real floating-point tensors can be trained"
    if t.is_conj() or t.is_neg():
        return "has a lazy conjugate or negation bit; resolve it first (t.resolve_conj())"
    return None


def _view(t: torch.Tensor, where: str) -> np.ndarray:
    """A NumPy array sharing ``t``'s memory, or a clear error naming ``where``."""
    problem = _refusal(t)
    if problem is not None:
        raise TypeError(f"{where} {problem}")
    return t.detach().numpy()


def _nest(named: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Nested dicts from dotted names: ``{"0.weight": w}`` -> ``{"0": {"weight": w}}``."""
    out: dict[str, Any] = {}
    for name, value in named:
        *parents, last = name.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def parameters(module: torch.nn.Module) -> dict[str, Any]:
    """The module's parameters as nested dicts (by their dotted names) of
    zero-copy NumPy views: a tree for ``setup``, ``update_`` and ``destructure``.
    A parameter tied to another appears once, under its first name."""
    return _nest((name, _view(p, f"parameter {name!r}")) for name, p in module.named_parameters())


def gradients(module: torch.nn.Module) -> dict[str, Any]:
    """The gradients of the module's parameters, shaped as ``parameters(module)``:
    NumPy views of each ``.grad``, ``None`` where there is none."""
    return _nest(
        (name, None if p.grad is None else _view(p.grad, f"the gradient of {name!r}"))
        for name, p in module.named_parameters()
    )


# ---------------------------------------------------------------------------
# Rules as plain data (for state_dict)


def _eta_of(rule: Any) -> float | None:
    """The learning rate of ``rule``: its ``eta``, or the first in a chain."""
    if isinstance(rule, _rules.OptimiserChain):
        for inner in rule.rules:  # type: ignore[attr-defined]
            eta = _eta_of(inner)
            if eta is not None:
                return eta
        return None
    if isinstance(rule, _rules.MixedPrecision):
        return _eta_of(rule.rule)  # type: ignore[attr-defined]
    eta = getattr(rule, "eta", None)
    return float(eta) if isinstance(eta, (int, float)) else None


def _rule_data(rule: Any) -> dict[str, Any]:
    """``rule`` as plain data (what ``torch.load(weights_only=True)`` reads)."""
    if isinstance(rule, _rules.OptimiserChain):
        inner = rule.rules  # type: ignore[attr-defined]
        return {"rule": "OptimiserChain", "rules": [_rule_data(r) for r in inner]}
    if isinstance(rule, _rules.MixedPrecision):
        dtype, inner = rule.dtype, rule.rule  # type: ignore[attr-defined]
        return {"rule": "MixedPrecision", "dtype": str(dtype), "inner": _rule_data(inner)}
    if type(rule).__module__ != _rules.__name__ or not hasattr(rule, "_field_names"):
        raise TypeError(
            f"state_dict can save built-in rules only, not {type(rule).__name__}; "
            "pickle the optimiser's state tree instead"
        )
    fields = {f: getattr(rule, f) for f in rule._field_names()}
    return {"rule": type(rule).__name__, **{k: _plain(v) for k, v in fields.items()}}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _rule_from(data: Any) -> Any:
    if not isinstance(data, dict) or not isinstance(data.get("rule"), str):
        raise ValueError(f"load_state_dict: {data!r} does not describe a rule")
    fields = dict(data)
    name = fields.pop("rule")
    if name == "OptimiserChain":
        return _rules.OptimiserChain(*(_rule_from(r) for r in fields["rules"]))
    if name == "MixedPrecision":
        return _rules.MixedPrecision(np.dtype(fields["dtype"]), _rule_from(fields["inner"]))
    cls = getattr(_rules, name, None)
    if name not in _rules.__all__ or not isinstance(cls, type):
        raise ValueError(f"load_state_dict: unknown rule {name!r}")
    return cls(**fields)


# Leaf states as plain data: arrays become tensors (copies), NumPy scalars keep their dtype.
_SCALAR = "numpy scalar"


def _state_data(s: Any) -> Any:
    if isinstance(s, np.ndarray):
        return torch.from_numpy(s.copy())
    if isinstance(s, np.generic):
        return {_SCALAR: s.dtype.str, "value": s.item()}
    if isinstance(s, tuple):
        return tuple(_state_data(x) for x in s)
    if s is None or isinstance(s, (bool, int, float)):
        return s
    raise TypeError(f"state_dict cannot save a state holding {type(s).__name__}")


def _state_from(d: Any) -> Any:
    if isinstance(d, torch.Tensor):
        return d.detach().cpu().numpy().copy()
    if isinstance(d, dict) and _SCALAR in d:
        return np.dtype(d[_SCALAR]).type(d["value"])
    if isinstance(d, (tuple, list)):
        return tuple(_state_from(x) for x in d)
    return d


def _arrays_in(s: Any) -> Iterable[np.ndarray]:
    if isinstance(s, np.ndarray):
        yield s
    elif isinstance(s, tuple):
        for x in s:
            yield from _arrays_in(x)


# ---------------------------------------------------------------------------
# The optimiser


class _Layout:
    """The trees ``update_`` steps, built once for the current parameter groups:
    per group, the views of its parameters, their state, its rule and ``lr``."""

    def __init__(self, groups: list[dict[str, Any]], states: list[list[Leaf]]) -> None:
        """``states`` holds the state of the first groups (kept); the rest are set up."""
        self.params = [p for g in groups for p in g["params"]]
        self.model = [
            [_view(p, _where(gi, j, p)) for j, p in enumerate(g["params"])]
            for gi, g in enumerate(groups)
        ]
        self.state = list(states) + [
            self._setup(groups[gi], gi, self.model[gi]) for gi in range(len(states), len(groups))
        ]
        self.rules = [g["rule"] for g in groups]
        self.lrs = [g["lr"] for g in groups]
        self.pointers = [p.data_ptr() for p in self.params]
        # The gradient tensors of the last step (None where skipped) and their
        # views, as update_ takes them: reused while the tensors are the same
        # (gradients accumulated into, zero_grad(set_to_none=False)).
        self.grad_tensors: list[Any] = []
        self.grads: list[list[np.ndarray | None]] = []

    @staticmethod
    def _setup(group: dict[str, Any], gi: int, views: list[np.ndarray]) -> list[Leaf]:
        try:
            return setup(group["rule"], views)  # type: ignore[no-any-return]
        except TypeError as err:
            # setup names the place as `[j]`; say which tensor that is.
            raise TypeError(f"param_groups[{gi}]: {err}") from None

    def stale(self) -> bool:
        """Whether some parameter's memory has moved (``p.data = ...``) since."""
        return [p.data_ptr() for p in self.params] != self.pointers

    def gradients(self, groups: list[dict[str, Any]]) -> list[list[np.ndarray | None]]:
        """The views of the gradients to step: None where a parameter has no
        ``grad`` or does not require one (frozen)."""
        tensors = [p.grad if p.requires_grad else None for p in self.params]
        if len(tensors) == len(self.grad_tensors) and all(
            map(operator.is_, tensors, self.grad_tensors)
        ):
            return self.grads
        try:
            grads = [[_grad_view(p) for p in g["params"]] for g in groups]
        except (TypeError, RuntimeError):
            grads = [
                [_checked_grad_view(p, gi, j) for j, p in enumerate(g["params"])]
                for gi, g in enumerate(groups)
            ]
        self.grad_tensors, self.grads = tensors, grads
        return grads


def _where(gi: int, j: int, p: torch.Tensor) -> str:
    return f"param_groups[{gi}]['params'][{j}] ({p.dtype}, shape {tuple(p.shape)})"


class Optimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` taking every step with an ``optimisers`` rule.

    ``params`` as torch takes them: tensors, or groups ``{"params": [...],
    "rule": rule}`` (a group without a ``rule`` uses ``rule``). A group's
    ``lr`` is its rule's learning rate ``eta`` (torch's LR schedulers change
    it); a rule without one has no ``lr`` to schedule and is refused.
    Parameters must be dense CPU tensors of float32, float64 (through
    zero-copy views, planned: one call into Rust per step) or float16 (stepped
    in float32 and rounded back, on the general path).
    """

    def __init__(self, params: Any, rule: Any = None) -> None:
        if rule is not None and not isinstance(rule, _rules.AbstractRule):
            raise TypeError(f"Optimizer: rule must be an optimisation rule, got {rule!r}")
        self._layout: _Layout | None = None
        self._kept: list[list[Leaf]] = []  # the state of the groups before one was added
        super().__init__(params, {} if rule is None else {"rule": rule})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = dict(param_group)
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        # A tensor given twice (tied weights listed by hand) is one parameter.
        unique: dict[int, torch.Tensor] = {}
        for p in params:
            unique.setdefault(id(p), p)
        group["params"] = list(unique.values())
        rule = group.setdefault("rule", self.defaults.get("rule"))
        if rule is None:
            raise TypeError("Optimizer: a parameter group has no rule, and no default rule given")
        if not isinstance(rule, _rules.AbstractRule):
            raise TypeError(f"Optimizer: a group's rule must be an optimisation rule, got {rule!r}")
        eta = _eta_of(rule)
        if eta is None:
            raise TypeError(f"Optimizer: {rule!r} has no learning rate eta to serve as lr")
        if "lr" in group and float(group["lr"]) != eta:
            eta = float(group["lr"])
            group["rule"] = rule = adjust(rule, eta=eta)
        group["lr"] = eta
        gi = len(self.param_groups)
        for j, p in enumerate(group["params"]):
            problem = _refusal(p)
            if problem is not None:
                raise TypeError(f"Optimizer: {_where(gi, j, p)} {problem}")
        if self._layout is not None:  # the groups so far keep their state, and their lr
            self._sync_rules(self._layout)
            self._kept = self._layout.state
        super().add_param_group(group)
        self._layout = None

    def _current_layout(self) -> _Layout:
        layout = self._layout
        if layout is None:
            layout = self._layout = _Layout(self.param_groups, self._kept)
            self._kept = []
        elif layout.stale():
            # Same state, new memory: the views must follow the parameters.
            self._sync_rules(layout)
            layout = self._layout = _Layout(self.param_groups, layout.state)
        return layout

    def _sync_rules(self, layout: _Layout) -> None:
        """Bring a group's new ``lr`` (or new ``rule``) to its Leafs."""
        for gi, group in enumerate(self.param_groups):
            rule, lr = group["rule"], group["lr"]
            if rule is not layout.rules[gi]:
                for leaf in layout.state[gi]:
                    leaf.rule = rule
                layout.rules[gi] = rule
                eta = _eta_of(rule)
                group["lr"] = layout.lrs[gi] = eta
                lr = eta
            if lr is not layout.lrs[gi] and float(lr) != _eta_of(rule):
                adjust_(layout.state[gi], eta=float(lr))
                group["rule"] = layout.rules[gi] = layout.state[gi][0].rule
            layout.lrs[gi] = lr

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Update every parameter with a gradient (``p.grad``, ``requires_grad``)
        by its group's rule; returns ``closure()``'s loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # No torch operation runs here (the step is NumPy views and Rust):
        # no grad mode to set.
        layout = self._current_layout()
        self._sync_rules(layout)
        update_(layout.state, layout.model, layout.gradients(self.param_groups))
        return loss

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``state`` by parameter index (each ``{"state": ...,
        "frozen": ...}``, arrays as tensors) and ``param_groups`` with ``params``
        (indices), ``lr`` and ``rule`` as plain data."""
        layout = self._current_layout()
        self._sync_rules(layout)
        state: dict[int, Any] = {}
        groups = []
        index = 0
        for gi, group in enumerate(self.param_groups):
            indices = []
            for leaf in layout.state[gi]:
                state[index] = {"state": _state_data(leaf.state), "frozen": leaf.frozen}
                indices.append(index)
                index += 1
            extra = {k: v for k, v in group.items() if k not in ("params", "rule", "lr")}
            groups.append(
                {**extra, "params": indices, "lr": group["lr"], "rule": _rule_data(group["rule"])}
            )
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved, for the same parameters in the same
        groups; everything is checked before anything changes."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"load_state_dict: {len(groups)} parameter groups saved, "
                f"this optimiser has {len(self.param_groups)}"
            )
        states, rules = [], []
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"load_state_dict: group {gi} saved {len(saved['params'])} parameters, "
                    f"this optimiser's has {len(group['params'])}"
                )
            rule = _rule_from(saved["rule"])
            lr = saved.get("lr", _eta_of(rule))
            if float(lr) != _eta_of(rule):
                rule = adjust(rule, eta=float(lr))
            leaves = []
            for j, (i, p) in enumerate(zip(saved["params"], group["params"])):
                entry = state_dict["state"][i]
                s = _state_from(entry["state"])
                for a in _arrays_in(s):
                    if a.shape != tuple(p.shape):
                        raise ValueError(
                            f"load_state_dict: the state saved for {_where(gi, j, p)} "
                            f"holds an array of shape {a.shape}"
                        )
                leaves.append(Leaf(rule, s, bool(entry.get("frozen", False))))
            states.append(leaves)
            rules.append((rule, lr, saved))
        for group, (rule, lr, saved) in zip(self.param_groups, rules):
            group.update({k: v for k, v in saved.items() if k != "params"})
            group["rule"], group["lr"] = rule, lr
        self._layout = _Layout(self.param_groups, states)


def _grad_view(p: torch.Tensor) -> np.ndarray | None:
    g = p.grad
    if g is None or not p.requires_grad:
        return None  # no gradient, or frozen: not trained
    return g.numpy()


def _checked_grad_view(p: torch.Tensor, gi: int, j: int) -> np.ndarray | None:
    g = p.grad
    if g is None or not p.requires_grad:
        return None
    return _view(g, f"the gradient of {_where(gi, j, p)}")
