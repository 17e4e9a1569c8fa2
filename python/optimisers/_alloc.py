"""Where rules' state arrays live: packed together when small, staggered in
their pages when large (``setup`` allocates every state array through here)."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from typing import Any

import numpy as np

# State arrays of this many bytes or more start 1, 2 or 3 KiB into a page, in
# turn. Large NumPy arrays all start 16 bytes into a page, and sizes that are
# multiples of 2 MiB (2**25 float32s, say) put a leaf's parameter, gradient
# and states at the same offset in their huge pages as well: the rules' streams
# then collide in the caches, and Adam on a 2**25-element vector took 1.35x as
# long as with its m and v moved apart.
_STAGGER_MIN_BYTES = 256 * 1024
_PAGE = 4096
_stagger = itertools.cycle((1024, 2048, 3072))


class _Packed:
    """The small state arrays of one ``setup``, packed into shared blocks.

    Each array NumPy allocates on its own lands wherever ``malloc`` has a hole.
    In a process that has allocated and freed much (a data set loaded, another
    model trained), the states of a model of many small leaves end up strewn
    over gigabytes, and each step pays page walks for them. Packed, with every
    array on a cache line of its own, 1,000 leaves of 1,000 float32s stepped
    in 0.86-0.93x the time in such a process, and 0.90-0.97x in a fresh one
    (both sets of arrays made at the same moments, timed in alternation).

    Each state slot of a leaf (Adam's ``m``, then ``v``) has blocks of its own,
    so that a step that walks the leaves in order reads each slot as one
    stream, as it reads one large leaf. With a leaf's ``m`` and ``v`` side by
    side instead, every stream broke at every leaf: 1,000 leaves of 1,000
    stepped in 0.73-0.90x the time once apart (Adam and the ClipGrad,
    WeightDecay, Adam chain, float32 and float64, timed in alternation).
    """

    def __init__(self) -> None:
        self.slots: list[_Blocks] = []
        self.slot = 0  # the slot of the current leaf's next state array
        self.leaf = -1  # the current leaf's number, from 0 in setup's order

    def next_leaf(self) -> None:
        """The arrays taken from now on are the next leaf's."""
        self.slot = 0
        self.leaf += 1

    def take(self, x: np.ndarray) -> np.ndarray:
        """An uninitialised array like ``x``, in the blocks of its slot."""
        if self.slot == len(self.slots):
            self.slots.append(_Blocks())
        out = self.slots[self.slot].take(x)
        self.slot += 1
        return out


class _Blocks:
    """Arrays cut one after another from blocks that double in size."""

    _ALIGN = 64
    _FIRST_BLOCK = 256 * 1024
    _LAST_BLOCK = 4 * 1024 * 1024

    def __init__(self) -> None:
        self.block = np.empty(0, np.uint8)
        self.at = 0  # offset in ``block`` of the next free byte
        self.next_size = self._FIRST_BLOCK

    def take(self, x: np.ndarray) -> np.ndarray:
        """An uninitialised array like ``x`` in the current block, or a new one."""
        start = self._aligned(self.at)
        if start + x.nbytes > self.block.size:
            self.block = np.empty(max(self.next_size, x.nbytes + self._ALIGN), np.uint8)
            self.next_size = min(2 * self.next_size, self._LAST_BLOCK)
            start = self._aligned(0)
        self.at = start + x.nbytes
        return self.block[start : self.at].view(x.dtype).reshape(x.shape)

    def _aligned(self, at: int) -> int:
        return at + -(self.block.ctypes.data + at) % self._ALIGN


_packing: contextvars.ContextVar[_Packed | None] = contextvars.ContextVar(
    "optimisers_packing", default=None
)


def next_leaf() -> None:
    """Tell the packing (if any) that the state arrays of another leaf come next."""
    packed = _packing.get()
    if packed is not None:
        packed.next_leaf()


def leaf_number() -> int:
    """The number of the leaf being set up, from 0 in ``setup``'s order (0
    outside ``setup``)."""
    packed = _packing.get()
    return max(packed.leaf, 0) if packed is not None else 0


@contextlib.contextmanager
def packed_states() -> Any:
    """While active (``setup`` uses it), small state arrays are packed together."""
    token = _packing.set(_Packed())
    try:
        yield
    finally:
        _packing.reset(token)


def _state_array(x: np.ndarray, zeroed: bool) -> np.ndarray:
    """An array like ``x``, of zeros or uninitialised: packed with the others of
    its ``setup`` when it is small, placed at the next offset of ``_stagger`` in
    a page when it is large (zeroed by NumPy's ``calloc``, page by page as it is
    first touched)."""
    make = np.zeros if zeroed else np.empty
    if x.nbytes < _STAGGER_MIN_BYTES:
        packed = _packing.get()
        if packed is None or x.nbytes == 0:
            return make(x.shape, dtype=x.dtype)
        out = packed.take(x)
        if zeroed:
            out.fill(0)
        return out
    offset = next(_stagger)
    raw = make(x.nbytes + _PAGE + offset, dtype=np.uint8)
    start = -raw.ctypes.data % _PAGE + offset
    return raw[start : start + x.nbytes].view(x.dtype).reshape(x.shape)


def zeros(x: np.ndarray) -> np.ndarray:
    return _state_array(x, zeroed=True)


def full(x: np.ndarray, value: float) -> np.ndarray:
    out = _state_array(x, zeroed=False)
    out.fill(value)
    return out
