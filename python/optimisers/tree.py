"""What a model tree is: its containers, their children, and how to rebuild them.

Containers are ``dict`` (and subclasses), ``list``, ``tuple``, named tuples,
dataclass instances, and instances of classes given to :func:`register`.
Everything else is a leaf. A leaf is a parameter when it is a NumPy array of
a floating (or complex) dtype, or another library's array (JAX, torch) that
NumPy can read (``__array__``, ``__dlpack__``) with a floating dtype; other
leaves are kept as they are.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import numpy as np

__all__ = ["is_parameter", "parameter_array", "register"]

_REGISTERED: dict[type, tuple[str, ...] | None] = {}


def register(cls: type, fields: Any = None) -> type:
    """Make instances of ``cls`` containers of the model tree.

    Their children are the attributes named in ``fields``, or every instance
    attribute when ``fields`` is None. They are rebuilt without calling
    ``__init__``. Returns ``cls``, so this also works as a class decorator.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register expects a class, got {cls!r}")
    if isinstance(fields, str):
        fields = (fields,)
    _REGISTERED[cls] = None if fields is None else tuple(fields)
    return cls


def is_parameter(x: Any) -> bool:
    """A trainable leaf: a NumPy array of floating or complex numbers (0-d
    included), or another library's array of floating numbers."""
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "fc"
    return _floating_array_like(x)


def _floating_array_like(x: Any) -> bool:
    cls = type(x)
    if not (hasattr(cls, "__array__") or hasattr(cls, "__dlpack__")) or isinstance(x, np.generic):
        return False
    dtype = getattr(x, "dtype", None)
    kind = getattr(dtype, "kind", None)  # NumPy's dtypes (JAX uses them)
    if kind is not None:
        return kind == "f"
    return getattr(dtype, "is_floating_point", False) is True  # torch's dtypes


def parameter_array(x: Any, where: str) -> np.ndarray:
    """The parameter ``x`` as a NumPy array: itself, or another library's
    array viewed without a copy where the library allows (a torch tensor,
    writeable; a JAX array, read-only); a clear error naming ``where`` if
    NumPy cannot read it."""
    if isinstance(x, np.ndarray):
        return x
    if getattr(x, "requires_grad", False) and callable(getattr(x, "detach", None)):
        x = x.detach()  # torch will not hand out a tensor that requires grad
    try:
        if hasattr(x, "__array__"):
            return np.asarray(x)
        return np.from_dlpack(x)
    except (TypeError, ValueError, RuntimeError, BufferError) as e:
        raise TypeError(
            f"parameter {where} ({type(x).__name__} of {x.dtype}) cannot be read as a "
            f"NumPy array: {e}"
        ) from None


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _registered_fields(x: Any) -> tuple[str, ...] | None:
    for cls in type(x).__mro__:
        if cls in _REGISTERED:
            fields = _REGISTERED[cls]
            return _instance_attributes(x) if fields is None else fields
    return None


def _instance_attributes(x: Any) -> tuple[str, ...]:
    """Every instance attribute: those in ``__dict__`` and the ``__slots__`` that are set."""
    names = list(getattr(x, "__dict__", ()))
    for cls in type(x).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and name not in names and hasattr(x, name):
                names.append(name)
    return tuple(names)


def _object_fields(x: Any) -> tuple[str, ...] | None:
    """Attribute names of a dataclass instance or registered object, else None."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return tuple(f.name for f in dataclasses.fields(x))
    return _registered_fields(x)


def is_container(x: Any) -> bool:
    return isinstance(x, (dict, list, tuple)) or _object_fields(x) is not None


def children(x: Any) -> list[tuple[Any, Any]] | None:
    """``(key, child)`` pairs of a container in order, or None for a leaf."""
    kind = type(x)
    if kind is list or kind is tuple:  # the common cases first
        return list(enumerate(x))
    if isinstance(x, dict):
        return list(x.items())
    if _is_namedtuple(x):
        return list(zip(type(x)._fields, x))
    if isinstance(x, (list, tuple)):
        return list(enumerate(x))
    fields = _object_fields(x)
    if fields is not None:
        return [(f, getattr(x, f)) for f in fields]
    return None


def trainable_keys(x: Any) -> set | None:
    """The keys of the children a ``trainable(self)`` method lets be trained
    (None when the object has no such method: all of them)."""
    method = getattr(type(x), "trainable", None)
    if method is None or not callable(method) or isinstance(x, (dict, list, tuple)):
        return None
    chosen = x.trainable()
    if not isinstance(chosen, Mapping):
        raise TypeError(
            f"{type(x).__name__}.trainable() must return a dict of some of its fields, "
            f"got {type(chosen).__name__}"
        )
    fields = set(_object_fields(x) or ())
    unknown = set(chosen) - fields
    if unknown:
        raise ValueError(
            f"{type(x).__name__}.trainable() names {sorted(map(str, unknown))}, "
            f"which are not among its fields {sorted(fields)}"
        )
    return set(chosen)


def trainable_children(x: Any) -> list[tuple[Any, Any, bool]] | None:
    """``(key, child, trainable)`` for each child of a container, or None for a leaf."""
    kind = type(x)
    if kind is dict:  # the common cases first: no ``trainable`` method to ask
        return [(k, c, True) for k, c in x.items()]
    if kind is list or kind is tuple:
        return [(k, c, True) for k, c in enumerate(x)]
    kids = children(x)
    if kids is None:
        return None
    keys = trainable_keys(x)
    return [(k, c, keys is None or k in keys) for k, c in kids]


def rebuild(x: Any, new: dict[Any, Any]) -> Any:
    """A container like ``x`` with the children in ``new`` (by key) replaced.

    Returns ``x`` itself when nothing changes.
    """
    kind = type(x)
    if kind is dict or kind is list:  # the common cases first
        if all(child is x[key] for key, child in new.items()):
            return x
        if kind is dict:
            return {**x, **new}
        items = list(x)
        for key, child in new.items():
            items[key] = child
        return items
    if not new or all(child is _get(x, key) for key, child in new.items()):
        return x
    if isinstance(x, dict):
        out = copy.copy(x)
        out.update(new)
        return out
    if _is_namedtuple(x):
        return x._replace(**new)
    if isinstance(x, (list, tuple)):
        items = list(x)
        for key, child in new.items():
            items[key] = child
        return items if type(x) is list else type(x)(items)
    out = copy.copy(x)
    for key, child in new.items():
        object.__setattr__(out, key, child)
    return out


def _get(x: Any, key: Any) -> Any:
    if isinstance(x, dict):
        return x[key]
    if _is_namedtuple(x):
        return getattr(x, key)
    if isinstance(x, (list, tuple)):
        return x[key]
    return getattr(x, key)


def child(x: Any, key: Any) -> Any:
    """The child of container ``x`` at ``key``."""
    return _get(x, key)


def map_like(x: Any, f: Callable[[Any, Any, bool], Any]) -> Any:
    """A container of ``x``'s type whose every child is ``f(key, child, trainable)``.

    Unlike :func:`rebuild` it always makes a new container (state trees use it).
    """
    kids = trainable_children(x)
    assert kids is not None
    values = {k: f(k, c, t) for k, c, t in kids}
    if isinstance(x, dict):
        out = copy.copy(x)
        out.clear()
        out.update(values)
        return out
    if _is_namedtuple(x):
        return type(x)(*values.values())
    if isinstance(x, list):
        return list(values.values())
    if isinstance(x, tuple):
        return tuple(values.values()) if type(x) is tuple else type(x)(values.values())
    out = copy.copy(x)
    for key, value in values.items():
        object.__setattr__(out, key, value)
    return out


def leaves(x: Any) -> Iterator[Any]:
    """Every leaf under ``x``, in tree order (ties repeated)."""
    kids = children(x)
    if kids is None:
        yield x
        return
    for _, c in kids:
        yield from leaves(c)
