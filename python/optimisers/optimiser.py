"""``Optimiser``: a rule, a model and its state in one object, stepped in place."""

from __future__ import annotations

from typing import Any

from .adjust import adjust_
from .checkpoint import load_state_dict, state_dict
from .interface import setup, update_
from .rules import AbstractRule

__all__ = ["Optimiser"]


class Optimiser:
    """A stateful optimiser for any rule, as a torch user would hold one::

        opt = Optimiser(Adam(), model)
        model = opt.step(grad)      # update_ on opt.state and opt.model

    ``rule`` may also be a function picking each leaf's rule, as for
    :func:`setup`. ``.state`` is the state tree, ``.model`` the model (the
    same object, unless a parameter could not be written in place).
    """

    def __init__(self, rule: AbstractRule, model: Any) -> None:
        self.rule = rule
        self.state = setup(rule, model)
        self.model = model

    def step(self, grad: Any) -> Any:
        """One step from the gradient tree ``grad``; returns the model."""
        self.state, self.model = update_(self.state, self.model, grad)
        return self.model

    def adjust(self, *args: Any, **fields: Any) -> None:
        """``adjust_`` on the state: a new learning rate, or any named fields."""
        adjust_(self.state, *args, **fields)

    def state_dict(self) -> dict[str, Any]:
        """The state as a checkpoint dict (see :func:`optimisers.state_dict`)."""
        return state_dict(self.state)

    def load_state_dict(self, sd: dict[str, Any], *, strict: bool = True) -> tuple[list, list]:
        """Load a checkpoint dict into the state (see :func:`optimisers.load_state_dict`)."""
        return load_state_dict(self.state, sd, strict=strict)

    def __repr__(self) -> str:
        return f"Optimiser({self.rule!r}, <model>)"
