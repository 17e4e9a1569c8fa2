//! `AMSGrad(η, β, ϵ)`: Adam's moments, with `v̂ = max(v̂, v)`; update
//! `η m / (√v̂ + ϵ)` (no bias correction). State: `m`, `v`, `v̂`, all initialised to ϵ.

use crate::float::Float;
use crate::rules::adam::MOMENTS;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct AmsGrad<T> {
    /// η, the learning rate.
    pub eta: T,
    /// β = (β₁, β₂), the decays of the first and second moments.
    pub beta: (T, T),
    /// ϵ, added to the root for stability.
    pub epsilon: T,
}

impl<T: Float> Rule<T, 3> for AmsGrad<T> {
    const HYPER: &'static [&'static str] = MOMENTS;
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            eta: T::from_f64(h[0]),
            beta: (T::from_f64(h[1]), T::from_f64(h[2])),
            epsilon: T::from_f64(h[3]),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [m, v, vhat]: [&mut T; 3]) -> T {
        let (b1, b2) = self.beta;
        let (m0, v0, vh0) = (*m, *v, *vhat); // loads first: see `rules` on 4K aliasing
        *m = b1 * m0 + (T::ONE - b1) * d;
        *v = b2 * v0 + (T::ONE - b2) * (d * d);
        *vhat = vh0.max_sel(*v);
        self.eta * *m / (vhat.sqrt() + self.epsilon)
    }
}
