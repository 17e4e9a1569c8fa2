//! `AdaDelta(ρ, ϵ)`: `acc = ρ acc + (1-ρ) dx²`; update
//! `dx' = dx √(Δacc + ϵ) / √(acc + ϵ)` (ϵ inside both roots, on purpose), then
//! `Δacc = ρ Δacc + (1-ρ) dx'²`. State: `acc`, `Δacc`.
//!
//! The loop takes one root of the quotient, `√((Δacc + ϵ) / (acc + ϵ))`, not
//! the quotient of two roots: the same value within an ulp or two, and a root
//! is the slowest instruction here (the 7,170-element MLP, float64, timed in
//! alternation: 0.73-0.76x the time; float32 0.81x). The quotient leaves the
//! type's range before the two roots do, but only when one accumulator is
//! beyond about 1e30 (float32; 1e300 float64) and the other near ϵ, which takes
//! gradients near those whose squares overflow, or many steps of gradients
//! growing severalfold each.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct AdaDelta<T> {
    /// ρ, the decay of both running averages.
    pub rho: T,
    /// ϵ, added inside the roots.
    pub epsilon: T,
}

impl<T: Float> Rule<T, 2> for AdaDelta<T> {
    const HYPER: &'static [&'static str] = &["rho", "epsilon"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            rho: T::from_f64(h[0]),
            epsilon: T::from_f64(h[1]),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [acc, dacc]: [&mut T; 2]) -> T {
        let (rho, eps) = (self.rho, self.epsilon);
        let keep = T::ONE - rho;
        let (a0, da0) = (*acc, *dacc); // loads first: see `rules` on 4K aliasing
        *acc = rho * a0 + keep * (d * d);
        let step = d * ((da0 + eps) / (*acc + eps)).sqrt();
        *dacc = rho * da0 + keep * (step * step);
        step
    }
}
