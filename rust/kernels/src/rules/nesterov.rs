//! `Nesterov(η, ρ)`: update `-ρ² v + (1 + ρ) η dx`, computed from the old
//! velocity, then `v = ρ v - η dx`.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct Nesterov<T> {
    /// η, the learning rate.
    pub eta: T,
    /// ρ, the Nesterov momentum.
    pub rho: T,
}

impl<T: Float> Rule<T, 1> for Nesterov<T> {
    const HYPER: &'static [&'static str] = &["eta", "rho"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            eta: T::from_f64(h[0]),
            rho: T::from_f64(h[1]),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [v]: [&mut T; 1]) -> T {
        let (eta, rho) = (self.eta, self.rho);
        let neg_rho2 = -(rho * rho);
        let ahead = (T::ONE + rho) * eta;
        let v0 = *v;
        *v = rho * v0 - eta * d;
        neg_rho2 * v0 + ahead * d
    }
}
