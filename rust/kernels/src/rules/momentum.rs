//! `Momentum(η, ρ)`: velocity `v = ρ v + η dx`, and the update is `v`.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct Momentum<T> {
    /// η, the learning rate.
    pub eta: T,
    /// ρ, the momentum.
    pub rho: T,
}

impl<T: Float> Rule<T, 1> for Momentum<T> {
    const HYPER: &'static [&'static str] = &["eta", "rho"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            eta: T::from_f64(h[0]),
            rho: T::from_f64(h[1]),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [v]: [&mut T; 1]) -> T {
        *v = self.rho * *v + self.eta * d;
        *v
    }
}
