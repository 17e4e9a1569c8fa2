//! `Adam(η, β, ϵ)`: moments `m = β₁ m + (1-β₁) dx`, `v = β₂ v + (1-β₂) dx²`;
//! update `m / (1-β₁ᵗ) / (√(v / (1-β₂ᵗ)) + ϵ) * η`.
//! State: `m`, `v`; per leaf the powers `βᵗ = (β₁ᵗ, β₂ᵗ)`.

use crate::float::Float;
use crate::rules::Rule;

/// The Adam family's hyper-parameters, in the order `Moments::bind` reads them.
pub const MOMENTS: &[&str] = &["eta", "beta1", "beta2", "epsilon"];

/// Hyper-parameters and bias corrections shared by the Adam family.
#[derive(Clone, Copy, Debug)]
pub struct Moments<T> {
    /// η, the learning rate.
    pub eta: T,
    /// β = (β₁, β₂), the decays of the first and second moments.
    pub beta: (T, T),
    /// ϵ, added to the root for stability.
    pub epsilon: T,
    /// `1 - β₁ᵗ` and `1 - β₂ᵗ` for this leaf's step.
    pub correction: (T, T),
    /// Their reciprocals, so that the loops multiply (see `Float::over`).
    pub inverse: (T, T),
}

impl<T: Float> Moments<T> {
    /// Hyper-parameters `[η, β₁, β₂, ϵ]`, per-leaf `[β₁ᵗ, β₂ᵗ]`.
    pub fn bind(h: &[f64], leaf: &[f64]) -> Self {
        Self {
            eta: T::from_f64(h[0]),
            beta: (T::from_f64(h[1]), T::from_f64(h[2])),
            epsilon: T::from_f64(h[3]),
            correction: (T::ONE - T::from_f64(leaf[0]), T::ONE - T::from_f64(leaf[1])),
            inverse: (T::ZERO, T::ZERO),
        }
        .with_inverse()
    }

    fn with_inverse(mut self) -> Self {
        self.inverse = (T::ONE / self.correction.0, T::ONE / self.correction.1);
        self
    }

    /// `m / (1-β₁ᵗ)`.
    #[inline(always)]
    pub fn unbias_m(&self, m: T) -> T {
        m.over(self.correction.0, self.inverse.0)
    }

    /// `v / (1-β₂ᵗ)`.
    #[inline(always)]
    pub fn unbias_v(&self, v: T) -> T {
        v.over(self.correction.1, self.inverse.1)
    }

    /// `m = β₁ m + (1-β₁) d` and `v = β₂ v + (1-β₂) d²`.
    #[inline(always)]
    pub fn advance(&self, d: T, m: &mut T, v: &mut T) {
        let (b1, b2) = self.beta;
        // Both loads before either store (see `rules` on 4K aliasing).
        let (m0, v0) = (*m, *v);
        *m = b1 * m0 + (T::ONE - b1) * d;
        *v = b2 * v0 + (T::ONE - b2) * (d * d);
    }

    /// Adam's step direction before η: `m / (1-β₁ᵗ) / (√(v / (1-β₂ᵗ)) + ϵ)`.
    #[inline(always)]
    pub fn direction(&self, m: T, v: T) -> T {
        self.unbias_m(m) / (self.unbias_v(v).sqrt() + self.epsilon)
    }
}

/// The Adam family's `βᵗ ← βᵗ β` after a step: hyper-parameters `[η, β₁, β₂, …]`,
/// per-leaf `[β₁ᵗ, β₂ᵗ, …]`, each product rounded to `T` as the state keeps it.
pub fn advance_powers<T: Float>(h: &[f64], leaf: &mut [f64]) {
    leaf[0] = (T::from_f64(leaf[0]) * T::from_f64(h[1])).to_f64();
    leaf[1] = (T::from_f64(leaf[1]) * T::from_f64(h[2])).to_f64();
}

#[derive(Clone, Copy, Debug)]
pub struct Adam<T>(pub Moments<T>);

impl<T: Float> Rule<T, 2> for Adam<T> {
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
    fn update(&self, _x: T, d: T, [m, v]: [&mut T; 2]) -> T {
        let p = &self.0;
        p.advance(d, m, v);
        p.direction(*m, *v) * p.eta
    }
}
