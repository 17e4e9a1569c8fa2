//! `RAdam(η, β, ϵ)`: Adam with the variance rectified. With
//! `ρ∞ = 2/(1-β₂) - 1` and `ρ = ρ∞ - 2t β₂ᵗ/(1-β₂ᵗ)`, the update is Adam's times
//! `r = √((ρ-4)(ρ-2)ρ∞ / ((ρ∞-4)(ρ∞-2)ρ))` when `ρ > 4`, else the bias-corrected
//! momentum `m / (1-β₁ᵗ) * η`. State: `m`, `v`; per leaf `βᵗ` and the step `t`.

use crate::float::Float;
use crate::rules::adam::{advance_powers, Moments, MOMENTS};
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct RAdam<T> {
    pub moments: Moments<T>,
    /// `Some(r)` when the variance is tractable (`ρ > 4`), else `None`.
    pub rectifier: Option<T>,
}

impl<T: Float> Rule<T, 2> for RAdam<T> {
    const HYPER: &'static [&'static str] = MOMENTS;
    /// β₁ᵗ, β₂ᵗ, t.
    const PER_LEAF: usize = 3;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        let moments = Moments::<T>::bind(h, leaf);
        let (four, b2) = (T::from_f64(4.0), moments.beta.1);
        let rho_inf = T::TWO / (T::ONE - b2) - T::ONE;
        let b2t = T::from_f64(leaf[1]);
        let t = T::from_f64(leaf[2]);
        let rho = rho_inf - T::TWO * t * b2t / (T::ONE - b2t);
        let rectifier = (rho > four).then(|| {
            ((rho - four) * (rho - T::TWO) * rho_inf
                / ((rho_inf - four) * (rho_inf - T::TWO) * rho))
                .sqrt()
        });
        Self { moments, rectifier }
    }
    fn advance(h: &[f64], leaf: &mut [f64]) -> bool {
        advance_powers::<T>(h, leaf);
        leaf[2] += 1.0;
        true
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [m, v]: [&mut T; 2]) -> T {
        let p = &self.moments;
        p.advance(d, m, v);
        match self.rectifier {
            Some(r) => p.direction(*m, *v) * p.eta * r,
            None => p.unbias_m(*m) * p.eta,
        }
    }
}
