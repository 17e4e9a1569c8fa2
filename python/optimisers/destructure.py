"""``destructure`` and ``Restructure``: a model as one flat vector and back.

``flat, re = destructure(model)`` copies every trainable parameter, once each
(tied arrays and views of a parameter count once), in tree order, into one
1-d array of the parameters' common dtype. ``re(flat)`` builds a model like the
original from such a vector; ``re.flatten(grad)`` takes a gradient tree of the
model to a flat vector in the same layout (the pullback of ``re``).

The copies run in Rust, in one call with the GIL released
(``_core.gather`` / ``_core.scatter``), for float32 and float64; other dtypes
(float16, complex) are copied by NumPy.

``re`` keeps a skeleton of the model: the model's containers with each
parameter replaced by a small placeholder naming its slot of the flat vector,
and everything that is not a trainable parameter kept as it was. It does not
keep the parameters themselves alive, and it pickles.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from . import _core, tree
from ._errors import walks_models
from ._gradients import checked_gradient, children_of_grad
from ._kernel import KERNEL_DTYPES
from .keypath import KeyPath
from .views import (
    Ties,
    ViewMap,
    _view_map,
    find_ties,
    might_share_memory,
    rebuild_view,
    walk_parameters,
)

__all__ = ["Restructure", "destructure"]


class _Slot:
    """Placeholder in a skeleton: the parameter stored in slot ``index`` or,
    when ``geometry`` is set (the key of a ``ViewMap``, see
    ``views._view_map``), a view of it."""

    __slots__ = ("geometry", "index", "writeable")

    def __init__(self, index: int, geometry: tuple | None = None, writeable: bool = True) -> None:
        self.index = index
        self.geometry = geometry
        self.writeable = writeable

    @property
    def map(self) -> ViewMap:
        assert self.geometry is not None
        vm = _view_map(*self.geometry)
        assert vm is not None
        return vm

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Slot, (self.index, self.geometry, self.writeable))

    def __repr__(self) -> str:
        return f"<slot {self.index}>" if self.geometry is None else f"<view of slot {self.index}>"


def _geometry(vm: ViewMap) -> tuple:
    return (vm.itemsize, vm.shape, vm.strides, vm.owner_shape, vm.owner_strides, vm.offset)


# ---------------------------------------------------------------------------
# destructure


@walks_models
def destructure(model: Any) -> tuple[np.ndarray, Restructure]:
    """``(flat, re)``: every trainable parameter of ``model`` once, in tree
    order, raveled (C order) into one 1-d array of their common dtype
    (``numpy.result_type``: float32 with float64 gives float64; complex is kept),
    and the ``Restructure`` that rebuilds the model from such a vector.

    Parameters are the floating arrays that ``trainable`` lets through; an
    array met twice, or a NumPy view of a parameter (``w.T``), counts once.
    """
    skeleton, arrays, placeholders = _skeleton(model)
    # Views are rare: only then walk again for the paths that warnings name.
    ties = find_ties(walk_parameters(model)) if might_share_memory(arrays) else Ties()
    owners = [a for a in arrays if id(a) not in ties.owner]
    slot_of = {id(a): i for i, a in enumerate(owners)}
    for a, placeholder in zip(arrays, placeholders):
        owner = ties.owner.get(id(a))
        if owner is None:
            placeholder.index = slot_of[id(a)]
        else:
            placeholder.index = slot_of[id(owner)]
            placeholder.geometry = _geometry(ties.maps[id(a)])
            placeholder.writeable = a.flags.writeable

    offsets = [0, *itertools.accumulate(a.size for a in owners)]
    length = offsets[-1]
    dtype = np.result_type(*owners) if owners else np.dtype(np.float64)
    slots = tuple(
        _SlotInfo(offsets[i], a.shape, a.dtype.str, _layout(a, ties)) for i, a in enumerate(owners)
    )
    flat = np.empty(length, dtype)
    _gather(flat, [(offsets[i], a, False) for i, a in enumerate(owners)])
    return flat, Restructure(skeleton, slots, length, dtype, type(model).__name__)


def _skeleton(model: Any) -> tuple[Any, list[np.ndarray], list[_Slot]]:
    """One walk of ``model``: its skeleton, with a ``_Slot`` for each parameter
    (one per distinct array; its index and view geometry still to be filled
    in), and the distinct parameter arrays in tree order with their placeholders."""
    arrays: list[np.ndarray] = []
    placeholders: list[_Slot] = []
    seen: dict[int, Any] = {}  # id -> its placeholder (parameters) or skeleton (containers)

    return _skeleton_of(model, seen, arrays, placeholders), arrays, placeholders


# The walks below are module functions or methods, not closures: a closure that
# calls itself is a reference cycle, which would keep the model alive until the
# collector runs.
def _skeleton_of(
    x: Any, seen: dict[int, Any], arrays: list[np.ndarray], placeholders: list[_Slot]
) -> Any:
    known = seen.get(id(x))
    if known is not None:
        return known
    if tree.is_parameter(x):
        p = seen[id(x)] = _Slot(-1)
        arrays.append(tree.parameter_array(x, "in the model"))
        placeholders.append(p)
        return p
    kids = tree.trainable_children(x)
    if kids is None:
        return x
    new = {k: _skeleton_of(c, seen, arrays, placeholders) for k, c, trainable in kids if trainable}
    out = seen[id(x)] = tree.rebuild(x, new)
    return out


class _SlotInfo(tuple):
    """``(offset, shape, dtype, layout)`` of one parameter in the flat vector;
    ``layout`` is the parameter's strides when a view of it needs them kept
    (a view that a C-contiguous array cannot hold), else None."""

    __slots__ = ()

    def __new__(
        cls, offset: int, shape: tuple[int, ...], dtype: str, layout: tuple[int, ...] | None
    ) -> _SlotInfo:
        return tuple.__new__(cls, (int(offset), tuple(shape), dtype, layout))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_SlotInfo, tuple(self))

    offset = property(lambda self: self[0])
    shape = property(lambda self: self[1])
    dtype = property(lambda self: np.dtype(self[2]))
    layout = property(lambda self: self[3])

    @property
    def size(self) -> int:
        return math.prod(self[1])


def _layout(owner: np.ndarray, ties: Ties) -> tuple[int, ...] | None:
    for view, _ in ties.views.get(id(owner), ()):
        if ties.maps[id(view)].affine is None:
            return owner.strides
    return None


def _gather(flat: np.ndarray, pieces: list[tuple[int, Any, bool]]) -> None:
    """Write ``(offset, array or int n for n zeros, add)`` pieces into ``flat``
    (raveled in C order), in Rust when the dtypes allow."""
    if flat.dtype in KERNEL_DTYPES:
        given = []
        for offset, src, add in pieces:
            if isinstance(src, np.ndarray):
                if src.dtype not in KERNEL_DTYPES:
                    src = src.astype(flat.dtype)
                elif not (src.flags.c_contiguous and src.flags.aligned):
                    src = np.array(src, order="C")  # Rust reads any such shape, no other
            given.append((offset, src, add))
        _core.gather(flat, given)
        return
    for offset, src, add in pieces:
        if isinstance(src, np.ndarray):
            n = src.size
            seg = flat[offset : offset + n]
            if add:
                np.add(seg, src.reshape(-1), out=seg, casting="unsafe")
            else:
                np.copyto(seg, src.reshape(-1), casting="unsafe")
        elif not add:
            flat[offset : offset + src] = 0


# ---------------------------------------------------------------------------
# Restructure


class Restructure:
    """What ``destructure`` returns with the flat vector: ``re(flat)`` builds a
    new model like the original with its parameters taken from ``flat``.

    - ``re(flat)`` copies: each parameter is a new array of its own dtype and
      shape (the parameters of one dtype share one new buffer, each a view of
      its own part of it). ``re(flat, copy=False)`` returns views into
      ``flat`` itself wherever the parameter's dtype is ``flat``'s.
    - Everything that is not a trainable parameter (ints, strings, functions,
      integer arrays, fields hidden by ``trainable``) is kept as it was; tied
      parameters come back tied, views come back as views.
    - ``len(re)`` is the length of ``flat``; ``re.dtype`` its dtype.
    - ``re.flatten(grad)``: a gradient tree of the model to a flat vector.
    """

    __slots__ = ("_live", "_name", "_skeleton", "_slots", "dtype", "length")

    def __init__(
        self, skeleton: Any, slots: tuple[_SlotInfo, ...], length: int, dtype: Any, name: str
    ) -> None:
        self._skeleton = skeleton
        self._slots = tuple(s if type(s) is _SlotInfo else _SlotInfo(*s) for s in slots)
        self.length = int(length)
        self.dtype = np.dtype(dtype)
        self._name = name
        self._live: set[int] | None = None

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"Restructure({self._name}, ..., {self.length})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            Restructure,
            (
                self._skeleton,
                tuple(map(tuple, self._slots)),
                self.length,
                self.dtype.str,
                self._name,
            ),
        )

    # -- rebuilding ---------------------------------------------------------

    def __call__(self, flat: Any, copy: bool = True) -> Any:
        """A new model like the original, its parameters read from ``flat``
        (a 1-d array of length ``len(self)``; ints are converted, and for a
        real parameter the real part of a complex ``flat`` is taken)."""
        flat = self._check_flat(flat)
        values = self._values(flat, copy)
        built: dict[int, np.ndarray] = {}

        def fill(placeholder: _Slot) -> np.ndarray:
            if placeholder.geometry is None:
                return values[placeholder.index]
            if id(placeholder) not in built:
                vm = placeholder.map
                built[id(placeholder)] = rebuild_view(
                    vm, values[placeholder.index], "a view", placeholder.writeable
                )
            return built[id(placeholder)]

        return self._rebuild(fill)

    def _check_flat(self, flat: Any) -> np.ndarray:
        if not isinstance(flat, np.ndarray):
            flat = np.asarray(flat)
        if flat.ndim != 1:
            raise ValueError(
                f"Restructure expects a 1-d vector of length {self.length}, got an array of shape {flat.shape}"
            )
        if flat.shape[0] != self.length:
            raise ValueError(
                f"Restructure expects a vector of length {self.length}, got length {flat.shape[0]}"
            )
        if flat.dtype.kind not in "biufc":
            raise TypeError(f"Restructure expects a vector of numbers, got dtype {flat.dtype}")
        if flat.dtype.kind in "biu":
            flat = flat.astype(self.dtype if self.dtype.kind in "fc" else np.float64)
        return flat

    def _values(self, flat: np.ndarray, copy: bool) -> list[np.ndarray]:
        """The new parameter arrays, by slot."""
        values: list[np.ndarray | None] = [None] * len(self._slots)
        by_dtype: dict[np.dtype, list[int]] = {}
        for i, s in enumerate(self._slots):
            if not copy and s.dtype == flat.dtype and s.layout is None:
                values[i] = flat[s.offset : s.offset + s.size].reshape(s.shape)
            else:
                by_dtype.setdefault(s.dtype, []).append(i)
        rust = flat.dtype in KERNEL_DTYPES and flat.flags.c_contiguous and flat.flags.aligned
        parts: list[tuple[int, np.ndarray]] = []
        for dtype, indices in by_dtype.items():
            buffer = np.empty(sum(self._slots[i].size for i in indices), dtype)
            at = 0
            for i in indices:
                s = self._slots[i]
                part = buffer[at : at + s.size]
                at += s.size
                if not s.size:
                    pass
                elif rust and dtype in KERNEL_DTYPES:
                    parts.append((s.offset, part))
                else:
                    seg = flat[s.offset : s.offset + s.size]
                    if seg.dtype.kind == "c" and dtype.kind != "c":
                        seg = seg.real
                    np.copyto(part, seg, casting="unsafe")
                values[i] = part.reshape(s.shape)
        if parts:
            _core.scatter(flat, parts)
        for i, s in enumerate(self._slots):
            if s.layout is not None:
                dense = values[i]
                assert dense is not None
                values[i] = _with_strides(dense, s.layout)
        return values  # type: ignore[return-value]

    def _rebuild(self, fill: Any) -> Any:
        live = self._live_nodes()
        memo: dict[int, Any] = {}

        return self._rebuild_node(self._skeleton, fill, live, memo)

    def _rebuild_node(self, x: Any, fill: Any, live: set[int], memo: dict[int, Any]) -> Any:
        if isinstance(x, _Slot):
            return fill(x)
        if id(x) not in live:
            return x
        if id(x) in memo:
            return memo[id(x)]
        kids = tree.children(x)
        assert kids is not None
        new = {
            k: self._rebuild_node(c, fill, live, memo)
            for k, c in kids
            if id(c) in live or isinstance(c, _Slot)
        }
        out = memo[id(x)] = tree.rebuild(x, new)
        return out

    def _live_nodes(self) -> set[int]:
        """ids of the skeleton's containers that hold a placeholder somewhere below."""
        if self._live is None:
            live: set[int] = set()

            _mark_live(self._skeleton, live)
            self._live = live
        return self._live

    # -- gradients ----------------------------------------------------------

    def flatten(self, grad: Any) -> np.ndarray:
        """A gradient tree of the model (as ``update`` takes it) to a flat
        vector of ``self.dtype`` in the layout of ``flat``: the pullback of
        ``re``. Gradients of tied parameters are summed, a view's gradient is
        mapped back onto its parameter, and ``None`` (or a missing key) counts
        as zeros."""
        live = self._live_nodes()
        direct: list[list[tuple[KeyPath, np.ndarray]]] = [[] for _ in self._slots]
        through_views: list[tuple[_Slot, np.ndarray]] = []
        if isinstance(self._skeleton, _Slot) or id(self._skeleton) in live:
            self._grads(self._skeleton, grad, KeyPath(), live, direct, through_views)
        # As Optimisers.jl's pullback: the vector is wide enough for every
        # contribution (a float64 gradient of a float32 model is not rounded).
        dtype = np.result_type(
            self.dtype,
            *(g.dtype for grads in direct for _, g in grads),
            *(g.dtype for _, g in through_views),
        )
        out = np.empty(self.length, dtype)
        pieces: list[tuple[int, Any, bool]] = []
        for s, grads in zip(self._slots, direct):
            if not grads:
                pieces.append((s.offset, s.size, False))
            for j, (_, g) in enumerate(grads):
                pieces.append((s.offset, g, j > 0))
        _gather(out, pieces)
        for vs, g in through_views:
            s = self._slots[vs.index]
            vs.map.add_into(out[s.offset : s.offset + s.size].reshape(s.shape), g)
        return out

    def _grads(
        self,
        x: Any,
        g: Any,
        path: KeyPath,
        live: set[int],
        direct: list[list[tuple[KeyPath, np.ndarray]]],
        through_views: list[tuple[_Slot, np.ndarray]],
    ) -> None:
        """Collect the gradients of the skeleton's node ``x`` from ``g``."""
        if g is None:
            return
        if isinstance(x, _Slot):
            if x.geometry is None:
                s = self._slots[x.index]
                direct[x.index].append((path, self._grad_array(g, s.shape, path)))
            else:
                through_views.append((x, self._grad_array(g, x.map.shape, path)))
            return
        grad_of = children_of_grad(g, x, path)
        for k, c in tree.children(x) or ():
            if isinstance(c, _Slot) or id(c) in live:
                self._grads(c, grad_of(k), path.child(k), live, direct, through_views)

    def _grad_array(self, g: Any, shape: tuple[int, ...], path: KeyPath) -> np.ndarray:
        if type(g) is np.ndarray and g.shape == shape and g.dtype in KERNEL_DTYPES:
            return g  # the common case, which the checks below would pass unchanged
        real = "real" if self.dtype.kind != "c" else None
        arr = checked_gradient(g, shape, real, f"at {path!r}")
        kind = arr.dtype.kind
        if kind in "biu" or (arr.dtype not in KERNEL_DTYPES and self.dtype in KERNEL_DTYPES):
            arr = arr.astype(self.dtype)
        return arr


def _with_strides(values: np.ndarray, strides: tuple[int, ...]) -> np.ndarray:
    """A new array with these strides (a dense layout) holding ``values``."""
    shape, itemsize = values.shape, values.itemsize
    lo = sum(s * (n - 1) for n, s in zip(shape, strides) if s < 0)
    hi = sum(s * (n - 1) for n, s in zip(shape, strides) if s > 0)
    memory = np.empty((hi - lo) // itemsize + 1, values.dtype)
    out = np.ndarray(shape, values.dtype, buffer=memory, offset=-lo, strides=strides)
    np.copyto(out, values)
    return out


def _mark_live(x: Any, live: set[int]) -> bool:
    """Add to ``live`` the ids of the containers under ``x`` that hold a placeholder."""
    if isinstance(x, _Slot):
        return True
    if isinstance(x, np.ndarray):
        return False
    kids = tree.children(x)
    if kids is None:
        return False
    found = False
    for _, c in kids:
        found = _mark_live(c, live) or found
    if found:
        live.add(id(x))
    return found
