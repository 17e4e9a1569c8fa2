//! `AdaDelta(ρ, ϵ)`: `acc = ρ acc + (1-ρ) dx²`; update
//! `dx' = dx √(Δacc + ϵ) / √(acc + ϵ)` (ϵ inside both roots, on purpose), then
//! `Δacc = ρ Δacc + (1-ρ) dx'²`. State: `acc`, `Δacc`.

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
    const HYPER: usize = 2;
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            rho: T::from_f64(h[0]),
            epsilon: T::from_f64(h[1]),
        }
    }
    #[inline(always)]
    fn apply(&self, _x: &[T], dx: &mut [T], [acc, dacc]: [&mut [T]; 2]) {
        let (rho, eps) = (self.rho, self.epsilon);
        let keep = T::ONE - rho;
        for ((d, a), da) in dx.iter_mut().zip(acc.iter_mut()).zip(dacc.iter_mut()) {
            let (a0, da0) = (*a, *da); // loads first: see `rules` on 4K aliasing
            *a = rho * a0 + keep * (*d * *d);
            *d = *d * (da0 + eps).sqrt() / (*a + eps).sqrt();
            *da = rho * da0 + keep * (*d * *d);
        }
    }
}
