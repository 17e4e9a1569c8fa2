//! Lists that every step builds and drops again (its jobs, tasks, plans),
//! kept from one step to the next on the thread that runs the steps.
//!
//! A step of thousands of leaves needs a few hundred KiB of such lists. Freshly
//! allocated each time, glibc hands blocks that large back to the kernel (as
//! `mmap`s, or by trimming the heap) and the next step faults them in and has
//! them zeroed again: 4,000 one-element leaves of Adam took 2.0-2.6 ms a step
//! through `update_`, and 1.2 ms with glibc told to keep its memory. What is
//! kept is the capacity of the largest step each thread has run.
//!
//! The lists hold borrowed slices, so the kept ones are stored with `'static`
//! lifetimes and [`recast`] moves an emptied allocation between the two.

use std::any::Any;
use std::cell::RefCell;

thread_local! {
    static SPARE: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

use crate::tuning::{SPARE_KEEP_MIN as KEEP_MIN, SPARE_PER_TYPE as PER_TYPE};

/// An empty list of `A` with room for `len` items: for a long list, the
/// allocation of the last one kept as `Kept` (`A` with `'static` lifetimes)
/// on this thread, if there is one.
pub fn take<Kept: 'static, A>(len: usize) -> Vec<A> {
    if len < KEEP_MIN {
        return Vec::with_capacity(len);
    }
    let kept = SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        let i = spare.iter().position(|kept| kept.is::<Vec<Kept>>())?;
        spare.swap_remove(i).downcast::<Vec<Kept>>().ok()
    });
    let mut list = kept.map_or_else(Vec::new, |kept| recast(*kept));
    list.reserve(len);
    list
}

/// Keep a long `list`'s allocation, emptied, as a `Kept` list (`A` with
/// `'static` lifetimes) for the next [`take`] on this thread. At most
/// `PER_TYPE` lists of a type are kept, the longest: a list can come back
/// longer than it was taken (a few leaves cut into hundreds of tasks), and one
/// given each step but taken afresh, because it was asked for short, grew the
/// store without end (50 KiB a step on one array of 2^25, and each `take`
/// slower).
pub fn give<Kept: 'static, A>(list: Vec<A>) {
    if list.capacity() < KEEP_MIN {
        return;
    }
    let list: Vec<Kept> = recast(list);
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        let same = spare.iter().filter(|kept| kept.is::<Vec<Kept>>()).count();
        if same < PER_TYPE {
            spare.push(Box::new(list));
        } else if let Some(shortest) = spare
            .iter_mut()
            .filter_map(|kept| kept.downcast_mut::<Vec<Kept>>())
            .min_by_key(|kept| kept.capacity())
            .filter(|kept| kept.capacity() < list.capacity())
        {
            *shortest = list;
        }
    });
}

/// How many lists this thread keeps (at most `PER_TYPE` of a type): for tests.
#[must_use]
pub fn kept() -> usize {
    SPARE.with(|spare| spare.borrow().len())
}

/// `list` emptied, as a list of `B`: the same allocation when `A` and `B` have
/// the same layout (the same type with other lifetimes), which the standard
/// library's in-place `collect` reuses; else a new empty list.
pub fn recast<A, B>(mut list: Vec<A>) -> Vec<B> {
    list.clear();
    list.into_iter()
        .map(|_| unreachable!("the list is empty"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_comes_back_with_its_allocation() {
        type Kept = &'static [f32];
        let values = vec![1.0f32; 4];
        let mut list: Vec<&[f32]> = take::<Kept, _>(1000);
        let (at, capacity) = (list.as_ptr(), list.capacity());
        assert!(capacity >= 1000);
        list.push(&values);
        give::<Kept, _>(list);
        let again: Vec<&[f32]> = take::<Kept, _>(1000);
        assert!(again.is_empty());
        assert_eq!((again.as_ptr(), again.capacity()), (at, capacity));
        // Another type does not get it, nor does a second take.
        assert_eq!(
            take::<&'static [f64], &[f64]>(KEEP_MIN).capacity(),
            KEEP_MIN
        );
        assert_eq!(take::<Kept, &[f32]>(KEEP_MIN).capacity(), KEEP_MIN);
        // A short list is not kept.
        give::<Kept, _>(Vec::<&[f32]>::with_capacity(10));
        assert_eq!(take::<Kept, &[f32]>(KEEP_MIN).capacity(), KEEP_MIN);
    }

    #[test]
    fn a_few_lists_of_a_type_are_kept_the_longest() {
        type Kept = &'static [u8];
        let before = kept();
        for k in 1..=3 * PER_TYPE {
            give::<Kept, &[u8]>(Vec::with_capacity(KEEP_MIN * k));
        }
        assert_eq!(kept(), before + PER_TYPE);
        let longest = (0..PER_TYPE).map(|_| take::<Kept, &[u8]>(KEEP_MIN).capacity());
        let mut longest: Vec<usize> = longest.collect();
        longest.sort_unstable();
        let want: Vec<usize> = (2 * PER_TYPE + 1..=3 * PER_TYPE)
            .map(|k| KEEP_MIN * k)
            .collect();
        assert_eq!(longest, want);
        assert_eq!(kept(), before);
    }
}
