"""``KeyPath``: where something sits in a model tree."""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any

from . import tree

__all__ = ["KeyPath", "getkeypath", "haskeypath"]


class KeyPath:
    """A path of keys into a model: dict keys, sequence indices (0-based), and
    field names of named tuples, dataclasses and registered classes.

    ``KeyPath("layers", 0, "weight")``; a ``KeyPath`` among the keys is spliced in.
    Hashable, comparable, and it prints as it is written.
    """

    __slots__ = ("keys",)

    def __init__(self, *keys: Any) -> None:
        flat: list[Any] = []
        for k in keys:
            if isinstance(k, KeyPath):
                flat.extend(k.keys)
            else:
                flat.append(k)
        object.__setattr__(self, "keys", tuple(flat))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("KeyPath is immutable")

    def __repr__(self) -> str:
        return f"KeyPath({', '.join(map(repr, self.keys))})"

    def __str__(self) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KeyPath):
            return self.keys == other.keys
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("KeyPath", self.keys))

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return KeyPath(*self.keys[i])
        return self.keys[i]

    def __add__(self, other: Any) -> KeyPath:
        if isinstance(other, KeyPath):
            return KeyPath(*self.keys, *other.keys)
        return NotImplemented

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeyPath, self.keys)

    def child(self, key: Any) -> KeyPath:
        if isinstance(key, KeyPath):
            return KeyPath(self, key)
        out = object.__new__(KeyPath)  # skips the splicing loop: walks make one per node
        object.__setattr__(out, "keys", (*self.keys, key))
        return out


def _step(x: Any, key: Any) -> tuple[bool, Any]:
    kids = tree.children(x)
    if kids is None:
        return False, None
    for k, c in kids:
        if k == key and isinstance(k, bool) == isinstance(key, bool):  # True is not index 1
            return True, c
    # a named tuple may also be indexed by position
    positional = isinstance(key, numbers.Integral) and not isinstance(key, bool)
    if positional and tree._is_namedtuple(x) and -len(x) <= key < len(x):
        return True, x[key]
    return False, None


def getkeypath(model: Any, kp: KeyPath | Any) -> Any:
    """The part of ``model`` at the path ``kp``; ``KeyError`` naming the path if absent."""
    kp = kp if isinstance(kp, KeyPath) else KeyPath(*kp)
    x = model
    for depth, key in enumerate(kp.keys):
        found, x = _step(x, key)
        if not found:
            raise KeyError(f"{kp!r}: nothing at {kp[: depth + 1]!r}")
    return x


def haskeypath(model: Any, kp: KeyPath | Any) -> bool:
    """Whether ``model`` has something at the path ``kp``."""
    kp = kp if isinstance(kp, KeyPath) else KeyPath(*kp)
    x = model
    for key in kp.keys:
        found, x = _step(x, key)
        if not found:
            return False
    return True
