"""Optimisers.jl's ``Duplicated(model, grad)`` (the seed's "Usage with
Enzyme.jl"): a model and its gradient tree travelling together."""

from __future__ import annotations

from typing import Any

__all__ = ["Duplicated"]


class Duplicated:
    """A model ``val`` and its gradient tree ``dval``.

    ``setup(rule, Duplicated(model, grad))`` is ``setup(rule, model)``, and
    ``update_(state, Duplicated(model, grad))`` updates ``model`` and ``state``
    in place from ``grad`` and returns ``None``.
    """

    __slots__ = ("dval", "val")

    def __init__(self, val: Any, dval: Any) -> None:
        self.val = val
        self.dval = dval

    def __repr__(self) -> str:
        return f"Duplicated({self.val!r}, {self.dval!r})"
