//! The floor that the divider sets under the Adam family on small models: one
//! thread computing `a / (√b + ϵ)` (Adam's root and division, nothing else)
//! over N elements in cache, next to one computing `a + b` (the same loads and
//! stores), float32 and float64, with the loops compiled for the best
//! instruction set this CPU has.
//!
//!     cargo run --release --example divider -- [N]
//!
//! N defaults to 7,170, the benchmark's MLP. Prints the minimum microseconds
//! of 2,000 passes of each loop. On this project's VM (AMD EPYC, Zen 4, 2026-11-22):
//! float32 1.96 µs against 0.75, float64 6.1 µs against 1.5. The root and the
//! division of 7,170 float64 alone take 6 of the MLP's 10 µs target (a step
//! of `Adam` there takes 7.7 µs at best: the rest is the walk and the call).

use optimisers_kernels::Float;
use std::hint::black_box;
use std::time::Instant;

/// One loop over the arrays, inlined into the function compiled for each
/// instruction set (through a function pointer it would not be).
trait Pass {
    fn run<T: Float>(out: &mut [T], a: &[T], b: &[T], epsilon: T);
}

/// Adam's root and division.
struct RootAndDivision;

impl Pass for RootAndDivision {
    #[inline(always)]
    fn run<T: Float>(out: &mut [T], a: &[T], b: &[T], epsilon: T) {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a / (b.sqrt() + epsilon);
        }
    }
}

/// The same loads and stores, with an addition.
struct Sum;

impl Pass for Sum {
    #[inline(always)]
    fn run<T: Float>(out: &mut [T], a: &[T], b: &[T], _epsilon: T) {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a + b;
        }
    }
}

/// `P` compiled for AVX-512 when this CPU has it, for AVX2 when it has that.
fn fastest<P: Pass, T: Float>(out: &mut [T], a: &[T], b: &[T], epsilon: T) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn avx512<P: Pass, T: Float>(out: &mut [T], a: &[T], b: &[T], epsilon: T) {
            P::run(out, a, b, epsilon);
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<P: Pass, T: Float>(out: &mut [T], a: &[T], b: &[T], epsilon: T) {
            P::run(out, a, b, epsilon);
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            // SAFETY: this CPU has every feature `avx512` is compiled for (checked above).
            unsafe { avx512::<P, T>(out, a, b, epsilon) };
            return "avx512";
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above, for `avx2`.
            unsafe { avx2::<P, T>(out, a, b, epsilon) };
            return "avx2";
        }
    }
    P::run(out, a, b, epsilon);
    "baseline"
}

/// Minimum microseconds of one pass of `P` over `n` elements, and the
/// instruction set it ran at.
fn time<P: Pass, T: Float>(n: usize) -> (f64, &'static str) {
    let a: Vec<T> = (0..n).map(|i| T::from_f64(1.0 + i as f64 * 1e-3)).collect();
    let b: Vec<T> = (0..n).map(|i| T::from_f64(2.0 + i as f64 * 1e-4)).collect();
    let mut out = vec![T::ZERO; n];
    let epsilon = T::from_f64(1e-8);
    let mut best = f64::INFINITY;
    let mut isa = "";
    for _ in 0..2000 {
        let start = Instant::now();
        isa = fastest::<P, T>(black_box(&mut out), black_box(&a), black_box(&b), epsilon);
        best = best.min(start.elapsed().as_secs_f64() * 1e6);
    }
    black_box(&out);
    (best, isa)
}

fn report<T: Float>(name: &str, n: usize) {
    let (divide, isa) = time::<RootAndDivision, T>(n);
    let (add, _) = time::<Sum, T>(n);
    println!("{name} x {n} ({isa}): a / (√b + ϵ) {divide:.2} µs, a + b {add:.2} µs");
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .map_or(7170, |s| s.parse().expect("N: a number of elements"));
    report::<f32>("float32", n);
    report::<f64>("float64", n);
}
