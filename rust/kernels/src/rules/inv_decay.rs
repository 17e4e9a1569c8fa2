//! `InvDecay(γ)`: old Flux's inverse decay, `dx / (1 + γ n)`, then `n += 1`;
//! `n` starts at 0, so the first step is not decayed (Flux 0.4-0.6).
//! State: none; per leaf the counter `n`.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct InvDecay<T> {
    /// `1 / (1 + γ n)` for this leaf's step, in `T`.
    pub factor: T,
}

impl<T: Float> Rule<T, 0> for InvDecay<T> {
    const HYPER: &'static [&'static str] = &["gamma"];
    /// n, the steps taken so far.
    const PER_LEAF: usize = 1;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        let (gamma, n) = (T::from_f64(h[0]), T::from_f64(leaf[0]));
        Self {
            factor: T::ONE / (T::ONE + gamma * n),
        }
    }
    fn advance(_h: &[f64], leaf: &mut [f64]) -> bool {
        leaf[0] += 1.0;
        true
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, _st: [&mut T; 0]) -> T {
        d * self.factor
    }
}
