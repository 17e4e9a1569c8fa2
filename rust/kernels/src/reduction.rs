//! Reductions: program steps that need whole arrays before they can touch
//! any element, and so split a chain into segments (see `program`).
//!
//! A reduction takes p-norms of one or more `inputs` of a leaf (the update
//! arriving from the rules before it, `x`, a state array), over its `scope`
//! (the leaf alone, or every leaf of the step that shares it), and `makes` of
//! them one factor that scales the update. A reduction that `can_fail` is
//! taken for every leaf before any parameter is written (the staged,
//! check-before-write order); one that cannot runs wherever its inputs are
//! ready, also after rules with state.
//!
//! A new reduction is one line in `REGISTRY` (its name and its
//! hyper-parameters' names) and one arm in `Reduction::bind`; a new kind of
//! result, one variant of `Makes` with its `factor`.

use crate::float::Float;
use crate::norm;
use crate::shape::Shape;

/// The most inputs a reduction takes norms of.
pub const MAX_INPUTS: usize = 2;

/// Every reduction, by the name the Python layer uses, with the names of its
/// hyper-parameters in the order `Reduction::bind` reads them.
pub const REGISTRY: &[(&str, &[&str])] = &[
    ("ClipNorm", &["omega", "p", "throw"]),
    ("ClipGlobalNorm", &["omega", "p", "throw"]),
    ("TrustRatio", &["min_norm", "coef", "eps"]),
];

/// An array of a leaf that a reduction takes the norm of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The update as the rules before the reduction left it (the gradient
    /// when there are none).
    Update,
    /// The parameter, before this step writes it.
    X,
    /// The leaf's state array of this index (in the program's order).
    State(usize),
}

/// Which leaves' arrays one norm covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Each leaf's own arrays.
    Array,
    /// Every leaf of the step with the same program, of one element type:
    /// one norm over all of them, their parts added in the order of the
    /// leaves, each part in fixed blocks (the same bits for any thread
    /// count and any split of the work; see `norm::partial`).
    Step,
    /// Each row of a leaf seen as a stack of matrices (see `Shape`): a
    /// factor per row, scaling that row of the update.
    Rows,
    /// Each column of each matrix, as `Rows` for rows.
    Cols,
}

impl Scope {
    /// Whether it makes a factor per row or column, not one per leaf.
    #[must_use]
    pub fn by_line(self) -> bool {
        matches!(self, Scope::Rows | Scope::Cols)
    }
}

/// What a reduction makes of its norms: the factor that scales the update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Makes {
    /// `min(ω / ‖u‖, 1)` (`ClipNorm`); with `throw`, an infinite or NaN norm
    /// fails the step.
    Clip { omega: f64, throw: bool },
    /// The trust ratio `coef φ(‖x‖) / (φ(‖u‖) + eps)`, `φ(n) = max(n, min_norm)`,
    /// and 1 when either `φ` is 0 (LAMB, LARS): norms of `x` and the update.
    Trust { min_norm: f64, coef: f64, eps: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reduction {
    /// The p of its p-norms: any real, including 0 (count of non-zeros) and
    /// ±∞ for `Scope::Array`; 1, 2 or ∞ (or another finite p > 0) for `Scope::Step`.
    pub p: f64,
    inputs: [Input; MAX_INPUTS],
    count: usize,
    pub scope: Scope,
    pub makes: Makes,
}

impl Reduction {
    /// A reduction of `inputs` (one to `MAX_INPUTS` of them).
    ///
    /// # Panics
    /// When `inputs` is empty or longer than `MAX_INPUTS`.
    #[must_use]
    pub fn new(p: f64, inputs: &[Input], scope: Scope, makes: Makes) -> Self {
        assert!(
            (1..=MAX_INPUTS).contains(&inputs.len()),
            "1 to {MAX_INPUTS} inputs"
        );
        let mut held = [Input::Update; MAX_INPUTS];
        held[..inputs.len()].copy_from_slice(inputs);
        Self {
            p,
            inputs: held,
            count: inputs.len(),
            scope,
            makes,
        }
    }

    /// `ClipNorm(ω, p; throw)`: the update scaled by `min(ω / ‖u‖ₚ, 1)`.
    #[must_use]
    pub fn clip_norm(omega: f64, p: f64, throw: bool) -> Self {
        Self::new(
            p,
            &[Input::Update],
            Scope::Array,
            Makes::Clip { omega, throw },
        )
    }

    /// The reduction registered as `name`, from its hyper-parameters in the
    /// order of its `REGISTRY` line; `None` for a name not registered.
    #[must_use]
    pub fn bind(name: &str, h: &[f64]) -> Option<Self> {
        let clip = || Makes::Clip {
            omega: h[0],
            throw: h[2] != 0.0,
        };
        Some(match name {
            "ClipNorm" => Self::new(h[1], &[Input::Update], Scope::Array, clip()),
            "ClipGlobalNorm" => Self::new(h[1], &[Input::Update], Scope::Step, clip()),
            "TrustRatio" => Self::new(
                2.0,
                &[Input::X, Input::Update],
                Scope::Array,
                Makes::Trust {
                    min_norm: h[0],
                    coef: h[1],
                    eps: h[2],
                },
            ),
            _ => return None,
        })
    }

    /// Whether it fits a program that keeps `states` state arrays: each state
    /// input is one of them, and a norm over leaves has a p it can add up.
    pub fn check(&self, states: usize) -> Result<(), String> {
        for input in self.inputs() {
            if let Input::State(s) = *input {
                if s >= states {
                    return Err(format!("a reduction reads state array {s} of {states}"));
                }
            }
        }
        let additive = self.p == f64::INFINITY || (self.p.is_finite() && self.p > 0.0);
        if self.scope == Scope::Step && !additive {
            return Err(format!("a norm over leaves cannot take p = {}", self.p));
        }
        Ok(())
    }

    /// The arrays it takes norms of, in order.
    #[must_use]
    pub fn inputs(&self) -> &[Input] {
        &self.inputs[..self.count]
    }

    /// Whether it can fail (and so must be taken before any leaf is written).
    #[must_use]
    pub fn can_fail(&self) -> bool {
        matches!(self.makes, Makes::Clip { throw: true, .. })
    }

    /// The factor its `norms` (one per input, in order) make, rounded to `T`;
    /// `Err(norm)` with the norm that fails it.
    pub fn factor<T: Float>(&self, norms: &[f64]) -> Result<T, f64> {
        self.makes.factor(norms).map(T::from_f64)
    }
}

impl Reduction {
    /// Scale `update` (a leaf of `shape`) line by line (`Scope::Rows` or
    /// `Scope::Cols`): each line by the factor its own norms make, of the
    /// same line of each input (`update` as it arrives, `x`, `states`).
    /// `Err(norm)` with a norm that fails it; lines before it are scaled.
    pub fn scale_lines<T: Float>(
        &self,
        shape: Shape,
        update: &mut [T],
        x: &[T],
        states: &[&mut [T]],
    ) -> Result<(), f64> {
        let (rows, cols) = (shape.rows, shape.cols);
        let (lines, along) = match self.scope {
            Scope::Rows => (shape.matrices * rows, cols),
            Scope::Cols => (shape.matrices * cols, rows),
            Scope::Array | Scope::Step => unreachable!("not a reduction by line"),
        };
        // Element `k` of line `l`, in the flat array.
        let at = |l: usize, k: usize| match self.scope {
            Scope::Rows => l * cols + k,
            _ => (l / cols) * rows * cols + k * cols + l % cols,
        };
        let mut line = Vec::with_capacity(along);
        for l in 0..lines {
            let mut norms = [0.0; MAX_INPUTS];
            for (norm, input) in norms.iter_mut().zip(self.inputs()) {
                let of: &[T] = match *input {
                    Input::Update => update,
                    Input::X => x,
                    Input::State(s) => states[s],
                };
                line.clear();
                line.extend((0..along).map(|k| of[at(l, k)]));
                *norm = norm::norm(self.p, &line, false);
            }
            let factor: T = self.factor(&norms[..self.inputs().len()])?;
            for k in 0..along {
                let i = at(l, k);
                update[i] = update[i] * factor;
            }
        }
        Ok(())
    }
}

impl Makes {
    /// The factor, in `f64` (rounded to `T` as Julia's `T(min(ω / n, 1))`
    /// after), or `Err(norm)` with the norm that fails it.
    fn factor(&self, norms: &[f64]) -> Result<f64, f64> {
        match *self {
            Makes::Clip { omega, throw } => {
                let norm = norms[0];
                if throw && !norm.is_finite() {
                    return Err(norm);
                }
                // Julia's `min` propagates NaN, Rust's would drop it.
                let ratio = omega / norm;
                Ok(if ratio.is_nan() {
                    ratio
                } else {
                    ratio.min(1.0)
                })
            }
            Makes::Trust {
                min_norm,
                coef,
                eps,
            } => {
                let (x, u) = (norms[0].max(min_norm), norms[1].max(min_norm));
                Ok(if x == 0.0 || u == 0.0 {
                    1.0
                } else {
                    coef * x / (u + eps)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_follows_julia() {
        let c = Reduction::clip_norm(10.0, 2.0, false);
        assert_eq!(c.factor::<f64>(&[5.0]), Ok(1.0));
        assert_eq!(c.factor::<f64>(&[20.0]), Ok(0.5));
        assert_eq!(c.factor::<f64>(&[0.0]), Ok(1.0));
        assert_eq!(c.factor::<f64>(&[f64::INFINITY]), Ok(0.0));
        assert!(c.factor::<f64>(&[f64::NAN]).unwrap().is_nan());
        let throwing = Reduction::clip_norm(10.0, 2.0, true);
        assert!(throwing.factor::<f32>(&[f64::INFINITY]).is_err());
    }

    #[test]
    fn only_a_throwing_clip_can_fail() {
        assert!(Reduction::clip_norm(1.0, 2.0, true).can_fail());
        assert!(!Reduction::clip_norm(1.0, 2.0, false).can_fail());
        let trust = Reduction::bind("TrustRatio", &[0.0, 1.0, 0.0]).unwrap();
        assert!(!trust.can_fail());
        assert_eq!(trust.inputs(), &[Input::X, Input::Update]);
    }

    #[test]
    fn trust_ratio_is_one_when_a_norm_is_zero() {
        let trust = Reduction::bind("TrustRatio", &[0.0, 1.0, 0.0]).unwrap();
        assert_eq!(trust.factor::<f64>(&[3.0, 6.0]), Ok(0.5));
        assert_eq!(trust.factor::<f64>(&[0.0, 6.0]), Ok(1.0));
        assert_eq!(trust.factor::<f64>(&[3.0, 0.0]), Ok(1.0));
        // 1, not `coef`, when a norm is 0; `min_norm` lifts both norms (a
        // zero one too); ϵ is added to the update's norm only.
        let scaled = |h: &[f64], norms: &[f64]| {
            let trust = Reduction::bind("TrustRatio", h).unwrap();
            trust.factor::<f64>(norms).unwrap()
        };
        assert_eq!(scaled(&[0.0, 0.5, 0.0], &[0.0, 6.0]), 1.0);
        assert_eq!(scaled(&[4.0, 1.0, 0.0], &[5.0, 2.0]), 1.25);
        assert_eq!(scaled(&[4.0, 1.0, 0.0], &[0.0, 2.0]), 1.0);
        assert_eq!(scaled(&[1.0, 1.0, 0.0], &[0.0, 0.5]), 1.0);
        assert_eq!(scaled(&[1.0, 1.0, 0.0], &[0.0, 2.0]), 0.5);
        assert_eq!(scaled(&[0.0, 1.0, 0.5], &[5.0, 2.0]), 2.0);
        assert_eq!(scaled(&[0.0, 0.5, 0.5], &[5.0, 0.0]), 1.0);
    }

    #[test]
    fn every_registered_reduction_binds() {
        for (name, hyper) in REGISTRY {
            let reduction = Reduction::bind(name, &vec![1.0; hyper.len()]);
            assert!(reduction.is_some(), "{name}");
        }
    }
}
