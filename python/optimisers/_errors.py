"""The package's own exception and the messages built in more than one place."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

__all__ = ["ArgumentError", "norm_error", "too_deep", "walks_models"]

F = TypeVar("F", bound=Callable[..., Any])


class ArgumentError(TypeError, ValueError):
    """A call was given the wrong kind of argument (a model for a state tree,
    an unknown field)."""


def norm_error(path: Any, p: float, norm: float) -> ValueError:
    """The error for a gradient whose norm ``ClipNorm(throw=True)`` found not finite."""
    return ValueError(f"gradient at {path!r} has {p}-norm {norm} (ClipNorm with throw=True)")


def too_deep(name: str) -> RecursionError:
    """The error for a model nested deeper than the walks' recursion allows."""
    return RecursionError(
        f"{name}: the model is nested too deeply to walk within Python's recursion limit "
        f"({sys.getrecursionlimit()}); raise it with sys.setrecursionlimit, or nest less"
    )


def walks_models(f: F) -> F:
    """``f`` with a ``RecursionError`` from its walk of a model said clearly."""

    @functools.wraps(f)
    def walk(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except RecursionError as err:
            if str(err).startswith("maximum recursion depth"):
                raise too_deep(f.__name__) from None
            raise

    return walk  # type: ignore[return-value]
