//! `Yogi(η, β, ϵ; initial_accumulator)` (Zaheer et al. 2018, as Axon and
//! optax): `m = β₁ m + (1-β₁) dx`, and the second moment moves additively
//! towards `dx²`, `v = v - (1-β₂) sign(v - dx²) dx²` (`sign(0) = 0`); update
//! `η m̂ / (√(v̂ + ϵᵣ) + ϵ)` with Adam's bias corrections `m̂ = m/(1-β₁ᵗ)`,
//! `v̂ = v/(1-β₂ᵗ)`, applied although `m₀ = v₀ = initial_accumulator`.
//! ϵᵣ (`eps_root`) is 0 for `Yogi`; `optimisers.axon.yogi` sets it.
//! State: `m`, `v`; per leaf `βᵗ`.

use crate::float::Float;
use crate::rules::adam::{advance_powers, Moments};
use crate::rules::axon::ROOTED;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct Yogi<T> {
    pub moments: Moments<T>,
    /// ϵᵣ, added to `v̂` inside the root.
    pub eps_root: T,
}

impl<T: Float> Rule<T, 2> for Yogi<T> {
    const HYPER: &'static [&'static str] = ROOTED;
    const PER_LEAF: usize = 2;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        Self {
            moments: Moments::bind(h, leaf),
            eps_root: T::from_f64(h[4]),
        }
    }
    fn advance(h: &[f64], leaf: &mut [f64]) -> bool {
        advance_powers::<T>(h, leaf);
        true
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [m, v]: [&mut T; 2]) -> T {
        let p = &self.moments;
        let (b1, b2) = p.beta;
        let (m0, v0) = (*m, *v); // loads first: see `rules` on 4K aliasing
        let d2 = d * d;
        *m = b1 * m0 + (T::ONE - b1) * d;
        *v = v0 - (T::ONE - b2) * (v0 - d2).sign() * d2;
        let root = (p.unbias_v(*v) + self.eps_root).sqrt();
        p.unbias_m(*m) / (root + p.epsilon) * p.eta
    }
}
