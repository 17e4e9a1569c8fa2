//! The threads the kernels run on: [`for_each`] runs tasks on the calling
//! thread and `num_threads() - 1` helper threads, which after a job (or a
//! [`wake`]) spin for [`SPIN`] before they sleep. An optimiser step comes back
//! within microseconds in a training loop, and waking a sleeping thread (and
//! then the caller, as a pool that the caller only waits on must) costs tens
//! of microseconds on a virtual machine, more than a whole step in cache.
//!
//! The helpers are rebuilt when the thread count changes, and in a `fork()`ed
//! child (Python's multiprocessing), which would otherwise wait forever on
//! threads that did not survive the fork.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, TryLockError};
use std::time::Instant;

use crate::error::KernelError;

/// The environment variable read for the default thread count.
pub const THREADS_ENV: &str = "OPTIMISERS_NUM_THREADS";

/// 0 until first asked; then the thread count in use.
static THREADS: AtomicUsize = AtomicUsize::new(0);

fn default_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

#[must_use]
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = default_threads();
            THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

pub fn set_num_threads(n: usize) -> Result<(), KernelError> {
    if n == 0 {
        return Err(KernelError::Program(
            "the number of threads must be at least 1".into(),
        ));
    }
    THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

// ---------------------------------------------------------------------------
// The spinning pool behind `for_each`.

pub use crate::tuning::SPIN;

/// One `for_each` call, on the caller's stack; helpers reach it only between
/// `Shared::inside` going up and down (see `Shared::join`). Items are dealt
/// into one contiguous range per seat (the caller is seat 0, helper `k` seat
/// `k`): each thread takes the items of its own range first, then helps with
/// the others'. So a thread that is on time works on the same items at every
/// step of a loop, and finds their data still in its own core's cache (moving
/// a 7,000-element MLP's arrays between cores cost more than stepping it); a
/// late thread's items are taken by the others.
struct Work {
    /// The next unclaimed item of each seat's range.
    cursors: Box<[Cursor]>,
    len: usize,
    /// `f(i)` for item `i`; its lifetime is erased (see `for_each`).
    call: *const (dyn Fn(usize) + Sync),
    panicked: AtomicBool,
}

/// A seat's cursor on a cache-line pair of its own: seats claim items
/// concurrently, and cursors sharing a line would bounce it between cores at
/// every claim (thousands per step on a model of many small leaves).
#[repr(align(128))]
struct Cursor(AtomicUsize);

struct Shared {
    /// The caller and the helpers.
    seats: usize,
    /// The current job, or null between jobs.
    work: AtomicPtr<Work>,
    /// Bumped for every job, so that idle helpers notice it.
    generation: AtomicU64,
    /// Helpers between looking at `work` and being done with it.
    inside: AtomicUsize,
    /// Bumped by `wake`: helpers spin afresh, or wake up.
    nudges: AtomicU64,
    /// Helpers asleep (or about to be) on `bell`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    bell: Condvar,
    stop: AtomicBool,
}

struct Helpers {
    pid: u32,
    threads: usize,
    shared: Arc<Shared>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

static HELPERS: Mutex<Option<Helpers>> = Mutex::new(None);

/// Held by the `for_each` the helpers serve: they serve one job at a time. A
/// `for_each` that finds it taken (inside another one's task, or on another
/// thread meanwhile) runs its items on its own thread.
static CALLER: Mutex<()> = Mutex::new(());

impl Shared {
    fn help(&self, seat: usize) {
        let mut seen = self.generation.load(Ordering::Acquire);
        let mut nudged = self.nudges.load(Ordering::Acquire);
        let mut idle_since = Instant::now();
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let generation = self.generation.load(Ordering::Acquire);
            if generation != seen {
                seen = generation;
                self.join(seat);
                idle_since = Instant::now();
                continue;
            }
            let nudges = self.nudges.load(Ordering::Acquire);
            if nudges != nudged {
                // Work is on its way (see `wake`): spin afresh.
                nudged = nudges;
                idle_since = Instant::now();
            }
            if idle_since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.sleeping.fetch_add(1, Ordering::SeqCst);
            let _guard = self
                .bell
                .wait_while(guard, |()| {
                    self.generation.load(Ordering::SeqCst) == seen
                        && self.nudges.load(Ordering::SeqCst) == nudged
                        && !self.stop.load(Ordering::SeqCst)
                })
                .unwrap_or_else(PoisonError::into_inner);
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
            nudged = self.nudges.load(Ordering::Acquire);
            idle_since = Instant::now();
        }
    }

    /// Wake the helpers that sleep.
    fn rouse(&self) {
        if self.sleeping.load(Ordering::SeqCst) > 0 {
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.bell.notify_all();
        }
    }

    /// Take items of the current job, if there is one, until none are left.
    fn join(&self, seat: usize) {
        self.inside.fetch_add(1, Ordering::SeqCst);
        let work = self.work.load(Ordering::SeqCst);
        if !work.is_null() {
            // SAFETY: `work` was published by `for_each`, which does not return
            // (and so keeps `Work` alive) until `inside` is back to zero after
            // it has cleared `work`; we raised `inside` before loading it, and
            // both orders are SeqCst, so the caller waits for us.
            let work = unsafe { &*work };
            work.drain(seat);
        }
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Work {
    fn new(len: usize, seats: usize, call: *const (dyn Fn(usize) + Sync)) -> Work {
        Work {
            cursors: (0..seats)
                .map(|s| Cursor(AtomicUsize::new(s * len / seats)))
                .collect(),
            len,
            call,
            panicked: AtomicBool::new(false),
        }
    }

    /// Claim and run items until none are left, from `seat`'s range first.
    fn drain(&self, seat: usize) {
        let seats = self.cursors.len();
        for s in (seat..seats).chain(0..seat) {
            let end = (s + 1) * self.len / seats;
            loop {
                let i = self.cursors[s].0.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                // SAFETY: `call` points to the closure of the `for_each` that
                // owns this `Work`, alive for as long as the `Work` is (see `join`).
                let call = unsafe { &*self.call };
                if catch_unwind(AssertUnwindSafe(|| call(i))).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

fn helpers() -> Option<Arc<Shared>> {
    let mut guard = HELPERS.lock().unwrap_or_else(PoisonError::into_inner);
    let (pid, threads) = (std::process::id(), num_threads());
    if let Some(h) = guard
        .as_ref()
        .filter(|h| h.pid == pid && h.threads == threads)
    {
        return Some(Arc::clone(&h.shared));
    }
    if let Some(old) = guard.take() {
        if old.pid == pid {
            old.shared.stop.store(true, Ordering::SeqCst);
            drop(
                old.shared
                    .lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            old.shared.bell.notify_all();
            for handle in old.handles {
                let _ = handle.join();
            }
        } else {
            // In a forked child the old helpers do not exist.
            std::mem::forget(old);
        }
    }
    if threads < 2 {
        return None;
    }
    let shared = Arc::new(Shared {
        seats: threads,
        work: AtomicPtr::new(std::ptr::null_mut()),
        generation: AtomicU64::new(0),
        inside: AtomicUsize::new(0),
        nudges: AtomicU64::new(0),
        sleeping: AtomicUsize::new(0),
        lock: Mutex::new(()),
        bell: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    let handles = (1..threads)
        .map(|i| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("optimisers-helper-{i}"))
                .spawn(move || shared.help(i))
                .expect("cannot start an optimisers helper thread")
        })
        .collect();
    *guard = Some(Helpers {
        pid,
        threads,
        shared: Arc::clone(&shared),
        handles,
    });
    Some(shared)
}

/// Have the helpers ready for a `for_each` that comes soon: a sleeping helper
/// is woken now and a spinning one spins afresh. A caller that prepares a job
/// for longer than [`SPIN`] (a step of thousands of leaves) calls this first,
/// so that the helpers' wake-up (tens of microseconds on a virtual machine)
/// overlaps the preparation instead of following it.
pub fn wake() {
    if let Some(shared) = helpers() {
        shared.nudges.fetch_add(1, Ordering::SeqCst);
        shared.rouse();
    }
}

/// Call `f` on every item, in parallel: the calling thread and the helpers
/// take items in turn until none are left. Which thread takes which item is
/// not fixed, so `f` must give the same result on any of them. A panic in `f`
/// on a helper is re-raised here once every item is done.
pub fn for_each<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync) {
    if items.len() < 2 || num_threads() < 2 {
        items.iter_mut().for_each(f);
        return;
    }
    // `CALLER` first: `helpers` rebuilds the pool when the thread count has
    // changed, and joins the old helpers, so it must not run inside a task
    // (on a helper, it would join itself).
    let _serving = match CALLER.try_lock() {
        Ok(guard) => guard,
        // A panic re-raised by an earlier call poisoned it; it guards no data.
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            items.iter_mut().for_each(f);
            return;
        }
    };
    let Some(shared) = helpers() else {
        items.iter_mut().for_each(f);
        return;
    };
    let base = SendPtr(items.as_mut_ptr());
    let call = move |i: usize| {
        // SAFETY: every index below `len` is in one seat's range, whose
        // cursor only counts up, so it is handed out once: this is the only
        // reference to item `i`, which lives in `items`, borrowed mutably for
        // the whole call.
        f(unsafe { &mut *base.get().add(i) });
    };
    let call: &(dyn Fn(usize) + Sync) = &call;
    // SAFETY: only the lifetime is erased. Helpers reach `call` through `work`
    // alone, and this function does not return before `work` is cleared and
    // every helper that may have loaded it has left (`inside` is zero).
    let call: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(call) };
    let work = Work::new(items.len(), shared.seats, call);
    shared
        .work
        .store(std::ptr::addr_of!(work).cast_mut(), Ordering::SeqCst);
    shared.generation.fetch_add(1, Ordering::SeqCst);
    shared.rouse();
    work.drain(0);
    shared.work.store(std::ptr::null_mut(), Ordering::SeqCst);
    while shared.inside.load(Ordering::SeqCst) > 0 {
        std::hint::spin_loop();
    }
    assert!(
        !work.panicked.load(Ordering::Relaxed),
        "a kernel task panicked"
    );
}

struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: the pointer is only dereferenced at distinct indices (see `for_each`),
// and the items are `Send`.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above: shared, it only hands out disjoint items.
unsafe impl<T: Send> Sync for SendPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_taken_once() {
        for threads in [2, 3] {
            set_num_threads(threads).unwrap();
            for len in [0, 1, 2, 3, 1000] {
                let mut items = vec![0u32; len];
                for _ in 0..50 {
                    for_each(&mut items, |x| *x += 1);
                }
                assert!(
                    items.iter().all(|&x| x == 50),
                    "{len} items, {threads} threads"
                );
            }
        }
    }

    /// A thread takes its own seat's range first, then the others' in turn:
    /// alone, seat 1 of 3 runs items 3..6, then 6..10, then 0..3.
    #[test]
    fn a_seat_takes_its_own_range_first() {
        static ORDER: Mutex<Vec<usize>> = Mutex::new(Vec::new());
        let call: &'static (dyn Fn(usize) + Sync) =
            Box::leak(Box::new(|i| ORDER.lock().unwrap().push(i)));
        Work::new(10, 3, call).drain(1);
        let order = ORDER.lock().unwrap().clone();
        assert_eq!(order, [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]);
    }

    /// Whether a job of slow items, run after `before`, is served by the
    /// helper too. Other tests share the pool, and a job that finds it busy
    /// runs on its caller's thread alone: it tries a few times.
    fn helper_serves_after(before: impl Fn()) -> bool {
        set_num_threads(2).unwrap();
        (0..20).any(|_| {
            before();
            let mut ran_on = vec![None; 8];
            for_each(&mut ran_on, |t| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                *t = Some(std::thread::current().id());
            });
            ran_on.iter().any(|t| *t != ran_on[0])
        })
    }

    /// A `wake` with no job after it leaves the helper to sleep again, and a
    /// job then still wakes it; a `wake` just before a job readies it. No
    /// wake-up is lost either way.
    #[test]
    fn the_helper_serves_jobs_after_wakes() {
        assert!(helper_serves_after(|| {
            wake();
            std::thread::sleep(SPIN * 5);
        }));
        assert!(helper_serves_after(|| {
            std::thread::sleep(SPIN * 5);
            wake();
        }));
    }

    #[test]
    fn a_for_each_inside_another_runs_on_its_thread() {
        set_num_threads(2).unwrap();
        let mut outer: Vec<Vec<u64>> = (0..8).map(|i| vec![i; 100]).collect();
        for_each(&mut outer, |inner| for_each(inner, |x| *x *= 2));
        for (i, inner) in outer.iter().enumerate() {
            assert!(inner.iter().all(|&x| x == 2 * i as u64));
        }
    }

    /// A `for_each` inside a helper's task, after the thread count changed
    /// (another thread set it): it must not rebuild the pool, which would
    /// have the helper join itself (a panic).
    #[test]
    fn a_for_each_on_a_helper_keeps_the_pool() {
        let on_helper = || {
            let me = std::thread::current();
            me.name()
                .is_some_and(|n| n.starts_with("optimisers-helper"))
        };
        let mut served = false;
        for _ in 0..20 {
            set_num_threads(2).unwrap();
            let mut outer: Vec<(bool, Vec<u64>)> = (0..4).map(|i| (false, vec![i; 10])).collect();
            for_each(&mut outer, |(helped, inner)| {
                std::thread::sleep(std::time::Duration::from_millis(1));
                if on_helper() {
                    *helped = true;
                    set_num_threads(3).unwrap();
                    for_each(inner, |x| *x += 1);
                }
            });
            for (i, (helped, inner)) in outer.iter().enumerate() {
                let want = i as u64 + u64::from(*helped);
                assert!(inner.iter().all(|&x| x == want));
            }
            served |= outer.iter().any(|(helped, _)| *helped);
        }
        set_num_threads(2).unwrap();
        assert!(served, "the helper never took a task");
    }

    #[test]
    #[should_panic(expected = "panicked")]
    fn a_panicking_task_panics_the_caller() {
        set_num_threads(2).unwrap();
        let mut items: Vec<usize> = (0..64).collect();
        for_each(&mut items, |x| assert!(*x != 40, "task 40 panicked"));
    }
}
