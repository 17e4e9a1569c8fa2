//! Reductions beyond `ClipNorm`: a trust ratio of `x` and the update after
//! rules with state, and a norm over every leaf of a step; each against a
//! reference computed step by step, on one thread and on two.

use std::sync::Mutex;

use optimisers_kernels::norm;
use optimisers_kernels::{step, threads, Job, Kind, Program, Reduction, Shape, Step};

/// The thread count is global: the tests of this file take turns.
static THREADS: Mutex<()> = Mutex::new(());

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) as f32
        })
        .collect()
}

fn named(name: &str, hyper: &[(&str, f64)]) -> Step {
    Step::named(name, hyper).unwrap()
}

fn adam() -> Step {
    let hyper = [
        ("eta", 1.0),
        ("beta1", 0.9),
        ("beta2", 0.999),
        ("epsilon", 1e-6),
    ];
    named("Adam", &hyper)
}

#[derive(Clone, Debug)]
struct Leaf {
    x: Vec<f32>,
    grad: Vec<f32>,
    states: Vec<Vec<f32>>,
}

impl Leaf {
    fn new(n: usize, states: usize, seed: u64) -> Self {
        Self {
            x: values(n, seed),
            grad: values(n, seed + 1),
            states: (0..states).map(|_| vec![0.0; n]).collect(),
        }
    }

    fn job<'a>(&'a mut self, program: &'a Program, per_leaf: &'a [f64]) -> Job<'a, f32> {
        Job {
            shape: Shape::flat(self.x.len()),
            x: &mut self.x,
            grad: &self.grad,
            states: self.states.iter_mut().map(Vec::as_mut_slice).collect(),
            program,
            per_leaf,
            update: None,
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(a: &[Leaf], b: &[Leaf], what: &str) {
    for (k, (a, b)) in a.iter().zip(b).enumerate() {
        assert_eq!(bits(&a.x), bits(&b.x), "{what}: x of leaf {k}");
        for (sa, sb) in a.states.iter().zip(&b.states) {
            assert_eq!(bits(sa), bits(sb), "{what}: state of leaf {k}");
        }
    }
}

/// Every leaf stepped by `program` in one call on `threads` threads.
fn run(program: &Program, per_leaf: &[f64], leaves: &[Leaf], threads: usize) -> Vec<Leaf> {
    threads::set_num_threads(threads).unwrap();
    let mut leaves = leaves.to_vec();
    let mut jobs: Vec<Job<f32>> = leaves
        .iter_mut()
        .map(|l| l.job(program, per_leaf))
        .collect();
    step(&mut jobs).unwrap();
    drop(jobs);
    leaves
}

/// `OptimiserChain(Adam(1), WeightDecay(λ), TrustRatio())` (LAMB's chain
/// before its learning rate) steps as the reference: the update of the rules
/// with state written out by the kernel, then its norm and `x`'s taken
/// apart, and `x -= ratio · u`. On one thread and two, for leaves small and
/// large (cut into tasks).
#[test]
fn a_trust_ratio_after_rules_with_state_steps_as_its_reference() {
    let _turn = THREADS.lock().unwrap();
    let trust = named(
        "TrustRatio",
        &[("min_norm", 0.0), ("coef", 1.0), ("eps", 0.0)],
    );
    let decay = named("WeightDecay", &[("lambda", 0.01)]);
    let lamb = Program::new(vec![adam(), decay.clone(), trust]).unwrap();
    assert_eq!(
        lamb.states_before_last_norm(),
        0,
        "a trust ratio cannot fail"
    );
    let before = Program::new(vec![adam(), decay]).unwrap();
    let per_leaf = [0.9, 0.999];
    let leaves: Vec<Leaf> = [1, 1031, 70_001, 200_003]
        .iter()
        .enumerate()
        .map(|(k, &n)| Leaf::new(n, 2, 10 * k as u64))
        .collect();

    let mut want = leaves.clone();
    for leaf in &mut want {
        let mut u = vec![0.0f32; leaf.x.len()];
        let x0 = leaf.x.clone();
        let mut job = leaf.job(&before, &per_leaf);
        job.update = Some(&mut u);
        step(&mut [job]).unwrap();
        let norms = [norm::norm(2.0, &x0, false), norm::norm(2.0, &u, false)];
        let ratio: f32 = Reduction::bind("TrustRatio", &[0.0, 1.0, 0.0])
            .unwrap()
            .factor(&norms)
            .unwrap();
        for (x, u) in leaf.x.iter_mut().zip(&u) {
            *x -= u * ratio;
        }
    }

    for threads in [1, 2] {
        let got = run(&lamb, &per_leaf, &leaves, threads);
        assert_same(&want, &got, &format!("{threads} threads"));
    }
}

/// `ClipGlobalNorm` over several leaves: one norm for them all, their parts
/// added in the order of the leaves, so the same bits on one thread and
/// two, before a rule (taken first, in one pass) and after one with state
/// (in stages); a leaf of another program has a norm of its own.
#[test]
fn a_norm_over_the_leaves_of_a_step_has_the_same_bits_on_any_thread_count() {
    let _turn = THREADS.lock().unwrap();
    let global = |omega: f64| {
        named(
            "ClipGlobalNorm",
            &[("omega", omega), ("p", 2.0), ("throw", 1.0)],
        )
    };
    let per_leaf = [0.9, 0.999];
    // Small leaves take one pass; a leaf larger than a task brings stages.
    for sizes in [&[3, 1000, 17][..], &[3, 1000, 70_001, 17]] {
        let leaves: Vec<Leaf> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| Leaf::new(n, 0, 7 * k as u64))
            .collect();

        // Alone: x -= g · min(ω / ‖(g₁, …, gₙ)‖, 1), against the parts added by hand.
        let alone = Program::new(vec![global(1.0)]).unwrap();
        let parts = leaves.iter().map(|l| norm::partial(2.0, &l.grad, false));
        let whole = norm::combine(2.0, parts);
        let factor: f32 = Reduction::bind("ClipGlobalNorm", &[1.0, 2.0, 1.0])
            .unwrap()
            .factor(&[whole])
            .unwrap();
        assert!(factor < 1.0, "the norm over all leaves clips");
        let mut want = leaves.clone();
        for leaf in &mut want {
            for (x, g) in leaf.x.iter_mut().zip(&leaf.grad) {
                *x -= g * factor;
            }
        }
        for threads in [1, 2] {
            let got = run(&alone, &[], &leaves, threads);
            assert_same(&want, &got, &format!("alone, {sizes:?}, {threads} threads"));
        }

        // After Adam (in stages) and before it (in one pass): 1 and 2 threads agree.
        for steps in [vec![adam(), global(0.1)], vec![global(1.0), adam()]] {
            let program = Program::new(steps).unwrap();
            let with_state: Vec<Leaf> = sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| Leaf::new(n, 2, 7 * k as u64))
                .collect();
            let one = run(&program, &per_leaf, &with_state, 1);
            let two = run(&program, &per_leaf, &with_state, 2);
            assert_same(&one, &two, &format!("{:?}", program.steps()));
            assert_ne!(bits(&one[0].x), bits(&with_state[0].x), "the step moved x");
        }
    }
}

/// A reduction that cannot fail after a rule with state needs no roll-back;
/// one that can does, and a reduction reading a state array the program
/// does not keep, or a norm over leaves with a p that does not add up, is
/// refused when the program is made.
#[test]
fn programs_check_their_reductions() {
    let clip = |throw: f64| named("ClipNorm", &[("omega", 1.0), ("p", 2.0), ("throw", throw)]);
    let quiet = Program::new(vec![adam(), clip(0.0)]).unwrap();
    assert_eq!(quiet.states_before_last_norm(), 0);
    let loud = Program::new(vec![adam(), clip(1.0)]).unwrap();
    assert_eq!(loud.states_before_last_norm(), Kind::Adam.states());
    let global = named(
        "ClipGlobalNorm",
        &[("omega", 1.0), ("p", 0.0), ("throw", 0.0)],
    );
    assert!(Program::new(vec![global]).is_err());
    let of_state = Reduction::new(
        2.0,
        &[optimisers_kernels::Input::State(2)],
        optimisers_kernels::Scope::Array,
        optimisers_kernels::Makes::Clip {
            omega: 1.0,
            throw: false,
        },
    );
    assert!(Program::new(vec![adam(), Step::Reduce(of_state)]).is_err());
}

/// A clip by row or by column on matrix-shaped leaves (one 3 × 5, a stack of
/// 2 of 4 × 3, and a vector, which is one row): each line of the update
/// scaled by `min(ω / ‖line‖, 1)`, as the reference does line by line, on
/// one thread and two; and after Adam, the same bits on both.
#[test]
fn a_clip_by_row_or_column_scales_each_line_of_a_matrix() {
    use optimisers_kernels::{Input, Makes, Scope};
    let _turn = THREADS.lock().unwrap();
    let dims: [&[usize]; 3] = [&[3, 5], &[2, 4, 3], &[6]];
    let leaves: Vec<Leaf> = dims
        .iter()
        .enumerate()
        .map(|(k, d)| Leaf::new(d.iter().product(), 0, 3 * k as u64))
        .collect();
    let shaped = |program: &Program, per_leaf: &[f64], leaves: &[Leaf], threads: usize| {
        threads::set_num_threads(threads).unwrap();
        let mut leaves = leaves.to_vec();
        let mut jobs: Vec<Job<f32>> = leaves
            .iter_mut()
            .zip(dims)
            .map(|(l, d)| Job {
                shape: Shape::of(d),
                ..l.job(program, per_leaf)
            })
            .collect();
        step(&mut jobs).unwrap();
        drop(jobs);
        leaves
    };
    for scope in [Scope::Rows, Scope::Cols] {
        let makes = Makes::Clip {
            omega: 0.6,
            throw: false,
        };
        let by_line = Step::Reduce(Reduction::new(2.0, &[Input::Update], scope, makes));
        let alone = Program::new(vec![by_line.clone()]).unwrap();
        let mut want = leaves.clone();
        for (leaf, d) in want.iter_mut().zip(dims) {
            let shape = Shape::of(d);
            let (lines, along) = match scope {
                Scope::Rows => (shape.matrices * shape.rows, shape.cols),
                _ => (shape.matrices * shape.cols, shape.rows),
            };
            for l in 0..lines {
                let at = |k: usize| match scope {
                    Scope::Rows => l * shape.cols + k,
                    _ => {
                        (l / shape.cols) * shape.rows * shape.cols + k * shape.cols + l % shape.cols
                    }
                };
                let line: Vec<f32> = (0..along).map(|k| leaf.grad[at(k)]).collect();
                let norm = norm::norm(2.0, &line, false);
                let factor = (0.6 / norm).min(1.0) as f32;
                for k in 0..along {
                    leaf.x[at(k)] -= leaf.grad[at(k)] * factor;
                }
            }
        }
        for threads in [1, 2] {
            let got = shaped(&alone, &[], &leaves, threads);
            assert_same(&want, &got, &format!("{scope:?} alone, {threads} threads"));
        }
        assert_ne!(bits(&want[0].x), bits(&leaves[0].x), "some row is clipped");

        let after_adam = Program::new(vec![adam(), by_line]).unwrap();
        let with_state: Vec<Leaf> = dims
            .iter()
            .enumerate()
            .map(|(k, d)| Leaf::new(d.iter().product(), 2, 3 * k as u64))
            .collect();
        let one = shaped(&after_adam, &[0.9, 0.999], &with_state, 1);
        let two = shaped(&after_adam, &[0.9, 0.999], &with_state, 2);
        assert_same(&one, &two, &format!("{scope:?} after Adam"));
    }
}
