//! The kernel alone on many leaves: Adam alone and at the end of chains, on
//! K leaves of N float32 elements each, every set and program timed in turn
//! in one process (this VM's speed drifts), with no Python in the way.
//!
//!     cargo run --release --example leaves -- THREADS KxN [KxN ...]
//!
//! e.g. `-- 1 6x1200` (about the MLP) or `-- 2 1x1000000 1000x1000`; `REPS`
//! sets the rounds (200), `PROG` keeps one program (`adam`, `wd+adam`,
//! `cg+wd+adam`, `cn+adam`). Prints, for each set, each program's median and
//! minimum microseconds per step, and its median over the first program's. Gradients alternate in sign, so that a
//! `WeightDecay` chain does not settle where its updates are subnormal.

use optimisers_kernels::{step, threads, Job, Kind, Program, Reduction, Shape, Step};
use std::time::Instant;

fn rule(kind: Kind, hyper: &[f64]) -> Step {
    Step::Rule {
        kind,
        hyper: hyper.to_vec(),
    }
}

/// One program's leaves, stored as contiguous arrays cut into jobs.
struct Leaves {
    x: Vec<f32>,
    grads: [Vec<f32>; 2],
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Leaves {
    fn new(len: usize) -> Self {
        let g: Vec<f32> = (0..len).map(|i| ((i % 97) as f32 - 48.0) * 0.01).collect();
        let minus = g.iter().map(|v| -v).collect();
        Self {
            x: vec![1.0; len],
            grads: [g, minus],
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// Microseconds for one step with gradient `which`, in leaves of `n`.
    fn step(&mut self, n: usize, which: usize, program: &Program, per_leaf: &[f64]) -> f64 {
        let mut jobs: Vec<Job<f32>> = self
            .x
            .chunks_mut(n)
            .zip(self.grads[which].chunks(n))
            .zip(self.m.chunks_mut(n).zip(self.v.chunks_mut(n)))
            .map(|((x, grad), (m, v))| Job {
                shape: Shape::flat(x.len()),
                x,
                grad,
                states: [m, v].into(),
                program,
                per_leaf,
                update: None,
            })
            .collect();
        let t = Instant::now();
        step(&mut jobs).unwrap();
        t.elapsed().as_secs_f64() * 1e6
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nthreads: usize = args.next().unwrap().parse().unwrap();
    threads::set_num_threads(nthreads).unwrap();
    let sets: Vec<(String, usize, usize)> = args
        .map(|spec| {
            let (k, n) = spec.split_once('x').expect("sets are KxN");
            (spec.clone(), k.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    let adam = || rule(Kind::Adam, &[1e-3, 0.9, 0.999, 1e-8]);
    let clip_norm = Step::Reduce(Reduction::clip_norm(10.0, 2.0, false));
    let only = std::env::var("PROG").ok();
    let programs: Vec<(&str, Program)> = [
        ("adam", vec![adam()]),
        ("wd+adam", vec![rule(Kind::WeightDecay, &[5e-4]), adam()]),
        (
            "cg+wd+adam",
            vec![
                rule(Kind::ClipGrad, &[10.0]),
                rule(Kind::WeightDecay, &[5e-4]),
                adam(),
            ],
        ),
        ("cn+adam", vec![clip_norm, adam()]),
    ]
    .into_iter()
    .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
    .map(|(name, steps)| (name, Program::new(steps).unwrap()))
    .collect();
    let per_leaf = [0.9, 0.999];
    let mut data: Vec<Vec<Leaves>> = sets
        .iter()
        .map(|&(_, k, n)| programs.iter().map(|_| Leaves::new(k * n)).collect())
        .collect();
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let mut times = vec![vec![vec![]; programs.len()]; sets.len()];
    for rep in 0..reps {
        for ((set_times, set), set_data) in times.iter_mut().zip(&sets).zip(&mut data) {
            let n = set.2;
            for ((t, (_, program)), leaves) in
                set_times.iter_mut().zip(&programs).zip(set_data.iter_mut())
            {
                for s in 0..10 {
                    let micros = leaves.step(n, s % 2, program, &per_leaf);
                    if rep >= 5 {
                        t.push(micros);
                    }
                }
            }
        }
    }
    for ((spec, _, _), set_times) in sets.iter().zip(&mut times) {
        let mut first = None;
        for ((name, _), t) in programs.iter().zip(set_times.iter_mut()) {
            t.sort_by(f64::total_cmp);
            let median = t[t.len() / 2];
            let base = *first.get_or_insert(median);
            print!(
                "{name}: {median:.1} us ({:.2}, min {:.1})   ",
                median / base,
                t[0]
            );
        }
        println!("[{nthreads} threads, {spec}]");
    }
}
