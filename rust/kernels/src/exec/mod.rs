//! Running one optimisation step over a batch of leaves ("jobs") in one call.
//!
//! Each job's plan is a list of elementwise segments separated by reductions
//! (norms, see `reduction`). Stages
//! are aligned so that every job's last segment (the only one that writes `x`)
//! runs in the last stage, after every norm of the batch: a norm that fails
//! leaves every parameter untouched. Within a stage all jobs are cut into tasks
//! of at most `TASK` elements and run on the pool (or on the calling thread when
//! the stage is small); a task walks its range in blocks (`BLOCK` elements, or
//! `SHORT_BLOCK` when the stage streams from L3 or memory) that stay in L1
//! while every rule of the segment runs over them, the last one straight into
//! `x`. A task that ends in `x` with one rule, or with rules before it that
//! keep no state (`ClipGrad`, `WeightDecay`, `SignDecay` and a norm's factor,
//! see `Prelude`), or with no rule at all, needs no block: one loop reads the
//! gradient and writes `x` (`straight_to_x`).
//!
//! Most steps need no stages: when no leaf is larger than a task and no norm
//! follows a rule, every job is one task that lends its own arrays and takes
//! its own norm first, if it has one (`only_pass`; a norm that can fail is
//! taken before any task runs): a step of thousands of small leaves builds one
//! list, not five, and reads each gradient into cache once.

//!
//! Here: the step and its stages (`Batch`). Apart: `job` (what a caller
//! hands in, and its checks), `reduce` (taking a stage's reductions),
//! `flow` (where an update lives between stages), `pass` (a stage's jobs
//! cut into tasks, run on the pool), `task` (one task's loops), `memory`
//! (task and block sizes, prefetching); the numbers in `tuning`.

mod flow;
mod job;
mod memory;
mod pass;
mod reduce;
mod task;

pub use job::{Job, States};
pub(crate) use memory::{memory_walk, prefetch_ahead, prefetch_slices};
pub(crate) use task::{process, Task};

use flow::{last_output, read, Flow, Output, Pass, Source};
use memory::task_len;
use pass::{run_pass, run_tasks};
use reduce::{take_norms, taken_first, Wanted};

use crate::error::KernelError;
use crate::float::{Float, Half};
use crate::program::{same_scalars, Plans};
use crate::tuning::PASS_PARALLEL_MIN_BYTES;
use crate::{spare, threads};

/// A step over `bytes` bytes of parameters is about to be prepared: if its
/// passes will use the helpers, have them ready (see [`threads::wake`]).
pub fn expect_step(bytes: usize) {
    if bytes >= PASS_PARALLEL_MIN_BYTES && threads::num_threads() > 1 {
        threads::wake();
    }
}

/// Apply each job's program to its leaf, in place.
pub fn step<T: Float>(jobs: &mut [Job<'_, T>]) -> Result<(), KernelError> {
    run_batches(&mut [&mut Batch::new(jobs, 0)?])
}

/// As [`step`], for a batch mixing element types. Errors number the jobs
/// `single`, then `double`, then `half`. Every norm of every job is taken
/// before any parameter is written, whatever its type.
pub fn step_mixed(
    single: &mut [Job<'_, f32>],
    double: &mut [Job<'_, f64>],
    half: &mut [Job<'_, Half>],
) -> Result<(), KernelError> {
    let (a, b) = (single.len(), single.len() + double.len());
    run_batches(&mut [
        &mut Batch::new(single, 0)?,
        &mut Batch::new(double, a)?,
        &mut Batch::new(half, b)?,
    ])
}

/// Stages of all batches run in lockstep, so that every job's last segment
/// (the only one writing parameters) comes after every norm. Most steps need
/// no stages: see `Stages::one_pass`.
fn run_batches(batches: &mut [&mut dyn Stages]) -> Result<(), KernelError> {
    if batches.iter().all(|b| b.one_pass()) {
        for b in batches.iter_mut() {
            b.norms_first()?;
        }
        for b in batches.iter_mut() {
            b.only_pass();
        }
        return Ok(());
    }
    let stages = batches.iter().map(|b| b.stages()).max().unwrap_or(0);
    for stage in 0..stages {
        for b in batches.iter_mut() {
            b.pass(stage, stages);
        }
        for b in batches.iter_mut() {
            b.norms(stage, stages)?;
        }
    }
    Ok(())
}

trait Stages {
    fn stages(&self) -> usize;
    /// Whether `only_pass` can take this batch's step: every job is one task,
    /// and its program is one segment, or a norm of the gradient and then one
    /// segment. A task then takes its own norm, while the gradient is in
    /// cache, and steps; no norm waits for another leaf's. Only the
    /// reductions that can fail or span leaves come first (`norms_first`);
    /// one by row or column needs stages.
    fn one_pass(&self) -> bool;
    /// The norms of a one-pass step that can fail, all before any task
    /// writes: an error if one does.
    fn norms_first(&mut self) -> Result<(), KernelError>;
    /// The step of a batch that can take it in one pass (see `one_pass`):
    /// one task per job, lending the job's own arrays.
    fn only_pass(&mut self);
    fn pass(&mut self, stage: usize, stages: usize);
    fn norms(&mut self, stage: usize, stages: usize) -> Result<(), KernelError>;
}

/// The jobs of one element type with their plans and where each update lives.
struct Batch<'j, 'a, T: Float> {
    jobs: &'j mut [Job<'a, T>],
    plans: Plans<T>,
    flows: Vec<Flow<T>>,
    /// Per job, the factor of a norm taken before a one-pass step (empty when
    /// there is none; see `Stages::norms_first`).
    scales: Vec<Option<T>>,
    /// Number of this batch's first job in errors.
    first: usize,
    /// The elements of all its jobs.
    elements: usize,
}

impl<'j, 'a, T: Float> Batch<'j, 'a, T> {
    fn new(jobs: &'j mut [Job<'a, T>], first: usize) -> Result<Self, KernelError> {
        for (i, job) in jobs.iter().enumerate() {
            job.check(first + i)?;
        }
        let mut plans = Plans::new(jobs.len());
        let mut elements = 0;
        let mut bound: Option<&Job<'a, T>> = None;
        for job in jobs.iter() {
            // Leaves of one rule at the same step (most models) bind alike:
            // the first one's plan serves them all.
            if bound.is_some_and(|b| binds_alike(b, job)) {
                plans.repeat_last();
            } else {
                job.program.bind_into(job.per_leaf, &mut plans);
                bound = Some(job);
            }
            elements += job.x.len();
        }
        Ok(Self {
            jobs,
            plans,
            flows: Vec::new(),
            scales: Vec::new(),
            first,
            elements,
        })
    }
}

/// Whether `b` binds to the plan `a` does: the same program, and per-leaf
/// scalars with the same bits.
fn binds_alike<T>(a: &Job<'_, T>, b: &Job<'_, T>) -> bool {
    std::ptr::eq(a.program, b.program) && same_scalars(a.per_leaf, b.per_leaf)
}

impl<T: Float> Drop for Batch<'_, '_, T> {
    fn drop(&mut self) {
        spare::give::<Flow<T>, _>(std::mem::take(&mut self.flows));
        spare::give::<Option<T>, _>(std::mem::take(&mut self.scales));
    }
}

impl<T: Float> Stages for Batch<'_, '_, T> {
    fn stages(&self) -> usize {
        (0..self.jobs.len())
            .map(|j| self.plans.segments(j))
            .max()
            .unwrap_or(0)
    }

    fn one_pass(&self) -> bool {
        let (_, task) = task_len::<T>(self.elements);
        self.jobs.iter().enumerate().all(|(j, job)| {
            job.x.len() <= task
                && match self.plans.segments(j) {
                    1 => true,
                    2 => {
                        self.plans.segment(j, 0).is_empty()
                            && self.plans.norm(j, 0).is_some_and(|r| !r.scope.by_line())
                    }
                    _ => false,
                }
        })
    }

    fn norms_first(&mut self) -> Result<(), KernelError> {
        if !self.plans.has_norms() {
            // Most steps: no walk over the jobs to find none.
            return Ok(());
        }
        let mut wanted = Vec::new();
        for (j, job) in self.jobs.iter().enumerate() {
            if let Some(reduction) = self.plans.norm(j, 0).filter(|r| taken_first(r)) {
                wanted.push(Wanted::new(j, 0, reduction, job, job.grad));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        take_norms(&mut wanted);
        self.scales = spare::take::<Option<T>, _>(self.jobs.len());
        self.scales.resize(self.jobs.len(), None);
        for w in &wanted {
            self.scales[w.job] = Some(w.factor(self.first)?);
        }
        Ok(())
    }

    fn only_pass(&mut self) {
        let (parallel, _) = task_len::<T>(self.elements);
        let (prefetch, block) = memory_walk::<T>(self.elements);
        let mut tasks = spare::take::<Task<'static, 'static, T>, Task<'_, '_, T>>(self.jobs.len());
        for (j, job) in self.jobs.iter_mut().enumerate() {
            if job.x.is_empty() {
                continue;
            }
            let output = last_output(self.plans.get(j).updates_x, job);
            let last = self.plans.segments(j) - 1;
            tasks.push(Task {
                ops: self.plans.segment(j, last),
                // A reduction that can fail or spans leaves was taken first;
                // any other is the task's.
                norm: self.plans.norm(j, 0).filter(|r| !taken_first(r)),
                x: &mut *job.x,
                offset: 0,
                grad: job.grad,
                tmp: &mut [],
                update: match output {
                    Output::Update => job.update.as_deref_mut().unwrap_or_default(),
                    _ => &mut [],
                },
                states: &mut job.states[..],
                input: Source::Grad,
                scale: self.scales.get(j).copied().flatten(),
                output,
                prefetch,
                block,
            });
        }
        run_tasks(&mut tasks, parallel);
        spare::give::<Task<'static, 'static, T>, _>(tasks);
    }

    fn pass(&mut self, stage: usize, stages: usize) {
        if self.flows.is_empty() {
            self.flows = spare::take::<Flow<T>, _>(self.jobs.len());
            self.flows.extend(self.jobs.iter().map(|_| Flow::default()));
        }
        let mut passes = spare::take::<Option<Pass<'static, T>>, _>(self.jobs.len());
        for (j, (flow, job)) in self.flows.iter_mut().zip(self.jobs.iter()).enumerate() {
            passes.push(flow.pass(&self.plans, j, stage, stages, job));
        }
        run_pass(self.jobs, &mut self.flows, &passes);
        spare::give::<Option<Pass<'static, T>>, _>(passes);
    }

    fn norms(&mut self, stage: usize, stages: usize) -> Result<(), KernelError> {
        // Reductions by row or column scale the update where it lies.
        for (j, (flow, job)) in self.flows.iter_mut().zip(self.jobs.iter()).enumerate() {
            let Some(k) = (stage + self.plans.segments(j)).checked_sub(stages) else {
                continue;
            };
            let Some(reduction) = self.plans.norm(j, k).filter(|r| r.scope.by_line()) else {
                continue;
            };
            flow.materialise(job.grad);
            reduction
                .scale_lines(job.shape, &mut flow.tmp, job.x, &job.states)
                .map_err(|norm| KernelError::NonFiniteNorm {
                    job: self.first + j,
                    p: reduction.p,
                    norm,
                })?;
        }
        let mut wanted = Vec::new();
        for (j, (flow, job)) in self.flows.iter().zip(self.jobs.iter()).enumerate() {
            let Some(k) = (stage + self.plans.segments(j)).checked_sub(stages) else {
                continue;
            };
            if let Some(reduction) = self.plans.norm(j, k).filter(|r| !r.scope.by_line()) {
                let dx = read(flow.input, job.grad, &flow.tmp);
                wanted.push(Wanted::new(j, k, reduction, job, dx));
            }
        }
        take_norms(&mut wanted);
        let scales: Vec<(usize, Result<T, KernelError>)> = wanted
            .iter()
            .map(|w| (w.job, w.factor(self.first)))
            .collect();
        for (j, factor) in scales {
            self.flows[j].scale = Some(factor?);
        }
        Ok(())
    }
}
