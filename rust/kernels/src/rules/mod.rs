//! The elementwise rules, and the one table that registers them.
//!
//! A rule is a small struct of hyper-parameters already rounded to the array's
//! element type, bound once per leaf and step (`bind`), and the update of one
//! element (`update`): from `x`, its gradient and its `N` state values. The
//! loops over arrays are shared: `apply` rewrites a block of gradients into
//! updates, which the next rule of a chain receives, and `descend` subtracts
//! the updates from `x` as it goes, for a rule alone or the last of a chain,
//! first passing each gradient through the rules before it when those keep
//! no state (see `prelude`).
//!
//! Adding an elementwise rule: its own file, one line in `registry!` below,
//! and its Python class. The file holds the rule's struct and
//! `impl Rule<T, N>` (`N` its state arrays):
//!
//! ```text
//! impl<T: Float> Rule<T, 1> for Momentum<T> {
//!     const HYPER: &'static [&'static str] = &["eta", "rho"];
//!     fn bind(h: &[f64], _leaf: &[f64]) -> Self {
//!         Self { eta: T::from_f64(h[0]), rho: T::from_f64(h[1]) }
//!     }
//!     fn update(&self, _x: T, d: T, [v]: [&mut T; 1]) -> T { … }
//! }
//! ```
//!
//! `HYPER` names the hyper-parameters once, in the order `bind` reads them;
//! Python's `_kernel(dtype)` passes them by name (`{"eta": …, "rho": …}`),
//! and the program orders them by `HYPER` when it is made, refusing a
//! missing or unknown name. The registry line is `Name => module, N;`.
//!
//! A step that needs whole arrays (a norm, a trust ratio, a norm over every
//! leaf) is not a rule but a reduction: one line in `reduction::REGISTRY`
//! and one arm in `Reduction::bind` (see `reduction`).
//!
//! 4K aliasing: a rule with several state arrays loads all of an element's
//! state before it stores any. Large arrays are page-aligned alike, so `m[i]`
//! and `v[i]` share their address modulo 4096; a load of `v[i]` issued after a
//! store to `m[i]` is then held as if it depended on it, which serialised the
//! loop and halved Adam's speed in cache.

use std::ops::Range;

use crate::float::Float;
use crate::rules::prelude::Before;

pub mod accum_grad;
pub mod adabelief;
pub mod adadelta;
pub mod adagrad;
pub mod adam;
pub mod adamax;
pub mod adamw;
pub mod amsgrad;
pub mod axon;
pub mod clip_grad;
pub mod descent;
pub mod inv_decay;
pub mod lion;
pub mod momentum;
pub mod nadam;
pub mod nesterov;
pub mod noisy_sgd;
pub mod oadam;
pub mod prelude;
pub mod radam;
pub mod rmsprop;
pub mod rprop;
pub mod sign_decay;
pub mod weight_decay;
pub mod yogi;

pub trait Rule<T: Float, const N: usize>: Copy {
    /// The names of the hyper-parameters `bind` reads, in the order it reads
    /// them: a program is given them by name and orders them by this list
    /// (see `program::in_order`), so this is the only place the order lives.
    const HYPER: &'static [&'static str];
    /// How many per-leaf scalars (`βᵗ`, `t`, a counter) `bind` reads.
    const PER_LEAF: usize = 0;

    fn bind(hyper: &[f64], per_leaf: &[f64]) -> Self;

    /// Move this leaf's per-leaf scalars on after a step, in `T`'s arithmetic.
    /// Returns false when the step held the update back (an `AccumGrad`
    /// before its n-th gradient): the rules after it in a chain did not run.
    fn advance(_hyper: &[f64], _per_leaf: &mut [f64]) -> bool {
        true
    }

    /// This rule's update of one element: from its parameter `x` and its
    /// gradient `d` (in a chain, the update of the rule before), advancing its
    /// `N` state values in place. Each rule writes only this; the loops over
    /// arrays below are shared.
    fn update(&self, x: T, d: T, state: [&mut T; N]) -> T;

    /// Rewrite `dx` into this rule's update, advancing the state in place.
    /// All slices have the same length.
    #[inline(always)]
    fn apply(&self, x: &[T], dx: &mut [T], mut state: [&mut [T]; N]) {
        let n = dx.len();
        assert!(x.len() == n && state.iter().all(|s| s.len() == n));
        // A copy the loop owns: read through `self`, a hyper-parameter could
        // alias the stores (as far as the compiler knows), and Rprop's were
        // gathered again for every vector of elements, at twice the time.
        let rule = *self;
        for i in 0..n {
            // SAFETY: `i < n`, the length of every state array (asserted).
            let here = unsafe { element(&mut state, i) };
            dx[i] = rule.update(x[i], dx[i], here);
        }
    }

    /// `x -= update`, from the gradient `g` passed through `before` (a
    /// chain's rules before this one, see `prelude`; `Nothing` for a rule
    /// alone), in one loop: no block of updates in between, which the
    /// chain's loads and stores would cost.
    #[inline(always)]
    fn descend<P: Before<T>>(&self, x: &mut [T], g: &[T], mut state: [&mut [T]; N], before: &P) {
        let n = x.len();
        assert!(g.len() == n && state.iter().all(|s| s.len() == n));
        let (rule, before) = (*self, *before); // see `apply`
        for i in 0..n {
            let x0 = x[i];
            let d = before.apply(x0, g[i]);
            // SAFETY: `i < n`, the length of every state array (asserted).
            let here = unsafe { element(&mut state, i) };
            x[i] = x0 - rule.update(x0, d, here);
        }
    }

    /// `apply` on the block whose first element is element `at` of its leaf.
    /// Only a rule whose update depends on the element's place in the leaf
    /// (`NoisySGD`'s noise) looks at `at`.
    #[inline(always)]
    fn apply_at(&self, x: &[T], dx: &mut [T], state: [&mut [T]; N], _at: usize) {
        self.apply(x, dx, state);
    }

    /// `descend` on the block whose first element is element `at` of its leaf.
    #[inline(always)]
    fn descend_at<P: Before<T>>(
        &self,
        x: &mut [T],
        g: &[T],
        state: [&mut [T]; N],
        before: &P,
        _at: usize,
    ) {
        self.descend(x, g, state, before);
    }
}

/// Element `i` of each of the `N` state arrays.
///
/// Indexed as `&mut s[i]`, the loops kept a bounds check LLVM could not lift,
/// and a loop that can leave early must finish in scalar code: the last 1 to
/// 16 elements of every call ran one at a time (for Adam, a division and a
/// root each). Raw pointers instead lost what LLVM knew of the arrays'
/// aliasing, and Momentum's loop was no longer vectorised at all.
///
/// # Safety
/// `i` must be less than the length of every array.
#[inline(always)]
unsafe fn element<'s, T, const N: usize>(state: &'s mut [&mut [T]; N], i: usize) -> [&'s mut T; N] {
    // SAFETY: `i` is in bounds, as the caller promises.
    state.each_mut().map(|s| unsafe { s.get_unchecked_mut(i) })
}

/// The `range` of each of the `N` state arrays in `state`.
#[inline(always)]
fn blocks<'s, T, const N: usize>(
    state: &'s mut [&mut [T]],
    range: &Range<usize>,
) -> [&'s mut [T]; N] {
    let mut arrays = state.iter_mut();
    std::array::from_fn(|_| {
        &mut arrays.next().expect("state arrays checked at bind")[range.clone()]
    })
}

macro_rules! registry {
    ($($kind:ident => $rule:ident, $n:literal;)*) => {
        /// Every elementwise rule, by the name the Python layer uses.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Kind { $($kind),* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),*];

            #[must_use]
            pub fn name(self) -> &'static str {
                match self { $(Kind::$kind => stringify!($kind)),* }
            }

            #[must_use]
            pub fn from_name(name: &str) -> Option<Kind> {
                Kind::ALL.iter().copied().find(|k| k.name() == name)
            }

            /// The names of its hyper-parameters, in the order `bind` reads them.
            #[must_use]
            pub fn hyper(self) -> &'static [&'static str] {
                match self { $(Kind::$kind => <$rule::$rule<f64> as Rule<f64, $n>>::HYPER),* }
            }

            #[must_use]
            pub fn per_leaf(self) -> usize {
                match self { $(Kind::$kind => <$rule::$rule<f64> as Rule<f64, $n>>::PER_LEAF),* }
            }

            #[must_use]
            pub fn states(self) -> usize {
                match self { $(Kind::$kind => $n),* }
            }

            /// `Rule::advance` of this kind, in `T`'s arithmetic.
            pub fn advance<T: Float>(self, hyper: &[f64], per_leaf: &mut [f64]) -> bool {
                match self { $(Kind::$kind => <$rule::$rule<T> as Rule<T, $n>>::advance(hyper, per_leaf)),* }
            }
        }

        /// A rule bound to one leaf's step: hyper-parameters in `T`, per-leaf scalars applied.
        #[derive(Clone, Copy, Debug)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Bound<T> { $($kind($rule::$rule<T>)),* }

        impl<T: Float> Bound<T> {
            #[must_use]
            pub fn bind(kind: Kind, hyper: &[f64], per_leaf: &[f64]) -> Self {
                match kind { $(Kind::$kind => Bound::$kind($rule::$rule::bind(hyper, per_leaf))),* }
            }

            /// Apply to the block `range` of this task: `x` and `dx` are that block,
            /// `state` holds this rule's whole state arrays (of the task), and
            /// the block starts at element `at` of its leaf.
            #[inline(always)]
            pub fn apply(
                &self,
                x: &[T],
                dx: &mut [T],
                state: &mut [&mut [T]],
                range: &Range<usize>,
                at: usize,
            ) {
                match self { $(Bound::$kind(rule) => rule.apply_at(x, dx, blocks::<T, $n>(state, range), at)),* }
            }

            /// `x -= update` over the block `range` of this task, from the
            /// gradient `g` passed through `before`: `x` and `g` are that
            /// block, `state` and `at` as for `apply`.
            #[inline(always)]
            pub fn descend<P: Before<T>>(
                &self,
                x: &mut [T],
                g: &[T],
                state: &mut [&mut [T]],
                range: &Range<usize>,
                before: &P,
                at: usize,
            ) {
                match self { $(Bound::$kind(rule) => rule.descend_at(x, g, blocks::<T, $n>(state, range), before, at)),* }
            }
        }
    };
}

// Each rule type lives in the module of the same name, in snake case.
#[allow(non_snake_case)]
mod names {
    pub use super::accum_grad as AccumGrad;
    pub use super::adabelief as AdaBelief;
    pub use super::adadelta as AdaDelta;
    pub use super::adagrad as AdaGrad;
    pub use super::adam as Adam;
    pub use super::adamax as AdaMax;
    pub use super::adamw as AdamW;
    pub use super::amsgrad as AmsGrad;
    pub use super::axon as AxonAdam;
    pub use super::axon as AxonAdaBelief;
    pub use super::axon as AxonRAdam;
    pub use super::axon as AxonAdaGrad;
    pub use super::axon as AxonRMSProp;
    pub use super::axon as AxonRMSPropCentred;
    pub use super::axon as AxonTrace;
    pub use super::clip_grad as ClipGrad;
    pub use super::descent as Descent;
    pub use super::inv_decay as InvDecay;
    pub use super::lion as Lion;
    pub use super::momentum as Momentum;
    pub use super::nadam as NAdam;
    pub use super::nesterov as Nesterov;
    pub use super::noisy_sgd as NoisySgd;
    pub use super::oadam as OAdam;
    pub use super::radam as RAdam;
    pub use super::rmsprop as RmsProp;
    pub use super::rmsprop as RmsPropCentred;
    pub use super::rprop as Rprop;
    pub use super::sign_decay as SignDecay;
    pub use super::weight_decay as WeightDecay;
    pub use super::yogi as Yogi;
}
#[allow(clippy::wildcard_imports)] // the registry names each rule by its module
use names::*;

registry! {
    Descent => Descent, 0;
    Momentum => Momentum, 1;
    Nesterov => Nesterov, 1;
    Rprop => Rprop, 2;
    RMSProp => RmsProp, 1;
    RMSPropCentred => RmsPropCentred, 2;
    Adam => Adam, 2;
    RAdam => RAdam, 2;
    AdaMax => AdaMax, 2;
    OAdam => OAdam, 3;
    AdaGrad => AdaGrad, 1;
    AdaDelta => AdaDelta, 2;
    AMSGrad => AmsGrad, 3;
    NAdam => NAdam, 2;
    AdamW => AdamW, 2;
    AdaBelief => AdaBelief, 2;
    Lion => Lion, 1;
    WeightDecay => WeightDecay, 0;
    SignDecay => SignDecay, 0;
    ClipGrad => ClipGrad, 0;
    AccumGrad => AccumGrad, 1;
    InvDecay => InvDecay, 0;
    Yogi => Yogi, 2;
    NoisySGD => NoisySgd, 0;
    AxonAdam => AxonAdam, 2;
    AxonAdaBelief => AxonAdaBelief, 2;
    AxonRAdam => AxonRAdam, 2;
    AxonAdaGrad => AxonAdaGrad, 1;
    AxonRMSProp => AxonRMSProp, 1;
    AxonRMSPropCentred => AxonRMSPropCentred, 2;
    AxonTrace => AxonTrace, 1;
}
