//! `Descent(η)`: plain gradient descent, `x -= η * dx`.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct Descent<T> {
    /// η, the learning rate.
    pub eta: T,
}

impl<T: Float> Rule<T, 0> for Descent<T> {
    const HYPER: &'static [&'static str] = &["eta"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            eta: T::from_f64(h[0]),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, _st: [&mut T; 0]) -> T {
        d * self.eta
    }
}
