//! `AdaMax(η, β, ϵ)`: Adam with the ∞-norm, `u = max(β₂ u, |dx|)`; update
//! `(η / (1-β₁ᵗ)) m / (u + ϵ)`. State: `m`, `u`; per leaf `βᵗ`.

use crate::float::Float;
use crate::rules::adam::{advance_powers, Moments, MOMENTS};
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct AdaMax<T>(pub Moments<T>);

impl<T: Float> Rule<T, 2> for AdaMax<T> {
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
    fn update(&self, _x: T, d: T, [m, u]: [&mut T; 2]) -> T {
        let p = &self.0;
        let (b1, b2) = p.beta;
        let rate = p.eta / p.correction.0;
        let (m0, u0) = (*m, *u); // loads first: see `rules` on 4K aliasing
        *m = b1 * m0 + (T::ONE - b1) * d;
        // Julia's `max`: a NaN in `u` stays (a NaN in `dx` wins in `max_sel` too).
        let (decayed, size) = (b2 * u0, d.abs());
        #[allow(clippy::eq_op)]
        let nan = decayed != decayed;
        *u = if nan { decayed } else { decayed.max_sel(size) };
        rate * *m / (*u + p.epsilon)
    }
}
