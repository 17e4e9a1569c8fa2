//! Reference kernels for the benchmarks: what this machine's memory can do.
//!
//! - [`copy`]: a multi-threaded copy on our pool, to measure the memory
//!   bandwidth in the same run as the rules. With `stream` the stores bypass
//!   the cache (non-temporal), so the bytes counted (read `src`, write `dst`)
//!   are the bytes that cross the memory bus; without it, every line of `dst`
//!   is also read before it is written (write-allocate), a third stream that
//!   the count does not see, as in STREAM's "Copy".
//! - [`roofline`]: moves exactly Adam's bytes (read `x`, `g`, `m`, `v`; write
//!   `x`, `m`, `v`, all in place) with trivial arithmetic, split and
//!   prefetching like the rule kernels: the time a rule with Adam's traffic
//!   cannot beat.
//!
//! Neither is used by the optimisers; both exist to be timed.

use crate::error::KernelError;
use crate::exec::{memory_walk, prefetch_ahead, prefetch_slices};
use crate::float::Float;
use crate::simd::{self, Isa};
use crate::threads;

// [`roofline`] cuts tasks and stays on the calling thread as the rule kernels do.
use crate::tuning::{COPY_BLOCK_BYTES as COPY_BLOCK, NORM_PARALLEL_MIN as PARALLEL_MIN, TASK};

fn same_length(what: &str, a: usize, b: usize) -> Result<(), KernelError> {
    if a == b {
        Ok(())
    } else {
        Err(KernelError::Shape {
            job: 0,
            message: format!("{what} has {b} elements, expected {a}"),
        })
    }
}

/// Copy `src` into `dst` in blocks over the pool; `stream` uses non-temporal
/// stores where the CPU has them (x86-64), else plain ones.
pub fn copy(dst: &mut [u8], src: &[u8], stream: bool) -> Result<(), KernelError> {
    same_length("the source", dst.len(), src.len())?;
    let mut blocks: Vec<(&mut [u8], &[u8])> = dst
        .chunks_mut(COPY_BLOCK)
        .zip(src.chunks(COPY_BLOCK))
        .collect();
    threads::for_each(&mut blocks, |(d, s)| copy_block(d, s, stream));
    if stream {
        fence();
    }
    Ok(())
}

pub(crate) fn copy_block(dst: &mut [u8], src: &[u8], stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if stream {
        stream_copy(dst, src);
        return;
    }
    let _ = stream;
    dst.copy_from_slice(src);
}

/// Copy with 16-byte non-temporal stores (SSE2, which every x86-64 CPU has)
/// from the first 16-byte-aligned byte of `dst`; the ends are copied plainly.
#[cfg(target_arch = "x86_64")]
// The load is unaligned (`loadu`); the store's pointer is aligned by construction.
#[allow(clippy::cast_ptr_alignment)]
fn stream_copy(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
    const W: usize = 16;
    let head = dst.as_ptr().align_offset(W).min(dst.len());
    let body = (dst.len() - head) / W * W;
    dst[..head].copy_from_slice(&src[..head]);
    let (d, s) = (&mut dst[head..head + body], &src[head..head + body]);
    for (d, s) in d.chunks_exact_mut(W).zip(s.chunks_exact(W)) {
        // SAFETY: both chunks are 16 bytes long; `d` starts 16-byte aligned
        // (`head` aligned the body and the chunks are 16 bytes); the load is unaligned.
        unsafe {
            let v = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
            _mm_stream_si128(d.as_mut_ptr().cast::<__m128i>(), v);
        }
    }
    dst[head + body..].copy_from_slice(&src[head + body..]);
}

/// Order the non-temporal stores before anything that follows.
pub(crate) fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` (SSE) is available on every x86-64 CPU and only orders stores.
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}

/// One task's blocks of `x`, `g`, `m`, `v`.
type Blocks<'a, T> = (&'a mut [T], &'a [T], &'a mut [T], &'a mut [T]);

/// Adam's memory traffic with trivial arithmetic: `m += g; v += g; x -= m + v`,
/// in tasks over the pool (on the calling thread below `PARALLEL_MIN` elements),
/// with the loop compiled for the instruction set the rule kernels use, and
/// asking for the arrays ahead where they do (on arrays far larger than the
/// caches): without, the rules' prefetching made Adam 0.86x this kernel.
pub fn roofline<T: Float>(
    x: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
) -> Result<(), KernelError> {
    same_length("the gradient", x.len(), g.len())?;
    same_length("m", x.len(), m.len())?;
    same_length("v", x.len(), v.len())?;
    let isa = simd::active();
    let (prefetch, _) = memory_walk::<T>(x.len());
    if threads::num_threads() > 1 && x.len() >= PARALLEL_MIN {
        let mut tasks: Vec<Blocks<'_, T>> = x
            .chunks_mut(TASK)
            .zip(g.chunks(TASK))
            .zip(m.chunks_mut(TASK))
            .zip(v.chunks_mut(TASK))
            .map(|(((x, g), m), v)| (x, g, m, v))
            .collect();
        threads::for_each(&mut tasks, |(x, g, m, v)| {
            roofline_task(isa, (x, g, m, v), prefetch);
        });
    } else {
        roofline_task(isa, (x, g, m, v), prefetch);
    }
    Ok(())
}

#[inline(always)]
fn roofline_elements<T: Float>(x: &mut [T], g: &[T], m: &mut [T], v: &mut [T]) {
    for (((x, &g), m), v) in x.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = *m + g;
        *v = *v + g;
        *x = *x - (*m + *v);
    }
}

/// The elements of one task; with `prefetch`, in slices, each first asking
/// for the arrays further on, as the rule kernels do (`exec::prefetch_ahead`).
#[inline(always)]
fn roofline_loop<T: Float>((x, g, m, v): Blocks<'_, T>, prefetch: bool) {
    if !prefetch {
        roofline_elements(x, g, m, v);
        return;
    }
    for part in prefetch_slices(0..x.len()) {
        prefetch_ahead(&part, g, x, &[&mut *m, &mut *v]);
        roofline_elements(
            &mut x[part.clone()],
            &g[part.clone()],
            &mut m[part.clone()],
            &mut v[part.clone()],
        );
    }
}

fn roofline_task<T: Float>(isa: Isa, blocks: Blocks<'_, T>, prefetch: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
        fn avx512<T: Float>(blocks: Blocks<'_, T>, prefetch: bool) {
            roofline_loop(blocks, prefetch);
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Float>(blocks: Blocks<'_, T>, prefetch: bool) {
            roofline_loop(blocks, prefetch);
        }
        match isa {
            // SAFETY: `isa` comes from `simd::active()`, which is never above
            // what this CPU supports.
            Isa::Avx512 => return unsafe { avx512(blocks, prefetch) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { avx2(blocks, prefetch) },
            Isa::Baseline => {}
        }
    }
    let _ = isa;
    roofline_loop(blocks, prefetch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::PREFETCH_SLICE;

    #[test]
    fn copy_copies_every_byte_at_any_alignment() {
        let src: Vec<u8> = (0..3 * COPY_BLOCK + 37)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for stream in [false, true] {
            for offset in [0, 1, 7, 16] {
                let mut dst = vec![0u8; src.len() - offset];
                copy(&mut dst, &src[offset..], stream).unwrap();
                assert_eq!(dst, src[offset..], "stream {stream}, offset {offset}");
            }
        }
        let mut short = vec![0u8; 3];
        assert!(copy(&mut short, &src[..5], true).is_err());
        copy(&mut [], &[], true).unwrap();
    }

    #[test]
    fn roofline_moves_adams_arrays() {
        for n in [5, PARALLEL_MIN + 3] {
            let g: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
            let (mut x, mut m, mut v) = (vec![100.0f32; n], vec![1.0f32; n], vec![2.0f32; n]);
            roofline(&mut x, &g, &mut m, &mut v).unwrap();
            for i in 0..n {
                let gi = (i % 7) as f32;
                assert_eq!(
                    (m[i], v[i], x[i]),
                    (1.0 + gi, 2.0 + gi, 100.0 - (3.0 + 2.0 * gi))
                );
            }
        }
        let mut x = vec![0.0f64; 4];
        assert!(roofline(&mut x.clone(), &[0.0; 3], &mut x, &mut [0.0; 4]).is_err());
    }

    #[test]
    fn roofline_prefetching_moves_every_element() {
        // The prefetching loop runs only on arrays far larger than the
        // caches; here it runs on its own, over several slices and a tail.
        for n in [5, PREFETCH_SLICE, 3 * PREFETCH_SLICE + 17] {
            let g: Vec<f64> = (0..n).map(|i| (i % 5) as f64).collect();
            let (mut x, mut m, mut v) = (vec![50.0; n], vec![1.0; n], vec![2.0; n]);
            roofline_task(simd::active(), (&mut x, &g, &mut m, &mut v), true);
            for i in 0..n {
                let gi = (i % 5) as f64;
                assert_eq!(
                    (m[i], v[i], x[i]),
                    (1.0 + gi, 2.0 + gi, 50.0 - (3.0 + 2.0 * gi))
                );
            }
        }
    }
}
