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
