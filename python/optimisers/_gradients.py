"""Gradients as the step takes them: checked against their parameter, converted
to its dtype, and walked alongside the model."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import tree
from .keypath import KeyPath

__all__ = ["as_gradient", "checked_gradient", "children_of_grad"]


def checked_gradient(g: Any, shape: tuple[int, ...], real: str | None, where: str) -> np.ndarray:
    """``g`` as an array of numbers of this ``shape``, or a clear error naming
    ``where``. ``real`` names the parameter's real dtype (complex gradients are
    refused), or is None for complex parameters."""
    if isinstance(g, np.ndarray):
        arr = g
    elif isinstance(g, (numbers.Number, np.generic, list, tuple)):
        try:
            arr = np.asarray(g)
        except ValueError as e:
            raise ValueError(f"gradient {where} is not a regular array: {e}") from None
    else:
        arr = _from_array_like(g, where)
    kind = arr.dtype.kind
    if kind == "c" and real is not None:
        raise TypeError(f"gradient {where} is complex ({arr.dtype}) but the parameter is {real}")
    if kind not in "biufc":
        raise TypeError(f"gradient {where} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(
            f"gradient {where} has shape {arr.shape}, but the parameter has shape {shape}"
        )
    return arr


def _from_array_like(g: Any, where: str) -> np.ndarray:
    """An array from another library's array (JAX, torch, CuPy on the host...),
    without a copy where the library allows: through ``__array__`` or the array
    interface, ``__dlpack__``, or the buffer protocol (``array.array``,
    ``memoryview``)."""
    if not isinstance(g, (str, bytes, bytearray)):
        try:
            if hasattr(g, "__array__") or hasattr(g, "__array_interface__"):
                return np.asarray(g)
            if hasattr(g, "__dlpack__"):
                return np.from_dlpack(g)
            return np.asarray(memoryview(g))
        except TypeError:
            pass  # not an array after all
        except (ValueError, RuntimeError, BufferError) as e:
            raise TypeError(
                f"gradient {where} ({type(g).__name__}) could not be read as an array: {e}"
            ) from None
    raise TypeError(f"gradient {where} must be an array of numbers, got {type(g).__name__}")


def as_gradient(g: Any, x: np.ndarray, path: Any) -> np.ndarray:
    """``g`` as an array of ``x``'s dtype and shape that does not overlap ``x``,
    or a clear error naming ``path``."""
    if (
        type(g) is np.ndarray and g.dtype == x.dtype and g.shape == x.shape and g.flags.c_contiguous
    ):  # the common case, checked first: it runs once per leaf and step
        return g.copy() if np.may_share_memory(g, x) else g
    where = f"at {path!r}" if isinstance(path, KeyPath) else f"in {path}"
    arr = checked_gradient(g, x.shape, str(x.dtype) if x.dtype.kind != "c" else None, where)
    if arr.dtype != x.dtype or not arr.flags.c_contiguous:
        return np.array(arr, dtype=x.dtype, order="C")  # (ascontiguousarray makes 0-d 1-d)
    if np.may_share_memory(arr, x):
        return arr.copy()
    return arr


def children_of_grad(grad: Any, model: Any, path: KeyPath) -> Any:
    """A function from a model child's key to its gradient (None when absent)."""
    if isinstance(grad, Mapping):
        if isinstance(model, (list, tuple)) and not tree._is_namedtuple(model):
            raise TypeError(
                f"gradient at {path!r} should be a {type(model).__name__} like the model, "
                f"got {type(grad).__name__}"
            )
        if isinstance(model, Mapping):
            extra = [k for k, v in grad.items() if k not in model and v is not None]
            if extra:
                raise ValueError(
                    f"gradient at {path!r} has key(s) {', '.join(map(repr, extra))} "
                    f"that the model does not have"
                )
        return lambda k: grad.get(k)
    if isinstance(model, (list, tuple)) and not tree._is_namedtuple(model):
        if not isinstance(grad, (list, tuple)):
            raise TypeError(
                f"gradient at {path!r} should be a {type(model).__name__} like the model, "
                f"got {type(grad).__name__}"
            )
        if len(grad) != len(model):
            raise ValueError(
                f"gradient at {path!r} has {len(grad)} entries, the model has {len(model)}"
            )
        return lambda k: grad[k]
    if tree._is_namedtuple(model) and isinstance(grad, tuple) and not tree._is_namedtuple(grad):
        if len(grad) != len(model):
            raise ValueError(
                f"gradient at {path!r} has {len(grad)} entries, the model has {len(model)}"
            )
        index = {f: i for i, f in enumerate(type(model)._fields)}
        return lambda k: grad[index[k]]
    if isinstance(grad, (np.ndarray, numbers.Number, str, bytes, list, tuple)) and not (
        tree._is_namedtuple(grad)
    ):
        raise TypeError(
            f"gradient at {path!r} should mirror a {type(model).__name__}, got {type(grad).__name__}"
        )
    return lambda k: getattr(grad, k, None)
