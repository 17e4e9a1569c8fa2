//! One task: a range of one job, run block by block or straight into `x`.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::float::Float;
use crate::norm;
use crate::program::BoundOp;
use crate::reduction::{Input, Reduction, MAX_INPUTS};
use crate::rules::descent::Descent;
use crate::rules::prelude::{Before, Nothing, Prelude, WithParts};
use crate::rules::Bound;
use crate::tuning::{BLOCK, COPY_PIECE};

use super::{prefetch_ahead, prefetch_slices, read, Output, Source};

/// One range of one job. Its arrays are borrowed for `'s`; the state slices
/// for `'t`, which may be longer (a job that is one task lends its own).
pub(crate) struct Task<'s, 't, T> {
    pub(crate) ops: &'s [BoundOp<T>],
    /// A reduction to take first, for `scale` (see `Stages::one_pass`).
    pub(crate) norm: Option<&'s Reduction>,
    pub(crate) x: &'s mut [T],
    /// The index in its leaf of the task's first element.
    pub(crate) offset: usize,
    pub(crate) grad: &'s [T],
    /// The job's materialised update for this range (empty when unused).
    pub(crate) tmp: &'s mut [T],
    /// The caller's buffer for the update (empty unless `Output::Update`).
    pub(crate) update: &'s mut [T],
    pub(crate) states: &'s mut [&'t mut [T]],
    pub(crate) input: Source,
    pub(crate) scale: Option<T>,
    pub(crate) output: Output,
    /// The pass streams from memory: prefetch ahead (see `process`).
    pub(crate) prefetch: bool,
    /// Elements per block: `BLOCK` or `SHORT_BLOCK`.
    pub(crate) block: usize,
}

/// `dst.copy_from_slice(src)`, by [`write_pieces`].
#[inline(always)]
pub(crate) fn copy_block<T: Copy>(dst: &mut [T], src: &[T]) {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and this view of initialised
    // memory is only given initialised values (copies of `src`).
    let dst = unsafe { &mut *(std::ptr::from_mut::<[T]>(dst) as *mut [MaybeUninit<T>]) };
    write_pieces(dst, src);
}

/// `src` (at most `BLOCK` elements) copied to the start of `block`, as the
/// initialised slice it now is.
#[inline(always)]
pub(crate) fn load_block<'b, T: Copy>(
    block: &'b mut [MaybeUninit<T>; BLOCK],
    src: &[T],
) -> &'b mut [T] {
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
pub(crate) fn write_pieces<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
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
                run_ops(body, last, x, d, task.states, &part, task.offset);
            }
        } else {
            let x = &mut task.x[range.clone()];
            run_ops(body, last, x, dx, task.states, &range, task.offset);
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
/// straight into `x`. The task starts at element `offset` of its leaf.
#[inline(always)]
pub(crate) fn run_ops<T: Float>(
    body: &[BoundOp<T>],
    last: Option<&BoundOp<T>>,
    x: &mut [T],
    d: &mut [T],
    states: &mut [&mut [T]],
    range: &Range<usize>,
    offset: usize,
) {
    let at = offset + range.start;
    for op in body {
        op.rule
            .apply(x, d, &mut states[op.states.clone()], range, at);
    }
    if let Some(op) = last {
        let states = &mut states[op.states.clone()];
        op.rule.descend(x, d, states, range, &Nothing::NONE, at);
    }
}

/// A task that ends in `x` and whose rules before the last fit a `Prelude`
/// (most steps: a rule alone, `ClipGrad`, `WeightDecay` and `ClipNorm` before
/// one): one loop from the input to `x`, with no block of updates in between
/// (see `Rule::descend`), prefetching as `process` does. `before` is the
/// prelude as the type its shape is compiled for (see `Prelude::with_parts`),
/// chosen once per task, not per slice.
#[inline(always)]
pub(crate) fn straight_to_x<T: Float, P: Before<T>>(
    last: &BoundOp<T>,
    before: &P,
    task: &mut Task<'_, '_, T>,
) {
    let input = read(task.input, task.grad, task.tmp);
    let states = &mut task.states[last.states.clone()];
    let len = task.x.len();
    if !task.prefetch {
        last.rule
            .descend(task.x, input, states, &(0..len), before, task.offset);
        return;
    }
    for part in prefetch_slices(0..len) {
        prefetch_ahead(&part, input, task.x, states);
        let x = &mut task.x[part.clone()];
        last.rule.descend(
            x,
            &input[part.clone()],
            states,
            &part,
            before,
            task.offset + part.start,
        );
    }
}

/// The arguments of `straight_to_x`, waiting for the prelude's type. Not a
/// closure: closures do not take on the instruction set of the function they
/// are written in, and one was called, not inlined.
pub(crate) struct StraightToX<'a, 's, 't, T> {
    pub(crate) last: &'a BoundOp<T>,
    pub(crate) task: &'a mut Task<'s, 't, T>,
}

impl<T: Float> WithParts<T> for StraightToX<'_, '_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn run<P: Before<T>>(self, before: &P) {
        straight_to_x(self.last, before, self.task);
    }
}
