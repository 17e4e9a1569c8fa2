//! Copying between many small arrays and one flat vector: the work behind
//! `destructure`, `Restructure` and `Restructure.flatten`.
//!
//! [`gather`] writes pieces (slices, or runs of zeros) into one flat buffer at
//! given offsets, converting `f32` ↔ `f64` on the way, and can add a piece to
//! what an earlier piece wrote (tied parameters' gradients are summed).
//! [`scatter`] copies ranges of a flat vector out into many slices, converting
//! likewise. Both cut the flat range into blocks and run them on the crate's
//! pool when the work is large; a block never straddles two threads' writes.

use crate::error::KernelError;
use crate::{bandwidth, threads};

pub use crate::tuning::FLAT_PARALLEL_MIN as PARALLEL_MIN;
use crate::tuning::{FLAT_BLOCK_ALIGN as BLOCK_ALIGN, FLAT_STREAM_MIN_BYTES as STREAM_MIN_BYTES};

/// Where a piece of the flat vector comes from.
#[derive(Clone, Copy, Debug)]
pub enum Src<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    /// This many zeros.
    Zeros(usize),
}

impl<'a> Src<'a> {
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Src::F32(s) => s.len(),
            Src::F64(s) => s.len(),
            Src::Zeros(n) => *n,
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements `a..b` of this source.
    fn range(&self, a: usize, b: usize) -> Src<'a> {
        match *self {
            Src::F32(s) => Src::F32(&s[a..b]),
            Src::F64(s) => Src::F64(&s[a..b]),
            Src::Zeros(_) => Src::Zeros(b - a),
        }
    }
}

/// A writable flat buffer or parameter.
#[derive(Debug)]
pub enum Dst<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
}

impl<'a> Dst<'a> {
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Dst::F32(d) => d.len(),
            Dst::F64(d) => d.len(),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn split_at(self, k: usize) -> (Dst<'a>, Dst<'a>) {
        match self {
            Dst::F32(d) => {
                let (a, b) = d.split_at_mut(k);
                (Dst::F32(a), Dst::F32(b))
            }
            Dst::F64(d) => {
                let (a, b) = d.split_at_mut(k);
                (Dst::F64(a), Dst::F64(b))
            }
        }
    }

    fn write(&mut self, src: Src<'_>, add: bool) {
        match self {
            Dst::F32(d) => write(d, src, add),
            Dst::F64(d) => write(d, src, add),
        }
    }
}

/// One piece for [`gather`]: `src` goes to `offset..offset + src.len()` of the
/// flat buffer, overwriting it, or added to it when `add`.
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    pub offset: usize,
    pub src: Src<'a>,
    pub add: bool,
}

/// The element types of a flat buffer, with the conversions `gather` and
/// `scatter` need. A sum is formed in the wider of the two types and then
/// rounded, as `flat += grad` does in `NumPy`.
trait Elem: Copy + Send + Sync + Default {
    /// Copy `src` with non-temporal stores if it has this type; false (and
    /// nothing done) if it must be converted.
    fn stream(dst: &mut [Self], src: Src<'_>) -> bool;
    fn copy_f32(dst: &mut [Self], src: &[f32]);
    fn copy_f64(dst: &mut [Self], src: &[f64]);
    fn add_f32(dst: &mut [Self], src: &[f32]);
    fn add_f64(dst: &mut [Self], src: &[f64]);
}

/// The bytes of a float slice.
fn bytes_mut<T: Elem>(values: &mut [T]) -> &mut [u8] {
    // SAFETY: `T` is f32 or f64 (the only `Elem`s): no padding, and any bytes
    // written through the view come from values of the same type.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), size_of_val(values)) }
}

fn bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: as above; read only.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

impl Elem for f32 {
    fn stream(dst: &mut [f32], src: Src<'_>) -> bool {
        let Src::F32(s) = src else { return false };
        bandwidth::copy_block(bytes_mut(dst), bytes(s), true);
        true
    }
    fn copy_f32(dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }
    fn copy_f64(dst: &mut [f32], src: &[f64]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s as f32;
        }
    }
    fn add_f32(dst: &mut [f32], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
    fn add_f64(dst: &mut [f32], src: &[f64]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = (f64::from(*d) + s) as f32;
        }
    }
}

impl Elem for f64 {
    fn stream(dst: &mut [f64], src: Src<'_>) -> bool {
        let Src::F64(s) = src else { return false };
        bandwidth::copy_block(bytes_mut(dst), bytes(s), true);
        true
    }
    fn copy_f32(dst: &mut [f64], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f64::from(s);
        }
    }
    fn copy_f64(dst: &mut [f64], src: &[f64]) {
        dst.copy_from_slice(src);
    }
    fn add_f32(dst: &mut [f64], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += f64::from(s);
        }
    }
    fn add_f64(dst: &mut [f64], src: &[f64]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

fn write<T: Elem>(dst: &mut [T], src: Src<'_>, add: bool) {
    debug_assert_eq!(dst.len(), src.len());
    match (src, add) {
        (Src::F32(s), false) => T::copy_f32(dst, s),
        (Src::F64(s), false) => T::copy_f64(dst, s),
        (Src::F32(s), true) => T::add_f32(dst, s),
        (Src::F64(s), true) => T::add_f64(dst, s),
        (Src::Zeros(_), false) => dst.fill(T::default()),
        (Src::Zeros(_), true) => {}
    }
}

/// Block length for `n` elements: about four blocks per thread, or all of it
/// in one block when the work is small or there is one thread.
fn block_len(n: usize) -> usize {
    let threads = threads::num_threads();
    if n < PARALLEL_MIN || threads <= 1 {
        return n.max(1);
    }
    let per = n.div_ceil(threads * 4);
    per.div_ceil(BLOCK_ALIGN).max(1) * BLOCK_ALIGN
}

/// Pieces or parts that do not fit are a caller's mistake, reported as such.
fn shape_error(message: String) -> KernelError {
    KernelError::Program(message)
}

/// Write every piece into `out` at its offset. Pieces are applied in order of
/// offset, and in the order given among pieces with the same offset, so a
/// piece with `add` set adds to what an earlier piece over the same range
/// wrote. Two pieces must cover either the same range or disjoint ranges.
/// Elements of `out` that no piece covers are left as they are.
pub fn gather(out: Dst<'_>, pieces: &[Piece<'_>]) -> Result<(), KernelError> {
    let n = out.len();
    let mut order: Vec<&Piece<'_>> = pieces.iter().filter(|p| !p.src.is_empty()).collect();
    order.sort_by_key(|p| p.offset);
    let mut covered = 0;
    let mut last = (0, 0);
    for (i, p) in order.iter().enumerate() {
        let range = (p.offset, p.offset + p.src.len());
        if range.1 > n {
            return Err(shape_error(format!(
                "a piece of {} elements at offset {} does not fit a flat vector of {n}",
                p.src.len(),
                p.offset
            )));
        }
        if i > 0 && range != last && range.0 < covered {
            return Err(shape_error(format!(
                "pieces {last:?} and {range:?} overlap without covering the same range"
            )));
        }
        covered = covered.max(range.1);
        last = range;
    }
    let block = block_len(n);
    match out {
        Dst::F32(o) => gather_into(o, &order, block),
        Dst::F64(o) => gather_into(o, &order, block),
    }
    Ok(())
}

fn gather_into<T: Elem>(out: &mut [T], pieces: &[&Piece<'_>], block: usize) {
    // A large result (a fresh array, usually) is written with non-temporal
    // stores: its lines are not read first, nor left to push out the sources.
    // Not when pieces add up: they read back what the stores wrote.
    let stream = size_of_val(out) >= STREAM_MIN_BYTES && pieces.iter().all(|p| !p.add);
    let run = |index: usize, chunk: &mut [T]| {
        let (start, end) = (index * block, index * block + chunk.len());
        // Ends are sorted too: pieces are disjoint or equal ranges.
        let first = pieces.partition_point(|p| p.offset + p.src.len() <= start);
        for p in &pieces[first..] {
            if p.offset >= end {
                break;
            }
            let (a, b) = (p.offset.max(start), (p.offset + p.src.len()).min(end));
            let (dst, src) = (
                &mut chunk[a - start..b - start],
                p.src.range(a - p.offset, b - p.offset),
            );
            if !(stream && T::stream(dst, src)) {
                write(dst, src, p.add);
            }
        }
        if stream {
            bandwidth::fence(); // before another thread (or the caller) reads them
        }
    };
    if block >= out.len() {
        run(0, out);
    } else {
        let mut chunks: Vec<(usize, &mut [T])> = out.chunks_mut(block).enumerate().collect();
        threads::for_each(&mut chunks, |(i, c)| run(*i, c));
    }
}

/// Copy `flat[offset..offset + len]` into each part (of length `len`),
/// converting to the part's type.
pub fn scatter(flat: Src<'_>, parts: Vec<(usize, Dst<'_>)>) -> Result<(), KernelError> {
    let total = parts.iter().map(|(_, d)| d.len()).sum();
    scatter_in_blocks(flat, parts, block_len(total))
}

fn scatter_in_blocks(
    flat: Src<'_>,
    parts: Vec<(usize, Dst<'_>)>,
    block: usize,
) -> Result<(), KernelError> {
    if let Src::Zeros(_) = flat {
        return Err(KernelError::Program(
            "scatter reads from a slice, not from zeros".into(),
        ));
    }
    let mut total = 0;
    for (offset, dst) in &parts {
        if offset + dst.len() > flat.len() {
            return Err(shape_error(format!(
                "a part of {} elements at offset {offset} does not fit a flat vector of {}",
                dst.len(),
                flat.len()
            )));
        }
        total += dst.len();
    }
    if block >= total {
        for (offset, mut dst) in parts {
            let len = dst.len();
            dst.write(flat.range(offset, offset + len), false);
        }
        return Ok(());
    }
    // Cut the parts into tasks of about `block` elements of work each.
    let mut tasks: Vec<Vec<(Src<'_>, Dst<'_>)>> = vec![Vec::new()];
    let mut filled = 0;
    for (mut offset, mut dst) in parts {
        while !dst.is_empty() {
            let take = dst.len().min(block - filled);
            let (head, tail) = dst.split_at(take);
            tasks
                .last_mut()
                .expect("tasks is never empty")
                .push((flat.range(offset, offset + take), head));
            (offset, dst, filled) = (offset + take, tail, filled + take);
            if filled == block {
                tasks.push(Vec::new());
                filled = 0;
            }
        }
    }
    threads::for_each(&mut tasks, |task| {
        for (src, dst) in task.drain(..) {
            let mut dst = dst;
            dst.write(src, false);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(offset: usize, src: Src<'_>, add: bool) -> Piece<'_> {
        Piece { offset, src, add }
    }

    fn ramp32(n: usize, from: f32) -> Vec<f32> {
        (0..n).map(|i| from + i as f32).collect()
    }

    fn ramp64(n: usize, from: f64) -> Vec<f64> {
        (0..n).map(|i| from + i as f64).collect()
    }

    #[test]
    fn gathers_and_converts() {
        let a = ramp32(3, 1.0);
        let b = ramp64(2, 10.0);
        let mut out = vec![-1.0f64; 7];
        let pieces = [
            piece(5, Src::F64(&b), false),
            piece(0, Src::F32(&a), false),
            piece(3, Src::Zeros(2), false),
        ];
        gather(Dst::F64(&mut out), &pieces).unwrap();
        assert_eq!(out, [1.0, 2.0, 3.0, 0.0, 0.0, 10.0, 11.0]);
    }

    /// A result past `STREAM_MIN_BYTES` takes the non-temporal path, across
    /// threads and at unaligned offsets; pieces that add take the plain one.
    #[test]
    fn large_results_are_streamed_to_the_same_values() {
        crate::threads::set_num_threads(2).unwrap();
        let n = STREAM_MIN_BYTES / 4 + 1001;
        let (a, b, c) = (ramp32(3, 1.0), ramp32(n - 1003, 7.0), ramp64(1000, -5.0));
        for add in [false, true] {
            let mut out = vec![0.5f32; n];
            let pieces = [
                piece(0, Src::F32(&a), false),
                piece(3, Src::F32(&b), false),
                piece(3, Src::F32(&b), add),
                piece(n - 1000, Src::F64(&c), false),
            ];
            gather(Dst::F32(&mut out), &pieces).unwrap();
            assert_eq!(out[..3], a[..]);
            let twice = if add { 2.0 } else { 1.0 };
            assert!(out[3..n - 1000]
                .iter()
                .zip(&b)
                .all(|(o, v)| *o == v * twice));
            assert!(out[n - 1000..]
                .iter()
                .zip(&c)
                .all(|(o, v)| f64::from(*o) == *v));
        }
    }

    #[test]
    fn adds_tied_pieces_in_order() {
        let a = [1.0f32, 2.0];
        let b = [0.5f64, 0.25];
        let mut out = vec![9.0f32; 3];
        let pieces = [
            piece(0, Src::F32(&a), false),
            piece(0, Src::F64(&b), true),
            piece(0, Src::Zeros(2), true),
            piece(2, Src::Zeros(1), false),
            piece(2, Src::F32(&a[..1]), true),
        ];
        gather(Dst::F32(&mut out), &pieces).unwrap();
        assert_eq!(out, [1.5, 2.25, 1.0]);
    }

    #[test]
    fn rejects_bad_pieces() {
        let a = [1.0f32, 2.0, 3.0];
        let mut out = vec![0.0f32; 4];
        let outside = [piece(2, Src::F32(&a), false)];
        assert!(gather(Dst::F32(&mut out), &outside).is_err());
        let overlapping = [piece(0, Src::F32(&a), false), piece(1, Src::F32(&a), false)];
        assert!(gather(Dst::F32(&mut out), &overlapping).is_err());
        let mut part = [0.0f64; 3];
        assert!(scatter(Src::F32(&a), vec![(1, Dst::F64(&mut part))]).is_err());
        assert!(scatter(Src::Zeros(3), vec![(0, Dst::F64(&mut part))]).is_err());
    }

    #[test]
    fn scatters_and_converts() {
        let flat = ramp64(6, 0.0);
        let (mut x, mut y) = ([0.0f32; 2], [0.0f64; 3]);
        scatter(
            Src::F64(&flat),
            vec![(3, Dst::F64(&mut y)), (1, Dst::F32(&mut x))],
        )
        .unwrap();
        assert_eq!(x, [1.0, 2.0]);
        assert_eq!(y, [3.0, 4.0, 5.0]);
    }

    /// Gather and scatter over blocks of `block` elements, pieces straddling them.
    fn round_trip(sizes: &[usize], block: usize) {
        let total: usize = sizes.iter().sum();
        let arrays: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| ramp32(n, k as f32 * 0.5))
            .collect();
        let mut offset = 0;
        let mut pieces = Vec::new();
        for a in &arrays {
            pieces.push(Piece {
                offset,
                src: Src::F32(a),
                add: false,
            });
            offset += a.len();
        }
        let mut flat = vec![0.0f64; total];
        let order: Vec<&Piece<'_>> = pieces.iter().filter(|p| !p.src.is_empty()).collect();
        gather_into(&mut flat, &order, block);
        let expected: Vec<f64> = arrays.iter().flatten().map(|&v| f64::from(v)).collect();
        assert_eq!(flat, expected);

        let mut back: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
        let mut offset = 0;
        let mut parts = Vec::new();
        for b in &mut back {
            let n = b.len();
            parts.push((offset, Dst::F32(b)));
            offset += n;
        }
        scatter_in_blocks(Src::F64(&flat), parts, block).unwrap();
        assert_eq!(back, arrays);
    }

    #[test]
    fn round_trips_in_small_blocks_on_the_pool() {
        round_trip(&[1, 3000, 17, 1024, 0, 2049, 5], 1000);
        round_trip(&[7, 0, 1], 1);
    }

    #[test]
    fn round_trips_past_the_parallel_threshold() {
        round_trip(
            &[1, 300_000, 17, 65_536, 123_457, 0, 2_000_003, 5],
            block_len(2_489_019),
        );
    }

    #[test]
    fn large_tied_sum_on_the_pool() {
        let n = 1_000_001;
        let g1 = ramp64(n, 0.0);
        let g2 = vec![1.0f32; n];
        let mut flat = vec![7.0f32; n + 3];
        let pieces = [
            piece(3, Src::F64(&g1), false),
            piece(3, Src::F32(&g2), true),
            piece(0, Src::Zeros(3), false),
        ];
        gather(Dst::F32(&mut flat), &pieces).unwrap();
        assert_eq!(&flat[..3], &[0.0, 0.0, 0.0]);
        assert!(flat[3..]
            .iter()
            .enumerate()
            .all(|(i, &v)| v == (i as f64 + 1.0) as f32));
    }
}
