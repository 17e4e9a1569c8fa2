//! The kernels of `optimisers.axon`, where Axon's formulas differ from the
//! Optimisers.jl rule of the same name (Axon v0.4.1, `Axon.Updates`):
//!
//! - `AxonAdam(η, β, ϵ, ϵᵣ)`: Adam with `ϵᵣ` inside the root,
//!   `η m̂ / (√(v̂ + ϵᵣ) + ϵ)`. State `m`, `v`; per leaf `βᵗ`.
//! - `AxonAdaBelief(η, β, ϵ, ϵᵣ)`: `s = β₂ s + (1-β₂)(dx - m)²` (the paper's
//!   second moment of the surprise; `ϵᵣ` is not added into `s`), update
//!   `η m̂ / (√(ŝ + ϵᵣ) + ϵ)`. State `m`, `s`; per leaf `βᵗ`.
//! - `AxonRAdam(η, β, ϵ, ϵᵣ, threshold)`: `ρ∞ = 2/(1-β₂) - 1`,
//!   `ρ = ρ∞ - 2t β₂ᵗ/(1-β₂ᵗ)`; rectified, `r η m̂ / (√(v̂ + ϵᵣ) + ϵ)`, while
//!   `ρ ≥ threshold`, else `η m̂`. State `m`, `v`; per leaf `βᵗ`, `t`.
//! - `AxonAdaGrad(η, ϵ)`: `s += dx²`, update `η dx / √(s + ϵ)` (`ϵ` inside the
//!   root; 0 where `s` is 0). State `s` (from 0.1, set by Python).
//! - `AxonRMSProp(η, ρ, ϵ)` and `AxonRMSPropCentred(η, ρ, ϵ)`:
//!   `v = ρ v + (1-ρ) dx²` (and `m = ρ m + (1-ρ) dx`), update
//!   `η dx / √(v + ϵ)` (or `√(v - m² + ϵ)`): `ϵ` inside the root, no bias
//!   correction. State `v` (from `initial_scale`, set by Python), and `m`.
//! - `AxonTrace(μ, nesterov)`: `b = μ b + dx`, update `b`, or `μ b + dx` with
//!   Nesterov (optax's and Axon's `trace`; chained before `Descent(η)` for
//!   `sgd`, after the `RMSProp` kernel for `rmsprop`'s momentum). State `b`.

use crate::float::Float;
use crate::rules::adam::{advance_powers, Moments};
use crate::rules::Rule;

/// The hyper-parameters of Adam's moments with `ϵᵣ` inside the root.
pub const ROOTED: &[&str] = &["eta", "beta1", "beta2", "epsilon", "eps_root"];

/// Adam's moments with `ϵᵣ` inside the root.
#[derive(Clone, Copy, Debug)]
pub struct Rooted<T> {
    pub moments: Moments<T>,
    /// ϵᵣ, added to the second moment inside the root.
    pub eps_root: T,
}

impl<T: Float> Rooted<T> {
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        Self {
            moments: Moments::bind(h, leaf),
            eps_root: T::from_f64(h[4]),
        }
    }

    /// `m̂ / (√(v̂ + ϵᵣ) + ϵ)`, before η.
    #[inline(always)]
    fn direction(&self, m: T, v: T) -> T {
        let p = &self.moments;
        p.unbias_m(m) / ((p.unbias_v(v) + self.eps_root).sqrt() + p.epsilon)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AxonAdam<T>(pub Rooted<T>);

impl<T: Float> Rule<T, 2> for AxonAdam<T> {
    const HYPER: &'static [&'static str] = ROOTED;
    const PER_LEAF: usize = 2;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        Self(Rooted::bind(h, leaf))
    }
    fn advance(h: &[f64], leaf: &mut [f64]) -> bool {
        advance_powers::<T>(h, leaf);
        true
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [m, v]: [&mut T; 2]) -> T {
        self.0.moments.advance(d, m, v);
        self.0.direction(*m, *v) * self.0.moments.eta
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AxonAdaBelief<T>(pub Rooted<T>);

impl<T: Float> Rule<T, 2> for AxonAdaBelief<T> {
    const HYPER: &'static [&'static str] = ROOTED;
    const PER_LEAF: usize = 2;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        Self(Rooted::bind(h, leaf))
    }
    fn advance(h: &[f64], leaf: &mut [f64]) -> bool {
        advance_powers::<T>(h, leaf);
        true
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [m, s]: [&mut T; 2]) -> T {
        let (b1, b2) = self.0.moments.beta;
        let (m0, s0) = (*m, *s); // loads first: see `rules` on 4K aliasing
        *m = b1 * m0 + (T::ONE - b1) * d;
        let surprise = d - *m;
        *s = b2 * s0 + (T::ONE - b2) * (surprise * surprise);
        self.0.direction(*m, *s) * self.0.moments.eta
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AxonRAdam<T> {
    pub rooted: Rooted<T>,
    /// `Some(r)` while `ρ ≥ threshold`, else `None`.
    pub rectifier: Option<T>,
}

impl<T: Float> Rule<T, 2> for AxonRAdam<T> {
    const HYPER: &'static [&'static str] =
        &["eta", "beta1", "beta2", "epsilon", "eps_root", "threshold"];
    /// β₁ᵗ, β₂ᵗ, t.
    const PER_LEAF: usize = 3;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        let rooted = Rooted::<T>::bind(h, leaf);
        let (four, b2) = (T::from_f64(4.0), rooted.moments.beta.1);
        let threshold = T::from_f64(h[5]);
        let rho_inf = T::TWO / (T::ONE - b2) - T::ONE;
        let (b2t, t) = (T::from_f64(leaf[1]), T::from_f64(leaf[2]));
        let rho = rho_inf - T::TWO * t * b2t / (T::ONE - b2t);
        let rectifier = (rho >= threshold).then(|| {
            ((rho - four) * (rho - T::TWO) * rho_inf
                / ((rho_inf - four) * (rho_inf - T::TWO) * rho))
                .sqrt()
        });
        Self { rooted, rectifier }
    }
    fn advance(h: &[f64], leaf: &mut [f64]) -> bool {
        advance_powers::<T>(h, leaf);
        leaf[2] += 1.0;
        true
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [m, v]: [&mut T; 2]) -> T {
        let p = &self.rooted.moments;
        p.advance(d, m, v);
        match self.rectifier {
            Some(r) => self.rooted.direction(*m, *v) * p.eta * r,
            None => p.unbias_m(*m) * p.eta,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AxonAdaGrad<T> {
    /// η, the learning rate.
    pub eta: T,
    /// ϵ, inside the root.
    pub epsilon: T,
}

impl<T: Float> Rule<T, 1> for AxonAdaGrad<T> {
    const HYPER: &'static [&'static str] = &["eta", "epsilon"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            eta: T::from_f64(h[0]),
            epsilon: T::from_f64(h[1]),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [s]: [&mut T; 1]) -> T {
        *s = *s + d * d;
        if *s > T::ZERO {
            d * self.eta / (*s + self.epsilon).sqrt()
        } else {
            T::ZERO
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AxonRMSProp<T> {
    /// η, the learning rate.
    pub eta: T,
    /// ρ, Axon's `decay` of the running averages.
    pub rho: T,
    /// ϵ, inside the root.
    pub epsilon: T,
}

/// The hyper-parameters of both `RMSProp` kernels.
const RMSPROP: &[&str] = &["eta", "rho", "epsilon"];

fn bind_rmsprop<T: Float>(h: &[f64]) -> AxonRMSProp<T> {
    AxonRMSProp {
        eta: T::from_f64(h[0]),
        rho: T::from_f64(h[1]),
        epsilon: T::from_f64(h[2]),
    }
}

impl<T: Float> Rule<T, 1> for AxonRMSProp<T> {
    const HYPER: &'static [&'static str] = RMSPROP;
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        bind_rmsprop(h)
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [v]: [&mut T; 1]) -> T {
        *v = self.rho * *v + (T::ONE - self.rho) * (d * d);
        d / (*v + self.epsilon).sqrt() * self.eta
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AxonRMSPropCentred<T>(pub AxonRMSProp<T>);

impl<T: Float> Rule<T, 2> for AxonRMSPropCentred<T> {
    const HYPER: &'static [&'static str] = RMSPROP;
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self(bind_rmsprop(h))
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [v, m]: [&mut T; 2]) -> T {
        let AxonRMSProp { eta, rho, epsilon } = self.0;
        let (v0, m0) = (*v, *m); // loads first: see `rules` on 4K aliasing
        *v = rho * v0 + (T::ONE - rho) * (d * d);
        *m = rho * m0 + (T::ONE - rho) * d;
        d / (*v - *m * *m + epsilon).sqrt() * eta
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AxonTrace<T> {
    /// μ, the momentum.
    pub mu: T,
    /// Nesterov's look-ahead.
    pub nesterov: bool,
}

impl<T: Float> Rule<T, 1> for AxonTrace<T> {
    /// `nesterov` is 0 or 1.
    const HYPER: &'static [&'static str] = &["mu", "nesterov"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            mu: T::from_f64(h[0]),
            nesterov: h[1] != 0.0,
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [b]: [&mut T; 1]) -> T {
        *b = self.mu * *b + d;
        if self.nesterov {
            self.mu * *b + d
        } else {
            *b
        }
    }
}
