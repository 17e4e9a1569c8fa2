//! `SignDecay(λ)`: L1 regularisation, `dx + λ sign(x)`.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct SignDecay<T> {
    /// λ, the strength of the penalty.
    pub lambda: T,
}

impl<T: Float> Rule<T, 0> for SignDecay<T> {
    const HYPER: &'static [&'static str] = &["lambda"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            lambda: T::from_f64(h[0]),
        }
    }
    #[inline(always)]
    fn update(&self, x: T, d: T, _st: [&mut T; 0]) -> T {
        d + self.lambda * x.sign()
    }
}
