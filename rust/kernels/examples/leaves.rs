//! The kernel alone on many leaves: Adam float32 steps on K leaves of N
//! elements each, the sets timed in turn in one process (this VM's speed
//! drifts), with no Python in the way.
//!
//!     cargo run --release --example leaves -- THREADS KxN [KxN ...]
//!
//! e.g. `-- 2 1x1000000 1000x1000 4000x250`; `REPS` sets the rounds (200).
//! Prints the median and minimum microseconds of one step of each set.

use optimisers_kernels::{step, threads, Job, Kind, Program, Step};
use std::time::Instant;

struct Data {
    n: usize,
    x: Vec<f32>,
    g: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

fn run(d: &mut Data, program: &Program, per_leaf: &[f64]) -> f64 {
    let n = d.n;
    let mut jobs: Vec<Job<f32>> =
        d.x.chunks_mut(n)
            .zip(d.g.chunks(n))
            .zip(d.m.chunks_mut(n).zip(d.v.chunks_mut(n)))
            .map(|((x, g), (m, v))| Job {
                x,
                grad: g,
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

fn main() {
    let mut args = std::env::args().skip(1);
    let nthreads: usize = args.next().unwrap().parse().unwrap();
    threads::set_num_threads(nthreads).unwrap();
    let program = Program::new(vec![Step::Rule {
        kind: Kind::Adam,
        hyper: vec![1e-3, 0.9, 0.999, 1e-8],
    }])
    .unwrap();
    let per_leaf = vec![0.9, 0.999];
    let mut sets: Vec<(String, Data)> = args
        .map(|a| {
            let (k, n) = a.split_once('x').unwrap();
            let (k, n): (usize, usize) = (k.parse().unwrap(), n.parse().unwrap());
            let g = (0..k * n)
                .map(|i| ((i % 97) as f32 - 48.0) * 0.01)
                .collect();
            (
                a,
                Data {
                    n,
                    x: vec![1.0; k * n],
                    g,
                    m: vec![0.0; k * n],
                    v: vec![0.0; k * n],
                },
            )
        })
        .collect();
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let mut times = vec![vec![]; sets.len()];
    for rep in 0..reps {
        for (i, (_, d)) in sets.iter_mut().enumerate() {
            for _ in 0..5 {
                let t = run(d, &program, &per_leaf);
                if rep >= 5 {
                    times[i].push(t);
                }
            }
        }
    }
    for ((name, _), t) in sets.iter().zip(times.iter_mut()) {
        t.sort_by(f64::total_cmp);
        print!("{name}: {:.0} us (min {:.0})   ", t[t.len() / 2], t[0]);
    }
    println!("[{nthreads} threads]");
}
