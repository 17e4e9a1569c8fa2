"""Tied views: parameters that are NumPy views of another parameter of the model.

A model may hold ``enc_w`` and, elsewhere, ``dec_w = enc_w.T`` (or a reshape, a
slice, a broadcast of it). Such a view is not a parameter of its own: it is the
same numbers as (part of) ``enc_w``, its *owner*. Then

- ``setup`` gives the view its owner's ``Leaf``;
- the view's gradient is mapped back through the view (transposed, scattered
  into the slice, summed over broadcast axes) and summed into the owner's;
- the optimiser steps the owner only; the view, still a view, sees the step,
  and where the owner is replaced by a new array (``update``, read-only
  arrays, ``Restructure``) the view is rebuilt as the same view of the new one;
- ``destructure`` and ``trainables`` count the owner once and the view not at all.

The seeds' tied auto-encoder (Optimisers.jl ties only ``===`` arrays and its
``Adjoint`` wrappers; NumPy's views go further, reshapes and slices included)::

    rng = np.random.default_rng(0)
    dense = lambda w, act=None: {"weight": w, "bias": np.zeros(w.shape[0]), "act": act}
    enc = [dense(rng.standard_normal((20, 40)), np.tanh), dense(rng.standard_normal((10, 20)))]
    dec = [dense(enc[0]["weight"].T, np.tanh), dense(enc[1]["weight"].T, np.tanh)]
    model = {"enc": enc, "dec": dec}
    st = optimisers.setup(optimisers.Adam(), model)
    st["enc"][0]["weight"] is st["dec"][0]["weight"]     # True: one Leaf
    st, model = optimisers.update_(st, model, grad)      # dec's gradient, transposed,
    model["dec"][0]["weight"].base is model["enc"][0]["weight"]  # is added to enc's

Which array owns which: parameters whose memory overlaps are grouped; the
widest (by bytes spanned) comes first, an array that owns its memory before a
view, a C-contiguous one before others, then tree order; each array is the
view of the first one before it that contains all of its elements, or else an
owner itself. The same order picks the owner among the arrays that share a
``Leaf`` in ``update_``, so a state tree from ``setup`` and the model it was
made for always agree. Arrays that overlap without either containing the
other are trained as separate parameters, with a warning.

How a view sits in its owner depends only on their shapes, strides, itemsize and
the byte offset between them, so the maps are cached by that geometry.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import tree
from ._leaf import Leaf
from .keypath import KeyPath

__all__ = ["Ties", "ViewMap", "find_ties", "walk_parameters"]


# ---------------------------------------------------------------------------
# Walking a model's parameters


def walk_parameters(model: Any) -> list[tuple[KeyPath, np.ndarray]]:
    """``(path, array)`` for every trainable parameter position of ``model``, in
    tree order, ties repeated; only children that ``trainable`` allows."""
    out: list[tuple[KeyPath, np.ndarray]] = []
    _walk_parameters(model, (), out)
    return out


# The walks are module functions, not closures: a closure that calls itself is
# a reference cycle, which would keep the model alive until the collector runs.
def _walk_parameters(x: Any, keys: tuple, out: list[tuple[KeyPath, np.ndarray]]) -> None:
    if tree.is_parameter(x):
        out.append((KeyPath(*keys), x))
        return
    kids = tree.trainable_children(x)
    if kids is None:
        return
    for k, c, trainable in kids:
        if trainable:
            _walk_parameters(c, (*keys, k), out)


def _leaf_positions(state: Any, model: Any) -> list[tuple[Any, tuple, np.ndarray]]:
    """``(leaf, keys, array)`` wherever the state tree holds a ``Leaf`` (``keys``
    a tuple, for ``KeyPath(*keys)``); skips branches that do not match (the
    update reports those)."""
    out: list[tuple[Any, tuple, np.ndarray]] = []
    if state is not None:
        _find_leaf_positions(state, model, (), out)
    return out


def _find_leaf_positions(
    s: Any, x: Any, keys: tuple, out: list[tuple[Any, tuple, np.ndarray]]
) -> None:
    if isinstance(s, Leaf):
        if isinstance(x, np.ndarray):
            out.append((s, keys, x))
        return
    kids = tree.children(x)
    if kids is None:
        return
    for k, c in kids:
        try:
            sk = tree.child(s, k)
        except (KeyError, IndexError, AttributeError, TypeError):
            continue
        if sk is not None:
            _find_leaf_positions(sk, c, (*keys, k), out)


# ---------------------------------------------------------------------------
# Geometry


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def _bounds(a: np.ndarray) -> tuple[int, int]:
    """The bytes ``[lo, hi)`` that ``a`` spans (``a`` not empty)."""
    lo = hi = _address(a)
    for n, s in zip(a.shape, a.strides):
        if s < 0:
            lo += s * (n - 1)
        else:
            hi += s * (n - 1)
    return lo, hi + a.itemsize


def _root(a: np.ndarray) -> Any:
    """What finally holds ``a``'s memory: the array that owns it, or the buffer
    object (bytes, mmap) under the last array."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a if a.base is None else a.base


def _owns(a: np.ndarray) -> bool:
    return not isinstance(a.base, np.ndarray)


def _element_strides(
    shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int
) -> tuple[int, ...] | None:
    """Strides in elements (0 for axes of length 1), or None if not whole elements."""
    out = []
    for n, s in zip(shape, strides):
        if n == 1:
            out.append(0)
        elif s % itemsize:
            return None
        else:
            out.append(s // itemsize)
    return tuple(out)


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, step = [], 1
    for n in reversed(shape):
        out.append(step if n > 1 else 0)
        step *= n
    return tuple(reversed(out))


def _positions(shape: tuple[int, ...], strides: tuple[int, ...], start: int = 0) -> np.ndarray:
    """``start + sum_k i_k * strides_k`` over the index grid of ``shape``."""
    pos = np.full(shape, start, dtype=np.intp)
    for k, (n, s) in enumerate(zip(shape, strides)):
        if n > 1 and s:
            axis = [1] * len(shape)
            axis[k] = n
            pos += (np.arange(n, dtype=np.intp) * s).reshape(axis)
    return pos


def _surely_injective(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether a strided index grid visits no element twice (a sufficient test)."""
    reach = 0
    for n, s in sorted(((n, abs(s)) for n, s in zip(shape, strides) if n > 1), key=lambda t: t[1]):
        if s <= reach:
            return False
        reach += s * (n - 1)
    return True


@dataclass(frozen=True)
class ViewMap:
    """Where the elements of a view sit in its owner.

    ``pos`` (shape of the view) holds, for each element of the view, the index
    of the same element in the owner read in C order. ``affine`` is
    ``(k0, steps)`` when ``pos == k0 + sum_k i_k * steps_k`` (every view of a
    C-contiguous owner), else None. ``injective``: no element of the owner
    appears twice in the view (not a broadcast)."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    owner_shape: tuple[int, ...]
    owner_strides: tuple[int, ...]
    itemsize: int
    affine: tuple[int, tuple[int, ...]] | None
    injective: bool
    _pos: list = field(default_factory=list, repr=False, compare=False)

    @property
    def pos(self) -> np.ndarray:
        if not self._pos:
            assert self.affine is not None
            k0, steps = self.affine
            self._pos.append(_positions(self.shape, steps, k0))
        return self._pos[0]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def add_into(self, owner_grad: np.ndarray, grad: np.ndarray) -> None:
        """``owner_grad += (the view's pullback of) grad``: ``owner_grad`` is a
        C-contiguous array of the owner's shape, ``grad`` one of the view's."""
        flat = owner_grad.reshape(-1)
        if self.affine is not None and self.injective:
            k0, steps = self.affine
            isz = flat.itemsize
            dst = as_strided(flat[k0:], self.shape, tuple(s * isz for s in steps))
            np.add(dst, grad, out=dst, casting="unsafe")
        elif self.injective:
            flat[self.pos] += grad
        else:
            np.add.at(flat, self.pos, np.asarray(grad, dtype=flat.dtype))

    def take(self, owner_values: np.ndarray) -> np.ndarray:
        """The view's elements read from an array of the owner's shape (a copy)."""
        return np.ravel(owner_values)[self.pos]

    def rebuild(self, owner: np.ndarray, writeable: bool = True) -> np.ndarray | None:
        """The same view of a new array ``owner`` of the owner's shape (its
        ``base`` chain leads to ``owner``'s memory, as NumPy's own views do),
        or None when ``owner``'s layout cannot hold it as a view."""
        if owner.shape != self.owner_shape:
            return None
        writeable = writeable and owner.flags.writeable
        if owner.strides == self.owner_strides and _dense(owner):
            # Same layout: the view's strides and byte offset carry over.
            memory = owner.ravel(order="K")
            lo, _ = _bounds(owner)
            if _address(memory) != lo:
                return None
            return _make_view(
                memory, self.shape, _address(owner) - lo + self.offset, self.strides, writeable
            )
        if self.affine is not None and owner.flags.c_contiguous:
            k0, steps = self.affine
            isz = owner.itemsize
            return _make_view(owner, self.shape, k0 * isz, tuple(s * isz for s in steps), writeable)
        return None


def _dense(a: np.ndarray) -> bool:
    """Whether ``a``'s elements fill the bytes it spans, each once."""
    if a.size == 0:
        return True
    lo, hi = _bounds(a)
    return (
        hi - lo == a.size * a.itemsize
        and _element_strides(a.shape, a.strides, a.itemsize) is not None
    )


def _make_view(
    memory: np.ndarray,
    shape: tuple[int, ...],
    offset: int,
    strides: tuple[int, ...],
    writeable: bool,
) -> np.ndarray:
    view = np.ndarray(shape, memory.dtype, buffer=memory, offset=offset, strides=strides)
    if not writeable and view.flags.writeable:
        view.flags.writeable = False
    return view


@functools.lru_cache(maxsize=1024)
def _view_map(
    itemsize: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    owner_shape: tuple[int, ...],
    owner_strides: tuple[int, ...],
    offset: int,
) -> ViewMap | None:
    """How a view of this geometry sits in an owner of that one, or None when
    some element of the view is not (wholly) an element of the owner."""
    n_owner = math.prod(owner_shape)
    if math.prod(shape) == 0 or n_owner == 0 or offset % itemsize:
        return None
    vs = _element_strides(shape, strides, itemsize)
    os_ = _element_strides(owner_shape, owner_strides, itemsize)
    if vs is None or os_ is None:
        return None
    k = offset // itemsize
    injective = _surely_injective(shape, vs)
    if os_ == _c_strides(owner_shape):
        # The owner is C-contiguous: memory order is its C order.
        lo = k + sum(s * (n - 1) for n, s in zip(shape, vs) if s < 0)
        hi = k + sum(s * (n - 1) for n, s in zip(shape, vs) if s > 0)
        if lo < 0 or hi >= n_owner:
            return None
        vm = ViewMap(
            shape, strides, offset, owner_shape, owner_strides, itemsize, (k, vs), injective
        )
    else:
        if not _surely_injective(owner_shape, os_):
            return None  # a broadcast owns nothing
        owner_pos = _positions(owner_shape, os_)
        lo = int(owner_pos.min())
        span = int(owner_pos.max()) - lo + 1
        inverse = np.full(span, -1, dtype=np.intp)
        inverse[owner_pos - lo] = np.arange(n_owner, dtype=np.intp).reshape(owner_shape)
        view_pos = _positions(shape, vs, k - lo)
        if view_pos.min() < 0 or view_pos.max() >= span:
            return None
        pos = inverse[view_pos]
        if (pos < 0).any():
            return None
        affine = _affine(pos)
        vm = ViewMap(
            shape, strides, offset, owner_shape, owner_strides, itemsize, affine, injective
        )
        vm._pos.append(pos)
    if not injective:
        vm = ViewMap(
            shape,
            strides,
            offset,
            owner_shape,
            owner_strides,
            itemsize,
            vm.affine,
            np.unique(vm.pos).size == vm.size,
            vm._pos,
        )
    return vm


def _affine(pos: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    k0 = int(pos.reshape(-1)[0])
    steps = []
    for ax, n in enumerate(pos.shape):
        if n > 1:
            index = [0] * pos.ndim
            index[ax] = 1
            steps.append(int(pos[tuple(index)]) - k0)
        else:
            steps.append(0)
    if np.array_equal(_positions(pos.shape, tuple(steps), k0), pos):
        return k0, tuple(steps)
    return None


def view_map(owner: np.ndarray, view: np.ndarray) -> ViewMap | None:
    """How ``view`` sits in ``owner``, or None if it is not a view of it (every
    element of ``view`` an element of ``owner``, same dtype)."""
    if view.dtype != owner.dtype:
        return None
    return _view_map(
        owner.itemsize,
        view.shape,
        view.strides,
        owner.shape,
        owner.strides,
        _address(view) - _address(owner),
    )


# ---------------------------------------------------------------------------
# Finding the ties of a model


@dataclass
class Ties:
    """The views among a model's parameters.

    ``owner[id(view)]`` is the view's owner array and ``maps[id(view)]`` its
    ``ViewMap``; ``owners`` holds each owner by id; ``views[id(owner)]`` lists
    ``(view, path)`` for each distinct view of it, in tree order; ``paths``
    holds the first path of each array of a tie."""

    owner: dict[int, np.ndarray] = field(default_factory=dict)
    owners: dict[int, np.ndarray] = field(default_factory=dict)
    maps: dict[int, ViewMap] = field(default_factory=dict)
    views: dict[int, list[tuple[np.ndarray, KeyPath]]] = field(default_factory=dict)
    paths: dict[int, KeyPath] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.owner)

    def add(self, owner: np.ndarray, view: np.ndarray, vm: ViewMap, path: KeyPath) -> None:
        self.owner[id(view)] = owner
        self.owners[id(owner)] = owner
        self.maps[id(view)] = vm
        self.views.setdefault(id(owner), []).append((view, path))

    def rebuilt(self, old_owner: np.ndarray, new_owner: np.ndarray) -> dict[int, np.ndarray]:
        """``{id(view): the same view of new_owner}`` for every view of ``old_owner``."""
        out = {}
        for view, path in self.views.get(id(old_owner), ()):
            out[id(view)] = rebuild_view(self.maps[id(view)], new_owner, path, view.flags.writeable)
        return out


def rebuild_view(vm: ViewMap, owner: np.ndarray, path: Any, writeable: bool = True) -> np.ndarray:
    """The view ``vm`` of ``owner``; a copy, with a warning, when ``owner`` is
    laid out so that no view can express it."""
    view = vm.rebuild(owner, writeable)
    if view is not None:
        return view
    warnings.warn(
        f"the view at {path!r} cannot be rebuilt as a view of its updated parameter "
        f"(laid out differently); it is a copy from now on",
        UserWarning,
        stacklevel=3,
    )
    return vm.take(owner).reshape(vm.shape)


def layout_like(owner: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A new writeable array of ``owner``'s shape, strides when it can (so that
    its views carry over), holding ``values``."""
    out = np.empty_like(owner, order="K")
    if out.strides != owner.strides:
        out = np.empty(owner.shape, owner.dtype)
    np.copyto(out, values, casting="unsafe")
    return out


def _order_key(a: np.ndarray, index: int) -> tuple[int, bool, bool, int]:
    lo, hi = _bounds(a)
    return (-(hi - lo), not _owns(a), not a.flags.c_contiguous, index)


def might_share_memory(arrays: list[np.ndarray]) -> bool:
    """Whether two of these distinct arrays are carved from the same memory
    (so ``find_ties`` has something to look at)."""
    roots = {id(_root(a)) for a in arrays if a.size}
    return len(roots) < sum(1 for a in arrays if a.size)


def find_ties(positions: list[tuple[KeyPath, np.ndarray]]) -> Ties:
    """The views among the parameters at ``positions`` (as from ``walk_parameters``)."""
    first: dict[int, tuple[int, KeyPath, np.ndarray]] = {}
    for path, a in positions:
        if id(a) not in first:
            first[id(a)] = (len(first), path, a)
    ties = Ties()
    groups: dict[int, list[tuple[int, np.ndarray]]] = {}
    for index, _, a in first.values():
        if isinstance(a, np.ndarray) and a.size:  # other libraries' arrays: ties by identity
            groups.setdefault(id(_root(a)), []).append((index, a))
    for members in groups.values():
        if len(members) < 2:
            continue
        for component in _overlapping(members):
            _resolve(component, ties, first)
    for index_path_array in first.values():
        ties.paths[id(index_path_array[2])] = index_path_array[1]
    return ties


def _overlapping(members: list[tuple[int, np.ndarray]]) -> Iterator[list[tuple[int, np.ndarray]]]:
    """The members in groups whose byte ranges chain-overlap; singletons left out."""
    spans = sorted(((*_bounds(a), i, a) for i, a in members), key=lambda t: (t[0], -t[1]))
    component: list[tuple[int, np.ndarray]] = []
    reach = None
    for lo, hi, i, a in spans:
        if reach is not None and lo >= reach:
            if len(component) > 1:
                yield component
            component, reach = [], None
        component.append((i, a))
        reach = hi if reach is None else max(reach, hi)
    if len(component) > 1:
        yield component


def _resolve(component: list[tuple[int, np.ndarray]], ties: Ties, first: dict) -> None:
    owners: list[np.ndarray] = []
    for _, a in sorted(component, key=lambda t: _order_key(t[1], t[0])):
        for o in owners:
            vm = view_map(o, a)
            if vm is not None:
                ties.add(o, a, vm, first[id(a)][1])
                break
        else:
            owners.append(a)
    for i, o in enumerate(owners):
        for p in owners[i + 1 :]:
            if _share(o, p):
                warnings.warn(
                    f"the parameters at {first[id(o)][1]!r} and {first[id(p)][1]!r} share memory "
                    f"but neither is a view of the other; they are trained as two parameters",
                    UserWarning,
                    stacklevel=4,
                )


def _share(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        return bool(np.shares_memory(a, b))
    except np.exceptions.TooHardError:
        return True


# ---------------------------------------------------------------------------
# Ties in a state tree (update and update_)


def same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` are carved from the same memory (views of one
    another, or of one buffer): candidates for a view tie."""
    return a.size > 0 and b.size > 0 and _root(a) is _root(b)


def state_ties(state: Any, model: Any) -> Ties:
    """The views in ``model`` as ``state`` records them: distinct arrays from
    the same memory that share a ``Leaf``. The owner of each group is chosen as
    ``find_ties`` chooses it; a member that is not a view of it is an error.
    (Distinct arrays of separate memory under one ``Leaf`` are ties made by
    hand, which ``update_`` handles by itself.)"""
    by_leaf: dict[tuple[int, int], list[tuple[int, Any, np.ndarray]]] = {}
    seen: set[int] = set()
    for index, (leaf, keys, a) in enumerate(_leaf_positions(state, model)):
        if id(a) in seen or not a.size:
            continue
        seen.add(id(a))
        by_leaf.setdefault((id(leaf), id(_root(a))), []).append((index, keys, a))
    ties = Ties()
    for members in by_leaf.values():
        if len(members) > 1:
            members = [(i, KeyPath(*keys), a) for i, keys, a in members]
            for _, path, a in members:
                ties.paths[id(a)] = path
            _resolve_leaf(members, ties)
    return ties


def _resolve_leaf(members: list[tuple[int, KeyPath, np.ndarray]], ties: Ties) -> None:
    _, owner_path, owner = min(members, key=lambda m: _order_key(m[2], m[0]))
    for _, path, a in members:
        if a is owner:
            continue
        vm = view_map(owner, a)
        if vm is None:
            raise ValueError(
                f"the state tree ties the parameters at {owner_path!r} and {path!r} (one Leaf), "
                f"and they share memory, but the array at {path!r} is not a view of the one "
                f"at {owner_path!r}; was the state set up for this model?"
            )
        ties.add(owner, a, vm, path)


def resolve(entries: dict[int, Any], state: Any, model: Any) -> Ties | None:
    """After ``update_`` collected the gradients: move every view's gradient
    onto its owner, so that each entry steps the owner. An entry is an
    ``interface._Entry`` (``x``, ``grad``, ``path``, ``owns_grad``, and
    ``views``: ``(array, grad, path)`` of other arrays from the same memory
    met under its ``Leaf``). Returns the ties found (None when the model
    cannot have any)."""
    todo = [e for e in entries.values() if e.views or not _owns(e.x)]
    if not todo:
        return None
    ties = state_ties(state, model)
    for e in todo:
        owner = ties.owner.get(id(e.x), e.x)
        if owner is e.x and not e.views:
            continue
        total = np.zeros(owner.shape, owner.dtype)
        for a, g in [(e.x, e.grad), *((v, g) for v, g, _ in e.views)]:
            if a is owner:
                np.add(total, g, out=total, casting="unsafe")
            else:
                ties.maps[id(a)].add_into(total, g)
        e.x, e.grad, e.owns_grad = owner, total, True
        e.path = ties.paths.get(id(owner), e.path)
    return ties


def follow(replaced: dict[int, Any], ties: Ties | None, state: Any, model: Any) -> None:
    """After ``update_`` replaced some parameters by new arrays (read-only
    ones): add their views, rebuilt as views of the new arrays, to ``replaced``."""
    if ties is None:
        ties = state_ties(state, model)
    for owner_id, owner in list(ties.owners.items()):
        new = replaced.get(owner_id)
        if new is not None and new is not owner:
            replaced.update(ties.rebuilt(owner, new))


def tied_copies(state: Any, model: Any) -> dict[int, np.ndarray]:
    """For ``update``: ``{id(array): copy}`` for every owner that has views and
    for its views, each view rebuilt as a view of its owner's copy."""
    ties = state_ties(state, model)
    out: dict[int, np.ndarray] = {}
    for owner in ties.owners.values():
        new = layout_like(owner, owner)
        out[id(owner)] = new
        out.update(ties.rebuilt(owner, new))
    return out
