//! `Rprop(η, ℓ, Γ)`: per-element step sizes, grown by `ℓ₂` (up to `Γ₂`) while the
//! gradient keeps its sign and shrunk by `ℓ₁` (down to `Γ₁`) when it flips; a
//! flip also forgets that gradient. The update is `step * sign(g)`.
//! State: the previous gradient `g` and the step sizes (initialised to η).

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct Rprop<T> {
    /// ℓ = (ℓ₁, ℓ₂), the decrease and increase factors.
    pub ell: (T, T),
    /// Γ = (Γ₁, Γ₂), the smallest and largest step sizes.
    pub gamma: (T, T),
}

impl<T: Float> Rule<T, 2> for Rprop<T> {
    /// η (used only by `init`), ℓ₁, ℓ₂, Γ₁, Γ₂.
    const HYPER: &'static [&'static str] = &["eta", "ell1", "ell2", "gamma1", "gamma2"];
    fn bind(h: &[f64], _leaf: &[f64]) -> Self {
        Self {
            ell: (T::from_f64(h[1]), T::from_f64(h[2])),
            gamma: (T::from_f64(h[3]), T::from_f64(h[4])),
        }
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [g, s]: [&mut T; 2]) -> T {
        let (ell, gamma) = (self.ell, self.gamma);
        let turn = *g * d;
        *s = if turn > T::ZERO {
            (*s * ell.1).min_sel(gamma.1)
        } else if turn < T::ZERO {
            (*s * ell.0).max_sel(gamma.0)
        } else {
            *s
        };
        *g = if turn < T::ZERO { T::ZERO } else { d };
        *s * g.sign()
    }
}
