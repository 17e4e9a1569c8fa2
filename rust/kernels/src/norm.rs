//! p-norms of arrays, as reductions (see `reduction`) take them.
//!
//! A norm is summed in `f64` over fixed blocks with fixed lanes and combined
//! in block order, so it has the same bits for any thread count and any
//! instruction set; a norm over several arrays (`partial`, `combine`) adds
//! their parts in the order given.

use crate::float::Float;
use crate::threads;

use crate::tuning::{NORM_BLOCK, NORM_LANES as LANES};

/// ‖dx‖ₚ, computed on the calling thread or, when `parallel`, by `threads::for_each`.
pub fn norm<T: Float>(p: f64, dx: &[T], parallel: bool) -> f64 {
    if p == f64::INFINITY {
        return reduce(
            dx,
            parallel,
            |b| fold(b, 0.0, |a, v| max_nan(a, v.abs())),
            max_nan,
            0.0,
        );
    }
    if p == f64::NEG_INFINITY {
        let init = f64::INFINITY;
        let min = reduce(
            dx,
            parallel,
            |b| fold(b, init, |a, v| min_nan(a, v.abs())),
            min_nan,
            init,
        );
        return if dx.is_empty() { 0.0 } else { min };
    }
    if p == 0.0 {
        let count = |b: &[T]| b.iter().filter(|v| v.to_f64() != 0.0).count() as f64;
        return reduce(dx, parallel, count, |a, b| a + b, 0.0);
    }
    let power = |scale: f64| {
        move |b: &[T]| {
            // `v / 1.0` is `v`: without a scale, no division per element
            // (the costliest instruction here), and the same sums.
            match (p, scale == 1.0) {
                (2.0, true) => crate::simd::sum_of_squares(b),
                (2.0, false) => lane_sum(b, |v| (v / scale) * (v / scale)),
                (1.0, true) => lane_sum(b, f64::abs),
                (1.0, false) => lane_sum(b, |v| (v / scale).abs()),
                (_, true) => lane_sum(b, |v| v.abs().powf(p)),
                (_, false) => lane_sum(b, |v| (v / scale).abs().powf(p)),
            }
        }
    };
    let root = |s: f64| {
        if p == 1.0 {
            s
        } else if p == 2.0 {
            s.sqrt()
        } else {
            s.powf(1.0 / p)
        }
    };
    let sum = |scale: f64| reduce(dx, parallel, power(scale), |a, b| a + b, 0.0);
    if p == 2.0 {
        // One pass; only if the squares overflow, or may have underflowed
        // (a sum below 2⁻⁹⁷⁰, where subnormal squares lose digits that
        // matter: a trust ratio of tiny `x` is tiny, not 1), again relative
        // to max |dx|, as LinearAlgebra's.
        let squares = sum(1.0);
        let plain = root(squares);
        if plain.is_nan() || (plain.is_finite() && squares >= f64::MIN_POSITIVE / f64::EPSILON) {
            return plain;
        }
        let largest = extreme(dx, parallel, f64::INFINITY);
        if !largest.is_finite() || largest == 0.0 {
            return plain;
        }
        return largest * root(sum(largest));
    }
    if !(-1.0..=1.0).contains(&p) {
        // As LinearAlgebra's generic p-norm: relative to max |dx| (p > 1) or
        // min |dx| (p < -1) when the powers would overflow or vanish.
        let scale = extreme(
            dx,
            parallel,
            if p > 1.0 {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            },
        );
        if scale == 0.0 || !scale.is_finite() {
            return scale;
        }
        let probe = dx.len() as f64 * scale.powf(p);
        if probe.is_finite() && probe != 0.0 {
            return root(sum(1.0));
        }
        return scale * root(sum(scale));
    }
    root(sum(1.0))
}

/// max |dx| (`p` = ∞) or min |dx| (`p` = -∞).
fn extreme<T: Float>(dx: &[T], parallel: bool, p: f64) -> f64 {
    norm(p, dx, parallel)
}

/// One array's part of a norm over several: Σ|v|ᵖ for a finite `p` (in the
/// blocks and lanes `norm` sums in), max |v| for `p` = ∞. Without `norm`'s
/// rescaling: a sum that overflows makes the norm infinite.
pub fn partial<T: Float>(p: f64, dx: &[T], parallel: bool) -> f64 {
    if p == f64::INFINITY {
        return norm(p, dx, parallel);
    }
    let power = move |b: &[T]| {
        if p == 2.0 {
            crate::simd::sum_of_squares(b)
        } else if p == 1.0 {
            lane_sum(b, f64::abs)
        } else {
            lane_sum(b, |v| v.abs().powf(p))
        }
    };
    reduce(dx, parallel, power, |a, b| a + b, 0.0)
}

/// The norm of several arrays from their `partial`s, combined in the order given.
pub fn combine(p: f64, parts: impl IntoIterator<Item = f64>) -> f64 {
    if p == f64::INFINITY {
        return parts.into_iter().fold(0.0, max_nan);
    }
    let sum = parts.into_iter().fold(0.0, |a, b| a + b);
    if p == 1.0 {
        sum
    } else if p == 2.0 {
        sum.sqrt()
    } else {
        sum.powf(1.0 / p)
    }
}

/// Julia's `max`: NaN wins (Rust's `f64::max` would drop it).
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn fold<T: Float>(b: &[T], init: f64, f: impl Fn(f64, f64) -> f64) -> f64 {
    b.iter().fold(init, |a, v| f(a, v.to_f64()))
}

/// Σ v², as `lane_sum` sums it: the usual norm (`p` = 2), which
/// `simd::sum_of_squares` compiles for each instruction set.
#[inline(always)]
pub(crate) fn sum_of_squares<T: Float>(b: &[T]) -> f64 {
    lane_sum(b, square)
}

#[inline(always)]
fn square(v: f64) -> f64 {
    v * v
}

/// Sum `f(v)` over a block in `LANES` interleaved accumulators, the tail
/// added to the first of them, then combined pairwise in a fixed order: the
/// same bits whatever the width of the vectors, and five dependent additions
/// to combine them instead of a chain of `LANES` (on 1,000-element arrays the
/// chain took as long as the loop).
#[inline(always)]
fn lane_sum<T: Float>(b: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let whole = b.chunks_exact(LANES);
    let rest = whole.remainder();
    for c in whole {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            *lane += f(v.to_f64());
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(rest) {
        *lane += f(v.to_f64());
    }
    let mut width = LANES / 2;
    while width > 0 {
        let (low, high) = lanes.split_at_mut(width);
        for (a, &b) in low.iter_mut().zip(high.iter()) {
            *a += b;
        }
        width /= 2;
    }
    lanes[0]
}

/// Partial results per `NORM_BLOCK`, then combined sequentially in block order.
fn reduce<T: Float>(
    dx: &[T],
    parallel: bool,
    block: impl Fn(&[T]) -> f64 + Sync,
    combine: impl Fn(f64, f64) -> f64,
    init: f64,
) -> f64 {
    if parallel {
        let mut partials: Vec<(&[T], f64)> = dx.chunks(NORM_BLOCK).map(|c| (c, init)).collect();
        threads::for_each(&mut partials, |(c, partial)| *partial = block(c));
        partials.into_iter().map(|(_, p)| p).fold(init, combine)
    } else {
        dx.chunks(NORM_BLOCK).map(&block).fold(init, combine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_of_a_small_vector() {
        let v = [3.0f32, -4.0, 0.0];
        assert_eq!(norm(2.0, &v, false), 5.0);
        assert_eq!(norm(1.0, &v, false), 7.0);
        assert_eq!(norm(f64::INFINITY, &v, false), 4.0);
        assert_eq!(norm(f64::NEG_INFINITY, &v, false), 0.0);
        assert_eq!(norm(0.0, &v, false), 2.0);
        assert!((norm(3.0, &v, false) - 91f64.powf(1.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn norm_is_the_same_in_parallel() {
        let v: Vec<f32> = (0..100_003)
            .map(|i| ((i * 7919) % 1013) as f32 * 1e-3 - 0.5)
            .collect();
        for p in [2.0, 1.0, 3.5, 0.0, f64::INFINITY, f64::NEG_INFINITY] {
            let serial = norm(p, &v, false);
            let parallel = norm(p, &v, true);
            assert_eq!(serial.to_bits(), parallel.to_bits(), "p = {p}");
        }
    }

    #[test]
    fn nan_makes_every_norm_nan() {
        let v = [1.0f64, f64::NAN, -3.0];
        for p in [2.0, 1.0, 3.0, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(norm(p, &v, false).is_nan(), "p = {p}");
        }
    }

    #[test]
    fn tiny_values_do_not_underflow() {
        let tiny = [3e-170_f64, -4e-170];
        assert!((norm(2.0, &tiny, false) / 5e-170 - 1.0).abs() < 1e-15);
        let subnormal = [3e-310_f64, 4e-310];
        assert!((norm(2.0, &subnormal, false) / 5e-310 - 1.0).abs() < 1e-12);
        assert_eq!(norm(2.0, &[0.0_f64; 5], false), 0.0);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let v = [1e300f64, 1e300];
        let n = norm(2.0, &v, false);
        assert!((n / (1e300 * 2f64.sqrt()) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn parts_combine_into_the_norm_of_the_arrays_joined() {
        let (a, b) = ([3.0f64, 0.0], [-4.0f64, 12.0, 0.0]);
        let joined = [3.0f64, 0.0, -4.0, 12.0, 0.0];
        for p in [2.0, 1.0, f64::INFINITY] {
            let parts = [partial(p, &a, false), partial(p, &b, false)];
            assert_eq!(combine(p, parts), norm(p, &joined, false), "p = {p}");
        }
    }
}
