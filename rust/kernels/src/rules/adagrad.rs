//! `AdaGrad(η, ϵ)`: `acc += dx²`; update `dx η / (√acc + ϵ)`.
//! State: `acc`, initialised to ϵ.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct AdaGrad<T> {
    /// η, the learning rate.
    pub eta: T,
    /// ϵ, added to the root for stability.
    pub epsilon: T,
}

impl<T: Float> Rule<T, 1> for AdaGrad<T> {
    const HYPER: &'static [&'static str] = &["eta", "epsilon"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            eta: T::from_f64(h[0]),
            epsilon: T::from_f64(h[1]),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [acc]: [&mut T; 1]) -> T {
        *acc = *acc + d * d;
        d * self.eta / (acc.sqrt() + self.epsilon)
    }
}
