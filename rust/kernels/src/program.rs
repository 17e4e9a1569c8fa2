//! A program is a rule, or a chain of rules, as the kernels run it: a list of
//! steps with their hyper-parameters, described once per rule and element type.
//!
//! For each leaf and step it is bound to that leaf's per-leaf scalars (`βᵗ`, `t`,
//! counters) into a `Plan`: elementwise segments separated by norm reductions.
//! A segment costs one pass over memory however many rules it holds.

use std::ops::Range;

use crate::error::KernelError;
use crate::float::Float;
use crate::norm::ClipNorm;
use crate::rules::{Bound, Kind};

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Rule { kind: Kind, hyper: Vec<f64> },
    ClipNorm(ClipNorm),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    steps: Vec<Step>,
    states: usize,
    per_leaf: usize,
}

impl Program {
    pub fn new(steps: Vec<Step>) -> Result<Self, KernelError> {
        let (mut states, mut per_leaf) = (0, 0);
        for step in &steps {
            if let Step::Rule { kind, hyper } = step {
                if hyper.len() != kind.hyper() {
                    return Err(KernelError::Program(format!(
                        "{} takes {} hyper-parameters, got {}",
                        kind.name(),
                        kind.hyper(),
                        hyper.len()
                    )));
                }
                states += kind.states();
                per_leaf += kind.per_leaf();
            }
        }
        Ok(Self {
            steps,
            states,
            per_leaf,
        })
    }

    #[must_use]
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The number of state arrays a leaf of this program carries, in step order.
    #[must_use]
    pub fn states(&self) -> usize {
        self.states
    }

    /// The number of per-leaf scalars a leaf of this program passes, in step order.
    #[must_use]
    pub fn per_leaf(&self) -> usize {
        self.per_leaf
    }

    /// How many leading state arrays may already be advanced when a norm
    /// fails (`ClipNorm(throw = true)`): the caller snapshots these to roll back.
    #[must_use]
    pub fn states_before_last_norm(&self) -> usize {
        let mut before = 0;
        let mut seen = 0;
        for step in &self.steps {
            match step {
                Step::Rule { kind, .. } => seen += kind.states(),
                Step::ClipNorm(_) => before = seen,
            }
        }
        before
    }

    /// Move a leaf's per-leaf scalars (`per_leaf`, in step order) on after a
    /// step, in `T`'s arithmetic. Returns whether the update went through: false
    /// when an `AccumGrad` held it, and then the rules after it do not advance.
    pub fn advance<T: Float>(&self, per_leaf: &mut [f64]) -> bool {
        let mut at = 0;
        for step in &self.steps {
            if let Step::Rule { kind, hyper } = step {
                let scalars = &mut per_leaf[at..at + kind.per_leaf()];
                at += kind.per_leaf();
                if !kind.advance::<T>(hyper, scalars) {
                    return false;
                }
            }
        }
        true
    }

    pub(crate) fn bind<T: Float>(&self, per_leaf: &[f64]) -> Plan<T> {
        let mut plan = Plan {
            segments: vec![Vec::new()],
            norms: Vec::new(),
            updates_x: true,
        };
        let (mut state, mut leaf) = (0, 0);
        for step in &self.steps {
            match step {
                Step::Rule { kind, hyper } => {
                    let scalars = &per_leaf[leaf..leaf + kind.per_leaf()];
                    let rule = Bound::bind(*kind, hyper, scalars);
                    let states = state..state + kind.states();
                    plan.segments
                        .last_mut()
                        .expect("never empty")
                        .push(BoundOp { rule, states });
                    (state, leaf) = (state + kind.states(), leaf + kind.per_leaf());
                    // AccumGrad before its n-th gradient: the chain stops here.
                    if *kind == Kind::AccumGrad && scalars[0] != hyper[0] {
                        plan.updates_x = false;
                        break;
                    }
                }
                Step::ClipNorm(clip) => {
                    plan.norms.push(*clip);
                    plan.segments.push(Vec::new());
                }
            }
        }
        plan
    }
}

#[derive(Clone, Debug)]
pub(crate) struct BoundOp<T> {
    pub rule: Bound<T>,
    /// Which of the leaf's state arrays are this rule's.
    pub states: Range<usize>,
}

/// One leaf's step: `segments[k]`, then the norm `norms[k]`, then `segments[k + 1]`…
#[derive(Clone, Debug)]
pub(crate) struct Plan<T> {
    pub segments: Vec<Vec<BoundOp<T>>>,
    pub norms: Vec<ClipNorm>,
    /// False when an `AccumGrad` holds the update back this step.
    pub updates_x: bool,
}
