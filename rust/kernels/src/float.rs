//! The element types the kernels run on: `f32` and `f64`.
//!
//! Every operation here is a single IEEE operation (no fused multiply-add), so a
//! kernel gives the same bits whether LLVM vectorises it for AVX-512, AVX2 or SSE2.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

pub trait Float:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const TWO: Self;

    /// Round a hyper-parameter to this type, as Julia's `T(x)` does.
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, p: Self) -> Self;

    /// `max` written as a select so that it vectorises; with a NaN in `self`
    /// it returns `other`, like the comparisons it is made of.
    #[inline(always)]
    fn max_sel(self, other: Self) -> Self {
        if self > other {
            self
        } else {
            other
        }
    }

    #[inline(always)]
    fn min_sel(self, other: Self) -> Self {
        if self < other {
            self
        } else {
            other
        }
    }

    /// `self / divisor`, given `reciprocal = 1 / divisor` computed once per leaf:
    /// a multiplication, as division is the costliest instruction of these
    /// loops (within an ulp of the division). [`Half`] keeps the division, as
    /// Julia's float16 arithmetic rounds it.
    #[inline(always)]
    fn over(self, divisor: Self, reciprocal: Self) -> Self {
        let _ = divisor;
        self * reciprocal
    }

    /// Julia's `sign`: -1, 0 or 1 (NaN stays NaN).
    #[inline(always)]
    fn sign(self) -> Self {
        if self > Self::ZERO {
            Self::ONE
        } else if self < Self::ZERO {
            -Self::ONE
        } else {
            self
        }
    }

    /// Julia's `clamp(x, lo, hi)`: NaN passes through.
    #[inline(always)]
    fn clamp_to(self, lo: Self, hi: Self) -> Self {
        if self > hi {
            hi
        } else if self < lo {
            lo
        } else {
            self
        }
    }
}

macro_rules! impl_float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const TWO: Self = 2.0;

            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn powf(self, p: Self) -> Self {
                <$t>::powf(self, p)
            }
        }
    };
}

impl_float!(f32);
impl_float!(f64);

/// float16 arithmetic as Julia does it on `Float16` arrays: every operation in
/// `f32`, its result rounded to the nearest float16 (kept in an `f32`). This
/// reproduces float16's underflow and rounding, which change results (Adam's
/// `v` flushes to zero and the epsilon floor then decides the step).
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
#[repr(transparent)]
pub struct Half(pub f32);

/// Round to the nearest float16 value, ties to even, with float16's
/// subnormals and overflow to infinity.
#[must_use]
pub fn round_to_f16(x: f32) -> f32 {
    const LARGEST_BELOW_OVERFLOW: f32 = 65520.0; // halfway past 65504 rounds to infinity
    const SMALLEST_NORMAL: f32 = 6.103_515_6e-5; // 2^-14
    const SUBNORMAL_STEP: f32 = 5.960_464_5e-8; // 2^-24
    let magnitude = x.abs();
    if !x.is_finite() {
        x
    } else if magnitude >= LARGEST_BELOW_OVERFLOW {
        f32::INFINITY.copysign(x)
    } else if magnitude < SMALLEST_NORMAL {
        // Exact scaling by powers of two, then round to a whole number of steps.
        (x / SUBNORMAL_STEP).round_ties_even() * SUBNORMAL_STEP
    } else {
        // Drop the 13 low mantissa bits, rounding half to even; a carry moves the exponent.
        let bits = x.to_bits();
        let odd = (bits >> 13) & 1;
        f32::from_bits((bits + 0x0FFF + odd) & !0x1FFF)
    }
}

impl Half {
    #[inline(always)]
    fn round(x: f32) -> Self {
        Half(round_to_f16(x))
    }
}

macro_rules! half_op {
    ($trait:ident, $method:ident, $op:tt) => {
        impl $trait for Half {
            type Output = Half;
            #[inline(always)]
            fn $method(self, other: Half) -> Half {
                Half::round(self.0 $op other.0)
            }
        }
    };
}

half_op!(Add, add, +);
half_op!(Sub, sub, -);
half_op!(Mul, mul, *);
half_op!(Div, div, /);

impl Neg for Half {
    type Output = Half;
    #[inline(always)]
    fn neg(self) -> Half {
        Half(-self.0)
    }
}

impl Float for Half {
    const ZERO: Self = Half(0.0);
    const ONE: Self = Half(1.0);
    const TWO: Self = Half(2.0);

    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        Half::round(v as f32)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self.0)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Half::round(self.0.sqrt())
    }
    #[inline(always)]
    fn abs(self) -> Self {
        Half(self.0.abs())
    }
    #[inline(always)]
    fn powf(self, p: Self) -> Self {
        Half::round(self.0.powf(p.0))
    }
    #[inline(always)]
    fn over(self, divisor: Self, _reciprocal: Self) -> Self {
        self / divisor
    }
}

/// float16 values held in `f32` buffers, seen as [`Half`]s (no copy).
pub fn as_half(values: &[f32]) -> &[Half] {
    // SAFETY: `Half` is `repr(transparent)` over `f32`: same size, alignment and
    // validity, so the slice reinterprets element for element for the same lifetime.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<Half>(), values.len()) }
}

/// Mutable form of [`as_half`].
pub fn as_half_mut(values: &mut [f32]) -> &mut [Half] {
    // SAFETY: as in `as_half`; the unique borrow of `values` moves to the result.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<Half>(), values.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_like_float16() {
        assert_eq!(round_to_f16(1.0), 1.0);
        assert_eq!(round_to_f16(0.1), 0.099_975_586); // float16(0.1)
        assert_eq!(round_to_f16(65504.0), 65504.0);
        assert_eq!(round_to_f16(65519.0), 65504.0);
        assert_eq!(round_to_f16(65520.0), f32::INFINITY);
        assert_eq!(round_to_f16(-1e6), f32::NEG_INFINITY);
        assert_eq!(round_to_f16(1e-9), 0.0); // below half the smallest subnormal
        assert_eq!(round_to_f16(4e-8), 5.960_464_5e-8); // rounds up to it
        assert_eq!(round_to_f16(1.0 + 1.0 / 2048.0), 1.0); // tie, to even
        assert_eq!(round_to_f16(1.0 + 3.0 / 2048.0), 1.0 + 2.0 / 1024.0); // tie, to even
        assert!(round_to_f16(f32::NAN).is_nan());
    }

    #[test]
    fn half_arithmetic_rounds_each_step() {
        let a = Half::from_f64(1e-4);
        assert_eq!((a * a).0, 0.0_f32.max(round_to_f16(a.0 * a.0)));
        assert_eq!((Half::ONE + Half(1e-4)).0, 1.0);
    }
}
