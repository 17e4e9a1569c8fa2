//! `RMSProp(η, ρ, ϵ; centred)`: `quad = ρ quad + (1-ρ) dx²`, and when centred
//! `lin = ρ lin + (1-ρ) dx`; the update is `dx η / (√(quad - lin²) + ϵ)`.
//! State: `quad`, and `lin` for the centred variant (two state kinds below).

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct RmsProp<T> {
    /// η, the learning rate.
    pub eta: T,
    /// ρ, the decay of the running averages.
    pub rho: T,
    /// ϵ, added to the root for stability.
    pub epsilon: T,
}

fn bind<T: Float>(h: &[f64]) -> RmsProp<T> {
    RmsProp {
        eta: T::from_f64(h[0]),
        rho: T::from_f64(h[1]),
        epsilon: T::from_f64(h[2]),
    }
}

impl<T: Float> Rule<T, 1> for RmsProp<T> {
    const HYPER: &'static [&'static str] = &["eta", "rho", "epsilon"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        bind(h)
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [quad]: [&mut T; 1]) -> T {
        let (eta, rho, eps) = (self.eta, self.rho, self.epsilon);
        *quad = rho * *quad + (T::ONE - rho) * (d * d);
        d * eta / (quad.sqrt() + eps)
    }
}

/// The centred variant: normalises by an estimate of the variance.
#[derive(Clone, Copy, Debug)]
pub struct RmsPropCentred<T>(pub RmsProp<T>);

impl<T: Float> Rule<T, 2> for RmsPropCentred<T> {
    const HYPER: &'static [&'static str] = &["eta", "rho", "epsilon"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self(bind(h))
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [quad, lin]: [&mut T; 2]) -> T {
        let RmsProp {
            eta,
            rho,
            epsilon: eps,
        } = self.0;
        let keep = T::ONE - rho;
        let (q0, l0) = (*quad, *lin); // loads first: see `rules` on 4K aliasing
        *quad = rho * q0 + keep * (d * d);
        *lin = rho * l0 + keep * d;
        d * eta / ((*quad - *lin * *lin).sqrt() + eps)
    }
}
