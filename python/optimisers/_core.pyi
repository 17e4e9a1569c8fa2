"""Type stubs for the Rust extension `optimisers._core` (rust/python/src)."""

from collections.abc import Callable, Mapping, Sequence
from typing import final

import numpy as np
import numpy.typing as npt

__all__ = [
    "NonFiniteNormError",
    "Plan",
    "Program",
    "_copy",
    "_roofline",
    "available_isas",
    "gather",
    "get_isa",
    "get_num_threads",
    "reductions",
    "rules",
    "scatter",
    "set_isa",
    "set_num_threads",
    "step",
    "step_planned",
]

class NonFiniteNormError(ValueError):
    """ClipNorm(throw=True) met an infinite or NaN norm; args are (job, p, norm)."""

@final
class Program:
    """A rule or chain as the kernels run it, built once per rule and dtype."""

    def __new__(cls, steps: Sequence[tuple[str, Mapping[str, float]]], dtype: str) -> Program: ...
    @property
    def half(self) -> bool: ...
    def advance(self, per_leaf: Sequence[float]) -> tuple[list[float], bool]: ...
    @property
    def states(self) -> int: ...
    @property
    def per_leaf(self) -> int: ...
    @property
    def states_before_last_norm(self) -> int: ...

_Node = tuple[int, object, int, str, type | None, Sequence[object], int, int]
_PlanLeaf = tuple[
    object,
    npt.NDArray[np.floating],
    Sequence[npt.NDArray[np.floating]],
    Program,
    Sequence[float],
    bool,
]

@final
class Plan:
    """A cached plan of `update_(state, model, grad)` for one state tree and model."""

    @staticmethod
    def build(
        state: object, model: object, nodes: Sequence[_Node], leaves: Sequence[_PlanLeaf]
    ) -> Plan | None: ...
    def step(self, state: object, model: object, grad: object) -> bool | None: ...
    def moved(self, slot: int) -> list[float] | None: ...
    @property
    def valid(self) -> bool: ...
    def invalidate(self) -> None: ...
    @property
    def leaves(self) -> int: ...

def step_planned(
    plans: dict[int, tuple[Callable[[], Plan | None], object]],
    state: object,
    model: object,
    grad: object,
) -> bool | None: ...

_Job = tuple[
    Program,
    npt.NDArray[np.floating],
    npt.NDArray[np.floating],
    Sequence[npt.NDArray[np.floating]],
    Sequence[float],
    npt.NDArray[np.floating] | None,
]

def step(jobs: Sequence[_Job]) -> None: ...
def rules() -> list[tuple[str, tuple[str, ...], int, int]]: ...
def reductions() -> list[tuple[str, list[str]]]: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def get_isa() -> str: ...
def set_isa(name: str) -> None: ...
def available_isas() -> list[str]: ...

# Flat vectors (destructure, Restructure): copies in Rust with the GIL released.
_Flat = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def gather(out: _Flat, pieces: Sequence[tuple[int, _Flat | int, bool]]) -> None:
    """Write each ``(offset, src, add)`` into ``out`` at ``offset`` (``src`` an
    array, converted to ``out``'s dtype, or an int n for n zeros), adding to an
    earlier piece over the same range when ``add``."""

def scatter(flat: _Flat, parts: Sequence[tuple[int, _Flat]]) -> None:
    """Copy ``flat[offset : offset + part.size]`` into each ``(offset, part)``."""

# Benchmark kernels (benches/): the memory-bandwidth references.
def _copy(dst: npt.NDArray[np.uint8], src: npt.NDArray[np.uint8], stream: bool = True) -> None:
    """Copy ``src`` into ``dst`` (C-contiguous uint8 views of one length) over the pool."""

def _roofline(
    x: npt.NDArray[np.floating],
    g: npt.NDArray[np.floating],
    m: npt.NDArray[np.floating],
    v: npt.NDArray[np.floating],
) -> None:
    """Adam's memory traffic with trivial arithmetic: ``m += g; v += g; x -= m + v``."""
