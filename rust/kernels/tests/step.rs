//! The kernel crate on its own: every rule through `step`, checked against
//! hand-computed values, and for the same bits however the work is split
//! (one call per element or one for all, one thread or two, every instruction set).

use optimisers_kernels::simd::{self, Isa};
use optimisers_kernels::{step, threads, Job, KernelError, Kind, Program, Reduction, Shape, Step};

/// Plausible hyper-parameters and per-leaf scalars for each rule.
fn sample(kind: Kind) -> (Vec<f64>, Vec<f64>) {
    let moments = vec![0.01, 0.9, 0.999, 1e-8];
    let powers = vec![0.9 * 0.9, 0.999 * 0.999];
    match kind {
        Kind::Descent => (vec![0.1], vec![]),
        Kind::Momentum | Kind::Nesterov => (vec![0.01, 0.9], vec![]),
        Kind::Rprop => (vec![1e-3, 0.5, 1.2, 1e-6, 50.0], vec![]),
        Kind::RMSProp | Kind::RMSPropCentred => (vec![1e-3, 0.9, 1e-8], vec![]),
        Kind::Adam | Kind::AdaMax | Kind::OAdam | Kind::NAdam | Kind::AdaBelief => {
            (moments, powers)
        }
        Kind::RAdam => (moments, vec![0.9f64.powi(7), 0.999f64.powi(7), 7.0]),
        Kind::AdamW => (vec![0.01, 0.9, 0.999, 1e-8, 0.1, 1.0], powers),
        Kind::AMSGrad => (moments, vec![]),
        Kind::AdaGrad => (vec![0.1, 1e-8], vec![]),
        Kind::AdaDelta => (vec![0.9, 1e-8], vec![]),
        Kind::Lion => (vec![1e-3, 0.9, 0.99], vec![]),
        Kind::WeightDecay | Kind::SignDecay => (vec![5e-4], vec![]),
        Kind::ClipGrad => (vec![0.5], vec![]),
        Kind::AccumGrad => (vec![1.0], vec![1.0]),
        Kind::InvDecay => (vec![0.1], vec![3.0]),
        Kind::NoisySGD => (vec![0.01, 0.1, 0.55, 7.0, 0.0], vec![3.0, 2.0]),
        Kind::AxonAdam | Kind::AxonAdaBelief => (vec![0.01, 0.9, 0.999, 1e-8, 1e-15], powers),
        Kind::AxonRAdam => (
            vec![0.01, 0.9, 0.999, 1e-8, 1e-15, 5.0],
            vec![0.9f64.powi(7), 0.999f64.powi(7), 7.0],
        ),
        Kind::AxonAdaGrad => (vec![0.01, 1e-7], vec![]),
        Kind::AxonRMSProp | Kind::AxonRMSPropCentred => (vec![0.01, 0.9, 1e-8], vec![]),
        Kind::AxonTrace => (vec![0.9, 1.0], vec![]),
        Kind::Yogi => (vec![0.01, 0.9, 0.999, 1e-3, 1e-12], vec![0.81, 0.998]),
    }
}

fn program(kind: Kind) -> (Program, Vec<f64>) {
    let (hyper, per_leaf) = sample(kind);
    (
        Program::new(vec![Step::Rule { kind, hyper }]).unwrap(),
        per_leaf,
    )
}

/// Deterministic values with both signs and some zeros.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            if i % 11 == 3 {
                0.0
            } else {
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            }
        })
        .collect()
}

struct Leaf<T> {
    x: Vec<T>,
    grad: Vec<T>,
    states: Vec<Vec<T>>,
}

impl<T: optimisers_kernels::Float> Leaf<T> {
    fn new(n: usize, states: usize, seed: u64) -> Self {
        let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
        Self {
            x: cast(values(n, seed)),
            grad: cast(values(n, seed + 1)),
            // Positive state, as second moments and step sizes are.
            states: (0..states)
                .map(|k| {
                    cast(values(n, seed + 2 + k as u64))
                        .into_iter()
                        .map(optimisers_kernels::Float::abs)
                        .collect()
                })
                .collect(),
        }
    }

    fn job<'a>(&'a mut self, program: &'a Program, per_leaf: &'a [f64]) -> Job<'a, T> {
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

    /// The same step, as one call of jobs of at most `piece` elements each.
    fn step_in_pieces(&mut self, program: &Program, per_leaf: &[f64], piece: usize) {
        let mut states: Vec<_> = self
            .states
            .iter_mut()
            .map(|s| s.chunks_mut(piece))
            .collect();
        let mut jobs: Vec<Job<T>> = self
            .x
            .chunks_mut(piece)
            .zip(self.grad.chunks(piece))
            .map(|(x, grad)| Job {
                shape: Shape::flat(x.len()),
                x,
                grad,
                states: states.iter_mut().map(|s| s.next().unwrap()).collect(),
                program,
                per_leaf,
                update: None,
            })
            .collect();
        step(&mut jobs).unwrap();
    }
}

fn bits<T: optimisers_kernels::Float>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64().to_bits()).collect()
}

fn assert_same<T: optimisers_kernels::Float>(a: &Leaf<T>, b: &Leaf<T>, what: &str) {
    assert_eq!(bits(&a.x), bits(&b.x), "{what}: parameters differ");
    for (k, (s, t)) in a.states.iter().zip(&b.states).enumerate() {
        assert_eq!(bits(s), bits(t), "{what}: state {k} differs");
    }
}

fn invariance<T: optimisers_kernels::Float>() {
    for &kind in Kind::ALL {
        let (program, per_leaf) = program(kind);
        for n in [0, 1, 7, 1031, 70_001, 200_003] {
            let reference = {
                let mut leaf = Leaf::<T>::new(n, kind.states(), n as u64);
                threads::set_num_threads(1).unwrap();
                step(&mut [leaf.job(&program, &per_leaf)]).unwrap();
                leaf
            };
            // Leaves larger than a task are cut, and then run apart from
            // those that are one task each: both ways give the same bits.
            let piece = if n <= 1031 { 1 } else { 1031 };
            // NoisySGD's noise depends on the element's index in its leaf,
            // and pieces are leaves of their own; the loop below still cuts
            // its one leaf into tasks on two threads.
            let pieces = if kind == Kind::NoisySGD { 0 } else { 2 };
            for threads in (1..=2).take(pieces) {
                threads::set_num_threads(threads).unwrap();
                let mut split = Leaf::<T>::new(n, kind.states(), n as u64);
                split.step_in_pieces(&program, &per_leaf, piece);
                let what = format!("{kind:?} n={n} in pieces of {piece}, {threads} threads");
                assert_same(&reference, &split, &what);
            }
            for isa in simd::available() {
                simd::set_active(isa).unwrap();
                threads::set_num_threads(2).unwrap();
                let mut leaf = Leaf::<T>::new(n, kind.states(), n as u64);
                step(&mut [leaf.job(&program, &per_leaf)]).unwrap();
                assert_same(
                    &reference,
                    &leaf,
                    &format!("{kind:?} n={n} {isa:?} 2 threads"),
                );
            }
            simd::set_active(simd::detect()).unwrap();
        }
    }
}

#[test]
fn same_bits_however_the_work_is_split() {
    invariance::<f32>();
    invariance::<f64>();
    invariance::<optimisers_kernels::Half>();
    threads::set_num_threads(2).unwrap();
}

#[test]
fn every_isa_is_detected_in_order() {
    let levels = simd::available();
    assert_eq!(levels[0], Isa::Baseline);
    assert_eq!(*levels.last().unwrap(), simd::detect());
    assert!(simd::set_active(Isa::Baseline).is_ok());
    simd::set_active(simd::detect()).unwrap();
}

fn run(steps: Vec<Step>, x: &mut [f64], grad: &[f64], states: &mut [Vec<f64>], per_leaf: &[f64]) {
    let program = Program::new(steps).unwrap();
    let mut jobs = [Job {
        shape: Shape::flat(x.len()),
        x,
        grad,
        states: states.iter_mut().map(Vec::as_mut_slice).collect(),
        program: &program,
        per_leaf,
        update: None,
    }];
    step(&mut jobs).unwrap();
}

fn rule(kind: Kind, hyper: &[f64]) -> Step {
    Step::Rule {
        kind,
        hyper: hyper.to_vec(),
    }
}

fn close(a: &[f64], b: &[f64]) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{a:?} != {b:?}");
    }
}

#[test]
fn adam_first_step_matches_the_docs() {
    // Optimisers.jl's docs: Adam(0.1) on ones(2) with gradient ones(2).
    let (mut x, mut states) = (vec![1.0; 2], vec![vec![0.0; 2], vec![0.0; 2]]);
    run(
        vec![rule(Kind::Adam, &[0.1, 0.9, 0.999, 1e-8])],
        &mut x,
        &[1.0, 1.0],
        &mut states,
        &[0.9, 0.999],
    );
    close(&states[0], &[0.1, 0.1]);
    close(&states[1], &[0.001, 0.001]);
    // m̂ = 1, v̂ = 1: the step is η / (1 + ϵ).
    close(&x, &[1.0 - 0.1 / (1.0 + 1e-8); 2]);
}

#[test]
fn clip_then_descend() {
    // OptimiserChain(ClipGrad(1.0), Descent(0.1)) on zeros(3), gradient [0.3, 1, 7].
    let mut x = vec![0.0; 3];
    run(
        vec![rule(Kind::ClipGrad, &[1.0]), rule(Kind::Descent, &[0.1])],
        &mut x,
        &[0.3, 1.0, 7.0],
        &mut [],
        &[],
    );
    close(&x, &[-0.03, -0.1, -0.1]);
}

#[test]
fn empty_chain_is_descent_one() {
    let mut x = vec![1.0, 10.0, 100.0];
    run(vec![], &mut x, &[1.0, 2.0, 3.0], &mut [], &[]);
    close(&x, &[0.0, 8.0, 97.0]);
}

#[test]
fn accumulate_then_apply_the_mean() {
    // OptimiserChain(AccumGrad(2), WeightDecay(0.01), Descent(0.1)), x = [1], gradients 33 then 0.
    let steps = || {
        vec![
            rule(Kind::AccumGrad, &[2.0]),
            rule(Kind::WeightDecay, &[0.01]),
            rule(Kind::Descent, &[0.1]),
        ]
    };
    let (mut x, mut acc) = (vec![1.0], vec![vec![0.0]]);
    run(steps(), &mut x, &[33.0], &mut acc, &[1.0]);
    assert_eq!(x, [1.0]);
    run(steps(), &mut x, &[0.0], &mut acc, &[2.0]);
    close(&x, &[1.0 - 0.1 * (16.5 + 0.01)]);
}

#[test]
fn nesterov_velocity() {
    let (mut x, mut v) = (vec![0.0; 2], vec![vec![0.0; 2]]);
    run(
        vec![rule(Kind::Nesterov, &[0.001, 0.9])],
        &mut x,
        &[16.0, 88.0],
        &mut v,
        &[],
    );
    close(&v[0], &[-0.016, -0.088]);
    close(&x, &[-1.9 * 0.016, -1.9 * 0.088]);
}

#[test]
fn clip_norm_scales_to_omega_for_each_p() {
    let grad = [3.0, -4.0, 0.0];
    for (p, norm) in [(2.0, 5.0), (1.0, 7.0), (f64::INFINITY, 4.0), (0.0, 2.0)] {
        let mut x = vec![0.0; 3];
        let clip = Step::Reduce(Reduction::clip_norm(1.0, p, true));
        run(vec![clip], &mut x, &grad, &mut [], &[]);
        close(&x, &grad.map(|g| -g / norm));
    }
}

#[test]
fn norm_after_a_rule_and_between_rules() {
    // WeightDecay(1) turns dx into dx + x, then the norm of that is clipped to 1, then Descent(0.5).
    let steps = vec![
        rule(Kind::WeightDecay, &[1.0]),
        Step::Reduce(Reduction::clip_norm(1.0, 2.0, true)),
        rule(Kind::Descent, &[0.5]),
    ];
    let mut x = vec![1.0, 1.0];
    run(steps, &mut x, &[2.0, 3.0], &mut [], &[]);
    let (a, b) = (3.0, 4.0);
    close(&x, &[1.0 - 0.5 * a / 5.0, 1.0 - 0.5 * b / 5.0]);
}

#[test]
fn failing_norm_writes_no_parameter() {
    let plain = Program::new(vec![rule(Kind::Descent, &[0.1])]).unwrap();
    let clipped = Program::new(vec![Step::Reduce(Reduction::clip_norm(1.0, 2.0, true))]).unwrap();
    let (mut a, mut b) = (vec![1.0; 4], vec![1.0; 4]);
    let mut jobs = [
        Job {
            shape: Shape::flat(a.len()),
            x: &mut a,
            grad: &[1.0; 4],
            states: [].into(),
            program: &plain,
            per_leaf: &[],
            update: None,
        },
        Job {
            shape: Shape::flat(b.len()),
            x: &mut b,
            grad: &[1.0, f64::NAN, 0.0, 0.0],
            states: [].into(),
            program: &clipped,
            per_leaf: &[],
            update: None,
        },
    ];
    let err = step(&mut jobs).unwrap_err();
    assert!(
        matches!(err, KernelError::NonFiniteNorm { job: 1, .. }),
        "{err:?}"
    );
    assert_eq!(a, [1.0; 4]);
    assert_eq!(b, [1.0; 4]);
}

/// A rule alone, a chain whose rules before the last keep no state (a
/// `Prelude`), and a norm with no rule after it run from the gradient straight into `x` when the step is in
/// place, and rule by rule through a block when the update is asked for:
/// `x - update` must be the in-place step, bit for bit, also where `x` is
/// infinite or NaN and the gradient is `-0`.
fn in_place_is_x_minus_the_update<T: optimisers_kernels::Float>() {
    let mut programs: Vec<(String, Program, Vec<f64>)> = Kind::ALL
        .iter()
        .map(|&kind| {
            let (program, per_leaf) = program(kind);
            (format!("{kind:?}"), program, per_leaf)
        })
        .collect();
    let with = |kind: Kind| {
        let (hyper, per_leaf) = sample(kind);
        (Step::Rule { kind, hyper }, per_leaf)
    };
    let clip_norm = || Step::Reduce(Reduction::clip_norm(0.5, 2.0, false));
    let chains = [
        (
            vec![
                rule(Kind::ClipGrad, &[0.5]),
                rule(Kind::WeightDecay, &[0.1]),
            ],
            Kind::Adam,
        ),
        (
            vec![
                rule(Kind::WeightDecay, &[0.1]),
                rule(Kind::ClipGrad, &[0.5]),
            ],
            Kind::Adam,
        ),
        (vec![rule(Kind::SignDecay, &[0.1])], Kind::Momentum),
        // The shapes compiled as `Parts`: a norm's factor, `ClipGrad` or
        // `WeightDecay` alone (and both, first above).
        (vec![clip_norm()], Kind::NAdam),
        (vec![rule(Kind::ClipGrad, &[0.5])], Kind::Nesterov),
        (vec![rule(Kind::WeightDecay, &[0.1])], Kind::AdaBelief),
        (
            vec![clip_norm(), rule(Kind::ClipGrad, &[0.5])],
            Kind::Descent,
        ),
        (
            vec![
                clip_norm(),
                rule(Kind::ClipGrad, &[0.5]),
                rule(Kind::WeightDecay, &[0.1]),
                rule(Kind::SignDecay, &[0.1]),
            ],
            Kind::Rprop,
        ),
        (
            vec![rule(Kind::ClipGrad, &[0.5]), rule(Kind::ClipGrad, &[0.2])],
            Kind::AdamW,
        ),
    ];
    // No rule after the norm, or none at all: the scaled gradient is the update.
    programs.push((
        "ClipNorm alone".into(),
        Program::new(vec![clip_norm()]).unwrap(),
        vec![],
    ));
    programs.push((
        "an empty chain".into(),
        Program::new(vec![]).unwrap(),
        vec![],
    ));
    for (before, last) in chains {
        let name = format!("{before:?} then {last:?}");
        let (last, per_leaf) = with(last);
        let steps = before.into_iter().chain([last]).collect();
        programs.push((name, Program::new(steps).unwrap(), per_leaf));
    }
    for (name, program, per_leaf) in &programs {
        for n in [1, 1031, 70_001] {
            let leaf = || {
                let mut leaf = Leaf::<T>::new(n, program.states(), 5);
                let odd = [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -0.0].map(T::from_f64);
                for (k, &v) in odd.iter().enumerate().filter(|&(k, _)| 5 * k + 2 < n) {
                    leaf.x[5 * k + 2] = v;
                    leaf.grad[5 * k + 4] = T::from_f64(-0.0);
                }
                leaf
            };
            let mut in_place = leaf();
            step(&mut [in_place.job(program, per_leaf)]).unwrap();
            let mut asked = leaf();
            let x0 = asked.x.clone();
            let mut update = vec![T::ZERO; n];
            let mut job = asked.job(program, per_leaf);
            job.update = Some(&mut update);
            step(&mut [job]).unwrap();
            assert_eq!(bits(&asked.x), bits(&x0), "{name}: x written");
            asked.x = x0.iter().zip(&update).map(|(&x, &u)| x - u).collect();
            assert_same(&in_place, &asked, &format!("{name}, {n} elements"));
        }
    }
}

#[test]
fn stepping_in_place_is_x_minus_the_update() {
    in_place_is_x_minus_the_update::<f32>();
    in_place_is_x_minus_the_update::<f64>();
}

#[test]
fn update_buffer_leaves_the_parameter() {
    let program = Program::new(vec![rule(Kind::WeightDecay, &[0.5])]).unwrap();
    let (mut x, mut out) = (vec![2.0, 4.0], vec![0.0; 2]);
    let mut jobs = [Job {
        shape: Shape::flat(x.len()),
        x: &mut x,
        grad: &[1.0, 1.0],
        states: [].into(),
        program: &program,
        per_leaf: &[],
        update: Some(&mut out),
    }];
    step(&mut jobs).unwrap();
    assert_eq!(x, [2.0, 4.0]);
    assert_eq!(out, [2.0, 3.0]);
}

#[test]
fn mismatched_jobs_are_refused() {
    let (program, per_leaf) = program(Kind::Adam);
    let mut x = vec![0.0; 3];
    let mut short = [0.0; 2];
    let mut other = [0.0; 3];
    let mut jobs = [Job {
        shape: Shape::flat(x.len()),
        x: &mut x,
        grad: &[0.0; 3],
        states: [&mut short[..], &mut other[..]].into(),
        program: &program,
        per_leaf: &per_leaf,
        update: None,
    }];
    assert!(matches!(
        step(&mut jobs),
        Err(KernelError::Shape { job: 0, .. })
    ));
    let bad = Program::new(vec![rule(Kind::Adam, &[0.1])]);
    assert!(matches!(bad, Err(KernelError::Program(_))));
}

/// Passes far larger than the caches prefetch and run the rules in short
/// blocks and slices (see `exec::process`): the same bits as the same leaf
/// stepped in pieces small enough for neither.
#[test]
fn streaming_passes_give_the_same_bits() {
    let n = (64 << 20) / 4 + 5; // just over the float32 streaming threshold
    threads::set_num_threads(2).unwrap();
    for kind in [Kind::Adam, Kind::OAdam, Kind::Rprop, Kind::AccumGrad] {
        let (program, per_leaf) = program(kind);
        let mut whole = Leaf::<f32>::new(n, kind.states(), 3);
        step(&mut [whole.job(&program, &per_leaf)]).unwrap();
        let mut pieces = Leaf::<f32>::new(n, kind.states(), 3);
        let piece = 1 << 18; // 1 MiB of float32: full-length blocks
        for start in (0..n).step_by(piece) {
            let r = start..n.min(start + piece);
            let mut job = Job {
                shape: Shape::flat(r.len()),
                x: &mut pieces.x[r.clone()],
                grad: &pieces.grad[r.clone()],
                states: pieces
                    .states
                    .iter_mut()
                    .map(|s| &mut s[r.clone()])
                    .collect(),
                program: &program,
                per_leaf: &per_leaf,
                update: None,
            };
            step(std::slice::from_mut(&mut job)).unwrap();
        }
        assert_same(&whole, &pieces, &format!("{kind:?} streaming"));
    }
}

/// The lists a step keeps for the next one (`spare`) stay as many however
/// many steps run: a list given back each step but not taken again (the
/// plans' norms, asked for empty) once piled up without end.
#[test]
fn steps_keep_a_fixed_number_of_lists() {
    let program = Program::new(vec![
        Step::Reduce(Reduction::clip_norm(1.0, 2.0, false)),
        rule(Kind::Adam, &[0.01, 0.9, 0.999, 1e-8]),
    ])
    .unwrap();
    let per_leaf = [0.9, 0.999];
    let mut leaves: Vec<Leaf<f32>> = (0..300).map(|k| Leaf::new(4, 2, k)).collect();
    let mut kept = Vec::new();
    for _ in 0..20 {
        let mut jobs: Vec<Job<f32>> = leaves
            .iter_mut()
            .map(|leaf| leaf.job(&program, &per_leaf))
            .collect();
        step(&mut jobs).unwrap();
        kept.push(optimisers_kernels::spare::kept());
    }
    // A few lists of a type may be kept (see `spare::give`), then no more.
    assert!(kept[0] > 0, "a step of 300 leaves keeps its lists");
    assert!(kept[10..].iter().all(|&k| k == kept[10]), "{kept:?}");
}

/// A batch of small leaves steps in one pass: a norm that cannot fail is
/// taken in its leaf's task, one that can (`throw`) before any task runs.
/// After a rule (here `ClipGrad(∞)`, which changes no finite value), a norm
/// needs stages. All three give the same bits, for leaves of every size (the
/// largest are cut into tasks, and then the stages run either way), next to
/// a leaf of another rule with no norm.
fn norms_in_one_pass_or_in_stages<T: optimisers_kernels::Float>() {
    let adam = rule(Kind::Adam, &[0.01, 0.9, 0.999, 1e-8]);
    let (descent, _) = program(Kind::Descent);
    for p in [2.0, 1.0, f64::INFINITY, 3.0] {
        let clipped = |throw: bool, staged: bool| {
            let clip = Step::Reduce(Reduction::clip_norm(0.5, p, throw));
            let first = staged.then(|| rule(Kind::ClipGrad, &[f64::INFINITY]));
            let steps = first.into_iter().chain([clip, adam.clone()]).collect();
            Program::new(steps).unwrap()
        };
        let per_leaf = [0.9, 0.999];
        for n in [1, 1031, 70_001] {
            let run = |program: &Program| {
                let mut leaves: Vec<Leaf<T>> = (0..4).map(|k| Leaf::new(n, 2, k)).collect();
                let mut other = Leaf::<T>::new(n, 0, 9);
                let mut jobs: Vec<Job<T>> = leaves
                    .iter_mut()
                    .map(|l| l.job(program, &per_leaf))
                    .collect();
                jobs.push(other.job(&descent, &[]));
                step(&mut jobs).unwrap();
                drop(jobs);
                leaves.push(other);
                leaves
            };
            let in_tasks = run(&clipped(false, false));
            for (throw, staged) in [(true, false), (false, true), (true, true)] {
                let other_way = run(&clipped(throw, staged));
                for (a, b) in in_tasks.iter().zip(&other_way) {
                    let what = format!("p={p} n={n}, throw={throw}, staged={staged}");
                    assert_same(a, b, &what);
                }
            }
        }
    }
}

#[test]
fn a_norm_has_the_same_bits_in_one_pass_and_in_stages() {
    norms_in_one_pass_or_in_stages::<f32>();
    norms_in_one_pass_or_in_stages::<f64>();
}

/// Leaves of one program whose per-leaf scalars have the same bits share one
/// bound plan in a call (see `Batch::new`); the others bind their own. Each
/// leaf of a mixed call steps as it does alone: powers that differ, differ
/// only in sign (`-0` against `0`), or come back after another leaf's.
fn shared_plans_step_each_leaf_as_alone<T: optimisers_kernels::Float>() {
    let (adam, powers) = program(Kind::Adam);
    let later = [powers[0] * 0.9, powers[1] * 0.999];
    let (accum, _) = program(Kind::AccumGrad);
    let scalars: Vec<(&Program, Vec<f64>)> = vec![
        (&adam, powers.clone()),
        (&adam, powers.clone()),
        (&adam, later.to_vec()),
        (&adam, powers.clone()),
        (&accum, vec![0.0]),
        (&accum, vec![-0.0]),
        (&accum, vec![1.0]),
    ];
    for n in [1, 1031] {
        let fresh = |k: usize| Leaf::<T>::new(n, scalars[k].0.states(), k as u64 * 10);
        let mut together: Vec<Leaf<T>> = (0..scalars.len()).map(fresh).collect();
        let mut jobs: Vec<Job<T>> = together
            .iter_mut()
            .zip(&scalars)
            .map(|(leaf, (program, per_leaf))| leaf.job(program, per_leaf))
            .collect();
        step(&mut jobs).unwrap();
        drop(jobs);
        for (k, (program, per_leaf)) in scalars.iter().enumerate() {
            let mut alone = fresh(k);
            step(&mut [alone.job(program, per_leaf)]).unwrap();
            assert_same(&together[k], &alone, &format!("leaf {k} of {n}"));
        }
    }
}

#[test]
fn leaves_sharing_a_plan_step_as_alone() {
    shared_plans_step_each_leaf_as_alone::<f32>();
    shared_plans_step_each_leaf_as_alone::<f64>();
}
