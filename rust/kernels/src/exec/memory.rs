//! How a pass walks memory: the size of its tasks and blocks, and prefetching.

use std::ops::Range;

use crate::tuning::{
    BLOCK, PASS_PARALLEL_MIN_BYTES, PREFETCH_AHEAD_BYTES, PREFETCH_MIN_BYTES, PREFETCH_SLICE,
    SHORT_BLOCK, SHORT_BLOCKS_MIN_BYTES, TASK,
};
use crate::{simd, threads};

/// Whether a pass over `total` elements uses the helpers, and the most elements
/// per task: small enough that every thread gets a few, so that a thread that
/// starts late (or a large leaf) does not leave the others waiting.
pub(crate) fn task_len<T>(total: usize) -> (bool, usize) {
    let threads = threads::num_threads();
    if total * std::mem::size_of::<T>() < PASS_PARALLEL_MIN_BYTES || threads < 2 {
        return (false, TASK);
    }
    let blocks = total.div_ceil(threads * 4).div_ceil(BLOCK);
    (true, blocks.clamp(1, TASK / BLOCK) * BLOCK)
}

/// How a pass over `total` elements walks memory: whether it prefetches, and
/// the elements per block.
pub(crate) fn memory_walk<T>(total: usize) -> (bool, usize) {
    let bytes = total * std::mem::size_of::<T>();
    let block = if bytes >= SHORT_BLOCKS_MIN_BYTES {
        SHORT_BLOCK
    } else {
        BLOCK
    };
    (bytes >= PREFETCH_MIN_BYTES, block)
}

/// The slices of `range`, `PREFETCH_SLICE` elements each, that a prefetching
/// pass runs in, asking for each array ahead of each one (`prefetch_ahead`).
#[inline(always)]
pub(crate) fn prefetch_slices(range: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    let end = range.end;
    range
        .step_by(PREFETCH_SLICE)
        .map(move |at| at..end.min(at + PREFETCH_SLICE))
}

/// Ask for the stretch `part` of the arrays `PREFETCH_AHEAD_BYTES` ahead (see `process`).
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(part: &Range<usize>, input: &[T], x: &[T], states: &[&mut [T]]) {
    let by = PREFETCH_AHEAD_BYTES / std::mem::size_of::<T>();
    let ahead = part.start + by..part.end + by;
    simd::prefetch(input, &ahead);
    simd::prefetch(x, &ahead);
    for s in states {
        simd::prefetch(s, &ahead);
    }
}
