//! Where a job's update lives between the stages of a step.

use crate::float::Float;
use crate::program::{BoundOp, Plans};

use super::Job;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Grad,
    Tmp,
}

/// The array a pass reads its input from: the gradient, or the update
/// materialised by the stage before.
#[inline(always)]
pub(crate) fn read<'s, T>(input: Source, grad: &'s [T], tmp: &'s [T]) -> &'s [T] {
    match input {
        Source::Grad => grad,
        Source::Tmp => tmp,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    X,
    Update,
    Tmp,
    Drop,
}

/// Where one job's update currently lives between stages.
pub(crate) struct Flow<T> {
    /// The materialised update, when a norm needs it whole.
    pub(crate) tmp: Vec<T>,
    pub(crate) input: Source,
    /// A norm's factor, applied at the start of the next segment.
    pub(crate) scale: Option<T>,
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

pub(crate) struct Pass<'p, T> {
    pub(crate) ops: &'p [BoundOp<T>],
    pub(crate) input: Source,
    pub(crate) scale: Option<T>,
    pub(crate) output: Output,
}

impl<T: Float> Flow<T> {
    /// Hold the update in `tmp`, copying the gradient there if it is still
    /// the input (a reduction by line scales it in place).
    pub(crate) fn materialise(&mut self, grad: &[T]) {
        if self.input == Source::Grad {
            self.tmp.clear();
            self.tmp.extend_from_slice(grad);
            self.input = Source::Tmp;
        }
    }

    /// The pass job `j` runs in this stage, if any. Its last segment runs in
    /// the last stage, so it starts `stages - segments` stages in.
    pub(crate) fn pass<'p>(
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
pub(crate) fn last_output<T>(updates_x: bool, job: &Job<'_, T>) -> Output {
    if !updates_x {
        Output::Drop
    } else if job.update.is_some() {
        Output::Update
    } else {
        Output::X
    }
}
