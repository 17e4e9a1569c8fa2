//! One pass of a stage: its jobs cut into tasks, run on the pool.

use crate::float::Float;
use crate::{simd, spare, threads};

use super::{memory_walk, task_len, Flow, Job, Output, Pass, Source, Task};

/// A task's arrays before its state arrays are dealt out: `states` of them
/// come next in the pass's list.
pub(crate) struct Piece<'t, T> {
    pub(crate) job: usize,
    pub(crate) states: usize,
    pub(crate) x: &'t mut [T],
    /// The index in its leaf of the piece's first element.
    pub(crate) offset: usize,
    pub(crate) grad: &'t [T],
    pub(crate) tmp: &'t mut [T],
    pub(crate) update: &'t mut [T],
}

pub(crate) fn run_pass<T: Float>(
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
            offset: 0,
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
            offset: piece.offset,
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
pub(crate) fn cut<'t, T>(
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
            offset: start,
            grad: g_here,
            tmp: t_here,
            update: u_here,
        });
        start += len;
    }
}

pub(crate) fn run_tasks<T: Float>(tasks: &mut [Task<'_, '_, T>], parallel: bool) {
    let isa = simd::active();
    if parallel {
        threads::for_each(tasks, |t| simd::process(isa, t));
    } else {
        for t in tasks {
            simd::process(isa, t);
        }
    }
}
