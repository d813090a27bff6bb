//! The running scheduler: a bounded set of worker threads executing the
//! work queued on logical spheres.

use super::barrier::TimedBarrier;
use super::bufpool::BufPool;
use super::hierarchy::{Hierarchy, MAX_SPHERES};
use super::mailbox::{Mailbox, Message, MessageKind, Priority};
use super::queue::{Chunk, Items, WorkQueue, MAX_PIECE};
use super::stats::{SphereCounters, SphereState, SphereStats, SystemSummary};
use crate::error::{invalid, Error, Result};
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The per-item work function: `(item, sphere_id)`.
pub type WorkFn = Arc<dyn Fn(u64, usize) + Send + Sync>;

/// Chunks one distribute call makes per worker: enough for stealing to
/// balance, few enough that queueing costs nothing per item.
const CHUNKS_PER_WORKER: usize = 16;
/// Work a worker takes from a queue at once, in nanoseconds of measured
/// item time: long enough to amortise a queue lock, short enough that
/// expensive items stay within reach of idle workers.
const TARGET_PIECE_NS: f64 = 50_000.0;
/// Rounds of exponential spinning (63 pause instructions, a microsecond or
/// two) before an idle worker parks: enough to catch work that follows at
/// once, short enough not to keep a shared CPU from the producer.
const SPIN_ROUNDS: u32 = 6;
/// Most items one call may queue (and may be pending at once), so that
/// counts stay exact in an `int64_t`.
const MAX_PENDING: u64 = i64::MAX as u64;
/// Hard ceiling on worker threads, a guard against absurd requests.
pub const MAX_THREADS: usize = 1024;
/// Default mailbox capacity per sphere.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 256;

/// How to build a [`SphereSystem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SphereOptions {
    /// Shape of the tree.
    pub shape: Shape,
    /// Worker threads; 0 = the CPUs this process may use.
    pub threads: usize,
    /// f32 elements in each sphere's reduction buffer (0 = none).
    pub buffer_len: usize,
    /// Messages each mailbox holds before rejecting.
    pub mailbox_capacity: usize,
    /// Pin worker i to the i-th usable CPU (modulo their count).
    pub pin_threads: bool,
}

/// The shape of the sphere tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Full tree of 1..=4 levels (1, 13, 157 or 1885 spheres).
    Levels(usize),
    /// First n spheres breadth-first (1..=1885): a partial last level.
    Spheres(usize),
}

impl Default for SphereOptions {
    fn default() -> Self {
        SphereOptions {
            shape: Shape::Levels(2),
            threads: 0,
            buffer_len: 0,
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            pin_threads: false,
        }
    }
}

/// Runtime state of one sphere.
pub(crate) struct Sphere {
    pub(crate) queue: WorkQueue,
    pub(crate) counters: SphereCounters,
    /// Pieces of this sphere's work running now (several workers may run
    /// work reported on one sphere, e.g. a shared home).
    pub(crate) running: AtomicUsize,
    /// Workers of this home sphere waiting at a barrier.
    pub(crate) waiting: AtomicUsize,
    pub(crate) mailbox: Mailbox,
    pub(crate) buffer: Mutex<Vec<f32>>,
}

/// A worker's parking place: a flag saying it is (about to be) parked and
/// a wake-up token that survives an unpark arriving before the park.
#[derive(Default)]
struct WorkerSlot {
    sleeping: AtomicBool,
    parker: crate::sys::Parker,
    /// CPU the worker last parked on (usize::MAX before the first nap).
    last_cpu: AtomicUsize,
}

/// Where the items of a distribute call come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// A caller array, copied.
    Copy(&'a [u64]),
    /// `first + i` for i in 0..n.
    Range(u64),
}

/// Static plan of one worker, fixed at creation.
struct WorkerPlan {
    /// Sphere whose id the worker reports for stolen work.
    home: usize,
    /// Spheres this worker drains FIFO, ascending.
    owned: Vec<usize>,
    /// Other spheres, nearest in the tree first: where it steals.
    steal_order: Vec<usize>,
}

static NEXT_SYSTEM_ID: AtomicUsize = AtomicUsize::new(1);

/// Tells which worker of one system the calling thread is
/// (see [`SphereSystem::worker_probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerProbe {
    system: usize,
}

impl WorkerProbe {
    /// The calling thread's worker index in the system, if it is one.
    pub fn current(&self) -> Option<usize> {
        let (sys, w) = CURRENT_WORKER.with(Cell::get);
        (sys == self.system).then_some(w)
    }
}

thread_local! {
    /// (system id, worker index) of the worker running on this thread.
    static CURRENT_WORKER: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// State shared between the handle and its worker threads.
struct Shared {
    id: usize,
    hierarchy: Hierarchy,
    spheres: Box<[CachePadded<Sphere>]>,
    owner: Vec<usize>,
    plans: Vec<WorkerPlan>,
    /// Leaves interleaved across the 12 groups: distribution order.
    spread: Vec<usize>,
    spread_cursor: AtomicUsize,
    owned_queued: Box<[CachePadded<AtomicUsize>]>,
    queued_chunks: CachePadded<AtomicUsize>,
    pending_items: CachePadded<AtomicU64>,
    work_fn: Mutex<Option<WorkFn>>,
    /// Workers parked now (a fast check before looking for one to wake).
    sleepers: AtomicUsize,
    /// One parking slot per worker, so a push can wake the one worker
    /// that may take the work (the owner of a sphere closed to thieves).
    slots: Box<[CachePadded<WorkerSlot>]>,
    wake_cursor: AtomicUsize,
    /// System-wide phase from which sphere states are derived.
    lifecycle: AtomicUsize,
    shutdown: AtomicBool,
    /// Set when a failed start tears down the workers it had started: they
    /// exit at once and leave the queues as they are.
    abort: AtomicBool,
    /// Set during a stop once no item was queued or running: from then on
    /// every worker leaves, and work queued later waits for the next start.
    drained: AtomicBool,
    /// Whether workers run. Written only under the control lock; read
    /// without it (callbacks during a stop, `wait`, `is_running`).
    running: AtomicBool,
    done_lock: Mutex<()>,
    done: Condvar,
    epoch_barrier: TimedBarrier,
    level_barriers: Vec<Option<TimedBarrier>>,
    buffer_len: usize,
    pin_threads: bool,
    failed_items: AtomicU64,
    /// Recycled memory for copies of distributed arrays.
    buffers: Arc<BufPool>,
    /// Memory this process may use, read once at creation (bounds enqueue).
    memory_limit: u64,
    /// Closed until every worker of a start has been spawned, so that a
    /// start that fails half-way runs nothing.
    start_gate: Mutex<bool>,
    gate_opened: Condvar,
}

/// What only start and stop touch, under one lock so they never overlap.
struct Control {
    threads: Vec<JoinHandle<()>>,
}

/// A kissing-spheres scheduler: a tree of logical spheres run by a bounded
/// pool of worker threads with work stealing. All methods take `&self` and
/// may be called from any thread.
pub struct SphereSystem {
    shared: Arc<Shared>,
    control: Mutex<Control>,
}

impl SphereSystem {
    /// Builds the tree, its queues, mailboxes and buffers. No thread runs
    /// until [`SphereSystem::start`].
    pub fn new(options: &SphereOptions) -> Result<SphereSystem> {
        let hierarchy = match options.shape {
            Shape::Levels(l) => Hierarchy::full(l)?,
            Shape::Spheres(n) => Hierarchy::partial(n)?,
        };
        let threads = if options.threads == 0 { crate::sys::usable_cpus() } else { options.threads };
        if threads > MAX_THREADS {
            return Err(invalid!("num_threads must be at most {MAX_THREADS}, got {threads}"));
        }
        if options.mailbox_capacity == 0 {
            return Err(invalid!("mailbox capacity must be at least 1"));
        }
        let buffer_bytes = (options.buffer_len as u128) * (hierarchy.len() as u128) * 4;
        if buffer_bytes > (isize::MAX as u128) / 2 {
            return Err(invalid!("reduction buffers of {} floats per sphere are too large", options.buffer_len));
        }
        let memory_limit = crate::sys::memory_limit_bytes();
        if buffer_bytes > memory_limit as u128 {
            return Err(Error::System(format!(
                "reduction buffers need {buffer_bytes} bytes ({} spheres x {} floats); this process may use {memory_limit}",
                hierarchy.len(),
                options.buffer_len
            )));
        }
        // Zeroed allocations are lazily mapped: untouched buffers cost no RAM.
        let spheres: Box<[CachePadded<Sphere>]> = (0..hierarchy.len())
            .map(|_| {
                CachePadded::new(Sphere {
                    queue: WorkQueue::default(),
                    counters: SphereCounters::default(),
                    running: AtomicUsize::new(0),
                    waiting: AtomicUsize::new(0),
                    mailbox: Mailbox::new(options.mailbox_capacity),
                    buffer: Mutex::new(vec![0.0; options.buffer_len]),
                })
            })
            .collect();
        let (owner, plans) = plan_workers(&hierarchy, threads);
        let spread = spread_order(&hierarchy);
        let level_barriers = (0..hierarchy.levels())
            .map(|level| {
                let parties = plans.iter().filter(|p| hierarchy.nodes()[p.home].level == level).count();
                (parties > 0).then(|| TimedBarrier::new(parties))
            })
            .collect();
        let shared = Shared {
            id: NEXT_SYSTEM_ID.fetch_add(1, Ordering::Relaxed),
            spheres,
            owner,
            owned_queued: (0..threads).map(|_| CachePadded::new(AtomicUsize::new(0))).collect(),
            plans,
            spread,
            spread_cursor: AtomicUsize::new(0),
            queued_chunks: CachePadded::new(AtomicUsize::new(0)),
            pending_items: CachePadded::new(AtomicU64::new(0)),
            work_fn: Mutex::new(None),
            sleepers: AtomicUsize::new(0),
            slots: (0..threads)
                .map(|_| CachePadded::new(WorkerSlot { last_cpu: AtomicUsize::new(usize::MAX), ..Default::default() }))
                .collect(),
            wake_cursor: AtomicUsize::new(0),
            lifecycle: AtomicUsize::new(SphereState::Initializing as usize),
            shutdown: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            running: AtomicBool::new(false),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            epoch_barrier: TimedBarrier::new(threads),
            level_barriers,
            buffer_len: options.buffer_len,
            pin_threads: options.pin_threads,
            failed_items: AtomicU64::new(0),
            buffers: Arc::new(BufPool::default()),
            memory_limit,
            start_gate: Mutex::new(false),
            gate_opened: Condvar::new(),
            hierarchy,
        };
        Ok(SphereSystem { shared: Arc::new(shared), control: Mutex::new(Control { threads: Vec::new() }) })
    }

    /// A full tree of `levels` levels run by the default thread count.
    pub fn with_levels(levels: usize) -> Result<SphereSystem> {
        SphereSystem::new(&SphereOptions { shape: Shape::Levels(levels), ..Default::default() })
    }

    /// The dynamic layout for `threads` threads (0 = usable CPUs − 1, at
    /// least 1): that many worker threads and as many spheres (at most
    /// 1885), the last level partial.
    pub fn dynamic(threads: usize) -> Result<SphereSystem> {
        let threads = if threads == 0 { crate::sys::usable_cpus().saturating_sub(1).max(1) } else { threads };
        // `new` checks the thread bound.
        SphereSystem::new(&SphereOptions {
            shape: Shape::Spheres(threads.min(MAX_SPHERES)),
            threads,
            ..Default::default()
        })
    }

    /// The tree.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.shared.hierarchy
    }

    /// Worker threads this system runs while started.
    pub fn worker_threads(&self) -> usize {
        self.shared.plans.len()
    }

    /// The sphere worker `worker` reports for stolen work.
    pub fn worker_home(&self, worker: usize) -> Option<usize> {
        self.shared.plans.get(worker).map(|p| p.home)
    }

    /// The worker that drains sphere `sphere`'s queue first.
    pub fn sphere_owner(&self, sphere: usize) -> Option<usize> {
        self.shared.owner.get(sphere).copied()
    }

    /// Workers parked right now (waiting for work, not spinning).
    pub fn parked_workers(&self) -> usize {
        self.shared.sleepers.load(Ordering::SeqCst)
    }

    /// Whether worker threads are running (false again once `stop` has
    /// joined them). Never blocks, also not during a stop.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Refuses calls that need the control lock from this system's own
    /// workers: a stop in progress holds that lock while joining them.
    fn refuse_from_worker(&self, what: &str) -> Result<()> {
        match self.current_worker() {
            Some(_) => Err(Error::WrongState(format!("{what} called from a worker of this system"))),
            None => Ok(()),
        }
    }

    /// Sets the function called once per item; only while stopped.
    /// Without one, items are only counted.
    pub fn set_work_fn(&self, f: Option<WorkFn>) -> Result<()> {
        self.refuse_from_worker("set_work_fn")?;
        // Held so that a start cannot begin between the check and the store.
        let _ctl = self.control.lock();
        if self.shared.running.load(Ordering::SeqCst) {
            return Err(Error::WrongState("the work callback can only be set while the system is stopped".into()));
        }
        *self.shared.work_fn.lock() = f;
        Ok(())
    }

    /// Starts the worker threads. Work queued while stopped starts running.
    pub fn start(&self) -> Result<()> {
        self.refuse_from_worker("start")?;
        let mut ctl = self.control.lock();
        if self.shared.running.load(Ordering::SeqCst) {
            return Err(Error::WrongState("system is already running".into()));
        }
        let sh = &self.shared;
        sh.shutdown.store(false, Ordering::SeqCst);
        sh.lifecycle.store(SphereState::Ready as usize, Ordering::SeqCst);
        // Only computed when pinning: it reads sysfs.
        let cpus = if sh.pin_threads { crate::sys::CpuTopology::detect().pinning_order() } else { Vec::new() };
        let work_fn = sh.work_fn.lock().clone();
        for w in 0..sh.plans.len() {
            let shared = Arc::clone(sh);
            let f = work_fn.clone();
            let cpu = (!cpus.is_empty()).then(|| cpus[w % cpus.len()]);
            let spawned = std::thread::Builder::new()
                .name(format!("cllm-sphere-{w}"))
                .spawn(move || shared.worker_main(w, f, cpu));
            match spawned {
                Ok(h) => ctl.threads.push(h),
                Err(e) => {
                    // Leave nothing behind: the workers already started exit
                    // at once without running anything, the queues stay
                    // intact for a later start.
                    {
                        let _g = sh.start_gate.lock();
                        sh.abort.store(true, Ordering::SeqCst);
                        sh.gate_opened.notify_all();
                    }
                    Self::shutdown_threads(sh, &mut ctl);
                    sh.abort.store(false, Ordering::SeqCst);
                    sh.lifecycle.store(SphereState::Initializing as usize, Ordering::SeqCst);
                    return Err(Error::System(format!("could not start worker thread {w}: {e}")));
                }
            }
        }
        // Every worker exists: let them begin.
        *sh.start_gate.lock() = true;
        sh.gate_opened.notify_all();
        sh.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn shutdown_threads(sh: &Shared, ctl: &mut Control) {
        sh.shutdown.store(true, Ordering::SeqCst);
        sh.wake_all();
        for h in ctl.threads.drain(..) {
            // A worker never panics (callbacks run under catch_unwind), so
            // a join error cannot carry anything to report.
            let _ = h.join();
        }
        sh.shutdown.store(false, Ordering::SeqCst);
        sh.drained.store(false, Ordering::SeqCst);
        *sh.start_gate.lock() = false;
    }

    /// Stops the workers after they have drained every queued item (work
    /// queued by callbacks during the drain included). Items that other
    /// threads distribute while the stop is in progress either run or stay
    /// queued for the next start ([`SphereSystem::pending`] tells). Fails
    /// when not running or when called from one of this system's workers.
    pub fn stop(&self) -> Result<()> {
        self.refuse_from_worker("stop")?;
        let mut ctl = self.control.lock();
        if !self.shared.running.load(Ordering::SeqCst) {
            return Err(Error::WrongState("system is not running".into()));
        }
        let sh = &self.shared;
        sh.lifecycle.store(SphereState::Terminating as usize, Ordering::SeqCst);
        Self::shutdown_threads(sh, &mut ctl);
        sh.lifecycle.store(SphereState::Terminated as usize, Ordering::SeqCst);
        sh.running.store(false, Ordering::SeqCst);
        // Waiters re-check: work queued after the drain cannot finish now.
        let _g = sh.done_lock.lock();
        sh.done.notify_all();
        Ok(())
    }

    fn current_worker(&self) -> Option<usize> {
        let (sys, w) = CURRENT_WORKER.with(Cell::get);
        (sys == self.shared.id).then_some(w)
    }

    /// The index of the calling thread if it is one of this system's workers.
    pub fn current_worker_index(&self) -> Option<usize> {
        self.current_worker()
    }

    /// A small copyable handle that tells, on any thread, which worker of
    /// this system the thread is; for work functions, which cannot hold
    /// the system that holds them.
    pub fn worker_probe(&self) -> WorkerProbe {
        WorkerProbe { system: self.shared.id }
    }

    /// Queues a copy of `items`, spread over the leaf spheres group by
    /// group. Accepted running or stopped (then it runs on start).
    pub fn distribute(&self, items: &[u64]) -> Result<()> {
        self.spread_chunks(items.len(), Source::Copy(items))
    }

    /// Queues the items `first..first + count` without an array.
    pub fn distribute_range(&self, first: u64, count: u64) -> Result<()> {
        if first.checked_add(count).is_none() {
            return Err(invalid!("range {first} + {count} overflows u64"));
        }
        if count > MAX_PENDING {
            return Err(invalid!("range of {count} items is larger than {MAX_PENDING}"));
        }
        let count = usize::try_from(count).map_err(|_| invalid!("range of {count} items is too large"))?;
        self.spread_chunks(count, Source::Range(first))
    }

    /// Cuts `0..n` into chunks (at most 16 per worker, at most one per
    /// leaf), counts them as pending and queues them on consecutive leaves of
    /// the spread order. Every buffer is reserved before anything is queued,
    /// so running out of memory queues nothing; the copying itself happens
    /// chunk by chunk, so workers start on the first chunk while later ones
    /// are still being copied.
    fn spread_chunks(&self, n: usize, source: Source<'_>) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let sh = &self.shared;
        let pieces = n.min(sh.plans.len() * CHUNKS_PER_WORKER).min(sh.spread.len()).max(1);
        let per = n.div_ceil(pieces);
        let bounds: Vec<(usize, usize)> = (0..n).step_by(per).map(|a| (a, a + per.min(n - a))).collect();
        let mut buffers = Vec::new();
        if let Source::Copy(_) = source {
            for &(a, b) in &bounds {
                buffers.push(if Chunk::needs_buffer(b - a) { Some(sh.buffers.reserve(b - a)?) } else { None });
            }
        }
        sh.add_pending(n as u64)?;
        let first = sh.spread_cursor.fetch_add(bounds.len(), Ordering::Relaxed);
        let mut buffers = buffers.into_iter();
        let mut filled = Vec::with_capacity(bounds.len());
        for (i, &(a, b)) in bounds.iter().enumerate() {
            let chunk = match source {
                Source::Copy(items) => match buffers.next().flatten() {
                    Some(buf) => Chunk::copied(&sh.buffers, buf, &items[a..b]),
                    None => Chunk::inline(&items[a..b]),
                },
                Source::Range(first) => Chunk::new(Items::Range(first), a, b),
            };
            let sphere = sh.spread[(first + i) % sh.spread.len()];
            sh.push_quietly(sphere, chunk);
            // While more chunks are coming, wake only workers on other CPUs:
            // one woken on this CPU would preempt the copying producer.
            if i + 1 < bounds.len() {
                sh.wake_elsewhere(sphere);
            }
            filled.push(sphere);
        }
        // Now every sphere that received work gets its usual wake-up (the
        // owner of a closed one included), this CPU's worker first.
        for sphere in filled {
            sh.wake_for(sphere);
        }
        Ok(())
    }

    /// Queues `items` on sphere `sphere` directly, one queue entry per item
    /// (so that FIFO and newest-first stealing apply item by item).
    pub fn enqueue(&self, sphere: usize, items: &[u64]) -> Result<()> {
        self.check_sphere(sphere)?;
        // One queue entry per item: refuse what could not fit in memory
        // rather than abort half-way.
        let bytes = (items.len() as u128) * (2 * std::mem::size_of::<Chunk>() as u128);
        if bytes > self.shared.memory_limit as u128 / 2 {
            return Err(invalid!("{} single-item entries would not fit in memory; use distribute", items.len()));
        }
        self.shared.add_pending(items.len() as u64)?;
        for &v in items {
            self.shared.push(sphere, Chunk::inline(&[v]));
        }
        Ok(())
    }

    /// Allows or forbids other workers to steal from `sphere`.
    pub fn set_stealing(&self, sphere: usize, enabled: bool) -> Result<()> {
        self.check_sphere(sphere)?;
        let sh = &self.shared;
        sh.spheres[sphere].queue.set_stealing(enabled);
        // Work already queued may have woken a thief that now may not take
        // it (closing), or parked thieves may now take it (opening).
        fence(Ordering::SeqCst);
        if sh.spheres[sphere].queue.chunk_count() > 0 {
            if enabled {
                sh.wake_for(sphere);
            } else {
                sh.wake_worker(sh.owner[sphere]);
            }
        }
        Ok(())
    }

    /// Whether thieves may take from `sphere`.
    pub fn stealing_enabled(&self, sphere: usize) -> Result<bool> {
        self.check_sphere(sphere)?;
        Ok(self.shared.spheres[sphere].queue.stealing_enabled())
    }

    /// Items distributed but not yet processed (queued or running).
    pub fn pending(&self) -> u64 {
        self.shared.pending_items.load(Ordering::SeqCst)
    }

    /// Waits until every distributed item has been processed. Returns
    /// `Ok(true)` when done, `Ok(false)` on timeout (`None` = no limit).
    /// Fails from a worker of this system (it would wait on itself), and
    /// when items are pending while the system is stopped.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        // A worker waiting for all items would wait for its own.
        self.refuse_from_worker("wait")?;
        let sh = &self.shared;
        if sh.pending_items.load(Ordering::SeqCst) == 0 {
            return Ok(true);
        }
        let deadline = deadline_after(timeout);
        let mut g = sh.done_lock.lock();
        while sh.pending_items.load(Ordering::SeqCst) != 0 {
            // `stop` clears `running` after its drain and then notifies, so
            // a stopped system with work left is noticed here, not slept on.
            if !sh.running.load(Ordering::SeqCst) && sh.pending_items.load(Ordering::SeqCst) != 0 {
                return Err(Error::WrongState(format!(
                    "{} items are queued but the system is not running",
                    sh.pending_items.load(Ordering::SeqCst)
                )));
            }
            match deadline {
                Some(d) => {
                    if sh.done.wait_until(&mut g, d).timed_out() {
                        return Ok(sh.pending_items.load(Ordering::SeqCst) == 0);
                    }
                }
                None => sh.done.wait(&mut g),
            }
        }
        Ok(true)
    }

    /// Removes every queued item that has not started; returns how many.
    /// Items already running finish normally.
    pub fn cancel_pending(&self) -> u64 {
        let sh = &self.shared;
        let mut cancelled = 0u64;
        for (id, s) in sh.spheres.iter().enumerate() {
            let (chunks, items) = s.queue.clear();
            if chunks > 0 {
                sh.owned_queued[sh.owner[id]].fetch_sub(chunks, Ordering::AcqRel);
                sh.queued_chunks.fetch_sub(chunks, Ordering::SeqCst);
            }
            cancelled += items as u64;
        }
        sh.finish_items(cancelled);
        cancelled
    }

    fn check_sphere(&self, sphere: usize) -> Result<()> {
        if sphere >= self.shared.hierarchy.len() {
            return Err(invalid!("sphere id {sphere} out of range 0..{}", self.shared.hierarchy.len()));
        }
        Ok(())
    }

    /// State of sphere `sphere`.
    pub fn sphere_state(&self, sphere: usize) -> Result<SphereState> {
        self.check_sphere(sphere)?;
        let s = &self.shared.spheres[sphere];
        if s.waiting.load(Ordering::Relaxed) > 0 {
            return Ok(SphereState::Waiting);
        }
        if s.running.load(Ordering::Relaxed) > 0 {
            return Ok(SphereState::Processing);
        }
        Ok(match SphereState::from_usize(self.shared.lifecycle.load(Ordering::Relaxed)) {
            SphereState::Ready if s.queue.chunk_count() == 0 && s.counters.has_processed() => SphereState::Idle,
            phase => phase,
        })
    }

    /// Items queued on sphere `sphere`.
    pub fn queue_len(&self, sphere: usize) -> Result<usize> {
        self.check_sphere(sphere)?;
        Ok(self.shared.spheres[sphere].queue.item_count())
    }

    /// Counters of sphere `sphere`.
    pub fn sphere_stats(&self, sphere: usize) -> Result<SphereStats> {
        self.check_sphere(sphere)?;
        let s = &self.shared.spheres[sphere];
        Ok(s.counters.snapshot(s.queue.item_count(), s.mailbox.len()))
    }

    /// Totals over all spheres.
    pub fn summary(&self) -> SystemSummary {
        let mut sum = SystemSummary {
            spheres: self.shared.hierarchy.len(),
            levels: self.shared.hierarchy.levels(),
            worker_threads: self.worker_threads(),
            pending_items: self.pending(),
            failed_items: self.shared.failed_items.load(Ordering::Relaxed),
            ..Default::default()
        };
        for id in 0..self.shared.hierarchy.len() {
            let st = self.sphere_stats(id).expect("id in range");
            sum.items_processed += st.items_processed;
            sum.busy_ns += st.busy_ns;
            sum.items_stolen += st.stolen_to;
            sum.messages_sent += st.messages_sent;
        }
        sum
    }

    /// Sends a message from sphere `from` to sphere `to`, which must be its
    /// parent, a child or a sibling. Fails when the mailbox is full.
    pub fn send(&self, kind: MessageKind, priority: Priority, from: usize, to: usize, payload: [u64; 4]) -> Result<()> {
        self.check_sphere(from)?;
        self.check_sphere(to)?;
        if !self.shared.hierarchy.are_neighbours(from, to) {
            return Err(invalid!("sphere {from} may only message its parent, children or siblings, not {to}"));
        }
        let msg = Message { kind, priority, sender: from, receiver: to, sequence: 0, payload };
        self.shared.spheres[to].mailbox.push(msg)?;
        self.shared.spheres[from].counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the most urgent message of `sphere`, waiting up to `timeout`
    /// (`None` = no limit). A timeout is an [`Error::Timeout`].
    pub fn receive(&self, sphere: usize, timeout: Option<Duration>) -> Result<Message> {
        self.check_sphere(sphere)?;
        let s = &self.shared.spheres[sphere];
        let m = s
            .mailbox
            .pop(deadline_after(timeout))
            .ok_or_else(|| Error::Timeout(format!("no message for sphere {sphere} in time")))?;
        s.counters.messages_received.fetch_add(1, Ordering::Relaxed);
        Ok(m)
    }

    /// Takes the most urgent message of `sphere` if one is waiting.
    pub fn try_receive(&self, sphere: usize) -> Result<Option<Message>> {
        self.check_sphere(sphere)?;
        let s = &self.shared.spheres[sphere];
        let m = s.mailbox.try_pop();
        if m.is_some() {
            s.counters.messages_received.fetch_add(1, Ordering::Relaxed);
        }
        Ok(m)
    }

    /// Length of every sphere's reduction buffer.
    pub fn buffer_len(&self) -> usize {
        self.shared.buffer_len
    }

    /// Runs `f` on sphere `sphere`'s reduction buffer under its lock.
    pub fn with_buffer<R>(&self, sphere: usize, f: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
        self.check_sphere(sphere)?;
        Ok(f(&mut self.shared.spheres[sphere].buffer.lock()))
    }

    /// Adds `values` element-wise into sphere `sphere`'s buffer.
    pub fn accumulate(&self, sphere: usize, values: &[f32]) -> Result<()> {
        if values.len() != self.shared.buffer_len {
            return Err(invalid!("{} values given for buffers of {}", values.len(), self.shared.buffer_len));
        }
        self.with_buffer(sphere, |b| b.iter_mut().zip(values).for_each(|(d, s)| *d += s))
    }

    /// Sums every sphere's buffer children → parent → root in a fixed
    /// order (children ascending, deepest level first), writes the root's
    /// total into `out` and zeroes every buffer. The result depends only on
    /// the buffers' contents, never on thread timing.
    pub fn reduce(&self, out: &mut [f32]) -> Result<()> {
        let sh = &self.shared;
        if out.len() != sh.buffer_len {
            return Err(invalid!("output has {} floats, buffers have {}", out.len(), sh.buffer_len));
        }
        let phase = sh.lifecycle.swap(SphereState::Accumulating as usize, Ordering::SeqCst);
        for node in sh.hierarchy.nodes().iter().rev() {
            let Some(parent) = node.parent else { continue };
            // Children have larger ids than parents, so walking ids downwards
            // finishes every subtree before its parent is added upwards.
            let mut child = sh.spheres[node.id].buffer.lock();
            let mut dst = sh.spheres[parent].buffer.lock();
            dst.iter_mut().zip(child.iter()).for_each(|(d, s)| *d += s);
            child.iter_mut().for_each(|v| *v = 0.0);
        }
        let mut root = sh.spheres[0].buffer.lock();
        out.copy_from_slice(&root);
        root.iter_mut().for_each(|v| *v = 0.0);
        drop(root);
        // A start or stop that happened meanwhile wins over the old phase.
        let _ = sh.lifecycle.compare_exchange(
            SphereState::Accumulating as usize,
            phase,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        Ok(())
    }

    /// Waits with the other workers whose home sphere is on `level`.
    /// Only callable from such a worker. Returns the barrier's generation.
    pub fn level_barrier(&self, level: usize, timeout: Option<Duration>) -> Result<u64> {
        let w =
            self.current_worker().ok_or_else(|| Error::WrongState("level barrier called outside a worker".into()))?;
        let home_level = self.shared.hierarchy.nodes()[self.shared.plans[w].home].level;
        let barrier = self
            .shared
            .level_barriers
            .get(level)
            .and_then(Option::as_ref)
            .ok_or_else(|| invalid!("no worker has its home sphere on level {level}"))?;
        if home_level != level {
            return Err(invalid!("worker {w} has its home on level {home_level}, not {level}"));
        }
        self.wait_barrier(w, barrier, timeout)
    }

    /// Waits with every worker of the system (an epoch boundary). Only
    /// callable from a worker. Returns the epoch number, from 1.
    pub fn epoch_barrier(&self, timeout: Option<Duration>) -> Result<u64> {
        let w =
            self.current_worker().ok_or_else(|| Error::WrongState("epoch barrier called outside a worker".into()))?;
        self.wait_barrier(w, &self.shared.epoch_barrier, timeout)
    }

    fn wait_barrier(&self, w: usize, b: &TimedBarrier, timeout: Option<Duration>) -> Result<u64> {
        let home = &self.shared.spheres[self.shared.plans[w].home];
        home.waiting.fetch_add(1, Ordering::Relaxed);
        let r = b.wait(deadline_after(timeout));
        home.waiting.fetch_sub(1, Ordering::Relaxed);
        r
    }

    /// Parties of the barrier for `level` (0 when no worker lives there).
    pub fn level_barrier_parties(&self, level: usize) -> usize {
        self.shared.level_barriers.get(level).and_then(Option::as_ref).map_or(0, TimedBarrier::parties)
    }
}

impl Drop for SphereSystem {
    fn drop(&mut self) {
        if self.current_worker().is_some() {
            // The last handle went away inside one of our own callbacks: a
            // worker cannot join itself. Ask all to finish the work and
            // leave, and let them go (they keep the shared state alive).
            self.shared.shutdown.store(true, Ordering::SeqCst);
            self.shared.wake_all();
            self.control.lock().threads.clear();
            return;
        }
        let mut ctl = self.control.lock();
        if self.shared.running.load(Ordering::SeqCst) {
            Self::shutdown_threads(&self.shared, &mut ctl);
            self.shared.running.store(false, Ordering::SeqCst);
        }
    }
}

/// `now + timeout`, or no deadline when there is no timeout or the sum is
/// beyond what `Instant` can represent (e.g. `Duration::MAX`).
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Leaves ordered so that consecutive chunks land in different groups:
/// the first leaf of each group, then the second of each, and so on.
fn spread_order(h: &Hierarchy) -> Vec<usize> {
    let mut by_group: Vec<Vec<usize>> = vec![Vec::new(); super::hierarchy::FANOUT];
    for leaf in h.leaves() {
        by_group[h.nodes()[leaf].branch].push(leaf);
    }
    let longest = by_group.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest).flat_map(|i| by_group.iter().filter_map(move |g| g.get(i).copied())).collect()
}

/// Owner of every sphere and each worker's plan. Leaves follow the group
/// allocation rule; an inner sphere belongs to the owner of its first
/// child, so every queue has a worker that drains it.
fn plan_workers(h: &Hierarchy, workers: usize) -> (Vec<usize>, Vec<WorkerPlan>) {
    let leaves_of = h.assign_leaves(workers);
    let mut owner = vec![usize::MAX; h.len()];
    for (w, leaves) in leaves_of.iter().enumerate() {
        for &l in leaves {
            owner[l] = w;
        }
    }
    for node in h.nodes().iter().rev() {
        if owner[node.id] == usize::MAX {
            owner[node.id] = node.children.first().map_or(0, |&c| owner[c]);
        }
    }
    let plans = (0..workers)
        .map(|w| {
            let owned: Vec<usize> = (0..h.len()).filter(|&s| owner[s] == w).collect();
            let home = leaves_of[w].first().copied().unwrap_or_else(|| {
                // A worker without leaves (more workers than leaves in its
                // group) lives at its group's level-1 sphere, else the root.
                let g = w % super::hierarchy::FANOUT;
                if h.len() > 1 + g {
                    1 + g
                } else {
                    0
                }
            });
            let mut steal_order: Vec<usize> = (0..h.len()).filter(|&s| owner[s] != w && s != home).collect();
            steal_order.sort_by_key(|&s| (h.distance(home, s), s));
            WorkerPlan { home, owned, steal_order }
        })
        .collect();
    (owner, plans)
}

impl Shared {
    /// Counts `n` more pending items, refusing a total beyond `MAX_PENDING`.
    fn add_pending(&self, n: u64) -> Result<()> {
        self.pending_items
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| p.checked_add(n).filter(|&t| t <= MAX_PENDING))
            .map(|_| ())
            .map_err(|p| invalid!("{n} more items would exceed {MAX_PENDING} pending items ({p} now)"))
    }

    /// Queues `chunk` on `sphere`. The counters go up before the chunk is
    /// visible, so a worker taking it at once can never count it out first.
    fn push(&self, sphere: usize, chunk: Chunk) {
        self.push_quietly(sphere, chunk);
        self.wake_for(sphere);
    }

    /// [`Shared::push`] without waking anyone: for a worker queueing work
    /// it is about to take itself.
    fn push_quietly(&self, sphere: usize, chunk: Chunk) {
        self.owned_queued[self.owner[sphere]].fetch_add(1, Ordering::AcqRel);
        self.queued_chunks.fetch_add(1, Ordering::SeqCst);
        self.spheres[sphere].queue.push(chunk);
    }

    /// Wakes a worker that can take work queued on `sphere`: when thieves
    /// are allowed, preferably one that last ran on this CPU, else its
    /// owner, else any parked worker; when they are not, its owner.
    ///
    /// No wake-up is lost: a worker sets its `sleeping` flag, fences, then
    /// looks at the queues; a pusher publishes, fences, then reads the
    /// flags. With both fences one of the two sees the other.
    fn wake_for(&self, sphere: usize) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        let stealable = self.spheres[sphere].queue.stealing_enabled();
        if stealable && self.wake_on_this_cpu() {
            return;
        }
        if !self.wake_worker(self.owner[sphere]) && stealable {
            self.wake_any();
        }
    }

    /// Wakes a parked worker that last ran on the caller's CPU: the work
    /// just written is in that CPU's cache, and the kernel can switch to the
    /// worker without waking another CPU. Returns whether it woke one.
    fn wake_on_this_cpu(&self) -> bool {
        let Some(cpu) = crate::sys::current_cpu() else { return false };
        self.wake_first(|slot| slot.last_cpu.load(Ordering::Relaxed) == cpu)
    }

    /// Wakes the first parked worker whose slot satisfies `pick`; returns
    /// whether it woke one.
    fn wake_first(&self, pick: impl Fn(&WorkerSlot) -> bool) -> bool {
        (0..self.slots.len()).any(|w| pick(&self.slots[w]) && self.wake_worker(w))
    }

    /// Like [`Shared::wake_for`] but only workers that last parked on
    /// another CPU than the caller's; does nothing when there is none.
    fn wake_elsewhere(&self, sphere: usize) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        let here = crate::sys::current_cpu();
        let elsewhere = |slot: &WorkerSlot| here != Some(slot.last_cpu.load(Ordering::Relaxed));
        let owner = self.owner[sphere];
        if elsewhere(&self.slots[owner]) && self.wake_worker(owner) {
            return;
        }
        if self.spheres[sphere].queue.stealing_enabled() {
            self.wake_first(elsewhere);
        }
    }

    /// Wakes one parked worker, if any; returns whether it woke one.
    fn wake_any(&self) -> bool {
        let n = self.slots.len();
        let start = self.wake_cursor.fetch_add(1, Ordering::Relaxed);
        (0..n).any(|i| self.wake_worker((start + i) % n))
    }

    /// Wakes every parked worker.
    fn wake_all(&self) {
        for w in 0..self.slots.len() {
            self.wake_worker(w);
        }
    }

    /// Wakes worker `w` if it is parked; returns whether it was.
    fn wake_worker(&self, w: usize) -> bool {
        let slot = &self.slots[w];
        if slot.sleeping.load(Ordering::SeqCst) && slot.sleeping.swap(false, Ordering::SeqCst) {
            slot.parker.unpark();
            return true;
        }
        false
    }

    /// Bookkeeping after `removed_chunks` chunks left `sphere`'s queue.
    fn took(&self, sphere: usize, removed_chunks: usize) {
        if removed_chunks > 0 {
            self.owned_queued[self.owner[sphere]].fetch_sub(removed_chunks, Ordering::AcqRel);
            self.queued_chunks.fetch_sub(removed_chunks, Ordering::SeqCst);
        }
        // More work remains here: make sure another worker is looking at it.
        if self.spheres[sphere].queue.chunk_count() > 0 {
            self.wake_for(sphere);
        }
    }

    /// Counts `n` items as finished (run or cancelled). The last one wakes
    /// the waiters, and during a shutdown the parked workers, which may now
    /// exit: nothing is queued and nothing runs that could queue more.
    fn finish_items(&self, n: u64) {
        if n > 0 && self.pending_items.fetch_sub(n, Ordering::SeqCst) == n {
            {
                let _g = self.done_lock.lock();
                self.done.notify_all();
            }
            if self.shutdown.load(Ordering::SeqCst) {
                self.wake_all();
            }
        }
    }

    /// Whether a worker may leave: on abort at once; on shutdown once the
    /// drain is complete, i.e. once no item was queued or running anywhere
    /// (before that, a running callback could still queue work that only
    /// this worker may take). The first worker to see the drain complete
    /// makes it final for this stop and wakes the others, so that work
    /// distributed by other threads afterwards waits for the next start
    /// instead of keeping some workers alive without their peers.
    fn may_exit(&self) -> bool {
        if self.abort.load(Ordering::SeqCst) {
            return true;
        }
        if !self.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        if self.drained.load(Ordering::SeqCst) {
            return true;
        }
        if self.pending_items.load(Ordering::SeqCst) == 0 {
            self.drained.store(true, Ordering::SeqCst);
            self.wake_all();
            return true;
        }
        false
    }

    /// Next piece for worker `w`, at most `worker.limit()` items: its home,
    /// then the spheres it owns (FIFO), then a steal. Returns (sphere to
    /// report, piece).
    fn find_work(&self, w: usize, worker: &mut WorkerState) -> Option<(usize, Chunk)> {
        let plan = &self.plans[w];
        let limit = worker.limit();
        let cursor = &mut worker.cursor;
        let home = &self.spheres[plan.home].queue;
        // A home owned by another worker (more workers than leaves) is only
        // shared while it is open to thieves.
        let home_is_mine = self.owner[plan.home] == w;
        if home_is_mine || home.stealing_enabled() {
            if let Some((c, removed)) = home.pop_front(limit) {
                self.took(plan.home, removed);
                return Some((plan.home, c));
            }
        }
        if self.owned_queued[w].load(Ordering::Acquire) > 0 {
            let n = plan.owned.len();
            for step in 0..n {
                let s = plan.owned[(*cursor + step) % n];
                if let Some((c, removed)) = self.spheres[s].queue.pop_front(limit) {
                    *cursor = (*cursor + step) % n;
                    self.took(s, removed);
                    return Some((s, c));
                }
            }
        }
        if self.queued_chunks.load(Ordering::SeqCst) == 0 {
            return None;
        }
        // Several chunks at once only where the extra ones stay reachable:
        // at a home this worker owns and others may steal from.
        let batch = home_is_mine && home.stealing_enabled();
        for &victim in &plan.steal_order {
            if let Some((stolen, removed)) = self.spheres[victim].queue.steal(if batch { None } else { Some(limit) }) {
                self.spheres[victim].counters.stolen_from.fetch_add(stolen.items as u64, Ordering::Relaxed);
                self.spheres[plan.home].counters.stolen_to.fetch_add(stolen.items as u64, Ordering::Relaxed);
                if !batch {
                    // One piece within the limit: run it as it is.
                    self.took(victim, removed);
                    return stolen.chunks.into_iter().next().map(|c| (plan.home, c));
                }
                // A batch goes to the thief's home, newest first, so it is
                // taken in pieces like any other and stays stealable.
                // Arrivals are counted before the departures. No wake-up
                // here: the thief takes the first piece itself, and `took`
                // wakes a helper only if something is left after it.
                for c in stolen.chunks {
                    self.push_quietly(plan.home, c);
                }
                self.took(victim, removed);
                let (c, removed) = home.pop_front(limit)?;
                self.took(plan.home, removed);
                return Some((plan.home, c));
            }
        }
        None
    }

    /// Runs one piece and returns the time it took.
    fn run_piece(&self, sphere: usize, piece: Chunk, f: Option<&WorkFn>) -> Duration {
        let s = &self.spheres[sphere];
        s.running.fetch_add(1, Ordering::Relaxed);
        let n = piece.len() as u64;
        let t0 = Instant::now();
        let mut failed = 0u64;
        if let Some(f) = f {
            // One unwind guard per piece keeps the item loop tight; after a
            // panic the loop resumes behind the failed item, so every other
            // item of the piece still runs.
            let mut done = 0usize;
            while done < piece.len() {
                let run = catch_unwind(AssertUnwindSafe(|| {
                    piece.for_each_from(done, |item| {
                        done += 1;
                        f(item, sphere);
                    })
                }));
                if let Err(payload) = run {
                    failed += 1;
                    // A payload whose own drop panics must not take the
                    // worker down: drop it under a guard, else leak it.
                    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                        std::mem::forget(again);
                    }
                }
            }
        }
        let took = t0.elapsed();
        s.counters.busy_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        s.counters.items_processed.fetch_add(n, Ordering::Relaxed);
        if failed > 0 {
            s.counters.items_failed.fetch_add(failed, Ordering::Relaxed);
            self.failed_items.fetch_add(failed, Ordering::Relaxed);
        }
        s.running.fetch_sub(1, Ordering::Relaxed);
        self.finish_items(n);
        took
    }

    fn worker_main(self: Arc<Self>, w: usize, f: Option<WorkFn>, cpu: Option<usize>) {
        CURRENT_WORKER.with(|c| c.set((self.id, w)));
        if let Some(cpu) = cpu {
            // Pinning is a placement hint; an unpinned worker still works.
            crate::sys::pin_current_thread(cpu);
        }
        {
            let mut open = self.start_gate.lock();
            while !*open && !self.abort.load(Ordering::SeqCst) {
                self.gate_opened.wait(&mut open);
            }
        }
        let mut worker = WorkerState { cursor: 0, ns_per_item: TARGET_PIECE_NS / 4.0 };
        while !self.abort.load(Ordering::SeqCst) {
            let next = self.find_work(w, &mut worker).or_else(|| self.idle(w, &mut worker));
            let Some((sphere, piece)) = next else { break };
            worker.learn(piece.len(), self.run_piece(sphere, piece, f.as_ref()));
        }
        CURRENT_WORKER.with(|c| c.set((0, 0)));
    }

    /// Spins briefly, then parks until work it can take arrives, and
    /// returns that work; `None` when the worker should exit (see
    /// `may_exit`).
    fn idle(&self, w: usize, worker: &mut WorkerState) -> Option<(usize, Chunk)> {
        let mut spins = 0u32;
        let slot = &self.slots[w];
        loop {
            if let Some(found) = self.find_work(w, worker) {
                return Some(found);
            }
            if self.may_exit() {
                return None;
            }
            if spins < SPIN_ROUNDS {
                // Spin without yielding: a yield invites the kernel to move
                // this thread to the idle CPU, where its next wake-up then
                // costs an inter-processor interrupt.
                for _ in 0..1u32 << spins {
                    std::hint::spin_loop();
                }
                spins += 1;
                continue;
            }
            // Announce the nap, then look once more: work published before
            // the flag was visible is found by this look, work published
            // after it comes with a wake-up (see `wake_for`).
            slot.sleeping.store(true, Ordering::SeqCst);
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let found = self.find_work(w, worker);
            let exit = found.is_none() && self.may_exit();
            if found.is_none() && !exit {
                // Where it naps is where the kernel will prefer to wake it.
                slot.last_cpu.store(crate::sys::current_cpu().unwrap_or(usize::MAX), Ordering::Relaxed);
                // Also during a shutdown: what is left belongs to others, and
                // the last item to finish wakes everyone (`finish_items`).
                slot.parker.park();
            }
            // A waker clears the flag before unparking; clearing it here too
            // covers the paths that did not park. A token left by a late
            // waker only costs one extra look at the queues.
            slot.sleeping.store(false, Ordering::SeqCst);
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if found.is_some() || exit {
                return found;
            }
            spins = 0;
        }
    }
}

/// What a worker thread keeps between pieces.
struct WorkerState {
    /// Where in its owned spheres it last found work.
    cursor: usize,
    /// Running estimate of one item's cost, from the pieces it ran.
    ns_per_item: f64,
}

impl WorkerState {
    /// Most items to take at once: about `TARGET_PIECE_NS` of work.
    fn limit(&self) -> usize {
        (TARGET_PIECE_NS / self.ns_per_item.max(0.1)).clamp(1.0, MAX_PIECE as f64) as usize
    }

    /// Folds a piece of `items` items that took `took` into the estimate.
    fn learn(&mut self, items: usize, took: Duration) {
        if items > 0 {
            let sample = took.as_nanos() as f64 / items as f64;
            self.ns_per_item = 0.5 * self.ns_per_item + 0.5 * sample;
        }
    }
}
