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

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::error::KernelError;
use crate::float::{Float, Half};
use crate::norm;
use crate::program::{same_scalars, BoundOp, Plans, Program};
use crate::reduction::{Input, Reduction, Scope, MAX_INPUTS};
use crate::rules::descent::Descent;
use crate::rules::prelude::{Before, Nothing, Prelude, WithParts};
use crate::rules::Bound;
use crate::shape::Shape;
use crate::tuning::{
    BLOCK, COPY_PIECE, INLINE_STATES, NORM_PARALLEL_MIN, PASS_PARALLEL_MIN_BYTES,
    PREFETCH_AHEAD_BYTES, PREFETCH_MIN_BYTES, PREFETCH_SLICE, SHORT_BLOCK, SHORT_BLOCKS_MIN_BYTES,
    TASK,
};
use crate::{simd, spare, threads};

/// One leaf: its parameter, its gradient, the state arrays of its program in
/// order, and its per-leaf scalars in order. All arrays have the same length,
/// that of `shape`.
pub struct Job<'a, T> {
    pub x: &'a mut [T],
    /// The leaf's shape, for the rules and reductions that see it as a
    /// matrix (`Shape::flat` when none of its program's do).
    pub shape: Shape,
    pub grad: &'a [T],
    pub states: States<'a, T>,
    pub program: &'a Program,
    pub per_leaf: &'a [f64],
    /// When given, the update is written here and `x` is left as it is
    /// (a rule's `apply`, as a chain with a Python rule needs).
    pub update: Option<&'a mut [T]>,
}

/// A job's state arrays, read and written as a slice. Made by `collect()`,
/// or from an array or a `Vec`; up to [`INLINE_STATES`] of them are kept
/// inline, more on the heap.
pub struct States<'a, T>(Held<'a, T>);

enum Held<'a, T> {
    Inline([&'a mut [T]; INLINE_STATES], usize),
    Heap(Vec<&'a mut [T]>),
}

impl<'a, T> States<'a, T> {
    /// The same arrays, each converted by `f`.
    pub fn map<U>(self, f: impl FnMut(&'a mut [T]) -> &'a mut [U]) -> States<'a, U> {
        States(match self.0 {
            // Unused slots are empty slices, and stay empty ones.
            Held::Inline(arrays, len) => Held::Inline(arrays.map(f), len),
            Held::Heap(arrays) => Held::Heap(arrays.into_iter().map(f).collect()),
        })
    }
}

impl<'a, T> std::ops::Deref for States<'a, T> {
    type Target = [&'a mut [T]];

    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Held::Inline(arrays, len) => &arrays[..*len],
            Held::Heap(arrays) => arrays,
        }
    }
}

impl<T> std::ops::DerefMut for States<'_, T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match &mut self.0 {
            Held::Inline(arrays, len) => &mut arrays[..*len],
            Held::Heap(arrays) => arrays,
        }
    }
}

impl<'a, T> FromIterator<&'a mut [T]> for States<'a, T> {
    fn from_iter<I: IntoIterator<Item = &'a mut [T]>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        let mut arrays: [&'a mut [T]; INLINE_STATES] = Default::default();
        for (len, slot) in arrays.iter_mut().enumerate() {
            match iter.next() {
                Some(array) => *slot = array,
                None => return Self(Held::Inline(arrays, len)),
            }
        }
        match iter.next() {
            None => Self(Held::Inline(arrays, INLINE_STATES)),
            Some(more) => {
                let mut all: Vec<&'a mut [T]> = arrays.into_iter().collect();
                all.push(more);
                all.extend(iter);
                Self(Held::Heap(all))
            }
        }
    }
}

impl<'a, T, const N: usize> From<[&'a mut [T]; N]> for States<'a, T> {
    fn from(arrays: [&'a mut [T]; N]) -> Self {
        arrays.into_iter().collect()
    }
}

impl<'a, T> From<Vec<&'a mut [T]>> for States<'a, T> {
    fn from(arrays: Vec<&'a mut [T]>) -> Self {
        arrays.into_iter().collect()
    }
}

impl<'a> Job<'a, f32> {
    /// The same job computed in float16 arithmetic (see [`Half`]): its float32
    /// buffers hold float16 values.
    pub fn into_half(self) -> Job<'a, Half> {
        Job {
            x: crate::float::as_half_mut(self.x),
            shape: self.shape,
            grad: crate::float::as_half(self.grad),
            states: self.states.map(crate::float::as_half_mut),
            program: self.program,
            per_leaf: self.per_leaf,
            update: self.update.map(crate::float::as_half_mut),
        }
    }
}

impl<T> Job<'_, T> {
    fn check(&self, job: usize) -> Result<(), KernelError> {
        let fail = |message: String| Err(KernelError::Shape { job, message });
        let n = self.x.len();
        if self.shape.len() != n {
            return fail(format!("shape {:?} does not hold {n} elements", self.shape));
        }
        if self.grad.len() != n {
            return fail(format!(
                "gradient has {} elements, parameter {n}",
                self.grad.len()
            ));
        }
        if self.states.len() != self.program.states() {
            let (got, want) = (self.states.len(), self.program.states());
            return fail(format!("{got} state arrays given, the rule keeps {want}"));
        }
        if let Some(u) = self.update.as_ref().filter(|u| u.len() != n) {
            return fail(format!(
                "update buffer has {} elements, parameter {n}",
                u.len()
            ));
        }
        if let Some(s) = self.states.iter().find(|s| s.len() != n) {
            return fail(format!(
                "a state array has {} elements, parameter {n}",
                s.len()
            ));
        }
        if self.per_leaf.len() != self.program.per_leaf() {
            let (got, want) = (self.per_leaf.len(), self.program.per_leaf());
            return fail(format!(
                "{got} per-leaf scalars given, the rule needs {want}"
            ));
        }
        Ok(())
    }
}

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
                norm: self.plans.norm(j, 0).filter(|r| !taken_first(r)).copied(),
                x: &mut *job.x,
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

/// Whether a one-pass step takes this reduction before any task runs: when
/// it can fail (nothing may be written first) or spans leaves (a task sees
/// one). Any other is taken by its task, while the gradient is in cache.
fn taken_first(reduction: &Reduction) -> bool {
    reduction.can_fail() || reduction.scope == Scope::Step
}

/// A reduction to take: of job `job`'s arrays `of`, one per input.
struct Wanted<'a, T> {
    job: usize,
    /// Jobs of one group share a `Scope::Step` reduction: the same program
    /// (by address) and the same place in it.
    group: (usize, usize),
    reduction: Reduction,
    of: [&'a [T]; MAX_INPUTS],
    /// The norm of each input, or its part (`Scope::Step`) until combined.
    norms: [f64; MAX_INPUTS],
}

impl<'a, T: Float> Wanted<'a, T> {
    /// The `k`-th reduction of job `j`, whose update is `update` at this point.
    fn new(
        j: usize,
        k: usize,
        reduction: &Reduction,
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
            reduction: *reduction,
            of,
            norms: [0.0; MAX_INPUTS],
        }
    }

    /// The factor of the norms taken, or the error that names the job (the
    /// batch's jobs are numbered from `first`).
    fn factor(&self, first: usize) -> Result<T, KernelError> {
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
    fn take(&mut self, parallel: impl Fn(usize) -> bool) {
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
fn take_norms<T: Float>(wanted: &mut [Wanted<'_, T>]) {
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
fn combine_steps<T: Float>(wanted: &mut [Wanted<'_, T>]) {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Grad,
    Tmp,
}

/// The array a pass reads its input from: the gradient, or the update
/// materialised by the stage before.
#[inline(always)]
fn read<'s, T>(input: Source, grad: &'s [T], tmp: &'s [T]) -> &'s [T] {
    match input {
        Source::Grad => grad,
        Source::Tmp => tmp,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    X,
    Update,
    Tmp,
    Drop,
}

/// Where one job's update currently lives between stages.
struct Flow<T> {
    /// The materialised update, when a norm needs it whole.
    tmp: Vec<T>,
    input: Source,
    /// A norm's factor, applied at the start of the next segment.
    scale: Option<T>,
}

impl<T> Default for Flow<T> {
    fn default() -> Self {
        Self {
            tmp: Vec::new(),
            input: Source::Grad,
            scale: None,
        }
    }
}

struct Pass<'p, T> {
    ops: &'p [BoundOp<T>],
    input: Source,
    scale: Option<T>,
    output: Output,
}

impl<T: Float> Flow<T> {
    /// Hold the update in `tmp`, copying the gradient there if it is still
    /// the input (a reduction by line scales it in place).
    fn materialise(&mut self, grad: &[T]) {
        if self.input == Source::Grad {
            self.tmp.clear();
            self.tmp.extend_from_slice(grad);
            self.input = Source::Tmp;
        }
    }

    /// The pass job `j` runs in this stage, if any. Its last segment runs in
    /// the last stage, so it starts `stages - segments` stages in.
    fn pass<'p>(
        &mut self,
        plans: &'p Plans<T>,
        j: usize,
        stage: usize,
        stages: usize,
        job: &Job<'_, T>,
    ) -> Option<Pass<'p, T>> {
        let len = job.x.len();
        let segments = plans.segments(j);
        let k = (stage + segments).checked_sub(stages)?;
        let ops = plans.segment(j, k);
        let (input, scale) = (self.input, self.scale.take());
        let output = if k + 1 == segments {
            last_output(plans.get(j).updates_x, job)
        } else if ops.is_empty() && scale.is_none() {
            return None; // nothing to compute: the norm reads the input as it is
        } else {
            if self.tmp.len() != len {
                self.tmp = vec![T::ZERO; len];
            }
            self.input = Source::Tmp;
            Output::Tmp
        };
        Some(Pass {
            ops,
            input,
            scale,
            output,
        })
    }
}

/// Where a job's last segment puts the update: nowhere when an `AccumGrad`
/// holds it back (`updates_x` false), else the caller's buffer or `x`.
fn last_output<T>(updates_x: bool, job: &Job<'_, T>) -> Output {
    if !updates_x {
        Output::Drop
    } else if job.update.is_some() {
        Output::Update
    } else {
        Output::X
    }
}

/// One range of one job. Its arrays are borrowed for `'s`; the state slices
/// for `'t`, which may be longer (a job that is one task lends its own).
pub(crate) struct Task<'s, 't, T> {
    ops: &'s [BoundOp<T>],
    /// A reduction to take first, for `scale` (see `Stages::one_pass`).
    norm: Option<Reduction>,
    x: &'s mut [T],
    grad: &'s [T],
    /// The job's materialised update for this range (empty when unused).
    tmp: &'s mut [T],
    /// The caller's buffer for the update (empty unless `Output::Update`).
    update: &'s mut [T],
    states: &'s mut [&'t mut [T]],
    input: Source,
    scale: Option<T>,
    output: Output,
    /// The pass streams from memory: prefetch ahead (see `process`).
    prefetch: bool,
    /// Elements per block: `BLOCK` or `SHORT_BLOCK`.
    block: usize,
}

/// Whether a pass over `total` elements uses the helpers, and the most elements
/// per task: small enough that every thread gets a few, so that a thread that
/// starts late (or a large leaf) does not leave the others waiting.
fn task_len<T>(total: usize) -> (bool, usize) {
    let threads = threads::num_threads();
    if total * std::mem::size_of::<T>() < PASS_PARALLEL_MIN_BYTES || threads < 2 {
        return (false, TASK);
    }
    let blocks = total.div_ceil(threads * 4).div_ceil(BLOCK);
    (true, blocks.clamp(1, TASK / BLOCK) * BLOCK)
}

/// How a pass over `total` elements walks memory: whether it prefetches, and
/// the elements per block.
pub(crate) fn memory_walk<T>(total: usize) -> (bool, usize) {
    let bytes = total * std::mem::size_of::<T>();
    let block = if bytes >= SHORT_BLOCKS_MIN_BYTES {
        SHORT_BLOCK
    } else {
        BLOCK
    };
    (bytes >= PREFETCH_MIN_BYTES, block)
}

/// A task's arrays before its state arrays are dealt out: `states` of them
/// come next in the pass's list.
struct Piece<'t, T> {
    job: usize,
    states: usize,
    x: &'t mut [T],
    grad: &'t [T],
    tmp: &'t mut [T],
    update: &'t mut [T],
}

fn run_pass<T: Float>(
    jobs: &mut [Job<'_, T>],
    flows: &mut [Flow<T>],
    passes: &[Option<Pass<'_, T>>],
) {
    let total: usize = jobs
        .iter()
        .zip(passes)
        .filter(|(_, pass)| pass.is_some())
        .map(|(job, _)| job.x.len())
        .sum();
    let (parallel, task) = task_len::<T>(total);
    let (prefetch, block) = memory_walk::<T>(total);
    let mut pieces = spare::take::<Piece<'static, T>, _>(jobs.len());
    let mut states = spare::take::<&'static mut [T], &mut [T]>(jobs.len());
    for (j, ((job, flow), pass)) in jobs
        .iter_mut()
        .zip(flows.iter_mut())
        .zip(passes)
        .enumerate()
    {
        let Some(pass) = pass else { continue };
        if job.x.is_empty() {
            continue;
        }
        let tmp = if pass.input == Source::Tmp || pass.output == Output::Tmp {
            &mut flow.tmp[..]
        } else {
            &mut [][..]
        };
        let update = match (&mut job.update, pass.output) {
            (Some(u), Output::Update) => &mut u[..],
            _ => &mut [][..],
        };
        let piece = Piece {
            job: j,
            states: job.states.len(),
            x: &mut *job.x,
            grad: job.grad,
            tmp,
            update,
        };
        cut(piece, &mut job.states, task, &mut pieces, &mut states);
    }
    let mut unclaimed = &mut states[..];
    let mut tasks = spare::take::<Task<'static, 'static, T>, Task<'_, '_, T>>(pieces.len());
    for piece in pieces.drain(..) {
        let pass = passes[piece.job].as_ref().expect("pieces come from passes");
        let (mine, others) = std::mem::take(&mut unclaimed).split_at_mut(piece.states);
        unclaimed = others;
        tasks.push(Task {
            ops: pass.ops,
            norm: None,
            x: piece.x,
            grad: piece.grad,
            tmp: piece.tmp,
            update: piece.update,
            states: mine,
            input: pass.input,
            scale: pass.scale,
            output: pass.output,
            prefetch,
            block,
        });
    }
    run_tasks(&mut tasks, parallel);
    spare::give::<Task<'static, 'static, T>, _>(tasks);
    spare::give::<Piece<'static, T>, _>(pieces);
    spare::give::<&'static mut [T], _>(states);
}

/// One job's `whole` piece, cut into pieces of at most `task` elements, with
/// its state arrays cut alike and appended to `states`.
fn cut<'t, T>(
    whole: Piece<'t, T>,
    job_states: &'t mut [&mut [T]],
    task: usize,
    pieces: &mut Vec<Piece<'t, T>>,
    states: &mut Vec<&'t mut [T]>,
) {
    let n = whole.x.len();
    if n <= task {
        // The usual case for small leaves: no cutting (and no Vec).
        states.extend(job_states.iter_mut().map(|s| &mut **s));
        pieces.push(whole);
        return;
    }
    let Piece {
        job,
        mut x,
        mut grad,
        mut tmp,
        mut update,
        ..
    } = whole;
    let mut rest: Vec<&mut [T]> = job_states.iter_mut().map(|s| &mut **s).collect();
    let mut start = 0;
    while start < n {
        let len = task.min(n - start);
        let (x_here, x_rest) = std::mem::take(&mut x).split_at_mut(len);
        let (g_here, g_rest) = grad.split_at(len);
        // `tmp` and `update` are empty when the pass does not use them.
        let (t_len, u_len) = (len.min(tmp.len()), len.min(update.len()));
        let (t_here, t_rest) = std::mem::take(&mut tmp).split_at_mut(t_len);
        let (u_here, u_rest) = std::mem::take(&mut update).split_at_mut(u_len);
        (x, grad, tmp, update) = (x_rest, g_rest, t_rest, u_rest);
        for s in &mut rest {
            let (here, later) = std::mem::take(s).split_at_mut(len);
            *s = later;
            states.push(here);
        }
        pieces.push(Piece {
            job,
            states: rest.len(),
            x: x_here,
            grad: g_here,
            tmp: t_here,
            update: u_here,
        });
        start += len;
    }
}

fn run_tasks<T: Float>(tasks: &mut [Task<'_, '_, T>], parallel: bool) {
    let isa = simd::active();
    if parallel {
        threads::for_each(tasks, |t| simd::process(isa, t));
    } else {
        for t in tasks {
            simd::process(isa, t);
        }
    }
}

/// `dst.copy_from_slice(src)`, by [`write_pieces`].
#[inline(always)]
fn copy_block<T: Copy>(dst: &mut [T], src: &[T]) {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and this view of initialised
    // memory is only given initialised values (copies of `src`).
    let dst = unsafe { &mut *(std::ptr::from_mut::<[T]>(dst) as *mut [MaybeUninit<T>]) };
    write_pieces(dst, src);
}

/// `src` (at most `BLOCK` elements) copied to the start of `block`, as the
/// initialised slice it now is.
#[inline(always)]
fn load_block<'b, T: Copy>(block: &'b mut [MaybeUninit<T>; BLOCK], src: &[T]) -> &'b mut [T] {
    let out = &mut block[..src.len()];
    write_pieces(out, src);
    // SAFETY: each of the `src.len()` elements of `out` was written just above,
    // and `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(std::ptr::from_mut::<[MaybeUninit<T>]>(out) as *mut [T]) }
}

/// Copy `src` into `dst` (the same length) in `COPY_PIECE`-element pieces, each a
/// fixed-size copy that compiles to one vector move: the library `memmove`
/// showed in steps of many small leaves (on AMD, `rep movsb` with
/// page-aliased arrays), and so did an element-by-element remainder.
#[inline(always)]
fn write_pieces<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    let copy = |d: &mut [MaybeUninit<T>], s: &[T]| {
        assert_eq!(d.len(), s.len());
        // SAFETY: `d` and `s` have the same length (checked) and do not
        // overlap (`d` is borrowed mutably while `s` is borrowed), and
        // `MaybeUninit<T>` has `T`'s layout.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), d.as_mut_ptr().cast::<T>(), s.len()) };
    };
    let mut dst_pieces = dst.chunks_exact_mut(COPY_PIECE);
    let mut src_pieces = src.chunks_exact(COPY_PIECE);
    for (d, s) in (&mut dst_pieces).zip(&mut src_pieces) {
        copy(d, s);
    }
    copy(dst_pieces.into_remainder(), src_pieces.remainder());
}

/// One task: straight from the input into `x` when it can (see
/// `straight_to_x`), else block by block: load the input block, run the
/// segment's rules over it, then subtract it from `x` or keep it for the next
/// stage.
#[inline(always)]
pub(crate) fn process<T: Float>(task: &mut Task<'_, '_, T>) {
    if let Some(reduction) = task.norm {
        let mut norms = [0.0; MAX_INPUTS];
        for (norm, input) in norms.iter_mut().zip(reduction.inputs()) {
            let of = match *input {
                Input::Update => read(task.input, task.grad, task.tmp),
                Input::X => &*task.x,
                Input::State(s) => &*task.states[s],
            };
            *norm = norm::norm(reduction.p, of, false);
        }
        let factor = reduction.factor(&norms[..reduction.inputs().len()]);
        task.scale = Some(factor.unwrap_or_else(|_| unreachable!("a task's norm cannot fail")));
    }
    if task.output == Output::X {
        let Some((last, before)) = task.ops.split_last() else {
            // No rule after the norm (`ClipNorm` alone, an empty chain): the
            // update is the scaled input, subtracted in one loop as a last
            // rule `Descent(1)` would (`d * 1` is `d`, bit for bit): no
            // block in between.
            let last = BoundOp {
                rule: Bound::Descent(Descent { eta: T::ONE }),
                states: 0..0,
            };
            let prelude = Prelude::of(task.scale, std::iter::empty())
                .expect("a norm's factor alone fits a prelude");
            prelude.with_parts(StraightToX { last: &last, task });
            return;
        };
        let rules = before.iter().map(|op| &op.rule);
        if let Some(prelude) = Prelude::of(task.scale, rules) {
            prelude.with_parts(StraightToX { last, task });
            return;
        }
    }
    // When the block ends in `x`, its last rule runs from the block straight
    // into `x` (see `Rule::descend`).
    let (body, last) = match (task.output, task.ops.split_last()) {
        (Output::X, Some((last, body))) => (body, Some(last)),
        _ => (task.ops, None),
    };
    // Not zeroed: a memset per task showed in steps of tiny leaves.
    let mut block = [MaybeUninit::<T>::uninit(); BLOCK];
    let len = task.x.len();
    let step = task.block;
    let mut start = 0;
    while start < len {
        let range = start..len.min(start + step);
        let dx = load_block(
            &mut block,
            &read(task.input, task.grad, task.tmp)[range.clone()],
        );
        if let Some(scale) = task.scale {
            for d in dx.iter_mut() {
                *d = *d * scale;
            }
        }
        if task.prefetch {
            // From memory: the rules run in slices, each first asking for the
            // stretch `PREFETCH_AHEAD_BYTES` further on, so that memory keeps
            // working while a division and a root per element hold the core.
            // In cache it costs a third more: only for passes far larger than
            // the caches (from 4 MiB instead of 64, mid-size leaves were no
            // faster with the hint into L2, and slower with the one into L1).
            for part in prefetch_slices(range.clone()) {
                let input = read(task.input, task.grad, task.tmp);
                prefetch_ahead(&part, input, task.x, task.states);
                let d = &mut dx[part.start - range.start..part.end - range.start];
                let x = &mut task.x[part.clone()];
                run_ops(body, last, x, d, task.states, &part);
            }
        } else {
            let x = &mut task.x[range.clone()];
            run_ops(body, last, x, dx, task.states, &range);
        }
        match task.output {
            Output::X if last.is_none() => {
                for (x, &d) in task.x[range.clone()].iter_mut().zip(dx.iter()) {
                    *x = *x - d;
                }
            }
            Output::Update => copy_block(&mut task.update[range.clone()], dx),
            Output::Tmp => copy_block(&mut task.tmp[range.clone()], dx),
            // `x` already written by `last`, or nothing to write.
            Output::X | Output::Drop => {}
        }
        start = range.end;
    }
}

/// The rules of `body` over the stretch `range` of a task, each rewriting the
/// block `d` (its gradient to begin with); then `last`, if given, from `d`
/// straight into `x`.
#[inline(always)]
fn run_ops<T: Float>(
    body: &[BoundOp<T>],
    last: Option<&BoundOp<T>>,
    x: &mut [T],
    d: &mut [T],
    states: &mut [&mut [T]],
    range: &Range<usize>,
) {
    for op in body {
        op.rule.apply(x, d, &mut states[op.states.clone()], range);
    }
    if let Some(op) = last {
        op.rule
            .descend(x, d, &mut states[op.states.clone()], range, &Nothing::NONE);
    }
}

/// A task that ends in `x` and whose rules before the last fit a `Prelude`
/// (most steps: a rule alone, `ClipGrad`, `WeightDecay` and `ClipNorm` before
/// one): one loop from the input to `x`, with no block of updates in between
/// (see `Rule::descend`), prefetching as `process` does. `before` is the
/// prelude as the type its shape is compiled for (see `Prelude::with_parts`),
/// chosen once per task, not per slice.
#[inline(always)]
fn straight_to_x<T: Float, P: Before<T>>(
    last: &BoundOp<T>,
    before: &P,
    task: &mut Task<'_, '_, T>,
) {
    let input = read(task.input, task.grad, task.tmp);
    let states = &mut task.states[last.states.clone()];
    let len = task.x.len();
    if !task.prefetch {
        last.rule.descend(task.x, input, states, &(0..len), before);
        return;
    }
    for part in prefetch_slices(0..len) {
        prefetch_ahead(&part, input, task.x, states);
        let x = &mut task.x[part.clone()];
        last.rule
            .descend(x, &input[part.clone()], states, &part, before);
    }
}

/// The arguments of `straight_to_x`, waiting for the prelude's type. Not a
/// closure: closures do not take on the instruction set of the function they
/// are written in, and one was called, not inlined.
struct StraightToX<'a, 's, 't, T> {
    last: &'a BoundOp<T>,
    task: &'a mut Task<'s, 't, T>,
}

impl<T: Float> WithParts<T> for StraightToX<'_, '_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn run<P: Before<T>>(self, before: &P) {
        straight_to_x(self.last, before, self.task);
    }
}

/// The slices of `range`, `PREFETCH_SLICE` elements each, that a prefetching
/// pass runs in, asking for each array ahead of each one (`prefetch_ahead`).
#[inline(always)]
pub(crate) fn prefetch_slices(range: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    let end = range.end;
    range
        .step_by(PREFETCH_SLICE)
        .map(move |at| at..end.min(at + PREFETCH_SLICE))
}

/// Ask for the stretch `part` of the arrays `PREFETCH_AHEAD_BYTES` ahead (see `process`).
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(part: &Range<usize>, input: &[T], x: &[T], states: &[&mut [T]]) {
    let by = PREFETCH_AHEAD_BYTES / std::mem::size_of::<T>();
    let ahead = part.start + by..part.end + by;
    simd::prefetch(input, &ahead);
    simd::prefetch(x, &ahead);
    for s in states {
        simd::prefetch(s, &ahead);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_their_order_inline_and_on_the_heap() {
        for n in 0..=INLINE_STATES + 3 {
            let mut arrays: Vec<Vec<f32>> = (0..n).map(|k| vec![k as f32; k + 1]).collect();
            let mut states: States<f32> = arrays.iter_mut().map(Vec::as_mut_slice).collect();
            assert_eq!(states.len(), n);
            assert_eq!(matches!(states.0, Held::Heap(_)), n > INLINE_STATES);
            for (k, s) in states.iter_mut().enumerate() {
                assert_eq!(s.len(), k + 1);
                s[0] += 10.0;
            }
            let halves = states.map(crate::float::as_half_mut);
            assert_eq!(halves.len(), n);
            assert!(halves.iter().enumerate().all(|(k, s)| s.len() == k + 1));
            drop(halves);
            assert!(arrays
                .iter()
                .enumerate()
                .all(|(k, a)| a[0] == k as f32 + 10.0));
        }
    }
}
