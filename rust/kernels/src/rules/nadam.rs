//! `NAdam(η, β, ϵ)`, Adam with Nesterov momentum: update
//! `(β₁ m / (1 - β₁ β₁ᵗ) + (1-β₁) dx / (1-β₁ᵗ)) / (√(v β₂ / (1-β₂ᵗ)) + ϵ) * η`.
//! State: `m`, `v`; per leaf `βᵗ`.

use crate::float::Float;
use crate::rules::adam::{advance_powers, Moments, MOMENTS};
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct NAdam<T> {
    pub moments: Moments<T>,
    /// `1 - β₁ β₁ᵗ`, and its reciprocal.
    pub ahead: (T, T),
}

impl<T: Float> Rule<T, 2> for NAdam<T> {
    const HYPER: &'static [&'static str] = MOMENTS;
    const PER_LEAF: usize = 2;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        let moments = Moments::<T>::bind(h, leaf);
        let ahead = T::ONE - moments.beta.0 * T::from_f64(leaf[0]);
        Self {
            moments,
            ahead: (ahead, T::ONE / ahead),
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
        p.advance(d, m, v);
        let num = (b1 * *m).over(self.ahead.0, self.ahead.1) + p.unbias_m((T::ONE - b1) * d);
        num / (p.unbias_v(*v * b2).sqrt() + p.epsilon) * p.eta
    }
}
