//! `Lion(η, β)`: momentum `m = β₂ dx + (1-β₂) m`; update
//! `η sign((β₂-β₁) dx + β₁ m)`, the paper's interpolation written with the new `m`.
//! State: `m`.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct Lion<T> {
    /// η, the size of every step.
    pub eta: T,
    /// β = (β₁, β₂): interpolation for the step, and decay of the momentum.
    pub beta: (T, T),
}

impl<T: Float> Rule<T, 1> for Lion<T> {
    const HYPER: &'static [&'static str] = &["eta", "beta1", "beta2"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            eta: T::from_f64(h[0]),
            beta: (T::from_f64(h[1]), T::from_f64(h[2])),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [m]: [&mut T; 1]) -> T {
        let (b1, b2) = self.beta;
        let (keep, gap) = (T::ONE - b2, b2 - b1);
        *m = b2 * d + keep * *m;
        self.eta * (gap * d + b1 * *m).sign()
    }
}
