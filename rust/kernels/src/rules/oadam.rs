//! `OAdam(η, β, ϵ)`, optimistic Adam: with Adam's step
//! `term = η m / (1-β₁ᵗ) / (√(v / (1-β₂ᵗ)) + ϵ)`, the update is `2 term - term_prev`.
//! State: `m`, `v`, `term`; per leaf `βᵗ`.

use crate::float::Float;
use crate::rules::adam::{advance_powers, Moments, MOMENTS};
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct OAdam<T>(pub Moments<T>);

impl<T: Float> Rule<T, 3> for OAdam<T> {
    const HYPER: &'static [&'static str] = MOMENTS;
    const PER_LEAF: usize = 2;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        Self(Moments::bind(h, leaf))
    }
    fn advance(h: &[f64], leaf: &mut [f64]) -> bool {
        advance_powers::<T>(h, leaf);
        true
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [m, v, term]: [&mut T; 3]) -> T {
        let p = &self.0;
        let prev = *term; // loaded before the stores: see `rules` on 4K aliasing
        p.advance(d, m, v);
        *term = p.unbias_m(p.eta * *m) / (p.unbias_v(*v).sqrt() + p.epsilon);
        T::TWO * *term - prev
    }
}
