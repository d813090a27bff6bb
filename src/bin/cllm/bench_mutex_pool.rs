//! Baseline for the benchmarks: the plain thread pool a programmer would
//! write first — one `Mutex<VecDeque<u64>>` plus a `Condvar`, workers
//! popping one item per lock, an atomic completion counter with its own
//! condvar for waiting.
//!
//! `submit` pushes a whole batch under one lock (the friendliest choice for
//! the baseline); workers still take one item per lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// The callback run on every item: `(item, sphere)`; the pool passes 0.
pub type Callback = Arc<dyn Fn(u64, usize) + Send + Sync>;

/// The queue and its flags, all under one mutex.
struct Queue {
    /// Items not yet taken.
    items: VecDeque<u64>,
    /// Workers should exit once the queue is empty.
    shutdown: bool,
}

/// State shared with the workers.
struct Shared {
    /// The single lock every push and pop goes through.
    queue: Mutex<Queue>,
    /// Signalled when items arrive or on shutdown.
    work: Condvar,
    /// Items submitted but not finished.
    remaining: AtomicU64,
    /// Lock for `done`.
    done_lock: Mutex<()>,
    /// Signalled when `remaining` reaches zero.
    done: Condvar,
    /// Workers blocked in `work.wait` right now.
    parked: AtomicUsize,
    /// The per-item function.
    callback: Callback,
}

/// Locks `m`, ignoring poisoning (the benchmark callbacks never panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fixed set of worker threads fed through one locked deque.
pub struct MutexPool {
    /// State shared with the workers.
    shared: Arc<Shared>,
    /// The worker threads, joined on drop.
    threads: Vec<JoinHandle<()>>,
}

impl MutexPool {
    /// Starts `threads` workers running `callback` on every item.
    pub fn new(threads: usize, callback: Callback) -> MutexPool {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { items: VecDeque::new(), shutdown: false }),
            work: Condvar::new(),
            remaining: AtomicU64::new(0),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            parked: AtomicUsize::new(0),
            callback,
        });
        let threads = (0..threads)
            .map(|_| {
                let sh = Arc::clone(&shared);
                std::thread::spawn(move || worker(&sh))
            })
            .collect();
        MutexPool { shared, threads }
    }

    /// Worker threads of the pool.
    pub fn worker_threads(&self) -> usize {
        self.threads.len()
    }

    /// Workers blocked waiting for work right now.
    pub fn parked_workers(&self) -> usize {
        self.shared.parked.load(Ordering::SeqCst)
    }

    /// Queues a copy of `items` under one lock and wakes the workers.
    pub fn submit(&self, items: &[u64]) {
        if items.is_empty() {
            return;
        }
        self.shared.remaining.fetch_add(items.len() as u64, Ordering::SeqCst);
        let mut q = lock(&self.shared.queue);
        q.items.extend(items.iter().copied());
        let wake_all = items.len() > 1;
        drop(q);
        if wake_all {
            self.shared.work.notify_all();
        } else {
            self.shared.work.notify_one();
        }
    }

    /// Blocks until every submitted item has been processed.
    pub fn wait(&self) {
        let mut g = lock(&self.shared.done_lock);
        while self.shared.remaining.load(Ordering::SeqCst) != 0 {
            g = self.shared.done.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for MutexPool {
    fn drop(&mut self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.work.notify_all();
        for t in self.threads.drain(..) {
            // Callbacks of the benchmarks never panic; nothing to report.
            let _ = t.join();
        }
    }
}

/// A worker: pop one item per lock, run it, count it done.
fn worker(sh: &Shared) {
    loop {
        let item = {
            let mut q = lock(&sh.queue);
            loop {
                if let Some(item) = q.items.pop_front() {
                    break item;
                }
                if q.shutdown {
                    return;
                }
                sh.parked.fetch_add(1, Ordering::SeqCst);
                q = sh.work.wait(q).unwrap_or_else(PoisonError::into_inner);
                sh.parked.fetch_sub(1, Ordering::SeqCst);
            }
        };
        (sh.callback)(item, 0);
        if sh.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _g = lock(&sh.done_lock);
            sh.done.notify_all();
        }
    }
}
