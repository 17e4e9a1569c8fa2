//! `AdamW(η, β, λ, ϵ; couple)`: Adam's direction `a` (learning rate 1) plus weight
//! decay, coupled `η (a + λ x)` or decoupled `η a + λ x`.
//! State: `m`, `v`; per leaf `βᵗ`.

use crate::float::Float;
use crate::rules::adam::{advance_powers, Moments};
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct AdamW<T> {
    pub moments: Moments<T>,
    /// λ, the weight decay.
    pub lambda: T,
    /// Whether the decay is scaled by η (`PyTorch`'s `AdamW`) or not (the paper's).
    pub couple: bool,
}

impl<T: Float> Rule<T, 2> for AdamW<T> {
    /// Adam's four (`MOMENTS`, read by `Moments::bind`), then λ and `couple` (0 or 1).
    const HYPER: &'static [&'static str] =
        &["eta", "beta1", "beta2", "epsilon", "lambda", "couple"];
    const PER_LEAF: usize = 2;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        Self {
            moments: Moments::bind(h, leaf),
            lambda: T::from_f64(h[4]),
            couple: h[5] != 0.0,
        }
    }
    fn advance(h: &[f64], leaf: &mut [f64]) -> bool {
        advance_powers::<T>(h, leaf);
        true
    }
    #[inline(always)]
    fn update(&self, x: T, d: T, [m, v]: [&mut T; 2]) -> T {
        let p = &self.moments;
        let (eta, lambda) = (p.eta, self.lambda);
        p.advance(d, m, v);
        if self.couple {
            eta * (p.direction(*m, *v) + lambda * x)
        } else {
            eta * p.direction(*m, *v) + lambda * x
        }
    }
}
