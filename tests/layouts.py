"""Arrays in the memory layouts that tests need to reach by hand."""

from __future__ import annotations

import numpy as np


def unaligned(values: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``values`` that starts one byte off its dtype's
    alignment, as an array read from a byte buffer or a packed record is."""
    buffer = np.zeros(values.nbytes + 1, np.uint8)
    out = np.ndarray(values.shape, values.dtype, buffer=buffer, offset=1)
    out[...] = values
    assert not out.flags.aligned and out.flags.c_contiguous
    return out
