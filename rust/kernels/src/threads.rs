//! The thread pool the kernels run on: our own rayon pool, not the global one,
//! so that a `fork()`ed child (Python's multiprocessing) builds a fresh pool
//! instead of waiting forever on threads that did not survive the fork.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::KernelError;

/// The environment variable read for the default thread count.
pub const THREADS_ENV: &str = "OPTIMISERS_NUM_THREADS";

/// 0 until first asked; then the thread count in use.
static THREADS: AtomicUsize = AtomicUsize::new(0);

struct Pool {
    pid: u32,
    threads: usize,
    workers: Arc<ThreadPool>,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

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

fn pool() -> Arc<ThreadPool> {
    let mut guard = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    let (pid, threads) = (std::process::id(), num_threads());
    if let Some(p) = guard
        .as_ref()
        .filter(|p| p.pid == pid && p.threads == threads)
    {
        return Arc::clone(&p.workers);
    }
    if let Some(old) = guard.take() {
        if old.pid != pid {
            // In a forked child the old workers do not exist; dropping the pool
            // would talk to them, so leak it instead.
            std::mem::forget(old);
        }
    }
    let pool = Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("optimisers-{i}"))
            .build()
            .expect("cannot start the optimisers thread pool"),
    );
    *guard = Some(Pool {
        pid,
        threads,
        workers: Arc::clone(&pool),
    });
    pool
}

/// Run `f` on the pool (rayon's parallel iterators inside it use the pool).
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}
