//! Every size and threshold the kernels were tuned with, in one place, each
//! with the reason it is what it is. The measurements that chose them live
//! in the commits that set them (`git log -S NAME`), not here.
//!
//! Sizes of the units of work, from the largest down: a task (what one
//! thread takes), a block (what one pass of a segment's rules runs over in
//! L1), a prefetch slice, a copy piece. Norms sum in blocks of their own,
//! fixed so that their bits never depend on the threads.

use std::time::Duration;

/// Elements per parallel task: small enough that every thread gets several.
pub const TASK: usize = 64 * 1024;

/// Elements per block, and the length of the stack buffer a block lives in:
/// every rule of a segment runs over it while it sits in L1.
pub const BLOCK: usize = 1024;

/// Elements per block when a pass streams from L3 or memory: shorter blocks
/// interleave the arrays' streams more finely, at the cost of the per-block
/// work again when everything sits in L1 or L2.
pub const SHORT_BLOCK: usize = 256;
const _: () = assert!(SHORT_BLOCK <= BLOCK, "a block must fit the stack buffer");

/// Bytes of parameters from which a pass takes `SHORT_BLOCK`s.
pub const SHORT_BLOCKS_MIN_BYTES: usize = 2 << 20;

/// Bytes of parameters from which a pass prefetches: only passes far larger
/// than the caches gain; in cache, prefetching costs a third more.
pub const PREFETCH_MIN_BYTES: usize = 64 << 20;

/// Elements per slice of a prefetching pass (each slice first asks for the
/// stretch `PREFETCH_AHEAD_BYTES` further on).
pub const PREFETCH_SLICE: usize = 128;

/// How far ahead a prefetching pass asks for each array, in bytes, with the
/// hint into L2: far enough for memory to keep working while a division and
/// a root per element hold the core.
pub const PREFETCH_AHEAD_BYTES: usize = 4096;

/// Bytes of parameters below which a rules' pass stays on the calling
/// thread: handing work to a helper and back costs a few microseconds, and
/// twice that when the helper has gone to sleep between steps (bytes, not
/// elements: a float64 element costs the divisions and roots twice).
pub const PASS_PARALLEL_MIN_BYTES: usize = 192 << 10;

/// Elements in a reduction stage below which its norms stay on the calling
/// thread: the sums are cheap.
pub const NORM_PARALLEL_MIN: usize = 64 * 1024;

/// Elements per partial sum of a norm, combined in block order: fixed, so
/// that a norm's bits never depend on the threads.
pub const NORM_BLOCK: usize = 16 * 1024;

/// Accumulators per norm block (four 512-bit vectors of f64), so that the
/// adds of a block in cache do not wait on each other. Part of a norm's
/// bits: changing it changes them.
pub const NORM_LANES: usize = 32;

/// Elements per piece of the block copies: one 64-byte vector of f32, a
/// fixed-size copy that compiles to one move instead of a call to `memmove`.
pub const COPY_PIECE: usize = 16;

/// State arrays a job keeps inline, with no allocation: every rule alone
/// keeps at most three, and a `Vec` per leaf showed in steps of many leaves.
pub const INLINE_STATES: usize = 4;

/// Lists shorter than this are allocated afresh rather than kept between
/// steps (`spare`): small blocks come quickly from the allocator.
pub const SPARE_KEEP_MIN: usize = 256;

/// Lists of one type `spare` keeps at most: a step holds up to three of one
/// type at once.
pub const SPARE_PER_TYPE: usize = 4;

/// How long a helper thread spins for the next job before it sleeps.
pub const SPIN: Duration = Duration::from_micros(100);

/// Elements of a flat vector (`flat`) below which it is copied on the
/// calling thread.
pub const FLAT_PARALLEL_MIN: usize = 256 * 1024;

/// Bytes of a flat result from which it is written with non-temporal
/// stores: it would only push the caches' contents out.
pub const FLAT_STREAM_MIN_BYTES: usize = 16 << 20;

/// Elements a flat copy's blocks are a multiple of.
pub const FLAT_BLOCK_ALIGN: usize = 16 * 1024;

/// Bytes per parallel block of the bandwidth probe's copy (`bandwidth`).
pub const COPY_BLOCK_BYTES: usize = 1 << 20;
