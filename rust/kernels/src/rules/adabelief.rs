//! `AdaBelief(η, β, ϵ)`: Adam with the second moment of the surprise,
//! `s = β₂ s + (1-β₂)(dx - m)² + ϵ`; update `η m / (1-β₁ᵗ) / (√(s / (1-β₂ᵗ)) + ϵ)`.
//! State: `m`, `s`; per leaf `βᵗ`.

use crate::float::Float;
use crate::rules::adam::{advance_powers, Moments, MOMENTS};
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct AdaBelief<T>(pub Moments<T>);

impl<T: Float> Rule<T, 2> for AdaBelief<T> {
    const HYPER: &'static [&'static str] = MOMENTS;
    const PER_LEAF: usize = 2;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        Self(Moments::bind(h, leaf))
    }
    fn advance(h: &[f64], leaf: &mut [f64]) -> bool {
        advance_powers::<T>(h, leaf);
        true
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [m, s]: [&mut T; 2]) -> T {
        let p = &self.0;
        let (b1, b2) = p.beta;
        let (m0, s0) = (*m, *s); // loads first: see `rules` on 4K aliasing
        *m = b1 * m0 + (T::ONE - b1) * d;
        let surprise = d - *m;
        *s = b2 * s0 + (T::ONE - b2) * (surprise * surprise) + p.epsilon;
        p.unbias_m(p.eta * *m) / (p.unbias_v(*s).sqrt() + p.epsilon)
    }
}
