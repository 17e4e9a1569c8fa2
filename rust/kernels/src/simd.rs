//! Runtime choice of instruction set. The wheel is built for the baseline
//! x86-64 CPU; the hot loop is compiled again for AVX2+FMA and AVX-512 and the
//! best level this CPU has is picked once. The kernels avoid `mul_add`, so every
//! level gives the same bits.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::KernelError;
use crate::exec::{process as process_generic, Task};
use crate::float::Float;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Baseline = 1,
    Avx2 = 2,
    Avx512 = 3,
}

impl Isa {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Isa> {
        [Isa::Baseline, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .find(|i| i.name() == name)
    }
}

/// 0 until first use; then the level in use.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The best level this CPU supports.
#[must_use]
pub fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// Every level this CPU can run, lowest first.
#[must_use]
pub fn available() -> Vec<Isa> {
    [Isa::Baseline, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&i| i <= detect())
        .collect()
}

#[must_use]
pub fn active() -> Isa {
    match ACTIVE.load(Ordering::Relaxed) {
        1 => Isa::Baseline,
        2 => Isa::Avx2,
        3 => Isa::Avx512,
        _ => {
            let isa = detect();
            ACTIVE.store(isa as u8, Ordering::Relaxed);
            isa
        }
    }
}

/// Choose a level (for tests and benchmarks); it must be one this CPU has.
pub fn set_active(isa: Isa) -> Result<(), KernelError> {
    if isa > detect() {
        return Err(KernelError::Program(format!(
            "instruction set {} is not available on this CPU (best: {})",
            isa.name(),
            detect().name()
        )));
    }
    ACTIVE.store(isa as u8, Ordering::Relaxed);
    Ok(())
}

/// `$f($arg)`, a function generic over `T: Float`, compiled again for AVX2
/// and AVX-512 and run at `$isa`: each use is a call, not a closure, since
/// closures do not take on the instruction set of the function around them.
macro_rules! at_level {
    ($isa:expr, $f:path, $arg:ident: $ty:ty => $ret:ty) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
            fn avx512<T: Float>($arg: $ty) -> $ret {
                $f($arg)
            }
            #[target_feature(enable = "avx2,fma")]
            fn avx2<T: Float>($arg: $ty) -> $ret {
                $f($arg)
            }
            match $isa {
                // SAFETY: the level is `detect()` or a lower one (`set_active`
                // checks), so this CPU has every feature the function was
                // compiled for.
                Isa::Avx512 => return unsafe { avx512($arg) },
                // SAFETY: as above.
                Isa::Avx2 => return unsafe { avx2($arg) },
                Isa::Baseline => {}
            }
        }
        $f($arg)
    }};
}

/// Run one task with the loops compiled for `isa`.
pub(crate) fn process<T: Float>(isa: Isa, task: &mut Task<'_, '_, T>) {
    at_level!(isa, process_generic, task: &mut Task<'_, '_, T> => ());
}

/// Σ v² over `b` (see `norm::sum_of_squares`), with the loop compiled for
/// the level in use: a norm reads each element once, and in baseline code
/// converting and squaring took a third of Adam's time again.
pub(crate) fn sum_of_squares<T: Float>(b: &[T]) -> f64 {
    at_level!(active(), crate::norm::sum_of_squares, b: &[T] => f64)
}

/// Hint the cache to fetch `data[range]` (clipped to `data`) into L2, one
/// request per 64-byte line. Only a hint: it changes no value and cannot fault.
/// L2, not L1: with a division and a root per element holding the core, the
/// requests into L1 kept the arrays' streams from running ahead (see
/// `tuning::PREFETCH_AHEAD_BYTES`).
#[inline(always)]
pub(crate) fn prefetch<T>(data: &[T], range: &std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let step = (64 / std::mem::size_of::<T>()).max(1);
        let end = range.end.min(data.len());
        let mut i = range.start;
        while i < end {
            // SAFETY: `i < data.len()`, so the pointer is inside `data`; a
            // prefetch reads nothing into the program and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(data.as_ptr().add(i).cast()) };
            i += step;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, range);
}
