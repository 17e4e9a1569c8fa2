//! A program is a rule, or a chain of rules, as the kernels run it: a list of
//! steps with their hyper-parameters, described once per rule and element type.
//!
//! For each leaf and step it is bound to that leaf's per-leaf scalars (`βᵗ`, `t`,
//! counters) into a `Plan`: elementwise segments separated by reductions
//! (see `reduction`).
//! A segment costs one pass over memory however many rules it holds.

use std::ops::Range;

use crate::error::KernelError;
use crate::float::Float;
use crate::reduction::{self, Reduction};
use crate::rules::{Bound, Kind};
use crate::spare;

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A registered rule, its hyper-parameters in the order of `kind.hyper()`.
    Rule { kind: Kind, hyper: Vec<f64> },
    /// A reduction: the update scaled by a factor made of whole arrays' norms.
    Reduce(Reduction),
}

impl Step {
    /// A step from its registered name and its hyper-parameters by name, in
    /// any order (`("Adam", [("eta", 1e-3), ("beta1", 0.9), …])`). A missing,
    /// unknown or repeated name is an error here, when the program is made.
    pub fn named<S: AsRef<str>>(name: &str, hyper: &[(S, f64)]) -> Result<Self, KernelError> {
        if let Some(&(_, names)) = reduction::REGISTRY.iter().find(|(n, _)| *n == name) {
            let values = in_order(name, names, hyper)?;
            let reduction = Reduction::bind(name, &values).expect("every registered name binds");
            return Ok(Step::Reduce(reduction));
        }
        let kind = Kind::from_name(name)
            .ok_or_else(|| KernelError::Program(format!("no kernel for rule {name:?}")))?;
        Ok(Step::Rule {
            kind,
            hyper: in_order(name, kind.hyper(), hyper)?,
        })
    }
}

/// The values of `given` in the order of `names` (the step `step`'s
/// hyper-parameters): an error naming the first name that is missing,
/// unknown or given twice.
pub fn in_order<S: AsRef<str>>(
    step: &str,
    names: &[&str],
    given: &[(S, f64)],
) -> Result<Vec<f64>, KernelError> {
    let fail = |what: String| {
        KernelError::Program(format!("{step}: {what} (it takes {})", names.join(", ")))
    };
    for (k, (name, _)) in given.iter().enumerate() {
        let name = name.as_ref();
        if !names.contains(&name) {
            return Err(fail(format!("unknown hyper-parameter {name:?}")));
        }
        if given[..k].iter().any(|(seen, _)| seen.as_ref() == name) {
            return Err(fail(format!("hyper-parameter {name:?} given twice")));
        }
    }
    names
        .iter()
        .map(
            |&name| match given.iter().find(|(n, _)| n.as_ref() == name) {
                Some(&(_, value)) => Ok(value),
                None => Err(fail(format!("hyper-parameter {name:?} missing"))),
            },
        )
        .collect()
}

/// Whether two leaves' per-leaf scalars have the same bits: then a program
/// binds and advances them alike (`-0` and `0` differ here, and a NaN matches
/// its own bits).
#[must_use]
pub fn same_scalars(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
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
                if hyper.len() != kind.hyper().len() {
                    return Err(KernelError::Program(format!(
                        "{} takes {} hyper-parameters, got {}",
                        kind.name(),
                        kind.hyper().len(),
                        hyper.len()
                    )));
                }
                states += kind.states();
                per_leaf += kind.per_leaf();
            }
        }
        for step in &steps {
            if let Step::Reduce(r) = step {
                r.check(states).map_err(KernelError::Program)?;
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

    /// How many leading state arrays may already be advanced when a
    /// reduction fails (`ClipNorm(throw = true)`): the caller snapshots these
    /// to roll back. Reductions that cannot fail need none.
    #[must_use]
    pub fn states_before_last_norm(&self) -> usize {
        let mut before = 0;
        let mut seen = 0;
        for step in &self.steps {
            match step {
                Step::Rule { kind, .. } => seen += kind.states(),
                Step::Reduce(r) if r.can_fail() => before = seen,
                Step::Reduce(_) => {}
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

    /// Bind this program to one leaf's per-leaf scalars, appending its plan to
    /// `plans` (whose storage all the leaves of a call share: no allocation per leaf).
    pub(crate) fn bind_into<T: Float>(&self, per_leaf: &[f64], plans: &mut Plans<T>) {
        let first_op = plans.ops.len();
        let first_end = plans.ends.len();
        let first_norm = plans.norms.len();
        let mut updates_x = true;
        let (mut state, mut leaf) = (0, 0);
        for step in &self.steps {
            match step {
                Step::Rule { kind, hyper } => {
                    let scalars = &per_leaf[leaf..leaf + kind.per_leaf()];
                    let rule = Bound::bind(*kind, hyper, scalars);
                    let states = state..state + kind.states();
                    plans.ops.push(BoundOp { rule, states });
                    (state, leaf) = (state + kind.states(), leaf + kind.per_leaf());
                    // AccumGrad before its n-th gradient: the chain stops here.
                    if *kind == Kind::AccumGrad && scalars[0] != hyper[0] {
                        updates_x = false;
                        break;
                    }
                }
                Step::Reduce(reduction) => {
                    plans.norms.push(*reduction);
                    plans.ends.push(plans.ops.len());
                }
            }
        }
        plans.ends.push(plans.ops.len());
        plans.leaves.push(Plan {
            first_op,
            ends: first_end..plans.ends.len(),
            norms: first_norm..plans.norms.len(),
            updates_x,
        });
    }
}

#[derive(Clone, Debug)]
pub(crate) struct BoundOp<T> {
    pub rule: Bound<T>,
    /// Which of the leaf's state arrays are this rule's.
    pub states: Range<usize>,
}

/// One leaf's step: segment 0, then norm 0, then segment 1, …, as ranges into
/// the `Plans` of its call.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    first_op: usize,
    /// Where each segment ends, in `Plans::ends`.
    ends: Range<usize>,
    norms: Range<usize>,
    /// False when an `AccumGrad` holds the update back this step.
    pub updates_x: bool,
}

/// The plans of all the leaves of one call, in shared storage.
#[derive(Debug)]
pub(crate) struct Plans<T: Float> {
    ops: Vec<BoundOp<T>>,
    /// For every segment of every plan, the index in `ops` where it ends.
    ends: Vec<usize>,
    norms: Vec<Reduction>,
    leaves: Vec<Plan>,
}

impl<T: Float> Plans<T> {
    /// Empty plans for `leaves` leaves, in storage kept from the last call
    /// (see `spare`).
    pub fn new(leaves: usize) -> Self {
        Self {
            ops: spare::take::<BoundOp<T>, _>(leaves),
            ends: spare::take::<usize, _>(leaves),
            norms: spare::take::<Reduction, _>(0),
            leaves: spare::take::<Plan, _>(leaves),
        }
    }

    /// Plan the next leaf as the last one: the same bound rules, shared.
    pub fn repeat_last(&mut self) {
        let last = self.leaves.last().expect("a leaf was bound before").clone();
        self.leaves.push(last);
    }

    pub fn get(&self, leaf: usize) -> &Plan {
        &self.leaves[leaf]
    }

    /// How many segments leaf `leaf`'s step has.
    pub fn segments(&self, leaf: usize) -> usize {
        self.leaves[leaf].ends.len()
    }

    /// Segment `k` of leaf `leaf`'s step.
    pub fn segment(&self, leaf: usize, k: usize) -> &[BoundOp<T>] {
        let plan = &self.leaves[leaf];
        let start = if k == 0 {
            plan.first_op
        } else {
            self.ends[plan.ends.start + k - 1]
        };
        &self.ops[start..self.ends[plan.ends.start + k]]
    }

    /// Whether any leaf's step takes a reduction.
    pub fn has_norms(&self) -> bool {
        !self.norms.is_empty()
    }

    /// The reduction after segment `k` of leaf `leaf`'s step, if there is one.
    pub fn norm(&self, leaf: usize, k: usize) -> Option<&Reduction> {
        self.norms[self.leaves[leaf].norms.clone()].get(k)
    }
}

impl<T: Float> Drop for Plans<T> {
    fn drop(&mut self) {
        spare::give::<BoundOp<T>, _>(std::mem::take(&mut self.ops));
        spare::give::<usize, _>(std::mem::take(&mut self.ends));
        spare::give::<Reduction, _>(std::mem::take(&mut self.norms));
        spare::give::<Plan, _>(std::mem::take(&mut self.leaves));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_hyper_parameters_are_ordered_by_the_rules_names() {
        let given = [("couple", 1.0), ("lambda", 0.1), ("epsilon", 1e-8)];
        let moments = [("eta", 1e-3), ("beta2", 0.999), ("beta1", 0.9)];
        let all: Vec<(&str, f64)> = given.iter().chain(&moments).copied().collect();
        let step = Step::named("AdamW", &all).unwrap();
        let want = vec![1e-3, 0.9, 0.999, 1e-8, 0.1, 1.0];
        assert_eq!(
            step,
            Step::Rule {
                kind: Kind::AdamW,
                hyper: want
            }
        );
    }

    #[test]
    fn a_missing_unknown_or_repeated_name_fails_when_the_step_is_made() {
        let err = |hyper: &[(&str, f64)]| match Step::named("Momentum", hyper) {
            Err(KernelError::Program(message)) => message,
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(err(&[("eta", 0.1)]).contains("\"rho\" missing"));
        assert!(err(&[("eta", 0.1), ("rho", 0.9), ("r", 1.0)])
            .contains("unknown hyper-parameter \"r\""));
        assert!(err(&[("eta", 0.1), ("rho", 0.9), ("eta", 1.0)]).contains("\"eta\" given twice"));
        assert!(Step::named("Momentun", &[("eta", 0.1)]).is_err());
        let clip = Step::named("ClipNorm", &[("p", 2.0), ("throw", 1.0), ("omega", 3.0)]);
        let want = Reduction::clip_norm(3.0, 2.0, true);
        assert_eq!(clip, Ok(Step::Reduce(want)));
    }
}
