//! `ClipGrad(δ)`: clamp every component of the gradient to `[-δ, δ]`.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct ClipGrad<T> {
    /// δ, the largest magnitude allowed.
    pub delta: T,
}

impl<T: Float> Rule<T, 0> for ClipGrad<T> {
    const HYPER: usize = 1;
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            delta: T::from_f64(h[0]),
        }
    }
    #[inline(always)]
    fn apply(&self, _x: &[T], dx: &mut [T], _st: [&mut [T]; 0]) {
        let delta = self.delta;
        for d in dx.iter_mut() {
            *d = d.clamp_to(-delta, delta);
        }
    }
}
