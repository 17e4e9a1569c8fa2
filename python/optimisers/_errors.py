"""The package's own exception and the messages built in more than one place."""

from __future__ import annotations

from typing import Any

__all__ = ["ArgumentError", "norm_error"]


class ArgumentError(TypeError, ValueError):
    """A call was given the wrong kind of argument (a model for a state tree,
    an unknown field)."""


def norm_error(path: Any, p: float, norm: float) -> ValueError:
    """The error for a gradient whose norm ``ClipNorm(throw=True)`` found not finite."""
    return ValueError(f"gradient at {path!r} has {p}-norm {norm} (ClipNorm with throw=True)")
