//! `ClipGrad(δ)`: clamp every component of the gradient to `[-δ, δ]`.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct ClipGrad<T> {
    /// δ, the largest magnitude allowed.
    pub delta: T,
}

impl<T: Float> Rule<T, 0> for ClipGrad<T> {
    const HYPER: &'static [&'static str] = &["delta"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            delta: T::from_f64(h[0]),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, _st: [&mut T; 0]) -> T {
        d.clamp_to(-self.delta, self.delta)
    }
}
