//! A job: one leaf's arrays and scalars as a step takes them, and its checks.

use crate::error::KernelError;
use crate::float::Half;
use crate::program::Program;
use crate::shape::Shape;
use crate::tuning::INLINE_STATES;

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

pub(crate) enum Held<'a, T> {
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
    pub(crate) fn check(&self, job: usize) -> Result<(), KernelError> {
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
