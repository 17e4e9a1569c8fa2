//! `NoisySGD(η, variance, γ; seed)` (Neelakantan et al. 2015, optax's
//! `noisy_sgd`): `u = η (dx + ξ)` with `ξ ~ N(0, variance / tᵞ)` drawn afresh
//! for every element at every step, `t` this leaf's step from 1.
//! State: none; per leaf `t` and the leaf's number `ℓ` (see below).
//!
//! The noise is a pure function of (seed, ℓ, t, element index `i`), so a step
//! gives the same bits for any thread count and any split of the work, for
//! `update` and `update_`, and after a checkpoint (`t` and `ℓ` are in the
//! state): `ChaCha8` keyed by `seed ‖ ℓ` (two little-endian `u64`s, then zeros),
//! on stream `t`, read from word `4i`: two `u64`s `a`, `b` give
//! `z = √(-2 ln u₁) cos(2π u₂)` (Box–Muller) with `u₁ = (⌊a/2¹¹⌋ + 1)/2⁵³` in
//! (0, 1] and `u₂ = ⌊b/2¹¹⌋/2⁵³`, in `f64`; `ξ = T(z) σ`, `σ = T(√(variance/tᵞ))`.
//!
//! Why `ChaCha` from `rand_chacha`: it is counter-based (any block from its
//! position alone, which a split of the work needs), the rust-random
//! project's crate keeps it (SIMD blocks, stream and word position in its
//! API), and eight rounds pass the statistical batteries (`BigCrush`,
//! `PractRand`) with margin. Measured per element, Box–Muller's logarithm
//! and cosine take several times what the generator's four words do (and
//! `ChaCha20`'s words twice `ChaCha8`'s): a faster generator (Philox) would
//! save little, and none is kept in a crate as well.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::float::Float;
use crate::rules::prelude::Before;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct NoisySgd<T> {
    /// η, the learning rate.
    pub eta: T,
    /// σ = √(variance / tᵞ), the noise's standard deviation at this step.
    pub sigma: T,
    /// The generator's key: the seed, then the leaf's number.
    pub key: [u8; 32],
    /// t, this leaf's step from 1: the generator's stream.
    pub step: u64,
}

/// The 32 bits of `v` (a hyper-parameter or per-leaf scalar holding an integer).
fn word(v: f64) -> u64 {
    v as u64 & 0xffff_ffff
}

impl<T: Float> NoisySgd<T> {
    /// The generator for the elements from index `at` of this leaf on.
    fn generator(&self, at: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.key);
        rng.set_stream(self.step);
        rng.set_word_pos(4 * at as u128);
        rng
    }
}

/// A standard normal variate from the generator's next two `u64`s.
#[inline(always)]
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    const UNIT: f64 = 1.0 / (1u64 << 53) as f64;
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let u1 = ((a >> 11) + 1) as f64 * UNIT;
    let u2 = (b >> 11) as f64 * UNIT;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl<T: Float> Rule<T, 0> for NoisySgd<T> {
    /// The seed's low and high 32 bits: each exact in an `f64`.
    const HYPER: &'static [&'static str] = &["eta", "variance", "gamma", "seed_low", "seed_high"];
    /// `[t, ℓ]`.
    const PER_LEAF: usize = 2;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        let (variance, gamma, t) = (h[1], h[2], leaf[0]);
        let seed = word(h[3]) | word(h[4]) << 32;
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&(leaf[1] as u64).to_le_bytes());
        Self {
            eta: T::from_f64(h[0]),
            sigma: T::from_f64((variance / t.powf(gamma)).sqrt()),
            key,
            step: t as u64,
        }
    }
    fn advance(_h: &[f64], leaf: &mut [f64]) -> bool {
        leaf[0] += 1.0;
        true
    }
    /// The step from the noisy gradient `d + ξ`; the noise is added by
    /// `apply_at` and `descend_at`, which know the element's index.
    #[inline(always)]
    fn update(&self, _x: T, d: T, _st: [&mut T; 0]) -> T {
        d * self.eta
    }
    fn apply_at(&self, x: &[T], dx: &mut [T], _state: [&mut [T]; 0], at: usize) {
        let mut rng = self.generator(at);
        for (&x, d) in x.iter().zip(dx.iter_mut()) {
            let noisy = *d + T::from_f64(normal(&mut rng)) * self.sigma;
            *d = self.update(x, noisy, []);
        }
    }
    fn descend_at<P: Before<T>>(
        &self,
        x: &mut [T],
        g: &[T],
        _state: [&mut [T]; 0],
        before: &P,
        at: usize,
    ) {
        let mut rng = self.generator(at);
        for (x, &g) in x.iter_mut().zip(g) {
            let noisy = before.apply(*x, g) + T::from_f64(normal(&mut rng)) * self.sigma;
            *x = *x - self.update(*x, noisy, []);
        }
    }
}
