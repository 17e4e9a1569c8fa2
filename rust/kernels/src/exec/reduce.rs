//! Taking a step's reductions: every norm wanted at a stage, in one
//! parallel region, then the parts of norms over leaves combined in order.

use crate::error::KernelError;
use crate::float::Float;
use crate::norm;
use crate::reduction::{Input, Reduction, Scope, MAX_INPUTS};
use crate::threads;
use crate::tuning::NORM_PARALLEL_MIN;

use super::Job;

/// Whether a one-pass step takes this reduction before any task runs: when
/// it can fail (nothing may be written first) or spans leaves (a task sees
/// one). Any other is taken by its task, while the gradient is in cache.
pub(crate) fn taken_first(reduction: &Reduction) -> bool {
    reduction.can_fail() || reduction.scope == Scope::Step
}

/// A reduction to take: of job `job`'s arrays `of`, one per input.
pub(crate) struct Wanted<'a, T> {
    pub(crate) job: usize,
    /// Jobs of one group share a `Scope::Step` reduction: the same program
    /// (by address) and the same place in it.
    pub(crate) group: (usize, usize),
    /// Borrowed from the batch's plans: a copy in every entry was a
    /// `memcpy` per leaf and step.
    pub(crate) reduction: &'a Reduction,
    pub(crate) of: [&'a [T]; MAX_INPUTS],
    /// The norm of each input, or its part (`Scope::Step`) until combined.
    pub(crate) norms: [f64; MAX_INPUTS],
}

impl<'a, T: Float> Wanted<'a, T> {
    /// The `k`-th reduction of job `j`, whose update is `update` at this point.
    pub(crate) fn new(
        j: usize,
        k: usize,
        reduction: &'a Reduction,
        job: &'a Job<'_, T>,
        update: &'a [T],
    ) -> Self {
        let mut of: [&'a [T]; MAX_INPUTS] = [&[]; MAX_INPUTS];
        for (slot, input) in of.iter_mut().zip(reduction.inputs()) {
            *slot = match *input {
                Input::Update => update,
                Input::X => &*job.x,
                Input::State(s) => &*job.states[s],
            };
        }
        Self {
            job: j,
            group: (std::ptr::from_ref(job.program) as usize, k),
            reduction,
            of,
            norms: [0.0; MAX_INPUTS],
        }
    }

    /// The factor of the norms taken, or the error that names the job (the
    /// batch's jobs are numbered from `first`).
    pub(crate) fn factor(&self, first: usize) -> Result<T, KernelError> {
        let norms = &self.norms[..self.reduction.inputs().len()];
        self.reduction
            .factor(norms)
            .map_err(|norm| KernelError::NonFiniteNorm {
                job: first + self.job,
                p: self.reduction.p,
                norm,
            })
    }

    /// Take this job's norms (or parts of norms).
    pub(crate) fn take(&mut self, parallel: impl Fn(usize) -> bool) {
        let (p, scope) = (self.reduction.p, self.reduction.scope);
        for (norm, of) in self
            .norms
            .iter_mut()
            .zip(&self.of[..self.reduction.inputs().len()])
        {
            *norm = match scope {
                Scope::Array => norm::norm(p, of, parallel(of.len())),
                Scope::Step => norm::partial(p, of, parallel(of.len())),
                Scope::Rows | Scope::Cols => unreachable!("taken line by line, in place"),
            };
        }
    }
}

/// Take every wanted norm, in one parallel region when there is enough to sum
/// (each norm is the same whichever thread takes it), then combine the parts
/// of each `Scope::Step` reduction in job order.
pub(crate) fn take_norms<T: Float>(wanted: &mut [Wanted<'_, T>]) {
    let total: usize = wanted.iter().flat_map(|w| w.of).map(<[T]>::len).sum();
    if total >= NORM_PARALLEL_MIN && threads::num_threads() > 1 {
        // One leaf's norm also runs in parallel when it is the only one
        // (`for_each` does not nest: inside it, norms run on their thread).
        threads::for_each(wanted, |w| w.take(|len| len >= NORM_PARALLEL_MIN));
    } else {
        for w in wanted.iter_mut() {
            w.take(|_| false);
        }
    }
    combine_steps(wanted);
}

/// Give every job of a `Scope::Step` group the norms of the whole group: its
/// parts added in job order, whichever thread took them.
pub(crate) fn combine_steps<T: Float>(wanted: &mut [Wanted<'_, T>]) {
    let mut done: Vec<(usize, usize)> = Vec::new();
    for first in 0..wanted.len() {
        let (group, reduction) = (wanted[first].group, wanted[first].reduction);
        if reduction.scope != Scope::Step || done.contains(&group) {
            continue;
        }
        done.push(group);
        let mut norms = [0.0; MAX_INPUTS];
        for (i, norm) in norms.iter_mut().enumerate().take(reduction.inputs().len()) {
            let parts = wanted[first..]
                .iter()
                .filter(|w| w.group == group)
                .map(|w| w.norms[i]);
            *norm = norm::combine(reduction.p, parts);
        }
        for w in wanted[first..].iter_mut().filter(|w| w.group == group) {
            w.norms = norms;
        }
    }
}
