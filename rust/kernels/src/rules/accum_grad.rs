//! `AccumGrad(n)`: accumulate the mean of `n` gradients, passing it on (and so
//! updating the parameter) only on every `n`-th step.
//! State: the running sum `acc`; per leaf the counter `1..=n`.

use crate::float::Float;
use crate::rules::Rule;

#[derive(Clone, Copy, Debug)]
pub struct AccumGrad<T> {
    /// n, the number of gradients averaged.
    pub n: T,
    /// This step starts a new accumulation (counter == 1).
    pub first: bool,
    /// This step completes it (counter == n).
    pub last: bool,
}

impl<T: Float> Rule<T, 1> for AccumGrad<T> {
    const HYPER: &'static [&'static str] = &["n"];
    /// The counter.
    const PER_LEAF: usize = 1;
    fn bind(h: &[f64], leaf: &[f64]) -> Self {
        Self {
            n: T::from_f64(h[0]),
            first: leaf[0] == 1.0,
            last: leaf[0] == h[0],
        }
    }
    /// The counter runs `1, 2, …, n, 1, …`; the update passes only at `n`.
    fn advance(h: &[f64], leaf: &mut [f64]) -> bool {
        let last = leaf[0] == h[0];
        leaf[0] = if last { 1.0 } else { leaf[0] + 1.0 };
        last
    }
    #[inline(always)]
    fn update(&self, _x: T, d: T, [acc]: [&mut T; 1]) -> T {
        *acc = if self.first {
            d / self.n
        } else {
            *acc + d / self.n
        };
        // Before the n-th step the plan ends here and the update is dropped (see `program`).
        if self.last {
            *acc
        } else {
            d
        }
    }
}
